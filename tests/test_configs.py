"""The experiment configs: every task and variant builds, follows its recipe, and rejects typos."""

import functools
import importlib
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from ml_collections import ConfigDict, config_flags

import corpora
import lra
import luna_jax
from configs import base, variants, wmt14
from configs import listops as listops_config
from lra import prepare
from luna_jax import config_utils
from luna_jax.model import config as model_config
from luna_jax.training import command_line, run_config

CONFIGS = Path(__file__).parent.parent / 'configs'


def load(name, arg=None):
  return importlib.import_module(f'configs.{name}').get_config(arg)


@pytest.mark.parametrize('name', lra.TASKS)
@pytest.mark.parametrize('variant', variants.CONFIG_VARIANTS)
def test_every_task_and_variant_builds_a_complete_config(name, variant):
  config = load(name, variant)
  run_config.resolve_config(config)  # Exactly the expected keys in every section.
  if variant in base.TRANSFORMER_VARIANTS:
    assert config.model.name == 'transformer'
    assert config.model.attention_implementation == base.TRANSFORMER_VARIANTS[variant]
  else:
    assert config.model.name == 'luna'
    assert config.model.projection_length == int(variant[4:].split('_')[0])
    assert config.model.contextual_p == (not variant.endswith('_noncontextual'))
    # Table 3's P row: the mean of the last layer's P in every task; the others keep the task's.
    assert (config.model.pooling == 'p') == variant.endswith('_pmean')
    assert config.optimizer.schedule == 'constant * linear_warmup * rsqrt_normalized_decay'
  assert config.training.batch_size % 8 == 0  # Splits over 1, 2, 4 or 8 GPUs.
  assert not config.debug


@pytest.mark.parametrize('name', lra.TASKS)
def test_docstring_gives_command_expected_accuracy_and_run_time(name):
  doc = importlib.import_module(f'configs.{name}').__doc__
  assert f'python train.py --config configs/{name}.py:' in doc
  assert 'Expected test accuracy' in doc and 'Expected run time' in doc


def test_every_registered_task_has_a_config_and_tiny_test_data(tiny_lra_data):
  """A task added to a registry without its config, or an LRA task without its tiny test data
  (conftest's `tiny_lra_data`) or, where the LRA release has it, its entry in `lra.prepare`, fails
  here."""
  no_config = [task for task in lra.TASKS if not (CONFIGS / f'{task}.py').is_file()]
  assert not no_config, f'LRA task(s) without configs/<task>.py: {no_config}'
  assert all(load(task).data.task == task for task in lra.TASKS)
  configured = {
    module.get_config().data.task
    for path in sorted(CONFIGS.glob('*.py'))
    if hasattr(module := importlib.import_module(f'configs.{path.stem}'), 'get_config')
  }
  assert set(corpora.TASKS) <= configured, f'no config trains {set(corpora.TASKS) - configured}'
  no_data = sorted(set(lra.TASKS) - set(tiny_lra_data))
  assert not no_data, f'tests/conftest.py tiny_lra_data writes no data for {no_data}'
  assert sorted(tiny_lra_data) == sorted(lra.TASKS)
  for task, (data_dir, options) in tiny_lra_data.items():
    assert lra.load_task(task, data_dir, **options, cache=False).train.num_examples > 0
  # The release's tasks (all six here; a task added without official data has no entry).
  assert set(lra.registry.PREPARED_DIRS) <= set(lra.TASKS)
  assert {task: prepare.TASK_FILES[task].config for task in prepare.TASK_FILES} == {
    task: f'configs/{task}.py' for task in lra.registry.PREPARED_DIRS
  }


def test_default_variant_is_luna256_and_debug_is_an_argument():
  assert load('listops').model.projection_length == 256
  config = load('text', 'luna16,debug')
  assert config.debug and config.model.projection_length == 16
  assert run_config.resolve_config(config).training.num_train_steps == 5
  with pytest.raises(ValueError, match='luna64'):
    load('image', 'luna64')


def test_recipes_follow_the_papers():
  """Spot checks against Tay et al.'s configs and the Luna paper's Table 7 / released scripts."""
  listops = load('listops', 'transformer')
  assert (listops.model.num_layers, listops.model.emb_dim, listops.model.mlp_dim) == (4, 512, 1024)
  assert listops.optimizer.learning_rate == 0.05 and listops.optimizer.weight_decay == 0.1
  assert load('text', 'transformer').data.options.max_length == 1000
  text = load('text', 'luna128')
  assert text.data.options.max_length == 4000
  assert (text.optimizer.learning_rate, text.model.dropout_rate) == (5e-5, 0.3)
  assert load('retrieval', 'luna16').training.num_train_steps == 20000
  assert load('retrieval', 'transformer').training.num_train_steps == 5000
  image = load('image', 'transformer')
  assert image.optimizer.schedule.endswith('cosine_decay') and image.model.positional == 'learned'
  assert load('pathfinder32', 'luna256').model.pooling == 'mean'
  assert load('pathx', 'transformer').optimizer.grad_clip_norm == 1.0


def test_quickstart_config_is_complete():
  config = importlib.import_module('configs.quickstart').get_config()
  run_config.resolve_config(config)
  assert config.data.data_dir == 'data/listops_quickstart'


def test_quickstart_variants_differ_only_in_the_model():
  quickstart = importlib.import_module('configs.quickstart')
  luna, transformer = quickstart.get_config(), quickstart.get_config('transformer')
  assert (luna.model.name, luna.model.projection_length) == ('luna', 16)
  assert quickstart.get_config('debug').model.projection_length == 16  # the default stays luna16
  assert transformer.model.name == 'transformer' and transformer.model.qkv_dim == 64
  for config in (luna, transformer):
    run_config.resolve_config(config)
    sizes = ('num_layers', 'emb_dim', 'num_heads', 'mlp_dim', 'classifier_hidden_dim')
    assert [config.model[key] for key in sizes] == [2, 64, 4, 128, 128]
  assert luna.optimizer.to_dict() == transformer.optimizer.to_dict()
  assert luna.training.to_dict() == transformer.training.to_dict()
  spt = quickstart.get_config('transformer,spt')
  assert spt.self_pretraining.num_train_steps == -1 and luna.self_pretraining.num_train_steps == 0
  with pytest.raises(ValueError, match="config argument 'lunar'"):
    quickstart.get_config('lunar')


@pytest.mark.parametrize('name', ['quickstart', 'listops_cpu', 'pathfinder32_short'])
def test_config_files_of_default_luna16_keep_it_with_flags_only(name):
  """`:debug` and `:spt` name no variant: the file's default (luna16) stays, not the task file's
  (luna256) that the shortened recipes build on."""
  for arg in (None, 'debug', 'spt', 'debug,spt'):
    config = load(name, arg)
    assert (config.model.name, config.model.projection_length) == ('luna', 16), arg
    assert config.debug == ('debug' in (arg or ''))
    assert (config.self_pretraining.num_train_steps == -1) == ('spt' in (arg or ''))
  assert load(name, 'debug').to_dict() == load(name, 'luna16,debug').to_dict()
  assert load(name, 'transformer,debug').model.name == 'transformer'
  with pytest.raises(ValueError, match="config argument 'lunar,debug'"):
    load(name, 'lunar,debug')
  assert base.with_default('spt,debug', 'luna16') == 'luna16,debug,spt'


def _parse(argv):
  flag_values = flags.FlagValues()
  argv = ['train.py'] + argv
  config_flags.DEFINE_config_file(
    'config', None, 'config', flag_values=flag_values, lock_config=True, sys_argv=argv
  )
  flag_values(argv)
  return flag_values.config


def test_command_line_overrides_and_typos():
  config = _parse(
    [
      '--config=configs/listops.py:luna16',
      '--config.training.batch_size=64',
      '--config.model.qkv_dim=32',
      '--config.data.data_dir=/data/listops',
    ]
  )
  assert (config.training.batch_size, config.model.qkv_dim) == (64, 32)
  assert config.model.projection_length == 16
  with pytest.raises((flags.Error, AttributeError), match='num_trian_steps'):
    _parse(['--config=configs/listops.py', '--config.training.num_trian_steps=3'])


def test_task_files_cannot_add_fields():
  config = base.get_config()
  with pytest.raises(AttributeError, match='emb_size'):
    config.model.emb_size = 3


def test_pretraining_config_follows_table_8():
  config = load('pretrain_mlm')
  run = run_config.parse_config(config)
  assert run.model['name'] == 'luna_mlm' and run.data.task == 'corpus'
  assert {
    k: run.model[k]
    for k in (
      'num_layers',
      'emb_dim',
      'mlp_dim',
      'num_heads',
      'projection_length',
      'dropout_rate',
      'attention_dropout_rate',
    )
  } == {
    'num_layers': 12,
    'emb_dim': 768,
    'mlp_dim': 3072,
    'num_heads': 12,
    'projection_length': 128,
    'dropout_rate': 0.1,
    'attention_dropout_rate': 0.1,
  }
  opt = run.optimizer
  assert (opt.learning_rate, opt.warmup_steps, opt.warmup_steps + opt.steps_per_cycle) == (
    6e-4,
    15000,
    250000,
  )
  assert (opt.b1, opt.b2, opt.eps, opt.weight_decay, opt.grad_clip_norm) == (
    0.9,
    0.98,
    1e-6,
    0.01,
    1.0,
  )
  assert opt.schedule.endswith('linear_decay')
  assert (run.training.batch_size, run.training.num_train_steps) == (2048, 250000)
  for arg in ('cpu', 'debug', 'cpu,debug'):
    run_config.resolve_config(load('pretrain_mlm', arg))
  with pytest.raises(ValueError, match='pretrain_mlm.py takes'):
    load('pretrain_mlm', 'gpu')


@pytest.mark.parametrize('task', ['sst2', 'qnli', 'qqp'])
def test_glue_config_follows_the_finetuning_recipe(task):
  run = run_config.parse_config(load('glue', task))
  assert run.data.task == 'glue' and run.data.options['glue_task'] == task
  assert run.model['name'] == 'luna' and run.training.batch_size == 32
  steps = run.training.num_train_steps
  assert run.optimizer.warmup_steps == int(0.06 * steps)
  assert run.optimizer.warmup_steps + run.optimizer.steps_per_cycle == steps
  assert run.optimizer.learning_rate == 1e-5
  run_config.resolve_config(load('glue', f'{task},cpu,debug'))


@pytest.mark.parametrize('name', lra.TASKS)
def test_spt_flag_adds_as_many_pretraining_steps(name):
  config = load(name, 'luna16,spt')
  assert config.self_pretraining.num_train_steps == -1
  assert load(name, 'luna16').self_pretraining.num_train_steps == 0
  run_config.resolve_config(config)


def test_base_model_defaults_are_the_schemas_defaults():
  """One schema per knob: `config.model` in configs/base.py holds exactly the keys of
  `luna_jax.model.config` (HeadConfig and ModelConfig less the data fields), each with the
  dataclass's default."""
  fields = model_config.model_fields()
  model = base.get_config().model.to_dict()
  assert set(model) == set(fields)
  for name, field in fields.items():
    assert model[name] == field.default, name


def test_model_rules_live_on_the_fields():
  """A value out of a field's range or choices is refused by name, from the field's own rule."""
  with pytest.raises(config_utils.ConfigError, match=r'config.model.chunk_size=0: must be >= 1'):
    model_config.check_model_config({'chunk_size': 0})
  with pytest.raises(config_utils.ConfigError, match=r"luna_attention_implementation='x'"):
    model_config.check_model_config({'luna_attention_implementation': 'x'})
  with pytest.raises(config_utils.ConfigError, match=r"config.model.name='lunar': must be one of"):
    model_config.check_model_config({'name': 'lunar'})
  with pytest.raises(config_utils.ConfigError, match=r"unknown key\(s\) \['vocab_size'\]"):
    model_config.check_model_config({'vocab_size': 10})


#: The shared vocabulary that makes the Transformer-base of Table 4 64.9M parameters (the paper's
#: text says 37K BPE types; its parameter counts imply about 40.5K, as fairseq's 40K-merge WMT'14
#: data has).
TABLE4_VOCABULARY = 40550


def test_wmt14_variants_follow_tables_4_and_5():
  """Every row builds, with the appendix A.2 recipe, and (at the vocabulary that makes the
  Transformer-base 64.9M) the parameter count of Table 4 to within rounding."""
  tokens = jnp.ones((1, 8), jnp.int32)
  for name, variant in wmt14.VARIANTS.items():
    run = run_config.parse_config(load('wmt14', name))
    assert run.data.task == 'translation' and run.data.options['max_tokens'] == 8192
    assert {k: run.model[k] for k in variant.model} == variant.model
    assert (run.model['num_layers'], run.model['emb_dim'], run.model['mlp_dim']) == (6, 512, 2048)
    assert run.model['share_embeddings'] and run.model['num_heads'] == 8
    opt = run.optimizer
    assert opt.name == variant.optimizer == ('adamw' if name == 'transformer' else 'apollo')
    if opt.name == 'apollo':  # fairseq-apollo examples/luna/README.wmt.md
      assert (opt.learning_rate, opt.b1, opt.eps, opt.rebound) == (0.1, 0.9, 1e-4, 'constant')
      assert (opt.weight_decay, opt.weight_decay_type) == (1e-8, 'L2')
      assert (opt.grad_clip_norm, opt.grad_clip_mode) == (0.1, 'each')
      assert (opt.warmup_steps, opt.warmup_init_learning_rate) == (1000, 1e-5)
      assert opt.schedule.endswith('milestone_decay') and opt.milestones == (300000, 450000)
    else:  # Appendix A.2
      assert (opt.learning_rate, opt.b1, opt.b2, opt.warmup_steps) == (5e-4, 0.9, 0.98, 4000)
      assert (opt.weight_decay, opt.grad_clip_norm, opt.grad_clip_mode) == (1e-4, 1.0, 'global')
      assert opt.schedule.endswith('rsqrt_normalized_decay')
      assert opt.warmup_init_learning_rate == 1e-7
    assert run.training.label_smoothing == 0.1 and run.decoding.beam_size == 5
    model = luna_jax.build_model(
      run.model,
      vocab_size=TABLE4_VOCABULARY,
      num_classes=TABLE4_VOCABULARY,
      max_length=1024,
      bos_id=2,
    )
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens, jnp.array([8]), tokens)
    count = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes)) / 1e6
    if variant.params is not None:
      assert abs(count - variant.params) < 0.07, (name, count, variant.params)
  assert load('wmt14').model.projection_length == 16
  adam = run_config.parse_config(load('wmt14', 'luna16_softplus_tied,adam')).optimizer
  assert adam == run_config.parse_config(load('wmt14', 'transformer')).optimizer
  cpu = run_config.parse_config(load('wmt14', 'luna16_softplus_tied,cpu')).optimizer
  assert cpu.name == 'apollo' and cpu.milestones == (1800, 2700)
  run_config.resolve_config(load('wmt14', 'luna32_elu,debug'))
  with pytest.raises(ValueError, match='luna64'):
    load('wmt14', 'luna64')


@pytest.mark.parametrize(
  'model, task',
  [('luna', 'lm'), ('luna_lm', 'listops'), ('luna_seq2seq', 'text'), ('luna_mlm', 'seq2seq')],
)
def test_a_model_that_cannot_train_on_the_task_is_refused_by_name(model, task):
  with pytest.raises(config_utils.ConfigError, match=rf"name='{model}' cannot train on .*'{task}'"):
    run_config.check_model_fits_task(model, task)


def test_every_shipped_config_pairs_its_model_with_a_task_it_trains_on():
  for name in (*lra.TASKS, 'quickstart', 'lm', 'seq2seq', 'glue', 'pretrain_mlm', 'wmt14'):
    run_config.resolve_config(load(name, 'debug' if name in ('lm', 'seq2seq') else None))


def run_train_py(config_file, *overrides):
  """train.py with `--config=config_file` and a workdir it must never reach."""
  return subprocess.run(
    [
      sys.executable,
      str(CONFIGS.parent / 'train.py'),
      f'--config={config_file}',
      '--workdir=/nonexistent/never_written',
      *overrides,
    ],
    capture_output=True,
    text=True,
    timeout=120,
  )


@pytest.mark.parametrize(
  'argument,override,expected',
  [
    (
      'listops.py:luna16,debug',
      '--config.model.luna_attention=foo',
      "Error: --config.model.luna_attention: the config has no field 'luna_attention' "
      '(configs/base.py lists every field with a comment).',
    ),
    (
      'listops.py:luna16,debug',
      '--config.training.batchsize=3',
      "Error: --config.training.batchsize: the config has no field 'batchsize' "
      '(Did you mean "batch_size" instead of "batchsize"?)',
    ),
    (
      'listops.py:luna16,debug',
      '--config.training.batch_size=abc',
      "Error: flag --config.training.batch_size=abc: invalid literal for int() with base 10: 'abc'",
    ),
    (
      'quickstart.py:lunar',
      None,
      "Error: config argument 'lunar': expected one of "
      f'{variants.CONFIG_VARIANTS} optionally followed by ",debug" and/or ",spt".',
    ),
    (
      'quickstrt.py',
      None,
      f'Error: --config={CONFIGS / "quickstrt.py"}: cannot load it: [Errno 2] No such file or '
      f"directory: '{CONFIGS / 'quickstrt.py'}'.",
    ),
    (
      '../train.py',
      None,
      f'Error: --config={CONFIGS / "../train.py"}: not a config file: a config file defines '
      'get_config() returning an ml_collections.ConfigDict (e.g. configs/quickstart.py).',
    ),
    (
      '{tmp}/mine.py',
      None,
      "Error: --config={tmp}/mine.py line 6 sets 'num_train_step', a field the config does not "
      "have (did you mean 'num_train_steps'?)",
    ),
    (
      '{tmp}/section.py',
      None,
      "Error: --config={tmp}/section.py line 3 reads 'trainig', a field the config does not have "
      '(Did you mean "training" instead of "trainig"?)',
    ),
    (
      '{tmp}/typed.py',
      None,
      "Error: --config={tmp}/typed.py line 4 sets 'batch_size' to a str (8): the field takes an "
      'int.',
    ),
    (
      '{tmp}/section_typed.py',
      None,
      "Error: --config={tmp}/section_typed.py line 4 sets 'options' to an int (5): the field takes "
      'a ConfigDict.',
    ),
    (
      '{tmp}/no_model.py',
      None,
      'Error: config.model=None: must be a section of fields (configs/base.py sets it), not a '
      'NoneType.',
    ),
    (
      '{tmp}/plain.py',
      None,
      'Error: --config={tmp}/plain.py: get_config() returned a dict, not an '
      'ml_collections.ConfigDict.',
    ),
    (
      '{tmp}/numbers.py',
      None,
      'Error: --config={tmp}/numbers.py: get_config() returned a list, not an '
      'ml_collections.ConfigDict.',
    ),
    (
      '{tmp}/nothing.py',
      None,
      'Error: --config={tmp}/nothing.py: get_config() returned None, not an '
      'ml_collections.ConfigDict.',
    ),
    (
      '{tmp}/binary.dat',
      None,
      'Error: --config={tmp}/binary.dat: not a config file: a config file defines '
      'get_config() returning an ml_collections.ConfigDict (e.g. configs/quickstart.py).',
    ),
    (
      '{tmp}/notes.txt',
      None,
      'Error: --config={tmp}/notes.txt: not a config file: a config file defines '
      'get_config() returning an ml_collections.ConfigDict (e.g. configs/quickstart.py).',
    ),
    (
      '../README.md',
      None,
      f'Error: --config={CONFIGS / "../README.md"}: not a config file: a config file defines '
      'get_config() returning an ml_collections.ConfigDict (e.g. configs/quickstart.py).',
    ),
    (
      '{tmp}/mine.py:luna16',
      None,
      'Error: --config={tmp}/mine.py:luna16: get_config() takes 0 positional arguments but 1 was '
      'given.',
    ),
  ],
  ids=[
    'unknown-field',
    'misspelt-field',
    'bad-value',
    'bad-argument',
    'no-such-file',
    'not-a-config-file',
    'misspelt-field-in-a-config-file',
    'misspelt-section-read-by-a-config-file',
    'a-field-of-another-type-set-by-a-config-file',
    'a-section-set-to-a-number-by-a-config-file',
    'a-section-set-to-none-by-a-config-file',
    'a-dict-for-a-config',
    'a-list-for-a-config',
    'none-for-a-config',
    'a-binary-file',
    'a-word-of-text',
    'not-python',
    'an-argument-the-file-does-not-take',
  ],
)
def test_train_py_reports_a_bad_config_flag_in_one_line(argument, override, expected, tmp_path):
  # A config file of the user's own, which misspells a field of the config it extends.
  (tmp_path / 'mine.py').write_text(
    'from configs import quickstart\n\n\ndef get_config():\n'
    '  config = quickstart.get_config()\n  config.training.num_train_step = 3\n  return config\n'
  )
  (tmp_path / 'section.py').write_text(
    'from configs import quickstart\ndef get_config():\n  quickstart.get_config().trainig.x = 1\n'
  )
  (tmp_path / 'typed.py').write_text(
    'from configs import quickstart\ndef get_config():\n  config = quickstart.get_config()\n'
    "  config.training.batch_size = '8'\n  return config\n"
  )
  (tmp_path / 'section_typed.py').write_text(
    'from configs import quickstart\ndef get_config():\n  config = quickstart.get_config()\n'
    '  config.data.options = 5\n  return config\n'
  )
  (tmp_path / 'no_model.py').write_text(
    'from configs import quickstart\ndef get_config():\n  config = quickstart.get_config()\n'
    '  config.model = None\n  return config\n'
  )
  (tmp_path / 'plain.py').write_text("def get_config():\n  return {'model': {}}\n")
  (tmp_path / 'numbers.py').write_text('def get_config():\n  return [1, 2]\n')
  (tmp_path / 'nothing.py').write_text('def get_config():\n  return None\n')
  (tmp_path / 'binary.dat').write_bytes(b'\x89PNG\x00\x01')
  (tmp_path / 'notes.txt').write_text('hello\n')  # Valid syntax: a NameError when run.
  result = run_train_py(CONFIGS / argument.format(tmp=tmp_path), *([override] if override else []))
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == expected.format(tmp=tmp_path)
  assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('given', ['--config=configs/quickstart.py', '--workdir=/never_written'])
def test_train_py_names_a_required_flag_left_out(given):
  result = subprocess.run(
    [sys.executable, str(CONFIGS.parent / 'train.py'), given],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=CONFIGS.parent,
  )
  missing = 'workdir' if given.startswith('--config') else 'config'
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(f'Error: --{missing} is required: ')


@pytest.mark.parametrize(
  'source,error',
  [
    ('import os\n\ndef get_config():\n  return os.no_such_name\n', 'AttributeError'),
    ('def get_config(:\n  pass\n', 'SyntaxError'),
    ("def get_config():\n  return 1 + '2'\n", 'TypeError'),
  ],
  ids=['attribute-error', 'syntax-error', 'type-error'],
)
def test_a_config_files_own_bug_keeps_its_traceback(source, error, tmp_path):
  # Only ml_collections' errors about the config's fields are reduced to one line.
  (tmp_path / 'buggy.py').write_text(source)
  result = run_train_py(tmp_path / 'buggy.py')
  assert result.returncode != 0
  assert 'Traceback' in result.stderr and f'{tmp_path / "buggy.py"}' in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(f'{error}:')


def test_debug_checks_the_values_as_given_before_shrinking_the_run():
  config = load('listops', 'luna16,debug')
  config.training.eval_every = 0
  with pytest.raises(config_utils.ConfigError, match=r'config.training.eval_every=0: must be >= 1'):
    run_config.parse_config(config)
  config = load('listops', 'luna16,debug')
  config.model.num_heads = 3
  with pytest.raises(config_utils.ConfigError, match=r'num_heads=3: must divide'):
    run_config.parse_config(config)


def test_pathfinder32_short_is_the_recipe_with_a_shorter_schedule():
  def flat(tree, prefix=''):
    items = {}
    for key, value in tree.items():
      items.update(
        flat(value, f'{prefix}{key}.') if isinstance(value, dict) else {prefix + key: value}
      )
    return items

  for variant in ('luna16', 'transformer'):
    full, short = load('pathfinder32', variant), load('pathfinder32_short', variant)
    full_items, short_items = flat(full.to_dict()), flat(short.to_dict())
    changed = {key for key in full_items if full_items[key] != short_items[key]}
    steps, full_steps = short.training.num_train_steps, full.training.num_train_steps
    assert steps < full_steps
    if variant == 'luna16':  # The warmup in proportion, the inverse square root after it.
      assert changed == {'training.num_train_steps', 'optimizer.warmup_steps'}
      assert short.optimizer.warmup_steps == round(full.optimizer.warmup_steps * steps / full_steps)
    else:  # The warmup kept, the cosine cycle ending with the run.
      assert changed == {'training.num_train_steps', 'optimizer.steps_per_cycle'}
      assert short.optimizer.steps_per_cycle == steps


def test_debug_keeps_the_variant_that_names_the_run():
  """A debug sweep's leaderboard keeps its variants apart (luna16 and luna128 were both Luna-8)."""
  for variant in ('luna16', 'luna128', 'luna256', 'transformer'):
    run = run_config.parse_config(listops_config.get_config(f'{variant},debug'))
    assert run.debug and variants.variant_of(run.to_dict()['model']) == variant


def test_debug_names_the_overrides_it_replaces():
  config = _parse(
    [
      '--config=configs/listops.py:luna16,debug',
      '--config.training.batch_size=12',
      '--config.data.data_dir=/data/listops',
      '--config.training.num_train_steps=5',  # Debug's own value: nothing replaced.
    ]
  )
  overrides = {
    'training.batch_size': 12,
    'data.data_dir': '/data/listops',
    'training.num_train_steps': 5,
  }
  message = run_config.replaced_by_debug(config, overrides)
  assert '--config.training.batch_size=12 (debug sets 8)' in message
  assert 'data_dir' not in message and 'num_train_steps' not in message
  config.debug = False
  assert run_config.replaced_by_debug(config, overrides) == ''
  # A value refused anyway fails first: no warning that debug replaces it.
  config.debug = True
  config.training.eval_every = 0
  with pytest.raises(config_utils.ConfigError, match='eval_every=0'):
    run_config.replaced_by_debug(config, {**overrides, 'training.eval_every': 0})


@pytest.mark.parametrize('section', ['data.options', 'optimizer', 'self_pretraining', 'decoding'])
def test_a_section_that_is_not_one_is_refused_by_name(section):
  config = load('listops', 'luna16')
  *parents, name = section.split('.')
  functools.reduce(getattr, parents, config)[name] = None
  with pytest.raises(config_utils.ConfigError, match=rf'config.{section}=None: must be a section'):
    run_config.parse_config(config)


def test_debug_cuts_a_long_warmup_to_2_steps_and_keeps_a_shorter_one():
  """Debug's 5 steps warm up over at most 2: a longer warmup becomes 2, a shorter one stays."""
  config = load('listops', 'luna16')
  assert config.optimizer.warmup_steps > 2
  assert run_config.apply_debug(config).optimizer.warmup_steps == 2
  config.optimizer.warmup_steps = 1
  assert run_config.apply_debug(config).optimizer.warmup_steps == 1


def test_a_blank_data_dir_is_refused_as_an_unset_one():
  """A data_dir of spaces is no folder: refused before a run as an unset one, naming the flag."""
  for data_dir in ('', '  '):
    data = run_config.DataConfig(task='listops', data_dir=data_dir, options={})
    with pytest.raises(config_utils.ConfigError, match='data_dir is not set: pass --config.data'):
      run_config.require_data_dir(data)
  run_config.require_data_dir(run_config.DataConfig(task='listops', data_dir='d', options={}))


def test_a_section_built_as_a_plain_value_is_refused_by_name():
  """A config built with a section that is a value of another type (a string) is refused naming
  the section, the value and its type, as a None section is."""
  config = load('listops', 'luna16').to_dict()
  config['optimizer'] = 'adamw'
  with pytest.raises(
    config_utils.ConfigError, match=r"config.optimizer='adamw': must be a section .* not a str\."
  ):
    run_config.parse_config(ConfigDict(config))


def test_a_config_files_error_names_the_line_that_set_the_field(tmp_path):
  """A field set by a helper of the config file: the line named is the helper's, where the
  ConfigDict refused it, not the get_config() line that called it."""
  path = tmp_path / 'helper.py'
  path.write_text(
    'from ml_collections import ConfigDict\n'
    'def set_it(config):\n'
    '  config.nope = 1\n'
    'def get_config():\n'
    "  config = ConfigDict({'seed': 0})\n"
    '  config.lock()\n'
    '  set_it(config)\n'
    '  return config\n'
  )
  module = {}
  exec(compile(path.read_text(), str(path), 'exec'), module)
  with pytest.raises((AttributeError, KeyError)) as refused:
    module['get_config']()
  argv = ['train.py', f'--config={path}']
  assert command_line._config_file_line(refused.value, argv) == ' line 3'
  assert command_line._config_file_line(refused.value, ['train.py']) == ''
