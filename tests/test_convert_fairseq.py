"""The fairseq converter, the PyTorch-format reader and the GPT-2 BPE tokenizer, without PyTorch.

`tests/data/fairseq_luna_bert/{tied,untied}` were written by `benchmarks/fairseq_equivalence.py`:
a tiny random `luna_bert` of the authors' code (2 layers, width 16, l = 4, 16 positions) saved by
PyTorch as a fairseq checkpoint, its masked-LM logits and final P on two padded batches, and the
ids the authors' `LunaHubInterface.encode` gives texts with the folder's BPE files and dict.txt.
The other checkpoints here are written with `tests/torch_format.py` (the same format, no PyTorch).
"""

import argparse
import collections
import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from configs import glue as glue_config
from corpora import text_tokenizers
from luna_jax.model.build import build_model
from luna_jax.training import (
  checkpointing,
  convert_fairseq,
  pretrained,
  run_config,
  torch_checkpoint,
  trainer,
)
from luna_jax.training.loading import LoadRunError, load_run
from tests import torch_format
from tests.test_mlm import GLUE_FILES

pytestmark = pytest.mark.usefixtures('fast_compilation')

FIXTURES = Path(__file__).parent / 'data' / 'fairseq_luna_bert'
VARIANTS = ('tied', 'untied')
EMBEDDING = 'encoder.sentence_encoder.embed_tokens.weight'


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """Each fixture checkpoint converted: variant -> (output folder, record)."""
  root = tmp_path_factory.mktemp('converted')
  return {
    v: (
      root / v,
      convert_fairseq.convert(
        str(FIXTURES / v / 'model.pt'), str(FIXTURES / v / 'dict.txt'), str(root / v)
      ),
    )
    for v in VARIANTS
  }


def fixture_state(variant):
  """(args, the model state dict as numpy arrays with the LM head tied to the embedding)."""
  with torch_checkpoint.load(FIXTURES / variant / 'model.pt') as ckpt:
    model = collections.OrderedDict((k, ckpt.array(v)) for k, v in ckpt.obj['model'].items())
    args = ckpt.obj['args']
  model['encoder.lm_head.weight'] = model[EMBEDDING]
  return argparse.Namespace(**vars(args)), model


def write_checkpoint(path, args, model):
  """A fairseq checkpoint in PyTorch's format, written without PyTorch."""
  torch_format.save({'args': args, 'model': model, 'extra_state': {'epoch': 1}}, path)
  return str(path)


def params_of(output):
  tree, _, _ = checkpointing.read_checkpoint(str(output))
  return tree['params']


@pytest.mark.parametrize('variant', VARIANTS)
def test_the_authors_checkpoints_convert_to_their_logits_and_p(converted, variant):
  output, record = converted[variant]
  reference = np.load(FIXTURES / variant / 'reference.npz')
  model = build_model(
    record['config']['model'],
    vocab_size=44,
    num_classes=2,
    max_length=16,
    special_ids=(0, 1, 2, 3),
  )
  variables = {'params': params_of(output)}
  for k in range(2):
    tokens = reference[f'tokens_{k}']
    lengths = (tokens != text_tokenizers.FAIRSEQ_PAD_ID).sum(1)
    logits = model.apply(variables, jnp.asarray(tokens), jnp.asarray(lengths))
    real = np.arange(tokens.shape[1])[None, :] < lengths[:, None]
    np.testing.assert_allclose(
      np.asarray(logits)[real], reference[f'logits_{k}'][real], atol=1e-4, rtol=0
    )
    out = model.apply(
      variables,
      jnp.asarray(tokens),
      jnp.asarray(lengths),
      method=lambda m, t, n: m.sequence_encoder(t, n),
    )
    p = reference[f'p_{k}']
    np.testing.assert_allclose(np.asarray(out.p)[:, : p.shape[1]], p, atol=1e-4, rtol=0)
  assert record['converted_from']['architecture']['tie_kv'] == (variant == 'tied')
  assert record['vocabulary'] == text_tokenizers.load_tokenizer(str(FIXTURES / variant)).name
  assert json.loads((output / convert_fairseq.RECORD_FILE).read_text()) == record
  encoder = pretrained.load_encoder(str(output))
  assert encoder.encoder_name == 'luna' and 'cls' not in encoder.params['embed']
  with pytest.raises(LoadRunError, match=rf'{output} holds a conversion .* --config.init_from='):
    load_run(str(output))  # Not a training run.


def test_a_checkpoint_written_without_torch_converts_alike_and_half_precision_exactly(
  converted, tmp_path
):
  args, model = fixture_state('untied')
  head = 'classification_heads.sentence_classification_head.dense.weight'
  path = write_checkpoint(tmp_path / 'same.pt', args, {**model, head: np.ones((2, 16), np.float32)})
  record = convert_fairseq.convert(
    path, str(FIXTURES / 'untied' / 'dict.txt'), str(tmp_path / 'same')
  )
  assert head in record['converted_from']['skipped']
  expected = checkpointing.flat_leaves(params_of(converted['untied'][0]))
  got = checkpointing.flat_leaves(params_of(tmp_path / 'same'))
  assert set(got) == set(expected)
  for name, array in got.items():
    np.testing.assert_array_equal(array, expected[name], err_msg=name)
  half = collections.OrderedDict((k, v.astype(np.float16)) for k, v in model.items())
  half['encoder.lm_head.weight'] = half[EMBEDDING]
  path = write_checkpoint(tmp_path / 'half.pt', args, half)
  convert_fairseq.convert(path, str(FIXTURES / 'untied' / 'dict.txt'), str(tmp_path / 'half'))
  got = checkpointing.flat_leaves(params_of(tmp_path / 'half'))
  assert got['sequence_encoder/projected_embeddings'].dtype == np.float32
  np.testing.assert_array_equal(
    got['sequence_encoder/layer_1/attention/pack_value/kernel'],
    half['encoder.sentence_encoder.layers.1.self_attn.pv_proj.weight'].astype(np.float32).T,
  )
  np.testing.assert_array_equal(
    got['sequence_encoder/embed/position_embedding'],
    half['encoder.sentence_encoder.embed_positions.weight'][2:].astype(np.float32),
  )


def test_an_old_checkpoint_whose_encoder_is_named_decoder_converts_alike(converted, tmp_path):
  # Old fairseq masked LMs saved the encoder under 'decoder.' (upgrade_state_dict_named).
  args, model = fixture_state('tied')
  assert all(k.startswith('encoder.') for k in model)
  old = collections.OrderedDict(
    ('decoder.' + k.removeprefix('encoder.'), v) for k, v in model.items()
  )
  path = write_checkpoint(tmp_path / 'old.pt', args, old)
  convert_fairseq.convert(path, str(FIXTURES / 'tied' / 'dict.txt'), str(tmp_path / 'old'))
  expected = checkpointing.flat_leaves(params_of(converted['tied'][0]))
  got = checkpointing.flat_leaves(params_of(tmp_path / 'old'))
  assert set(got) == set(expected)
  for name, array in got.items():
    np.testing.assert_array_equal(array, expected[name], err_msg=name)


def test_the_record_takes_each_dropout_rate_from_its_own_argument(tmp_path):
  rates = {'dropout': 0.1, 'attention_dropout': 0.2, 'activation_dropout': 0.3}
  path = write_checkpoint(tmp_path / 'model.pt', *_edit(args=rates))
  record = convert_fairseq.convert(path, str(FIXTURES / 'tied' / 'dict.txt'), str(tmp_path / 'out'))
  model = record['config']['model']
  assert model['dropout_rate'] == rates['dropout']
  assert model['attention_dropout_rate'] == rates['attention_dropout']
  assert model['activation_dropout_rate'] == rates['activation_dropout']


def _edit(variant='tied', **changes):
  """The fixture's (args, model) with `changes`: 'args' (a dict of updates), 'drop' (keys), 'add'
  (key -> array), 'replace' (key -> array)."""
  args, model = fixture_state(variant)
  for name, value in changes.get('args', {}).items():
    setattr(args, name, value)
  for key in changes.get('drop', ()):
    del model[key]
  model.update(changes.get('add', {}))
  model.update(changes.get('replace', {}))
  return args, model


def _roberta_like():
  args, model = _edit(args={'arch': 'luna_bert'})
  renamed = collections.OrderedDict(
    (k.replace('pc_proj', 'k_proj'), v) for k, v in model.items() if 'projected' not in k
  )
  return args, renamed


BAD_CHECKPOINTS = {
  'transformer': (
    lambda: (
      argparse.Namespace(arch='transformer_wmt_en_de'),
      {'encoder.embed_tokens.weight': np.zeros((8, 4), np.float32)},
    ),
    "arch 'transformer_wmt_en_de' is not a Luna masked LM",
  ),
  'luna_translation': (
    lambda: _edit(args={'arch': 'luna_base_tied'}),
    'a Luna translation model',
  ),
  'roberta': (lambda: _edit(args={'arch': 'roberta_base'}), 'a RoBERTa checkpoint'),
  'roberta_keys': (_roberta_like, 'a RoBERTa/Transformer masked LM, not Luna'),
  'fixed_projection': (
    lambda: _edit(args={'fix_projection_length': True}),
    'fix_projection_length=True is not supported',
  ),
  'relu': (lambda: _edit(args={'activation_fn': 'relu'}), "activation_fn='relu'"),
  'unknown_key': (
    lambda: _edit(add={'encoder.sentence_encoder.layer_norm.weight': np.ones(16, np.float32)}),
    r"unknown key\(s\) \['encoder.sentence_encoder.layer_norm.weight'\], missing key\(s\) \[\]",
  ),
  'missing_key': (
    lambda: _edit(drop=['encoder.sentence_encoder.layers.1.fc2.bias']),
    r"missing key\(s\) \['encoder.sentence_encoder.layers.1.fc2.bias'\]",
  ),
  'shape': (
    lambda: _edit(
      replace={'encoder.sentence_encoder.projected_embeddings': np.zeros((8, 16), np.float32)}
    ),
    r'projected_embeddings has shape \(8, 16\), expected \(4, 16\)',
  ),
  'untied_head': (
    lambda: _edit(replace={'encoder.lm_head.weight': np.zeros((45, 16), np.float32)}),
    'untied LM head',
  ),
  'untied_kv_flag': (lambda: _edit(args={'untie_luna_kv': True}), 'unknown key'),
  'integer_weight': (
    lambda: _edit(
      replace={'encoder.sentence_encoder.projected_embeddings': np.zeros((4, 16), np.int64)}
    ),
    'projected_embeddings is int64, not a floating-point tensor',
  ),
}


@pytest.mark.parametrize('case', sorted(BAD_CHECKPOINTS))
def test_checkpoints_it_cannot_convert_fail_naming_why(case, tmp_path):
  make, message = BAD_CHECKPOINTS[case]
  path = write_checkpoint(tmp_path / 'model.pt', *make())
  with pytest.raises(convert_fairseq.ConversionError, match=message):
    convert_fairseq.convert(path, str(FIXTURES / 'tied' / 'dict.txt'), str(tmp_path / 'out'))
  assert not (tmp_path / 'out').exists()


def test_damaged_files_and_a_foreign_dictionary_fail_clearly(tmp_path):
  data = (FIXTURES / 'tied' / 'model.pt').read_bytes()
  dictionary = str(FIXTURES / 'tied' / 'dict.txt')
  (tmp_path / 'truncated.pt').write_bytes(data[: len(data) // 2])
  (tmp_path / 'legacy.pt').write_bytes(b'\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.rest')
  cases = {
    'truncated.pt': 'not a complete PyTorch checkpoint .truncated',
    'legacy.pt': 'legacy format of PyTorch < 1.6',
  }
  for name, message in cases.items():
    with pytest.raises(convert_fairseq.ConversionError, match=message):
      convert_fairseq.convert(str(tmp_path / name), dictionary, str(tmp_path / 'out'))
  lines = (FIXTURES / 'tied' / 'dict.txt').read_text().splitlines()
  (tmp_path / 'dict.txt').write_text('\n'.join(lines[:-1]) + '\n')
  with pytest.raises(convert_fairseq.ConversionError, match='has 45 rows.*gives 44 ids.*not the'):
    convert_fairseq.convert(
      str(FIXTURES / 'tied' / 'model.pt'), str(tmp_path / 'dict.txt'), str(tmp_path / 'out')
    )
  with pytest.raises(FileNotFoundError, match='no such checkpoint'):
    convert_fairseq.convert(str(tmp_path / 'absent.pt'), dictionary, str(tmp_path / 'out'))


def test_an_existing_output_needs_overwrite_and_only_a_conversion_is_replaced(tmp_path, capsys):
  model, dictionary = FIXTURES / 'tied' / 'model.pt', FIXTURES / 'tied' / 'dict.txt'
  argv = ['--checkpoint', str(model), '--dict', str(dictionary), '--output', str(tmp_path / 'out')]
  convert_fairseq.main(argv)
  assert 'Converted' in capsys.readouterr().out
  with pytest.raises(SystemExit) as exit_info:
    convert_fairseq.main(argv)
  assert exit_info.value.code == 2
  assert 'exists and is not empty; give --overwrite' in capsys.readouterr().err
  convert_fairseq.main([*argv, '--overwrite'])
  assert sorted(os.listdir(tmp_path)) == ['out']  # No staging folder left behind.
  (tmp_path / 'other').mkdir()
  (tmp_path / 'other' / 'notes.txt').write_text('mine')
  with pytest.raises(convert_fairseq.ConversionError, match='not written by this converter'):
    convert_fairseq.convert(str(model), str(dictionary), str(tmp_path / 'other'), overwrite=True)
  assert (tmp_path / 'other' / 'notes.txt').read_text() == 'mine'
  (tmp_path / 'empty').mkdir()  # An empty folder is not in the way: no --overwrite needed.
  convert_fairseq.main([*argv[:-1], str(tmp_path / 'empty')])
  assert (tmp_path / 'empty' / convert_fairseq.RECORD_FILE).is_file()


def test_the_reader_follows_strides_and_runs_no_code_from_the_pickle(tmp_path):
  base = np.arange(12, dtype=np.float32)
  view = torch_format.View(base, offset=1, shape=(2, 3), stride=(1, 4))
  call = torch_format.Call('posix', 'system', (f'touch {tmp_path / "ran"}',))
  torch_format.save({'view': view, 'call': call}, tmp_path / 'a.pt')
  with torch_checkpoint.load(tmp_path / 'a.pt') as ckpt:
    np.testing.assert_array_equal(ckpt.array(ckpt.obj['view']), [[1, 5, 9], [2, 6, 10]])
    assert isinstance(ckpt.obj['call'], torch_checkpoint.Opaque)
  assert not (tmp_path / 'ran').exists()


def test_the_reader_reads_a_big_endian_archive_as_its_values(tmp_path):
  arrays = {
    'weight': np.array([[1.5, -2.25], [3e-3, 7e5]], np.float32),
    'ids': np.array([1, -2, 2**40], np.int64),
  }
  torch_format.save(arrays, tmp_path / 'big.pt', byteorder='big')
  with torch_checkpoint.load(tmp_path / 'big.pt') as ckpt:
    for name, expected in arrays.items():
      got = ckpt.array(ckpt.obj[name])
      assert got.dtype == expected.dtype, name
      np.testing.assert_array_equal(got, expected, err_msg=name)


def test_the_reader_reads_bfloat16_tensors_exactly(tmp_path):
  # bfloat16 holds these exactly (8 significant bits, float32's exponents); float16 does not.
  values = np.array([1 + 2**-7, -0.5, 2.0**100, 2.0**-120], np.float32)
  torch_format.save({'w': values.astype(ml_dtypes.bfloat16)}, tmp_path / 'bf16.pt')
  with torch_checkpoint.load(tmp_path / 'bf16.pt') as ckpt:
    got = ckpt.array(ckpt.obj['w'])
  assert got.dtype == np.dtype(ml_dtypes.bfloat16)
  np.testing.assert_array_equal(got.astype(np.float32), values)


def test_the_reader_refuses_a_storage_longer_or_shorter_than_its_elements(tmp_path):
  values = np.arange(3, dtype=np.float32)
  path = tmp_path / 'a.pt'
  for extra in (values.itemsize, -values.itemsize):
    torch_format.save({'w': values}, path)
    size = values.nbytes + extra
    torch_format.edit_entry(path, 'archive/data/0', lambda data, n=size: (data + bytes(8))[:n])
    message = f'archive/data/0 has {size} bytes, expected {values.nbytes}'
    with torch_checkpoint.load(path) as ckpt:
      with pytest.raises(torch_checkpoint.TorchCheckpointError, match=message):
        ckpt.array(ckpt.obj['w'])


def test_the_reader_refuses_a_tensor_reaching_past_its_storage(tmp_path):
  base = np.arange(6, dtype=np.float32)
  views = {
    'fits': torch_format.View(base, offset=1, shape=(5,), stride=(1,)),  # Ends at element 5.
    'past': torch_format.View(base, offset=1, shape=(6,), stride=(1,)),  # Would read element 6.
    # Its last element is 0 + (2 - 1) * 1 + (2 - 1) * 5 = 6, also one past the end.
    'strided_past': torch_format.View(base, offset=0, shape=(2, 2), stride=(1, 5)),
  }
  torch_format.save(views, tmp_path / 'a.pt')
  with torch_checkpoint.load(tmp_path / 'a.pt') as ckpt:
    np.testing.assert_array_equal(ckpt.array(ckpt.obj['fits']), base[1:])
    for name in ('past', 'strided_past'):
      with pytest.raises(torch_checkpoint.TorchCheckpointError, match='reaches past its storage'):
        ckpt.array(ckpt.obj[name])


def test_the_reader_refuses_negative_strides(tmp_path):
  # Elements 5, 4, 3 lie inside the storage, but a PyTorch tensor never has a negative stride.
  base = np.arange(6, dtype=np.float32)
  view = torch_format.View(base, offset=5, shape=(3,), stride=(-1,))
  torch_format.save({'reversed': view}, tmp_path / 'a.pt')
  with torch_checkpoint.load(tmp_path / 'a.pt') as ckpt:
    with pytest.raises(torch_checkpoint.TorchCheckpointError, match=r'has strides \(-1,\)'):
      ckpt.array(ckpt.obj['reversed'])


def test_a_parameter_saved_with_python_state_loads_as_its_tensor(tmp_path):
  weight = np.arange(6, dtype=np.float32).reshape(2, 3)
  torch_format.save({'p': torch_format.Parameter(weight, {'note': 'x'})}, tmp_path / 'a.pt')
  with torch_checkpoint.load(tmp_path / 'a.pt') as ckpt:
    assert isinstance(ckpt.obj['p'], torch_checkpoint.TensorRef)
    np.testing.assert_array_equal(ckpt.array(ckpt.obj['p']), weight)


def test_gpt2_tokenizer_gives_the_ids_of_the_authors_hub_interface():
  for variant in VARIANTS:
    tok = text_tokenizers.load_tokenizer(str(FIXTURES / variant))
    reference = json.loads((FIXTURES / variant / 'reference.json').read_text())
    for texts, ids in zip(reference['texts'], reference['encoded'], strict=True):
      assert tok.join([tok.encode(t) for t in texts]).tolist() == ids, texts
    assert (tok.vocab_size, tok.separator_id, tok.special_ids) == (44, 2, (0, 1, 2, 3))


def test_fairseq_dictionary_rules_and_bad_tokenizer_folders(tmp_path):
  (tmp_path / 'dict.txt').write_text('a 5\nb c 4\na 3 #fairseq:overwrite\n')
  d = text_tokenizers.read_fairseq_dictionary(tmp_path / 'dict.txt')
  assert d.symbols == ('<s>', '<pad>', '</s>', '<unk>', 'a', 'b c', 'a')
  assert (d.indices['a'], d.indices['b c'], d.mask_id) == (6, 5, 7)
  # fairseq reads a count with int(): a negative one is a count too.
  (tmp_path / 'dict.txt').write_text('a -1\nb 0\n')
  assert text_tokenizers.read_fairseq_dictionary(tmp_path / 'dict.txt').symbols[4:] == ('a', 'b')
  bad = {
    'a 5\na 3\n': r"symbol 'a' again",
    'a\n': 'is not .<symbol> <count>',
    '<mask> 1\n': 'not a masked-LM dictionary',
    '<s> 1\n': r"symbol '<s>' again",
  }
  for text, message in bad.items():
    (tmp_path / 'dict.txt').write_text(text)
    with pytest.raises(text_tokenizers.DataError, match=message):
      text_tokenizers.read_fairseq_dictionary(tmp_path / 'dict.txt')
  shutil.copy(FIXTURES / 'tied' / 'dict.txt', tmp_path / 'dict.txt')
  with pytest.raises(text_tokenizers.DataError, match=r"\['encoder.json', 'vocab.bpe'\] missing"):
    text_tokenizers.load_tokenizer(str(tmp_path))
  with pytest.raises(text_tokenizers.DataError, match='no tokenizer given'):
    text_tokenizers.load_tokenizer('')


def test_glue_configs_of_the_released_models():
  tied, untied = (glue_config.get_config(f'sst2,luna_base_{v}') for v in VARIANTS)
  assert (tied.model.tie_kv, untied.model.tie_kv) == (True, False)
  for config in (tied, untied):
    assert (config.model.num_layers, config.model.emb_dim, config.model.projection_length) == (
      12,
      768,
      128,
    )
    assert config.model.classifier_activation == 'tanh' and config.optimizer.grad_clip_norm == 0
  assert glue_config.get_config('qqp,luna_base_tied').model.activation_dropout_rate == 0.1
  # The finetuning classifier's encoder is the converted release's (the masked LM has <mask>).
  arch = convert_fairseq.LunaBertArchitecture(
    'luna_base_untied_512', 12, 768, 3072, 12, 128, 512, False, 0.1, 0.1, 0.0
  )
  released = convert_fairseq.parameter_shapes(arch, 50264)
  classifier = build_model(untied.model.to_dict(), vocab_size=50264, num_classes=2, max_length=512)
  tokens = jnp.zeros((1, 512), jnp.int32)
  shapes = jax.eval_shape(lambda: classifier.init(jax.random.PRNGKey(0), tokens, jnp.ones(1)))
  encoder = checkpointing.flat_leaves(shapes['params']['sequence_encoder'])
  assert {f'sequence_encoder/{p}': tuple(a.shape) for p, a in encoder.items()} == {
    **{p: s for p, s in released.items() if p.startswith('sequence_encoder/')},
    'sequence_encoder/embed/token_embedding/embedding': (50264, 768),
  }
  with pytest.raises(ValueError, match='optionally followed by one of'):
    glue_config.get_config('sst2,cpu,luna_base_tied')


def test_glue_finetuning_initialises_from_the_converted_model(converted, tmp_path):
  header, rows = GLUE_FILES['qnli']
  for name in ('train.tsv', 'dev.tsv'):
    (tmp_path / name).write_text(header + '\n'.join(rows * 4) + '\n')
  config = glue_config.get_config('qnli,luna_base_tied')
  assert config.model.pooling == 'first' and config.data.options.max_length == 512
  config.model.update(
    num_layers=2, emb_dim=16, mlp_dim=32, num_heads=2, projection_length=4, classifier_hidden_dim=16
  )
  config.data.update(data_dir=str(tmp_path))
  config.data.options.update(tokenizer=str(FIXTURES / 'tied'), max_length=16)
  config.init_from = str(converted['tied'][0])
  config.training.update(
    num_devices=1, batch_size=4, num_train_steps=2, eval_every=2, checkpoint_every=2, log_every=1
  )
  config.optimizer.update(warmup_steps=1, steps_per_cycle=1)
  run = run_config.parse_config(config)
  data = trainer.load_data(run)
  first = data.train.inputs[0, : data.train.lengths[0]].tolist()
  assert first[0] == 0 and first[-1] == 2 and first.count(2) == 3  # <s> a </s> </s> b </s>
  model, optimizer, state = trainer.build(run, data)
  loaded = trainer.initialize_from(state, config.init_from, model, data, optimizer)
  stored = checkpointing.flat_leaves(params_of(converted['tied'][0])['sequence_encoder'])
  for path, array in checkpointing.flat_leaves(loaded.params['sequence_encoder']).items():
    np.testing.assert_array_equal(array, stored[path][: array.shape[0]], err_msg=path)
  results = trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['step'] == 2 and 0 <= results['test']['accuracy'] <= 1
