"""Generation with the causal Luna models: LM sampling (greedy, temperature, top-k), seq2seq greedy
decoding and beam search. Every loop is a `jax.lax.scan` over `LunaLM.decode_step` /
`LunaSeq2Seq.decode_step`, so each new token costs O(1) time and the cache O(l*d) memory per layer.

`generate`, `greedy_decode` and `beam_search` are the host-side entry points: they check their
arguments (model type, shapes, integer dtypes, token ids in [0, vocab_size), lengths, sizes and
rates) and raise a ValueError naming the bad value before anything is compiled, then call their
jitted loop. The models themselves take whatever they are given: an id outside the vocabulary
embeds as NaN (JAX's out-of-range gather), which the checks here prevent.

The seq2seq searches also run the softmax baseline `TransformerSeq2Seq` (same interface; its cache
holds every past key and value).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from luna_jax.model.decoders import LunaLM, LunaSeq2Seq, TransformerSeq2Seq
from luna_jax.model.encoders import check_positions

Array = jax.Array
Params = Any
Seq2Seq = LunaSeq2Seq | TransformerSeq2Seq
_NEG_INF = -1e9


def _choose(logits: Array, rng: Array, temperature: float, top_k: int | None) -> Array:
  """Greedy when temperature == 0, else a sample of softmax(logits / T) restricted to the top k;
  never id 0, the padding (as `greedy_decode` and `beam_search`)."""
  logits = logits.at[..., 0].set(-jnp.inf)  # Stays -inf at any temperature.
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k is not None:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, _NEG_INF, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def _check_model(model: Any, kind: Any, function: str) -> None:
  """ValueError unless `model` is a `kind`: `LunaLM` or an encoder-decoder (`Seq2Seq`)."""
  if not isinstance(model, kind):
    wanted = (
      "a LunaLM (config.model.name='luna_lm')"
      if kind is LunaLM
      else "an encoder-decoder (config.model.name='luna_seq2seq' or 'transformer_seq2seq')"
    )
    raise ValueError(f'{function} needs {wanted}, got {type(model).__name__}.')


def _check_integers(name: str, array: Any, ndim: int) -> None:
  """A non-empty integer array (jax or NumPy, traced too) of `ndim` dimensions; ValueError
  naming it."""
  if not hasattr(array, 'dtype'):
    raise ValueError(
      f'{name} is a {type(array).__name__}: expected an integer array (e.g. jnp.asarray({name}, '
      'jnp.int32)).'
    )
  shape, dtype = np.shape(array), array.dtype
  if len(shape) != ndim or 0 in shape:
    layout = '[batch, length]' if ndim == 2 else '[batch]'
    raise ValueError(f'{name} has shape {shape}: expected a non-empty {layout} array.')
  if not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f'{name} has dtype {dtype}: it must hold integers (e.g. int32).')


def _check_tokens(name: str, tokens: Any, vocab_size: int) -> None:
  """`[batch, length]` integer ids, in [0, vocab_size) when concrete; ValueError naming them."""
  _check_integers(name, tokens, 2)
  if isinstance(tokens, jax.core.Tracer):
    return
  values = np.asarray(tokens)
  low, high = int(values.min()), int(values.max())
  if low < 0 or high >= vocab_size:
    raise ValueError(
      f'{name} holds token id {low if low < 0 else high}: ids must lie in [0, {vocab_size}) (the '
      "model's vocab_size); an id outside it embeds as NaN. Tokenise with the vocabulary the "
      'model was trained on.'
    )


def _check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
  within = maximum is None or value <= maximum
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    within = False
  if not within:
    allowed = f'>= {minimum}' if maximum is None else f'in [{minimum}, {maximum}]'
    raise ValueError(f'{name}={value!r}: must be an integer {allowed}.')


def _check_rate(name: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise ValueError(f'{name}={value!r}: must be a finite number >= 0.')
  if value < 0:
    raise ValueError(f'{name}={value!r}: must be >= 0 (0 is greedy / no penalty).')


def _check_source(model: Seq2Seq, inputs: Any, lengths: Any) -> None:
  """The source of `greedy_decode` and `beam_search`: ids, and lengths in [1, m] per row."""
  _check_tokens('inputs', inputs, model.config.vocab_size)
  _check_integers('lengths', lengths, 1)
  batch, m = np.shape(inputs)
  if np.shape(lengths) != (batch,):
    raise ValueError(f'lengths has shape {np.shape(lengths)}: expected [batch] = ({batch},).')
  if not isinstance(lengths, jax.core.Tracer):
    values = np.asarray(lengths)
    if values.min() < 1 or values.max() > m:
      raise ValueError(
        f'lengths holds {int(values.min() if values.min() < 1 else values.max())}: every source '
        f"length must lie in [1, {m}] (the inputs' width)."
      )


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
    prompt: `[batch, n0]` integer ids in [0, vocab_size) (n0 >= 1, all prompts the same length).
    num_tokens: tokens to generate (>= 1).
    rng: PRNG key for sampling.
    temperature: 0 for greedy decoding, else the sampling temperature (finite, > 0).
    top_k: sample among the k most likely tokens only (1 <= k <= vocab_size), or None.

  Returns:
    `[batch, n0 + num_tokens]` int32 ids: the prompt followed by the generated tokens (never 0,
    the padding id).

  Raises:
    ValueError: another model type, a prompt of another shape or dtype or with ids outside the
      vocabulary, `num_tokens` < 1, a negative or non-finite `temperature`, `top_k` outside
      [1, vocab_size], or `n0 + num_tokens` beyond the model's `max_length`.
  """
  _check_model(model, LunaLM, 'generate')
  vocab_size = model.config.vocab_size
  _check_tokens('prompt', prompt, vocab_size)
  _check_int('num_tokens', num_tokens, 1)
  _check_rate('temperature', temperature)
  if top_k is not None:
    _check_int('top_k', top_k, 1, vocab_size)
  n0 = np.shape(prompt)[1]
  check_positions(
    model.config,
    n0 + num_tokens,
    f'{n0} prompt tokens + {num_tokens} to generate = {n0 + num_tokens} tokens',
  )
  return _generate(
    model, params, prompt, int(num_tokens), rng, temperature=float(temperature), top_k=top_k
  )


@functools.partial(jax.jit, static_argnames=('model', 'num_tokens', 'temperature', 'top_k'))
def _generate(
  model: LunaLM,
  params: Params,
  prompt: Array,
  num_tokens: int,
  rng: Array,
  *,
  temperature: float,
  top_k: int | None,
) -> Array:
  """`generate`'s jitted loop (arguments checked)."""
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


def greedy_decode(
  model: Seq2Seq, params: Params, inputs: Array, lengths: Array, *, max_length: int, eos_id: int
) -> Array:
  """Greedy seq2seq decoding.

  Args:
    model: the encoder-decoder.
    params: its parameters.
    inputs: `[batch, m]` integer source ids in [0, vocab_size).
    lengths: `[batch]` integer source lengths, each in [1, m].
    max_length: output tokens to produce (>= 1).
    eos_id: end-of-sequence id in [1, vocab_size); positions after it are 0 (padding).

  Returns:
    `[batch, max_length]` int32 output ids (including the EOS).

  Raises:
    ValueError: another model type, inputs or lengths of another shape or dtype or out of range,
      `max_length` < 1 or beyond the model's `max_length`, `eos_id` outside [1, vocab_size).
  """
  _check_model(model, Seq2Seq, 'greedy_decode')
  _check_source(model, inputs, lengths)
  _check_int('max_length', max_length, 1)
  _check_int('eos_id', eos_id, 1, model.config.vocab_size - 1)
  check_positions(model.config, max_length, f'{max_length} output tokens')
  return _greedy_decode(model, params, inputs, lengths, max_length=max_length, eos_id=eos_id)


@functools.partial(jax.jit, static_argnames=('model', 'max_length', 'eos_id'))
def _greedy_decode(
  model: Seq2Seq, params: Params, inputs: Array, lengths: Array, *, max_length: int, eos_id: int
) -> Array:
  """`greedy_decode`'s jitted loop (arguments checked)."""
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
  min_length: int = 0,
) -> tuple[Array, Array]:
  """Beam search (the paper decodes WMT with beam 5).

  As fairseq's `SequenceGenerator`: each step takes the best 2 * `beam_size` extensions of the live
  hypotheses by summed log-probability; those among the best `beam_size` that end with the EOS are
  finished, kept apart (never pushed out by live ones), and the best `beam_size` that do not end
  are the next live ones. An example is done once it has `beam_size` finished hypotheses. The
  result is its best finished hypothesis by summed log-probability divided by the GNMT length
  penalty ((5 + length) / 6) ** length_penalty (Wu et al., 2016, eq. 14; Vaswani et al., 2017,
  §6.1 use alpha 0.6), length counting the EOS; for an example not done by `max_length`, a live
  hypothesis (penalised at `max_length`) that ranks higher. `beam_size` 1 is greedy decoding. An
  example that reaches its `max_output_lengths` entry without an EOS must end there: only the EOS
  stays open to it, at its model log-probability (fairseq's `SequenceGenerator` at `max_len`;
  `luna_jax.training.translation` caps every example within `max_length`, so all end so). Before
  `min_length` tokens the EOS is closed, unless a cap forces it (fairseq's `--min-len`, 1 by
  default there and in `luna_jax.training.translation`; 0 here allows an empty output).

  Args:
    model: the encoder-decoder.
    params: its parameters.
    inputs: `[batch, m]` integer source ids in [0, vocab_size).
    lengths: `[batch]` integer source lengths, each in [1, m].
    beam_size: beams per example (>= 1).
    max_length: output tokens to produce (>= 1).
    eos_id: end-of-sequence id in [1, vocab_size).
    length_penalty: the GNMT alpha (finite, >= 0; 0 = rank by summed log-probability).
    max_output_lengths: optional `[batch]` int, the most output ids (EOS included) per example,
      e.g. `a * source_length + b + 1`; values above `max_length` have no effect.
    min_length: output tokens before the EOS, at least (>= 0).

  Returns:
    (`[batch, max_length]` int32 best output ids, `[batch]` float32 their summed
    log-probabilities).

  Raises:
    ValueError: another model type, inputs or lengths of another shape or dtype or out of range,
      `beam_size` or `max_length` < 1, `max_length` beyond the model's `max_length`, `eos_id`
      outside [1, vocab_size), a negative or non-finite `length_penalty`, a negative
      `min_length`, `max_output_lengths` of another shape or below 1.
  """
  _check_model(model, Seq2Seq, 'beam_search')
  _check_source(model, inputs, lengths)
  _check_int('beam_size', beam_size, 1)
  _check_int('max_length', max_length, 1)
  _check_int('eos_id', eos_id, 1, model.config.vocab_size - 1)
  _check_rate('length_penalty', length_penalty)
  _check_int('min_length', min_length, 0)
  if max_output_lengths is not None:
    _check_integers('max_output_lengths', max_output_lengths, 1)
    traced = isinstance(max_output_lengths, jax.core.Tracer)  # Its values are checked untraced.
    if not traced and np.min(max_output_lengths) < 1:
      raise ValueError(
        f'max_output_lengths holds {np.min(max_output_lengths)}: each must be >= 1 (the EOS).'
      )
    if np.shape(max_output_lengths) != np.shape(lengths):
      raise ValueError(
        f'max_output_lengths has shape {np.shape(max_output_lengths)}: expected one entry per '
        f'example, {np.shape(lengths)}.'
      )
  check_positions(model.config, max_length, f'{max_length} output tokens')
  return _beam_search(
    model,
    params,
    inputs,
    lengths,
    beam_size=beam_size,
    max_length=max_length,
    eos_id=eos_id,
    length_penalty=float(length_penalty),
    max_output_lengths=max_output_lengths,
    min_length=min_length,
  )


@functools.partial(jax.jit, static_argnames=('model', 'beam_size', 'max_length', 'eos_id'))
def _beam_search(
  model: Seq2Seq,
  params: Params,
  inputs: Array,
  lengths: Array,
  *,
  beam_size: int,
  max_length: int,
  eos_id: int,
  length_penalty: float,
  max_output_lengths: Array | None,
  min_length: int,
) -> tuple[Array, Array]:
  """`beam_search`'s jitted loop (arguments checked)."""
  variables = {'params': params}
  batch, k = inputs.shape[0], beam_size
  encoded = model.apply(variables, inputs, lengths, method='encode')
  cache = model.apply(variables, encoded, max_length, method='init_cache')
  cache = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), cache)
  rows = jnp.arange(batch)[:, None]

  def penalty(length: Array | int) -> Array:
    return ((5.0 + length) / 6.0) ** length_penalty

  def is_done(finished_ranks: Array) -> Array:  # [batch, 1]: k finished hypotheses.
    return jnp.all(finished_ranks > -jnp.inf, axis=1, keepdims=True)

  def body(carry, t):
    cache, live, live_scores, finished, finished_scores, finished_ranks, last = carry
    logits, cache = model.apply(variables, last.reshape(-1), cache, method='decode_step')
    logp = jax.nn.log_softmax(logits).reshape(batch, k, -1)
    vocab = logp.shape[-1]
    logp = logp.at[..., 0].set(_NEG_INF)  # padding is not a word
    is_eos = jnp.arange(vocab) == eos_id
    must_end = jnp.zeros((batch, 1, 1), bool)
    if max_output_lengths is not None:
      must_end = (t + 1 >= max_output_lengths)[:, None, None]
      logp = jnp.where(must_end & ~is_eos, _NEG_INF, logp)
    logp = jnp.where((t < min_length) & ~must_end & is_eos, _NEG_INF, logp)  # --min-len
    # The best 2k extensions hold at least k that do not end: each live hypothesis has one EOS.
    scores, index = jax.lax.top_k((live_scores[..., None] + logp).reshape(batch, k * vocab), 2 * k)
    beam, token = index // vocab, (index % vocab).astype(jnp.int32)
    extended = live[rows, beam].at[:, :, t].set(token)
    ends = token == eos_id
    # Finished: those of the best k that end (length t + 1), penalised, until an example has k.
    done = is_done(finished_ranks)
    ending = ends & (jnp.arange(2 * k) < k) & (scores > _NEG_INF / 2) & ~done
    ranks = jnp.where(ending, scores / penalty(t + 1), -jnp.inf)
    finished_ranks, pick = jax.lax.top_k(jnp.concatenate([finished_ranks, ranks], 1), k)
    finished = jnp.concatenate([finished, extended], 1)[rows, pick]
    finished_scores = jnp.concatenate([finished_scores, scores], 1)[rows, pick]
    # The live: the best k that go on.
    _, pick = jax.lax.top_k(jnp.where(ends, -jnp.inf, scores), k)
    live, live_scores, token = extended[rows, pick], scores[rows, pick], token[rows, pick]
    cache = jax.tree.map(
      lambda x: x.reshape(batch, k, *x.shape[1:])[rows, beam[rows, pick]].reshape(x.shape), cache
    )
    return (cache, live, live_scores, finished, finished_scores, finished_ranks, token), None

  tokens = jnp.zeros((batch, k, max_length), jnp.int32)
  carry = (
    cache,
    tokens,
    jnp.tile(jnp.array([0.0] + [_NEG_INF] * (k - 1)), (batch, 1)),  # only beam 0 starts
    tokens,
    jnp.zeros((batch, k)),
    jnp.full((batch, k), -jnp.inf),  # no finished hypothesis yet
    jnp.full((batch, k), model.bos_id, jnp.int32),
  )
  (_, live, live_scores, finished, finished_scores, finished_ranks, _), _ = jax.lax.scan(
    body, carry, jnp.arange(max_length)
  )
  # A live hypothesis competes only for an example with fewer than k finished ones.
  done = is_done(finished_ranks)
  live_ranks = jnp.where(
    done | (live_scores <= _NEG_INF / 2), -jnp.inf, live_scores / penalty(max_length)
  )
  tokens = jnp.concatenate([finished, live], 1)
  scores = jnp.concatenate([finished_scores, live_scores], 1)
  best = jnp.argmax(jnp.concatenate([finished_ranks, live_ranks], 1), 1)
  return tokens[jnp.arange(batch), best], scores[jnp.arange(batch), best]
