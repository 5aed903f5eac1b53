"""Decoder-only and encoder-decoder Luna: incremental decoding equals the full pass, causality,
search."""

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from luna_jax.model import attention as attn
from luna_jax.model import decoders, generation
from luna_jax.model.config import ModelConfig
from luna_jax.model.decoders import LunaLM, LunaSeq2Seq, TransformerSeq2Seq, shift_right
from tests import reference as ref

RNG = np.random.default_rng(3)
CFG = ModelConfig(
  vocab_size=20,
  max_length=16,
  num_layers=2,
  emb_dim=16,
  num_heads=2,
  mlp_dim=32,
  projection_length=4,
  prepend_cls=False,
  chunk_size=4,
  dropout_rate=0.1,
  attention_dropout_rate=0.1,
)
EOS = 2


def ids(b, n, low=3):
  return jnp.asarray(RNG.integers(low, CFG.vocab_size, (b, n)), jnp.int32)


@pytest.fixture(scope='module')
def lm():
  model = LunaLM(CFG)
  return model, model.init(jax.random.PRNGKey(0), ids(1, 4))['params']


@pytest.fixture(scope='module')
def seq2seq():
  model = LunaSeq2Seq(CFG, bos_id=1)
  src = ids(3, 9)
  params = model.init(jax.random.PRNGKey(1), src, jnp.array([9, 5, 7]), ids(3, 6))['params']
  return model, params


def test_lm_decode_steps_equal_full_forward(lm):
  model, params = lm
  tokens = ids(2, 11)
  full = model.apply({'params': params}, tokens)
  cache = model.apply({'params': params}, 2, method=LunaLM.init_cache)
  step = jax.jit(lambda t, c: model.apply({'params': params}, t, c, method=LunaLM.decode_step))
  for t in range(tokens.shape[1]):
    logits, cache = step(tokens[:, t], cache)
    np.testing.assert_allclose(logits, full[:, t], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(cache['position'], [11, 11])


def test_lm_is_causal(lm):
  model, params = lm
  tokens = ids(2, 12)
  logits = model.apply({'params': params}, tokens)
  changed = model.apply({'params': params}, tokens.at[:, 7:].set(ids(2, 5)))
  np.testing.assert_array_equal(changed[:, :7], logits[:, :7])  # bitwise, though 4-7 is one chunk
  assert not np.allclose(changed[:, 7:], logits[:, 7:])


def test_lm_greedy_generation_follows_the_full_forward_argmax(lm):
  model, params = lm
  prompt = ids(2, 3)
  out = generation.generate(model, params, prompt, 8, jax.random.PRNGKey(0))
  assert out.shape == (2, 11)
  np.testing.assert_array_equal(out[:, :3], prompt)
  full = model.apply({'params': params}, out)
  # The argmax over every id but the padding, which generation never emits.
  np.testing.assert_array_equal(jnp.argmax(full[:, 2:-1, 1:], axis=-1) + 1, out[:, 3:])
  top1 = generation.generate(
    model, params, prompt, 8, jax.random.PRNGKey(5), temperature=0.7, top_k=1
  )
  np.testing.assert_array_equal(top1, out)
  sampled = [
    generation.generate(model, params, prompt, 8, jax.random.PRNGKey(s), temperature=2.0)
    for s in range(3)
  ]
  assert any(not np.array_equal(sampled[0], s) for s in sampled[1:])
  # Inside a caller's jit the arguments are traced: the checks that need values are skipped.
  traced = jax.jit(lambda p: generation.generate(model, params, p, 8, jax.random.PRNGKey(0)))
  np.testing.assert_array_equal(traced(prompt), out)


def test_generation_never_emits_padding_even_where_it_is_most_likely(lm):
  model, params = lm
  bias = params['lm_head']['bias']
  favour_padding = {**params, 'lm_head': {**params['lm_head'], 'bias': bias.at[0].set(1e3)}}
  for temperature in (0.0, 1.0, 1e12):  # -1e9 / 1e12 would give padding a real share.
    out = generation.generate(
      model, favour_padding, ids(2, 3), 8, jax.random.PRNGKey(1), temperature=temperature
    )
    assert np.all(np.asarray(out) != 0), out


def test_seq2seq_decode_steps_equal_teacher_forcing(seq2seq):
  model, params = seq2seq
  v = {'params': params}
  src, lengths, targets = ids(3, 9), jnp.array([9, 5, 7]), ids(3, 8)
  full = model.apply(v, src, lengths, targets)
  cache = model.apply(
    v, model.apply(v, src, lengths, method=LunaSeq2Seq.encode), method=LunaSeq2Seq.init_cache
  )
  inputs = shift_right(targets, model.bos_id)
  for t in range(targets.shape[1]):
    logits, cache = model.apply(v, inputs[:, t], cache, method=LunaSeq2Seq.decode_step)
    np.testing.assert_allclose(logits, full[:, t], rtol=1e-5, atol=1e-5)


def test_seq2seq_decoder_is_causal_and_ignores_source_padding(seq2seq):
  model, params = seq2seq
  v = {'params': params}
  src, lengths, targets = ids(3, 9), jnp.array([9, 5, 7]), ids(3, 8)
  logits = model.apply(v, src, lengths, targets)
  future = model.apply(v, src, lengths, targets.at[:, 5:].set(ids(3, 3)))
  # Decoder input t is target t-1, so changing targets >= 5 may change logits >= 6 only.
  np.testing.assert_array_equal(future[:, :6], logits[:, :6])
  assert not np.allclose(future[:, 6:], logits[:, 6:])
  padded = model.apply(v, src.at[1, 5:].set(0), lengths, targets)
  np.testing.assert_allclose(padded[1], logits[1], rtol=1e-5, atol=1e-5)


def sequence_log_prob(model, params, src, lengths, tokens):
  logp = jax.nn.log_softmax(model.apply({'params': params}, src, lengths, tokens))
  per_token = jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
  valid = jnp.arange(tokens.shape[1])[None] < generation.sequence_lengths(tokens, EOS)[:, None]
  return jnp.sum(jnp.where(valid, per_token, 0.0), axis=-1)


def test_beam_search_scores_are_model_log_probs_and_beam_one_is_greedy(seq2seq):
  model, params = seq2seq
  src, lengths = ids(3, 9), jnp.array([9, 5, 7])
  many, many_lengths = ids(16, 9), jnp.asarray(RNG.integers(1, 10, 16), jnp.int32)
  greedy = generation.greedy_decode(model, params, many, many_lengths, max_length=8, eos_id=EOS)
  for alpha in (0.0, 0.6, 2.0):  # Done at its first finished hypothesis, whatever the penalty.
    one, _ = generation.beam_search(
      model, params, many, many_lengths, beam_size=1, max_length=8, eos_id=EOS, length_penalty=alpha
    )
    np.testing.assert_array_equal(one, greedy, err_msg=f'alpha {alpha}')
  best, scores = generation.beam_search(
    model, params, src, lengths, beam_size=4, max_length=8, eos_id=EOS, length_penalty=0.0
  )
  np.testing.assert_allclose(
    scores, sequence_log_prob(model, params, src, lengths, best), rtol=1e-4
  )
  best = np.asarray(best)
  after_eos = np.cumsum(best == EOS, axis=1) - (best == EOS) > 0
  assert np.all((best == 0) == after_eos)  # padding exactly after the first EOS


#: The MT recipe's knobs: shared embeddings, sinusoidal positions, sqrt(d) scale; no contextual P.
MT_CFG = dataclasses.replace(
  CFG,
  vocab_size=5,
  share_embeddings=True,
  contextual_p=False,
  positional='sinusoidal',
  embed_scale=True,
  embedding_layernorm=False,
)


@pytest.fixture(scope='module')
def mt_seq2seq(fast_compilation):
  model = LunaSeq2Seq(MT_CFG, bos_id=1)
  src = jnp.asarray(RNG.integers(1, 5, (2, 6)), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(2), src, jnp.array([6, 4]), src)['params']
  return model, params


def test_shared_embeddings_and_non_contextual_p(mt_seq2seq):
  """One token table serves source, target and output (no bias); every decoder layer owns a P;
  incremental decoding still equals teacher forcing."""
  model, params = mt_seq2seq
  assert 'lm_head' not in params and 'embed' not in params['encoder']  # (sinusoidal positions)
  assert params['shared_embedding']['embedding'].shape == (5, MT_CFG.emb_dim)
  assert all('projected_embeddings' in params[f'layers_{i}'] for i in range(CFG.num_layers))
  assert 'projected_embeddings_1' in params['encoder']
  v = {'params': params}
  src, lengths, targets = jnp.array([[3, 4, 3, 2, 0, 0]]), jnp.array([4]), jnp.array([[4, 3, 2]])
  full = jax.jit(model.apply)(v, src, lengths, targets)
  cache = jax.jit(
    lambda v: model.apply(v, model.apply(v, src, lengths, method='encode'), method='init_cache')
  )(v)
  step = jax.jit(functools.partial(model.apply, method=LunaSeq2Seq.decode_step))
  for t, token in enumerate(shift_right(targets, model.bos_id)[0]):
    logits, cache = step(v, token[None], cache)
    np.testing.assert_allclose(logits[0], full[0, t], rtol=1e-5, atol=1e-5)
  table = params['shared_embedding']['embedding']
  zero = {'params': {**params, 'shared_embedding': {'embedding': table.at[3].set(0.0)}}}
  assert np.all(jax.jit(model.apply)(zero, src, lengths, targets)[..., 3] == 0.0)


def test_transformer_seq2seq_decodes_incrementally_causally_and_by_beam_search(fast_compilation):
  """The softmax baseline: its key/value cache equals teacher forcing, the decoder is causal, the
  encoder ignores source padding, and the searches run it."""
  model = TransformerSeq2Seq(MT_CFG, bos_id=1)
  src, lengths = jnp.array([[3, 4, 3, 2, 0, 0], [4, 1, 4, 3, 4, 2]]), jnp.array([4, 6])
  targets = jnp.array([[4, 3, 4, 2], [3, 3, 1, 2]])
  params = jax.jit(model.init)(jax.random.PRNGKey(3), src, lengths, targets)['params']
  assert 'lm_head' not in params and set(params['encoder_layers_0']) == {
    'SoftmaxAttention_0',
    'LayerNorm_0',
    'LayerNorm_1',
    'FeedForward_0',
  }
  v = {'params': params}
  apply = jax.jit(model.apply)
  full = apply(v, src, lengths, targets)
  encode = lambda v, src: model.apply(v, src, lengths, method='encode')
  cache = jax.jit(lambda v: model.apply(v, encode(v, src), 4, method='init_cache'))(v)
  step = jax.jit(functools.partial(model.apply, method=TransformerSeq2Seq.decode_step))
  for t, token in enumerate(shift_right(targets, model.bos_id).T):
    logits, cache = step(v, token, cache)
    np.testing.assert_allclose(logits, full[:, t], rtol=1e-5, atol=1e-5)
  future = apply(v, src, lengths, targets.at[:, 2:].set(1))
  np.testing.assert_array_equal(future[:, :3], full[:, :3])
  padded = apply(v, src.at[0, 4:].set(3), lengths, targets)
  np.testing.assert_allclose(padded[0], full[0], rtol=1e-5, atol=1e-5)
  best, scores = generation.beam_search(
    model, params, src, lengths, beam_size=3, max_length=4, eos_id=EOS, length_penalty=0.0
  )
  np.testing.assert_allclose(
    scores, sequence_log_prob(model, params, src, lengths, best), rtol=1e-4
  )
  # A step past the cache's room would drop its key and value: NaN, not a silently wrong row.
  assert np.all(np.isnan(step(v, targets[:, 0], cache)[0]))
  with pytest.raises(ValueError, match='num_steps=0: the cache needs room'):
    model.apply(v, encode(v, src), 0, method='init_cache')


def test_beam_search_with_length_penalty_and_length_caps_is_exhaustive_search(
  mt_seq2seq, fast_compilation
):
  """With beams enough to hold every hypothesis, beam search returns the best of all outputs under
  the GNMT length penalty, and never one longer than its example's cap (ended by a forced EOS)."""
  model, params = mt_seq2seq
  src, lengths = jnp.array([[3, 4, 3, 4, 2, 0], [4, 4, 2, 0, 0, 0]]), jnp.array([5, 3])
  words, n = (1, 3, 4), 3  # Every id but padding and EOS; outputs of at most 3 ids.
  hypotheses = [(*w, EOS) for k in range(n) for w in itertools.product(words, repeat=k)]
  hypotheses += list(itertools.product(words, repeat=n))  # 40 in all: no EOS within the n steps.
  has_eos = np.array([h[-1] == EOS for h in hypotheses])
  sizes = np.array([len(h) for h in hypotheses])
  tokens = jnp.array([list(h) + [0] * (n - len(h)) for h in hypotheses])
  score = jax.jit(functools.partial(sequence_log_prob, model))
  repeat = lambda x, b: jnp.repeat(x[b : b + 1], len(tokens), 0)
  scores = [np.asarray(score(params, repeat(src, b), repeat(lengths, b), tokens)) for b in range(2)]
  chosen = {}
  for alpha, caps in ((0.0, (4, 4)), (0.6, (3, 2)), (3.0, (2, 4))):
    best, _ = generation.beam_search(
      model,
      params,
      src,
      lengths,
      beam_size=len(hypotheses),
      max_length=n,
      eos_id=EOS,
      length_penalty=alpha,
      max_output_lengths=jnp.array(caps),
    )
    for b, cap in enumerate(caps):
      # A cap within the n steps forces an EOS by then; a larger one allows no EOS at all.
      allowed = (sizes <= cap) & (has_eos | (cap > n))
      penalised = np.where(allowed, scores[b] / ((5.0 + sizes) / 6.0) ** alpha, -np.inf)
      expected = tokens[int(np.argmax(penalised))]
      np.testing.assert_array_equal(best[b], expected, err_msg=f'alpha {alpha}, cap {cap}')
      chosen[alpha, b] = int(generation.sequence_lengths(best[b], EOS))
  assert chosen[3.0, 1] >= chosen[0.0, 1]  # A larger alpha favours longer outputs.


def test_beam_search_under_jit_takes_traced_length_caps(mt_seq2seq):
  model, params = mt_seq2seq
  src, lengths, caps = (
    jnp.array([[3, 4, 3, 4, 2, 0], [4, 4, 2, 0, 0, 0]]),
    jnp.array([5, 3]),
    (2, 3),
  )
  search = functools.partial(generation.beam_search, model, beam_size=2, max_length=3, eos_id=EOS)
  traced = jax.jit(lambda *args: search(*args[:3], max_output_lengths=args[3]))
  ids, scores = traced(params, src, lengths, jnp.array(caps))
  expected_ids, expected_scores = search(params, src, lengths, max_output_lengths=jnp.array(caps))
  np.testing.assert_array_equal(ids, expected_ids)
  np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)
  assert np.all(np.asarray(generation.sequence_lengths(ids, EOS)) <= np.array(caps))


@pytest.mark.parametrize('which', ['seq2seq', 'mt_seq2seq'])
def test_beam_search_equals_a_plain_python_beam_search(which, request):
  """Against `reference.beam_search` (fairseq's rule) querying the model by teacher forcing, for
  beam sizes 1-3, penalties 0 and 0.6, with and without per-example output caps, minimum lengths
  0 and 1; vocabularies of 20 and 5 (where 2 * beam_size extensions exceed the real ones)."""
  model, params = request.getfixturevalue(which)
  src, lengths, max_length = jnp.array([[3, 4, 3, 2, 4], [4, 3, 2, 0, 0]]), jnp.array([5, 3]), 5
  forward = jax.jit(
    lambda source, length, targets: model.apply({'params': params}, source, length, targets)
  )
  memo = {}

  def next_log_probs(row, prefix):
    if (row, prefix) not in memo:
      targets = jnp.array([list(prefix) + [1] * (max_length - len(prefix))])
      logits = forward(src[row : row + 1], lengths[row : row + 1], targets)[0, len(prefix)]
      memo[row, prefix] = np.asarray(jax.nn.log_softmax(logits))
    return memo[row, prefix]

  settings = itertools.product((1, 2, 3), (0.0, 0.6), (None, (3, 4)), (0, 1))
  for beam_size, alpha, caps, min_length in settings:
    best, scores = generation.beam_search(
      model,
      params,
      src,
      lengths,
      beam_size=beam_size,
      max_length=max_length,
      eos_id=EOS,
      length_penalty=alpha,
      max_output_lengths=None if caps is None else jnp.array(caps),
      min_length=min_length,
    )
    for row in range(2):
      tokens, score = ref.beam_search(
        functools.partial(next_log_probs, row),
        beam_size,
        max_length,
        EOS,
        alpha,
        None if caps is None else caps[row],
        min_length,
      )
      where = f'beam {beam_size}, alpha {alpha}, caps {caps}, min {min_length}, row {row}'
      np.testing.assert_array_equal(
        best[row], list(tokens) + [0] * (max_length - len(tokens)), err_msg=where
      )
      np.testing.assert_allclose(scores[row], score, rtol=1e-4, err_msg=where)


class _TableSeq2Seq(LunaSeq2Seq):
  """A stand-in decoder whose next-token probabilities are a fixed table of prefixes:
  `TABLE[prefix]` (token -> weight, every other token 1e-3, normalised); after any other prefix
  every token is equally likely."""

  TABLE = {
    (): {3: 0.6, 4: 0.3},
    (3,): {5: 0.98},
    (4,): {EOS: 0.5, 6: 0.45},
    (3, 5): {6: 0.5, 7: 0.49},
  }

  def setup(self):
    prefixes = list(self.TABLE)
    rows = np.full((len(prefixes) + 1, 8), 1e-3)
    follow = np.full((len(prefixes) + 1, 8), len(prefixes), np.int32)  # the last row: the rest
    for row, prefix in enumerate(prefixes):
      for token, probability in self.TABLE[prefix].items():
        rows[row, token] = probability
      for token in range(8):
        if prefix + (token,) in self.TABLE:
          follow[row, token] = prefixes.index(prefix + (token,))
    self.log_probs = jnp.log(jnp.asarray(rows / rows.sum(1, keepdims=True), jnp.float32))
    self.follow = jnp.asarray(follow)

  def encode(self, inputs, lengths, *, train=False):
    return inputs

  def init_cache(self, encoded, num_steps=None):
    return {'row': jnp.full((encoded.shape[0],), -1, jnp.int32)}

  def decode_step(self, tokens, cache):
    row = jnp.where(cache['row'] < 0, 0, self.follow[jnp.maximum(cache['row'], 0), tokens])
    return self.log_probs[row], {'row': row}


@pytest.mark.parametrize('alpha', [0.0, 0.6])
def test_beam_search_keeps_a_finished_hypothesis_that_live_ones_outscore_for_a_while(alpha):
  """[4, EOS] ends at step 2 with probability 0.17; live [3, 5, 6] and [3, 5, 7] (0.33 and 0.32)
  outscore it at step 3, then must end at step 4, each with probability 1/8. A beam of 2 that kept
  finished and live hypotheses in the same slots lost [4, EOS] at step 3."""
  model = _TableSeq2Seq(dataclasses.replace(CFG, vocab_size=8), bos_id=1)
  best, score = generation.beam_search(
    model,
    {},
    jnp.array([[3, 4, 2]]),
    jnp.array([3]),
    beam_size=2,
    max_length=4,
    eos_id=EOS,
    length_penalty=alpha,
    max_output_lengths=jnp.array([4]),
  )
  np.testing.assert_array_equal(best, [[4, EOS, 0, 0]])
  table = model.apply({}, method=lambda m: m.log_probs)
  np.testing.assert_allclose(score, [table[0, 4] + table[2, EOS]], rtol=1e-6)


class _EarlyEosSeq2Seq(_TableSeq2Seq):
  TABLE = {(): {3: 0.5, EOS: 0.45}}


def test_beam_one_ends_where_greedy_ends():
  """The EOS ranks second at step 1: greedy goes on with 3, and so must a beam of 1 (an EOS
  outside the best `beam_size` extensions is not a finished hypothesis)."""
  model = _EarlyEosSeq2Seq(dataclasses.replace(CFG, vocab_size=8), bos_id=1)
  source = (jnp.array([[3, 4, 2]]), jnp.array([3]))
  greedy = generation.greedy_decode(model, {}, *source, max_length=4, eos_id=EOS)
  for alpha in (0.0, 0.6):
    one, _ = generation.beam_search(
      model, {}, *source, beam_size=1, max_length=4, eos_id=EOS, length_penalty=alpha
    )
    np.testing.assert_array_equal(one, greedy)
  assert int(greedy[0, 0]) == 3


def _table_beam_search(model, **kwargs):
  """Beam search of a `_TableSeq2Seq` stand-in (its source is not read)."""
  return generation.beam_search(
    model, {}, jnp.array([[3, 4, 2]]), jnp.array([3]), eos_id=EOS, **kwargs
  )


def test_a_cap_of_one_forces_the_eos_even_before_min_length():
  """A cap of 1 leaves the EOS the only open token at step 1, where min_length=1 would close it:
  the cap wins (fairseq), so the output is [EOS] with its model log-probability, not a masked
  hypothesis."""
  model = _EarlyEosSeq2Seq(dataclasses.replace(CFG, vocab_size=8), bos_id=1)
  best, score = _table_beam_search(
    model, beam_size=2, max_length=3, max_output_lengths=jnp.array([1]), min_length=1
  )
  np.testing.assert_array_equal(best, [[EOS, 0, 0]])
  table = model.apply({}, method=lambda m: m.log_probs)
  np.testing.assert_allclose(score, [table[0, EOS]], rtol=1e-6)


class _ShortOrLongSeq2Seq(_TableSeq2Seq):
  """[EOS] (1 token) and [3, 4, EOS] (3 tokens) are the only finished hypotheses of a beam of 2:
  their log-probabilities are such that alpha 2 prefers [EOS] when the penalty counts the EOS
  ((5 + 1) / 6 against (5 + 3) / 6) and [3, 4, EOS] when it does not."""

  TABLE = {
    (): {EOS: 0.485, 3: 0.51},
    (3,): {4: 0.5, 5: 0.49},
    (3, 4): {EOS: 0.99},
    (3, 5): {6: 0.99},
  }


def test_the_length_penalty_of_a_finished_hypothesis_counts_its_eos():
  model = _ShortOrLongSeq2Seq(dataclasses.replace(CFG, vocab_size=8), bos_id=1)
  alpha = 2.0
  best, score = _table_beam_search(model, beam_size=2, max_length=4, length_penalty=alpha)
  table = np.asarray(model.apply({}, method=lambda m: m.log_probs))
  short, long = table[0, EOS], table[0, 3] + table[1, 4] + table[2, EOS]  # rows: TABLE order
  # The documented rule: score / ((5 + length) / 6) ** alpha, length counting the EOS.
  penalised = lambda score, length: score / ((5.0 + length) / 6.0) ** alpha
  assert penalised(short, 1) > penalised(long, 3)
  assert penalised(short, 0) < penalised(long, 2)  # Without the EOS the other would win.
  np.testing.assert_array_equal(best, [[EOS, 0, 0, 0]])
  np.testing.assert_allclose(score, [short], rtol=1e-6)


class _OneFinishedSeq2Seq(_TableSeq2Seq):
  """A beam of 2 finishes [EOS] only; [3, 4, 5] is still live at max_length 3."""

  TABLE = {
    (): {EOS: 0.36, 3: 0.6},
    (3,): {4: 0.7, 5: 0.25},
    (3, 4): {5: 0.7, 6: 0.25},
  }


def test_a_live_hypothesis_at_max_length_is_penalised_at_max_length():
  """[3, 4, 5] has the lower log-probability, but penalised at max_length 3 (as a finished one
  of 3 tokens would be) it outranks [EOS], which the penalty of its 1 token does not help."""
  model = _OneFinishedSeq2Seq(dataclasses.replace(CFG, vocab_size=8), bos_id=1)
  alpha = 0.6
  best, score = _table_beam_search(model, beam_size=2, max_length=3, length_penalty=alpha)
  table = np.asarray(model.apply({}, method=lambda m: m.log_probs))
  finished, live = table[0, EOS], table[0, 3] + table[1, 4] + table[2, 5]
  penalised = lambda score, length: score / ((5.0 + length) / 6.0) ** alpha
  assert live < finished and penalised(live, 3) > penalised(finished, 1)
  np.testing.assert_array_equal(best, [[3, 4, 5]])
  np.testing.assert_allclose(score, [live], rtol=1e-6)


def test_a_huge_length_penalty_never_returns_a_masked_hypothesis(mt_seq2seq):
  """Masked extensions score -1e9; divided by a huge penalty they must not outrank real ones."""
  model, params = mt_seq2seq
  best, score = generation.beam_search(
    model,
    params,
    jnp.array([[3, 4, 2]]),
    jnp.array([3]),
    beam_size=3,
    max_length=12,  # ((5 + 12) / 6) ** 30 is 4e13: -1e9 / 4e13 would outrank a log-probability.
    eos_id=EOS,
    length_penalty=30.0,
    max_output_lengths=jnp.array([1]),
  )
  np.testing.assert_array_equal(best, [[EOS] + [0] * 11])
  assert float(score[0]) > -100.0


def test_generation_refuses_to_run_past_the_position_table(lm, seq2seq):
  model, params = lm
  assert generation.generate(model, params, ids(1, 6), 10, jax.random.PRNGKey(0)).shape == (1, 16)
  with pytest.raises(
    ValueError, match=r'16 tokens \(max_length\); got 6 prompt tokens \+ 11 to generate = 17'
  ):
    generation.generate(model, params, ids(1, 6), 11, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=r'16 tokens \(max_length\); got 17 tokens'):
    model.apply({'params': params}, ids(1, 17))
  s2s, s2s_params = seq2seq
  src, lengths = ids(2, 9), jnp.array([9, 5])
  for search in (generation.greedy_decode, functools.partial(generation.beam_search, beam_size=2)):
    with pytest.raises(ValueError, match=r'16 tokens \(max_length\); got 17 output tokens'):
      search(s2s, s2s_params, src, lengths, max_length=17, eos_id=EOS)


def test_decode_step_past_the_position_table_gives_nan_not_a_clamped_row(lm):
  model, params = lm
  cache = model.apply({'params': params}, 1, method=LunaLM.init_cache)
  step = lambda position: model.apply(
    {'params': params},
    ids(1, 1)[:, 0],
    {**cache, 'position': jnp.array([position])},
    method=LunaLM.decode_step,
  )[0]
  assert np.all(np.isfinite(step(CFG.max_length - 1)))
  assert np.all(np.isnan(step(CFG.max_length)))


def _perturbed_norms(params):
  """Non-trivial LayerNorm parameters, so a comparison sees which norm is applied where."""
  return jax.tree_util.tree_map_with_path(
    lambda path, v: (
      v + 0.1 * jnp.asarray(RNG.normal(size=v.shape), v.dtype)
      if 'norm' in jax.tree_util.keystr(path)
      else v
    ),
    params,
  )


def _assert_close(actual, expected, rel=1e-5):
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert actual.shape == expected.shape
  err, scale = np.max(np.abs(actual - expected)), np.max(np.abs(expected))
  assert err <= rel * scale, f'max error {err:.3g} > {rel:g} * {scale:.3g}'


LAYER_CFG = dataclasses.replace(CFG, num_layers=1, activation='gelu', dropout_rate=0.0)
B, N, M = 2, 7, 9  # batch, target length, source length


def _layer_inputs():
  x = jnp.asarray(RNG.normal(size=(B, N, CFG.emb_dim)), jnp.float32)
  p = jnp.asarray(RNG.normal(size=(B, CFG.projection_length, CFG.emb_dim)), jnp.float32)
  memory = jnp.asarray(RNG.normal(size=(B, M, CFG.emb_dim)), jnp.float32)
  memory_mask = np.arange(M)[None] < np.array([[M], [5]])
  p_mask = np.arange(CFG.projection_length)[None] < np.array([[4], [3]])
  return x, p, memory, memory_mask, p_mask


@pytest.mark.parametrize('tie_kv', [False, True])
def test_luna_lm_layer_matches_the_reference(tie_kv):
  cfg = dataclasses.replace(LAYER_CFG, tie_kv=tie_kv)
  x = _layer_inputs()[0]
  layer = decoders.LunaLMLayer(cfg)
  params = _perturbed_norms(layer.init(jax.random.PRNGKey(5), x)['params'])
  expected = ref.luna_lm_layer(
    ref.to64(params), np.float64(x), cfg.num_heads, tie_kv, cfg.omega, attn.SOFTPLUS_BETA
  )
  _assert_close(layer.apply({'params': params}, x), expected)


@pytest.mark.parametrize('implementation', ['scan', 'chunked'])
def test_luna_seq2seq_layer_matches_the_reference(implementation):
  cfg = dataclasses.replace(LAYER_CFG, causal_implementation=implementation, num_pack_heads=1)
  x, p, memory, memory_mask, p_mask = _layer_inputs()
  args = (x, p, memory, jnp.asarray(memory_mask), jnp.asarray(p_mask))
  layer = decoders.LunaSeq2SeqLayer(cfg)
  params = _perturbed_norms(layer.init(jax.random.PRNGKey(6), *args)['params'])
  out_x, out_p = layer.apply({'params': params}, *args)
  e_x, e_p = ref.luna_seq2seq_layer(
    ref.to64(params),
    *map(np.float64, (x, p, memory)),
    memory_mask,
    p_mask,
    cfg.num_heads,
    1,
    cfg.tie_kv,
    cfg.omega,
    attn.SOFTPLUS_BETA,
  )
  _assert_close(out_x, e_x)
  _assert_close(out_p, e_p)


def test_transformer_seq2seq_layer_matches_the_reference():
  cfg = dataclasses.replace(LAYER_CFG, activation='relu')
  x, _, memory, memory_mask, _ = _layer_inputs()
  args = (x, memory, jnp.asarray(memory_mask))
  layer = decoders.TransformerSeq2SeqLayer(cfg)
  params = _perturbed_norms(layer.init(jax.random.PRNGKey(7), *args)['params'])
  expected = ref.transformer_decoder_layer(
    ref.to64(params), np.float64(x), np.float64(memory), memory_mask, cfg.num_heads
  )
  _assert_close(layer.apply({'params': params}, *args), expected)


@pytest.mark.parametrize('model', [LunaLM, LunaSeq2Seq, TransformerSeq2Seq])
def test_token_models_refuse_a_cls_vector(model):
  with pytest.raises(ValueError, match='prepend_cls=False'):
    model(dataclasses.replace(CFG, prepend_cls=True)).init(
      jax.random.PRNGKey(0),
      *([ids(1, 4), jnp.array([4]), ids(1, 4)] if model != LunaLM else [ids(1, 4)]),
    )
