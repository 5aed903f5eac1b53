"""Masked-LM pieces: masking statistics, the tied LM head, corpus packing, GLUE TSVs, grafting."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import corpora
import lra
from corpora import corpus, glue, text_tokenizers
from lra.cache import Cache
from luna_jax import build_model
from luna_jax.model import mlm
from luna_jax.training import pretrained

pytestmark = pytest.mark.usefixtures('fast_compilation')


def binomial_tolerance(n: int, p: float, sigmas: float = 6.0) -> float:
  """A bound on |observed rate - p| for n Bernoulli(p) draws that fails with negligible chance."""
  return sigmas * math.sqrt(p * (1 - p) / n)


def test_masking_rates_follow_bert_and_skip_padding_and_special_tokens():
  vocab, mask_id, special = 50, 50, (0, 7)
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, vocab, (256, 512)).astype(np.int32)
  tokens[rng.random(tokens.shape) < 0.05] = 7  # A special id (e.g. a separator) in the text.
  lengths = rng.integers(1, 513, 256).astype(np.int32)
  tokens[np.arange(512)[None, :] >= lengths[:, None]] = 0
  inputs, selected = jax.jit(
    lambda k: mlm.mask_tokens(
      k, tokens, lengths, mask_id=mask_id, vocab_size=vocab, special_ids=special
    )
  )(jax.random.PRNGKey(1))
  inputs, selected = np.asarray(inputs), np.asarray(selected)
  eligible = (np.arange(512)[None, :] < lengths[:, None]) & (tokens != 7) & (tokens != 0)
  assert not selected[~eligible].any()
  np.testing.assert_array_equal(inputs[~selected], tokens[~selected])
  n = int(eligible.sum())
  assert abs(selected.sum() / n - 0.15) < binomial_tolerance(n, 0.15)  # BERT's 15%.
  k = int(selected.sum())
  is_mask = inputs[selected] == mask_id
  kept = inputs[selected] == tokens[selected]
  # A random replacement equals the original token with probability 1/48 (48 regular ids).
  p_kept = 0.1 + 0.1 / 48
  assert abs(is_mask.mean() - 0.8) < binomial_tolerance(k, 0.8)
  assert abs(kept.mean() - p_kept) < binomial_tolerance(k, p_kept)
  replaced = inputs[selected & (inputs != mask_id)]
  assert not np.isin(replaced, special).any() and replaced.max() < vocab
  # The replacements are uniform over the regular ids: about 19 draws of each here, so every one,
  # the first and the last included, shows up among those that changed the token.
  randomised = inputs[selected & (inputs != mask_id) & (inputs != tokens)]
  np.testing.assert_array_equal(np.unique(randomised), np.setdiff1d(np.arange(vocab), special))


def test_masking_is_a_function_of_the_key():
  tokens = jnp.arange(1, 65, dtype=jnp.int32).reshape(2, 32) % 9 + 1
  lengths = jnp.array([32, 20])
  draw = lambda key: mlm.mask_tokens(key, tokens, lengths, mask_id=10, vocab_size=10)  # noqa: E731
  key = jax.random.fold_in(jax.random.PRNGKey(3), 17)  # The trainer's (state.rng, step) key.
  first, again, other = draw(key), draw(key), draw(jax.random.fold_in(jax.random.PRNGKey(3), 18))
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[1], other[1])


def test_loss_counts_selected_tokens_only():
  objective = mlm.MaskedLanguageModel(vocab_size=7)
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))
  selected = jnp.zeros((2, 5), bool).at[0, 1].set(True).at[1, 3].set(True)
  batch = {
    'targets': jnp.array([[1, 2, 3, 4, 5], [6, 1, 2, 3, 4]]),
    'selected': selected,
    'weights': jnp.ones(2),
  }
  sums = objective.metric_sums(logits, batch)
  # Changing the logits of unselected positions changes nothing.
  other = logits.at[0, 0].set(100.0).at[1, 4].set(-100.0)
  assert objective.metric_sums(other, batch) == sums
  expected = -(jax.nn.log_softmax(logits[0, 1])[2] + jax.nn.log_softmax(logits[1, 3])[3])
  np.testing.assert_allclose(sums['loss'], expected, rtol=1e-6)
  assert float(sums['count']) == 2.0
  # A padding row of an evaluation batch (weight 0) counts for nothing.
  padded = objective.metric_sums(logits, {**batch, 'weights': jnp.array([1.0, 0.0])})
  assert float(padded['count']) == 1.0
  metrics = objective.summarize(jax.device_get(sums))
  assert metrics['perplexity'] == pytest.approx(math.exp(float(expected) / 2), rel=1e-5)


def test_perplexity_is_the_exponential_of_the_mean_masked_token_loss():
  objective = mlm.MaskedLanguageModel(vocab_size=7)
  metrics = objective.summarize({'loss': 40.0, 'correct': 1.0, 'count': 4.0})
  assert metrics['loss'] == pytest.approx(10.0)
  # An untrained model's loss is about ln(vocab), 10 nats for a 22k vocabulary: no cap there.
  assert metrics['perplexity'] == pytest.approx(math.exp(10.0), rel=1e-9)


def test_prepare_masks_the_inputs_and_keeps_the_originals_as_targets():
  objective = mlm.MaskedLanguageModel(vocab_size=16)
  tokens = jnp.tile(jnp.arange(1, 16, dtype=jnp.int32), (4, 4))
  batch = {'inputs': tokens, 'lengths': jnp.full(4, 60), 'targets': jnp.zeros(4, jnp.int32)}
  prepared = objective.prepare(batch, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(prepared['targets'], tokens)
  assert bool(prepared['selected'].any())
  changed = prepared['inputs'] != tokens
  assert not bool((changed & ~prepared['selected']).any())
  assert bool((prepared['inputs'] == 16).any())  # The mask id is the data's vocab_size.


def tiny_mlm(name, **model):
  """A one-layer masked LM of width 16 over 12 data ids (and the mask id), 8 positions."""
  config = {'name': name, 'num_layers': 1, 'emb_dim': 16, 'num_heads': 2, 'mlp_dim': 32}
  return build_model(
    {**config, 'projection_length': 4, **model}, vocab_size=12, num_classes=12, max_length=8
  )


@pytest.mark.parametrize('encoder', ['luna', 'transformer'])
def test_lm_head_is_tied_to_the_input_embedding(encoder):
  model = tiny_mlm(f'{encoder}_mlm')
  tokens, lengths = jnp.ones((2, 8), jnp.int32), jnp.array([8, 5])
  params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, lengths)['params']
  assert set(params) == {'sequence_encoder', 'lm_head'}
  assert set(params['lm_head']) == {'dense', 'norm', 'bias'}  # No output matrix of its own.
  logits = model.apply({'params': params}, tokens, lengths)
  assert logits.shape == (2, 8, 13)
  embedding = params['sequence_encoder']['embed']['token_embedding']['embedding']
  changed = jax.tree.map(lambda x: x, params)
  changed['sequence_encoder']['embed']['token_embedding']['embedding'] = embedding.at[5].add(1.0)
  delta = model.apply({'params': changed}, tokens, lengths) - logits
  assert float(jnp.abs(delta[..., 5]).max()) > 0  # The output row of id 5 is the embedding row.


def test_each_position_is_predicted_from_its_own_state_after_the_cls():
  """With a prepended CLS vector (pooling 'cls', the pretraining default) the encoder has n + 1
  states: token i's logits come from state i + 1, and the CLS state predicts nothing."""
  model = tiny_mlm('luna_mlm', pooling='cls')
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 8), 1, 12)
  lengths = jnp.array([8, 6])
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, lengths)
  assert 'cls' in variables['params']['sequence_encoder']['embed']

  def from_states(m, t, n):
    states = m.sequence_encoder(t, n).x
    embedding = m.sequence_encoder.variables['params']['embed']['token_embedding']['embedding']
    return states, m.lm_head(states[:, 1:], embedding)

  states, expected = model.apply(variables, tokens, lengths, method=from_states)
  assert states.shape[1] == 9
  np.testing.assert_allclose(model.apply(variables, tokens, lengths), expected, rtol=1e-6)


def write_lines(path, lines):
  path.write_text(''.join(line + '\n' for line in lines), encoding='utf-8')
  return path


def test_corpus_packs_documents_with_separators_into_blocks(tmp_path):
  write_lines(tmp_path / 'a.txt', ['abc', '', 'de'])
  write_lines(tmp_path / 'b.txt', ['fghij'])
  data = corpora.load_task('corpus', tmp_path, max_length=4, heldout_fraction=0.3, cache=False)
  sep = text_tokenizers.BYTE_SEPARATOR_ID
  stream = [*b'abc', -1, *b'de', -1, *b'fghij', -1]
  expected = np.array([t + 1 if t >= 0 else sep for t in stream][:12]).reshape(3, 4)
  blocks = np.concatenate([data.train.inputs, data.validation.inputs])
  assert sorted(map(tuple, blocks)) == sorted(map(tuple, expected))
  assert data.validation.num_examples == 1 and data.test is data.validation
  np.testing.assert_array_equal(data.train.targets, data.train.inputs)
  assert lra.vocabulary(data) == 'bytes' and lra.special_ids(data) == (0, sep)


def test_corpus_keeps_a_training_block_whatever_the_heldout_fraction(tmp_path):
  write_lines(tmp_path / 'a.txt', ['abcdefg'])  # Two blocks of 4 with the separator.
  data = corpora.load_task('corpus', tmp_path, max_length=4, heldout_fraction=0.9, cache=False)
  assert data.train.num_examples == 1 and data.validation.num_examples == 1


def test_corpus_is_cached(tmp_path):
  write_lines(tmp_path / 'a.txt', ['one document', 'another document'])
  cache = Cache(tmp_path / 'cache')
  first = corpus.load(
    tmp_path, cache=cache, max_length=8, tokenizer='bytes', heldout_fraction=0.2, split_seed=0
  )
  again = corpus.load(
    tmp_path, cache=cache, max_length=8, tokenizer='bytes', heldout_fraction=0.2, split_seed=0
  )
  assert isinstance(again.train.inputs, np.memmap)
  np.testing.assert_array_equal(first.train.inputs, again.train.inputs)


@pytest.mark.parametrize(
  'lines, message',
  [
    ([], 'the corpus is empty'),
    (['', '   '], 'the corpus is empty'),
    (['short'], r'1 document\(s\), 6 tokens \(bytes\) make 0 block\(s\) of max_length 16'),
  ],
)
def test_bad_corpus_fails_naming_the_file(tmp_path, lines, message):
  path = write_lines(tmp_path / 'c.txt', lines)
  with pytest.raises(lra.DataError, match=f'{path}.*{message}'):
    corpora.load_task('corpus', tmp_path, max_length=16, cache=False)


def test_undecodable_line_names_file_and_line(tmp_path):
  (tmp_path / 'c.txt').write_bytes(b'fine\nbad \xff byte\n')
  with pytest.raises(lra.DataError, match=r'c\.txt:2: not valid UTF-8'):
    corpora.load_task('corpus', tmp_path, max_length=2, cache=False)


def test_missing_corpus_and_tokenizer_fail_clearly(tmp_path):
  with pytest.raises(lra.DataError, match='no corpus'):
    corpora.load_task('corpus', tmp_path / 'nothing', cache=False)
  write_lines(tmp_path / 'a.txt', ['text'])
  with pytest.raises(lra.DataError, match='no such file.*python -m corpora.text_tokenizers'):
    corpora.load_task('corpus', tmp_path, tokenizer=str(tmp_path / 'spm.model'), cache=False)


def test_sentencepiece_tokenizer_trains_and_packs(tmp_path):
  rng = np.random.default_rng(0)
  words = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta']
  write_lines(tmp_path / 'a.txt', [' '.join(rng.choice(words, 12)) for _ in range(200)])
  model = text_tokenizers.train_sentencepiece([tmp_path / 'a.txt'], str(tmp_path / 'spm'), 24)
  tok = text_tokenizers.load_tokenizer(str(model))
  assert tok.vocab_size == 24 and tok.name.startswith('sentencepiece:')
  data = corpora.load_task('corpus', tmp_path, max_length=16, tokenizer=str(model), cache=False)
  assert data.vocab_size == 24 and lra.vocabulary(data) == tok.name
  assert data.train.inputs.max() < 24
  assert (data.train.inputs == text_tokenizers.SP_EOS_ID).any()  # Documents are separated.
  # The BOS is no text either: masked-LM never selects it nor draws it as a random replacement.
  assert text_tokenizers.SP_BOS_ID not in mlm.regular_ids(24, lra.special_ids(data))


def test_split_document_counts_the_joining_space_against_the_limit():
  """Two 5-byte sentences and the space between them are 11 bytes: over a limit of 10, they stay
  two pieces."""
  pieces = text_tokenizers.split_document('Eins. Zwei.', 10)
  assert all(len(p.encode('utf-8')) <= 10 for p in pieces)
  assert pieces == ['Eins.', 'Zwei.']
  assert text_tokenizers.split_document('Eins. Zwei. Drei.', 11) == ['Eins. Zwei.', 'Drei.']


GLUE_FILES = {
  'sst2': ('sentence\tlabel\n', ['it is good\t1', 'it is bad\t0']),
  'qnli': (
    'index\tquestion\tsentence\tlabel\n',
    ['0\twhy?\tbecause.\tentailment', '1\twho?\tnobody.\tnot_entailment'],
  ),
  'qqp': (
    'id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n',
    ['0\t1\t2\ta?\tb?\t0', '1\t3\t4\tc?\tc?\t1'],
  ),
}


@pytest.mark.parametrize('task', sorted(GLUE_FILES))
def test_glue_tsv_reads_sentences_and_pairs(tmp_path, task):
  header, rows = GLUE_FILES[task]
  for name in ('train.tsv', 'dev.tsv'):
    (tmp_path / name).write_text(header + '\n'.join(rows) + '\n')
  data = corpora.load_task('glue', tmp_path, glue_task=task, max_length=32, cache=False)
  np.testing.assert_array_equal(data.train.targets, [1, 0] if task == 'sst2' else [0, 1])
  assert data.num_classes == 2 and data.test is data.validation
  first = rows[0].split('\t')
  texts = [first[0]] if task == 'sst2' else first[-3:-1]
  ids = [t + 1 for t in texts[0].encode()]
  if len(texts) == 2:
    ids += [text_tokenizers.BYTE_SEPARATOR_ID] + [t + 1 for t in texts[1].encode()]
  np.testing.assert_array_equal(data.train.inputs[0, : data.train.lengths[0]], ids)


@pytest.mark.parametrize(
  'row, message',
  [
    ('only one field', r'dev\.tsv:3: 1 tab-separated field\(s\), the header has 2'),
    ('text\tmaybe', r"dev\.tsv:3: label 'maybe' in column 'label' is not one of"),
  ],
)
def test_malformed_glue_row_names_file_and_line(tmp_path, row, message):
  (tmp_path / 'train.tsv').write_text('sentence\tlabel\nok\t1\n')
  (tmp_path / 'dev.tsv').write_text(f'sentence\tlabel\nok\t1\n{row}\n')
  with pytest.raises(lra.DataError, match=message):
    glue.load(tmp_path, cache=Cache(None), max_length=8, glue_task='sst2', tokenizer='bytes')


def test_glue_qqp_skips_rows_with_missing_fields_as_fairseq_does(tmp_path, caplog):
  header, rows = GLUE_FILES['qqp']
  for name in ('train.tsv', 'dev.tsv'):
    (tmp_path / name).write_text(header + '\n'.join([rows[0], '2\t5\t6\ta question', rows[1]]))
  data = glue.load(tmp_path, cache=Cache(None), max_length=8, glue_task='qqp', tokenizer='bytes')
  np.testing.assert_array_equal(data.train.targets, [0, 1])
  assert f"{tmp_path / 'train.tsv'}: skipped 1 row(s) without the header's 6" in caplog.text
  assert '(lines 3)' in caplog.text


def test_glue_text_is_stripped_before_tokenisation(tmp_path):
  for name in ('train.tsv', 'dev.tsv'):
    (tmp_path / name).write_text('sentence\tlabel\n it is good \t1\nit is good\t1\n')
  data = glue.load(tmp_path, cache=Cache(None), max_length=16, glue_task='sst2', tokenizer='bytes')
  np.testing.assert_array_equal(data.train.lengths, [10, 10])
  np.testing.assert_array_equal(data.train.inputs[0], data.train.inputs[1])


def test_unlabelled_view_keeps_inputs_and_drops_labels(tiny_lra_data):
  data = lra.load_task('retrieval', tiny_lra_data['retrieval'][0], **tiny_lra_data['retrieval'][1])
  view = lra.unlabelled(data)
  assert not view.dual and view.train.num_examples == 2 * data.train.num_examples
  np.testing.assert_array_equal(view.train.inputs[: data.train.num_examples], data.train.inputs)
  np.testing.assert_array_equal(view.train.targets, view.train.inputs)
  assert lra.vocabulary(view) == 'bytes' and lra.special_ids(view) == (0,)


def small_model(name, **model):
  config = {
    'name': name,
    'num_layers': 1,
    'emb_dim': 16,
    'num_heads': 2,
    'mlp_dim': 32,
    'projection_length': 4,
    'classifier_hidden_dim': 8,
    **model,
  }
  return config


def init_params(name, vocab_size, max_length, seed=0, shapes_only=False, **model):
  """A small model's parameters (or their shapes and dtypes: all `graft` checks)."""
  module = build_model(
    small_model(name, **model), vocab_size=vocab_size, num_classes=3, max_length=max_length
  )
  init = functools.partial(
    module.init,
    jax.random.PRNGKey(seed),
    jnp.ones((1, max_length), jnp.int32),
    jnp.array([max_length]),
  )
  if shapes_only:
    return jax.eval_shape(init)['params']
  return jax.device_get(jax.jit(init)()['params'])


@pytest.fixture(scope='module')
def pretrained_params():
  """A masked LM's parameters: vocabulary 16 + the mask id, 16 positions."""
  return init_params('luna_mlm', 16, 16, seed=1)


def as_encoder(params, vocabulary='listops', name='luna'):
  return pretrained.PretrainedEncoder(params['sequence_encoder'], vocabulary, name, 'ckpt')


def test_graft_takes_the_leading_rows_and_keeps_the_head(pretrained_params):
  source = pretrained_params
  fresh = init_params('luna', 16, 12, seed=2)
  grafted = pretrained.graft(fresh, as_encoder(source), vocabulary='listops', encoder_name='luna')
  src, got = source['sequence_encoder'], grafted['sequence_encoder']
  np.testing.assert_array_equal(
    got['embed']['token_embedding']['embedding'], src['embed']['token_embedding']['embedding'][:16]
  )
  np.testing.assert_array_equal(
    got['embed']['position_embedding'], src['embed']['position_embedding'][:13]
  )
  np.testing.assert_array_equal(got['projected_embeddings'], src['projected_embeddings'])
  jax.tree.map(np.testing.assert_array_equal, grafted['head'], fresh['head'])


@pytest.mark.parametrize(
  'change, message',
  [
    (dict(vocabulary='bytes'), "vocabulary 'listops', this task uses 'bytes'"),
    (dict(encoder_name='transformer'), "pretrained encoder 'luna', this model 'transformer'"),
    (dict(vocab_size=18), r'embedding \(vocabulary size\) is \(17, 16\) pretrained, \(18, 16\)'),
    (
      dict(max_length=20),
      r'position_embedding \(max_length\) is \(17, 16\) pretrained, '
      r'\(21, 16\)',
    ),
    (dict(pooling='mean'), r"only pretrained \['embed/cls'\]"),
    (
      dict(num_layers=3),
      r'encoders differ: 1 pretrained layer\(s\), 3 in this model; only pretrained \[\], only '
      r'this model \d+ arrays \(layer_1/.*, \.\.\.\)\. Use',
    ),
    (dict(emb_dim=8, num_heads=2), r'cls is \(1, 1, 16\) pretrained, \(1, 1, 8\) in this'),
  ],
)
def test_graft_mismatch_names_both_sides(pretrained_params, change, message):
  source = as_encoder(pretrained_params)
  vocabulary = change.pop('vocabulary', 'listops')
  encoder_name = change.pop('encoder_name', 'luna')
  sizes = {'vocab_size': change.pop('vocab_size', 16), 'max_length': change.pop('max_length', 16)}
  fresh = init_params(encoder_name, **sizes, shapes_only=True, **change)
  with pytest.raises(pretrained.InitFromError, match=message):
    pretrained.graft(fresh, source, vocabulary=vocabulary, encoder_name=encoder_name)


def test_missing_init_from_path_fails_clearly(tmp_path):
  with pytest.raises(pretrained.InitFromError, match='neither a run.s workdir'):
    pretrained.load_encoder(str(tmp_path / 'nowhere'))
