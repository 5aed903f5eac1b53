"""Generation with the causal Luna models: LM sampling (greedy, temperature, top-k), seq2seq greedy
decoding and beam search. Every loop is a `jax.lax.scan` over `LunaLM.decode_step` /
`LunaSeq2Seq.decode_step`, so each new token costs O(1) time and the cache O(l*d) memory per layer.
The seq2seq searches also run the softmax baseline `TransformerSeq2Seq` (same interface; its cache
holds every past key and value).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from luna_jax.model.decoders import LunaLM, LunaSeq2Seq, TransformerSeq2Seq
from luna_jax.model.encoders import check_positions

Array = jax.Array
Params = Any
Seq2Seq = LunaSeq2Seq | TransformerSeq2Seq
_NEG_INF = -1e9


def _choose(logits: Array, rng: Array, temperature: float, top_k: int | None) -> Array:
  """Greedy when temperature == 0, else a sample of softmax(logits / T) restricted to the top k."""
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k is not None:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, _NEG_INF, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=('model', 'num_tokens', 'temperature', 'top_k'))
def generate(
  model: LunaLM,
  params: Params,
  prompt: Array,
  num_tokens: int,
  rng: Array,
  *,
  temperature: float = 0.0,
  top_k: int | None = None,
) -> Array:
  """Continues prompts with a `LunaLM`.

  Args:
    model: the language model.
    params: its parameters.
    prompt: `[batch, n0]` int ids (n0 >= 1, all prompts the same length).
    num_tokens: tokens to generate.
    rng: PRNG key for sampling.
    temperature: 0 for greedy decoding, else the sampling temperature.
    top_k: sample among the k most likely tokens only.

  Returns:
    `[batch, n0 + num_tokens]` ids: the prompt followed by the generated tokens.

  Raises:
    ValueError: `n0 + num_tokens` exceeds the model's `max_length`.
  """
  n0 = prompt.shape[1]
  check_positions(
    model.config,
    n0 + num_tokens,
    f'{n0} prompt tokens + {num_tokens} to generate = {n0 + num_tokens} tokens',
  )
  step = lambda token, cache: model.apply(
    {'params': params}, token, cache, method=LunaLM.decode_step
  )
  cache = model.apply({'params': params}, prompt.shape[0], method=LunaLM.init_cache)

  def feed(cache, token):
    logits, cache = step(token, cache)
    return cache, logits

  cache, prompt_logits = jax.lax.scan(feed, cache, prompt.T)

  def sample(carry, key):
    cache, logits = carry
    token = _choose(logits, key, temperature, top_k)
    logits, cache = step(token, cache)
    return (cache, logits), token

  _, new = jax.lax.scan(sample, (cache, prompt_logits[-1]), jax.random.split(rng, num_tokens))
  return jnp.concatenate([prompt, new.T], axis=1)


@functools.partial(jax.jit, static_argnames=('model', 'max_length', 'eos_id'))
def greedy_decode(
  model: Seq2Seq, params: Params, inputs: Array, lengths: Array, *, max_length: int, eos_id: int
) -> Array:
  """Greedy seq2seq decoding.

  Args:
    model: the encoder-decoder.
    params: its parameters.
    inputs: `[batch, m]` source ids.
    lengths: `[batch]` source lengths.
    max_length: output tokens to produce.
    eos_id: end-of-sequence id; positions after it are 0 (padding).

  Returns:
    `[batch, max_length]` output ids (including the EOS).

  Raises:
    ValueError: `max_length` exceeds the model's `max_length`.
  """
  check_positions(model.config, max_length, f'{max_length} output tokens')
  variables = {'params': params}
  encoded = model.apply(variables, inputs, lengths, method='encode')
  cache = model.apply(variables, encoded, max_length, method='init_cache')
  batch = inputs.shape[0]

  def body(carry, _):
    cache, token, done = carry
    logits, cache = model.apply(variables, token, cache, method='decode_step')
    best = jnp.argmax(logits.at[:, 0].set(_NEG_INF), axis=-1).astype(jnp.int32)  # never padding
    token = jnp.where(done, 0, best)
    return (cache, token, done | (token == eos_id)), token

  start = jnp.full((batch,), model.bos_id, jnp.int32)
  _, tokens = jax.lax.scan(body, (cache, start, jnp.zeros((batch,), bool)), None, length=max_length)
  return tokens.T


def sequence_lengths(tokens: Array, eos_id: int) -> Array:
  """Length up to and including the first EOS (the full length when there is none): `[..., n]` ->
  `[...]`."""
  n = tokens.shape[-1]
  is_eos = tokens == eos_id
  first = jnp.where(jnp.any(is_eos, axis=-1), jnp.argmax(is_eos, axis=-1) + 1, n)
  return first.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=('model', 'beam_size', 'max_length', 'eos_id'))
def beam_search(
  model: Seq2Seq,
  params: Params,
  inputs: Array,
  lengths: Array,
  *,
  beam_size: int,
  max_length: int,
  eos_id: int,
  length_penalty: float = 0.6,
  max_output_lengths: Array | None = None,
) -> tuple[Array, Array]:
  """Beam search (the paper decodes WMT with beam 5).

  Finished beams only extend with padding at no cost; the final choice divides each beam's summed
  log-probability by the GNMT length penalty ((5 + length) / 6) ** length_penalty (Wu et al.,
  2016, eq. 14; Vaswani et al., 2017, §6.1 use alpha 0.6), length counting the EOS. An example
  that reaches its `max_output_lengths` entry without an EOS must end there: only the EOS stays
  open to it, at its model log-probability (fairseq's `SequenceGenerator` at `max_len`).

  Args:
    model: the encoder-decoder.
    params: its parameters.
    inputs: `[batch, m]` source ids.
    lengths: `[batch]` source lengths.
    beam_size: beams per example.
    max_length: output tokens to produce.
    eos_id: end-of-sequence id.
    length_penalty: the GNMT alpha (0 = rank by summed log-probability).
    max_output_lengths: optional `[batch]` int, the most output ids (EOS included) per example,
      e.g. `a * source_length + b + 1`; values above `max_length` have no effect.

  Returns:
    (`[batch, max_length]` best output ids, `[batch]` their summed log-probabilities).

  Raises:
    ValueError: `max_length` exceeds the model's `max_length`.
  """
  check_positions(model.config, max_length, f'{max_length} output tokens')
  variables = {'params': params}
  batch, k = inputs.shape[0], beam_size
  encoded = model.apply(variables, inputs, lengths, method='encode')
  cache = model.apply(variables, encoded, max_length, method='init_cache')
  cache = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), cache)
  scores = jnp.tile(jnp.array([0.0] + [_NEG_INF] * (k - 1)), (batch, 1))  # only beam 0 starts
  tokens = jnp.zeros((batch, k, max_length), jnp.int32)
  rows = jnp.arange(batch)[:, None]

  def body(carry, t):
    cache, tokens, scores, done, last = carry
    logits, cache = model.apply(variables, last.reshape(-1), cache, method='decode_step')
    logp = jax.nn.log_softmax(logits).reshape(batch, k, -1)
    vocab = logp.shape[-1]
    logp = logp.at[..., 0].set(_NEG_INF)  # padding is not a word
    if max_output_lengths is not None:
      must_end = (t + 1 >= max_output_lengths)[:, None, None]
      logp = jnp.where(must_end & (jnp.arange(vocab) != eos_id), _NEG_INF, logp)
    pad_only = jnp.full((vocab,), _NEG_INF).at[0].set(0.0)
    logp = jnp.where(done[..., None], pad_only, logp)
    top, index = jax.lax.top_k((scores[..., None] + logp).reshape(batch, k * vocab), k)
    beam, token = index // vocab, (index % vocab).astype(jnp.int32)
    tokens = tokens[rows, beam].at[:, :, t].set(token)
    done = done[rows, beam] | (token == eos_id)
    cache = jax.tree.map(
      lambda x: x.reshape(batch, k, *x.shape[1:])[rows, beam].reshape(x.shape), cache
    )
    return (cache, tokens, top, done, token), None

  start = jnp.full((batch, k), model.bos_id, jnp.int32)
  carry = (cache, tokens, scores, jnp.zeros((batch, k), bool), start)
  (_, tokens, scores, _, _), _ = jax.lax.scan(body, carry, jnp.arange(max_length))
  penalty = ((5.0 + sequence_lengths(tokens, eos_id)) / 6.0) ** length_penalty
  best = jnp.argmax(scores / penalty, axis=-1)
  return tokens[jnp.arange(batch), best], scores[jnp.arange(batch), best]
