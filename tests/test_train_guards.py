"""Nothing silent in the trainer: config checks at start-up, a locked workdir, the config-change
rule on resume, verified checkpoints with fallback, durable logs, test-selected figures marked."""

import errno
import functools
import gc
import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import jax_utils
from tensorboardX.proto import event_pb2

import lra
import luna_jax
from configs import base as config_base
from luna_jax import config_utils
from luna_jax.training import (
  checkpointing,
  command_line,
  metric_log,
  optim,
  run_config,
  steps,
  trainer,
)
from luna_jax.training import workdir as workdir_lib
from tests.test_train import (
  checkpoint_params,
  constant_optimizer,
  random_rows,
  read_jsonl,
  tiny_classifier,
  tiny_config,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures('fast_compilation')


def six_steps(tiny_lra_data, **training):
  """ListOps, 6 steps, checkpoints and evaluations at 3 and 6; log_every larger than the run."""
  return tiny_config(
    tiny_lra_data,
    **{'num_train_steps': 6, 'checkpoint_every': 3, 'eval_every': 3, 'log_every': 100, **training},
  )


@pytest.fixture(scope='module')
def finished_run(tiny_lra_data, tmp_path_factory):
  """A finished 6-step run: (workdir, results)."""
  workdir = tmp_path_factory.mktemp('finished') / 'run'
  results = trainer.train_and_evaluate(six_steps(tiny_lra_data), str(workdir))
  return workdir, results


def copy_run(finished_run, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(finished_run[0], workdir)
  return workdir


def tensorboard_scalars(logdir):
  """[(step, tag, value)] as TensorBoard shows them: event files in name order, a SessionLog.START
  at step s hiding what earlier files logged at steps >= s (tensorboardX's purge_step)."""
  scalars = []
  for event in metric_log.read_events(logdir):
    if event.session_log.status == event_pb2.SessionLog.START:
      scalars = [s for s in scalars if s[0] < event.step]
    scalars += [(event.step, value.tag, value.simple_value) for value in event.summary.value]
  return scalars


def logged_once(scalars):
  keys = [(step, tag) for step, tag, _ in scalars]
  return len(keys) == len(set(keys))


# --------------------------------------------------------------------------------------------------
# Kind 5: every config value is checked once, at start-up, naming the key.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  'section,key,value,message',
  [
    ('training', 'eval_every', 0, 'must be >= 1'),
    ('training', 'keep_checkpoints', 0, 'must be >= 1'),
    ('training', 'num_eval_batches', 0, r'must be >= 1 \(or one of \[-1\]\)'),
    ('training', 'batch_size', 8.0, 'must be of type int'),
    ('training', 'label_smoothing', 1.0, 'must be < 1.0'),
    ('model', 'precision', 'bf16', "must be one of \\['float32', 'bfloat16', 'bfloat16_all'\\]"),
    ('model', 'dropout_rate', 1.5, 'must be < 1.0'),
    ('model', 'pooling', 'max', 'must be one of'),
    ('model', 'remat', 'full', "must be one of \\['none', 'layer', 'dots'\\]"),
    ('model', 'num_heads', 3, 'must divide the attention width 32'),
    ('optimizer', 'b2', 1.0, 'must be < 1.0'),
    ('optimizer', 'learning_rate', 0.0, 'must be > 0.0'),
    ('optimizer', 'schedule', 'constant * rsqrt', 'unknown learning-rate factor'),
    ('data', 'task', 'imdb', 'must be one of'),
    (None, 'seed', -1, 'must be >= 0'),
  ],
)
def test_bad_config_values_fail_at_start_up_naming_the_key(
  tiny_lra_data, section, key, value, message
):
  config = tiny_config(tiny_lra_data)
  target = config if section is None else config[section]
  with target.ignore_type():
    target[key] = value
  name = key if section is None else f'{section}.{key}'
  with pytest.raises(ValueError, match=rf'config\.{name}={value!r}: {message}'.replace('*', r'\*')):
    run_config.parse_config(config)


def test_a_bad_value_stops_the_run_before_any_data_or_model_work(
  tiny_lra_data, tmp_path, monkeypatch
):
  config = tiny_config(tiny_lra_data, eval_every=0)
  monkeypatch.setattr(lra, 'load_task', lambda *args, **kwargs: pytest.fail('data was loaded'))
  with pytest.raises(ValueError, match='config.training.eval_every=0'):
    trainer.train_and_evaluate(config, str(tmp_path))


def test_warmup_must_be_positive_for_a_warmup_schedule(tiny_lra_data):
  config = tiny_config(tiny_lra_data)
  config.optimizer.warmup_steps = 0
  with pytest.raises(ValueError, match='config.optimizer: warmup_steps must be positive'):
    run_config.parse_config(config)


@pytest.mark.parametrize('config_file', ['lm', 'seq2seq'])
def test_config_files_refuse_arguments_they_do_not_take(config_file):
  module = __import__(f'configs.{config_file}', fromlist=['get_config'])
  with pytest.raises(
    ValueError, match=f"configs/{config_file}.py does not take the argument 'luna16'"
  ):
    module.get_config('luna16')
  assert module.get_config('debug').debug and not module.get_config().debug
  assert config_base.debug_arg(None, 'x') is False


def count_optimizer_parses(monkeypatch):
  """Patches `OptimizerConfig.from_mapping` to count its calls; returns the list it appends to."""
  calls = []
  from_mapping = optim.OptimizerConfig.from_mapping.__func__
  monkeypatch.setattr(
    optim.OptimizerConfig,
    'from_mapping',
    classmethod(lambda cls, m: calls.append(1) or from_mapping(cls, m)),
  )
  return calls


def test_sections_are_typed(tiny_lra_data):
  run = run_config.parse_config(tiny_config(tiny_lra_data))
  assert isinstance(run.optimizer, optim.OptimizerConfig)
  assert isinstance(run.training, run_config.TrainingConfig)
  assert isinstance(run.data, run_config.DataConfig)
  assert run.to_dict()['optimizer']['learning_rate'] == run.optimizer.learning_rate


# --------------------------------------------------------------------------------------------------
# Kind 1: a workdir belongs to one run.
# --------------------------------------------------------------------------------------------------


def test_a_second_process_is_refused_and_a_killed_holder_frees_the_workdir(tiny_lra_data, tmp_path):
  holder = subprocess.Popen(
    [
      sys.executable,
      '-c',
      textwrap.dedent(f"""
          import sys, time
          sys.path.insert(0, {ROOT!r})
          from luna_jax.training import workdir
          with workdir.lock({str(tmp_path)!r}):
            print('locked', flush=True)
            time.sleep(120)"""),
    ],
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(workdir_lib.WorkdirLockedError, match=rf'in use by .*pid {holder.pid} on'):
      trainer.train_and_evaluate(tiny_config(tiny_lra_data), str(tmp_path))
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  with workdir_lib.lock(str(tmp_path)):  # Free at once: the kernel dropped the dead holder's lock.
    pass


def test_a_workdir_that_cannot_be_created_is_named(tiny_lra_data, tmp_path):
  (tmp_path / 'a_file').write_text('')
  with pytest.raises(workdir_lib.WorkdirUnusableError, match='a_file: cannot create it'):
    trainer.train_and_evaluate(tiny_config(tiny_lra_data), str(tmp_path / 'a_file'))
  with pytest.raises(workdir_lib.WorkdirUnusableError, match='--workdir is empty'):
    trainer.train_and_evaluate(tiny_config(tiny_lra_data), '')  # Was: no such file: .lock.


def test_changed_settings_are_refused_on_resume(tiny_lra_data, finished_run, tmp_path):
  workdir = copy_run(finished_run, tmp_path)
  before = {name: (workdir / name).read_bytes() for name in ('results.json', 'config.json')}
  config = six_steps(tiny_lra_data)
  config.optimizer.learning_rate = 1e-5
  config.seed = 7
  with pytest.raises(run_config.ConfigChangedError) as error:
    trainer.train_and_evaluate(config, str(workdir))
  message = str(error.value)
  assert str(workdir) in message
  assert (
    f'optimizer.learning_rate: {six_steps(tiny_lra_data).optimizer.learning_rate!r} -> 1e-05'
    in message
  )
  assert 'seed: 0 -> 7' in message
  assert {name: (workdir / name).read_bytes() for name in before} == before

  # Extending and re-scheduling the run is allowed.
  results = trainer.train_and_evaluate(
    six_steps(tiny_lra_data, num_train_steps=7, eval_every=7, log_every=1, num_eval_batches=2),
    str(workdir),
  )
  assert results['step'] == 7


def test_the_data_folder_otherwise_spelt_is_no_change_but_another_folder_is(
  tiny_lra_data, tmp_path, monkeypatch
):
  """A run started with a relative data_dir resumes from another working directory, with the
  folder spelt from there; a copy of the data in another folder is refused."""
  data_dir = tiny_lra_data['listops'][0]
  started, elsewhere = tmp_path / 'started', tmp_path / 'else' / 'where'
  started.mkdir()
  elsewhere.mkdir(parents=True)
  monkeypatch.chdir(started)
  config = six_steps(tiny_lra_data, num_train_steps=3)
  config.data.data_dir = os.path.relpath(data_dir)
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(config, workdir)
  monkeypatch.chdir(elsewhere)
  # The same spelling names a copy from here: the checkpoint's real path tells them apart.
  shutil.copytree(data_dir, os.path.realpath(config.data.data_dir))
  config.training.num_train_steps = 4
  with pytest.raises(run_config.ConfigChangedError) as raised:
    trainer.train_and_evaluate(config, workdir)
  # Both folders named: the spelling alone reads the same.
  spelt, here = config.data.data_dir, os.path.realpath(config.data.data_dir)
  assert f'data.data_dir: {spelt!r} (the folder {os.path.realpath(data_dir)}) -> {here!r}\n' in str(
    raised.value
  )
  assert os.path.relpath(data_dir) != config.data.data_dir
  config.data.data_dir = os.path.relpath(data_dir)
  assert trainer.train_and_evaluate(config, workdir)['step'] == 4
  config.data.data_dir = str(shutil.copytree(data_dir, tmp_path / 'copy'))
  config.training.num_train_steps = 5
  with pytest.raises(run_config.ConfigChangedError, match='data.data_dir: '):
    trainer.train_and_evaluate(config, workdir)


def test_a_run_stored_before_the_optimizer_choices_resumes_as_the_adamw_it_was(tiny_lra_data):
  """Runs stored before `optimizer.name` and its companions existed trained AdamW with global
  clipping and a warmup from 0: their config reads as exactly that, with no change to refuse."""
  today = run_config.parse_config(six_steps(tiny_lra_data)).to_dict()
  stored = {**today, 'optimizer': dict(today['optimizer'])}
  for key in run_config.ADDED_KEYS['optimizer']:
    del stored['optimizer'][key]
  assert run_config.config_changes(run_config.upgrade_stored_config(stored), today) == []
  apollo = six_steps(tiny_lra_data)
  apollo.optimizer.name = 'apollo'
  changes = run_config.config_changes(
    run_config.upgrade_stored_config(stored), run_config.parse_config(apollo).to_dict()
  )
  assert changes == ["optimizer.name: 'adamw' -> 'apollo'"]


def test_every_setting_is_compared_on_resume_but_the_schedule_the_devices_and_decoding(
  tiny_lra_data,
):
  stored = run_config.parse_config(six_steps(tiny_lra_data)).to_dict()

  def changes(section, **values):
    return run_config.config_changes(stored, {**stored, section: {**stored[section], **values}})

  # The batch size decides what batch k holds: a change is a change, not a re-schedule.
  batch_size = stored['training']['batch_size']
  assert changes('training', batch_size=2 * batch_size) == [
    f'training.batch_size: {batch_size} -> {2 * batch_size}'
  ]
  # Only `training`'s keys of RESCHEDULE_KEYS are skipped: self-pretraining's length is compared.
  steps = stored['self_pretraining']['num_train_steps']
  assert changes('self_pretraining', num_train_steps=steps + 10) == [
    f'self_pretraining.num_train_steps: {steps} -> {steps + 10}'
  ]
  assert changes('training', num_train_steps=stored['training']['num_train_steps'] + 10) == []
  # The decoding section changes the final evaluation alone.
  assert changes('decoding', beam_size=stored['decoding']['beam_size'] + 1) == []
  # A key on one side only is a change, either way.
  options = stored['data']['options']
  assert 'difficulty' not in options
  assert changes('data', options={**options, 'difficulty': 'easy'}) == [
    "data.options.difficulty: '(absent)' -> 'easy'"
  ]
  added = {**stored, 'data': {**stored['data'], 'options': {**options, 'difficulty': 'hard'}}}
  assert run_config.config_changes(added, stored) == [
    "data.options.difficulty: 'hard' -> '(absent)'"
  ]


def test_a_checkpoint_that_does_not_fit_the_model_fails_with_one_short_message(tmp_path):
  def state(width):
    return {'params': {'dense': {'kernel': jnp.ones((width, 4))}}, 'step': jnp.zeros((), jnp.int32)}

  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=2)
  checkpointer.save(1, state(3), {})
  with pytest.raises(checkpointing.CheckpointMismatchError) as error:
    checkpointer.restore_latest(state(5))
  checkpointer.close()
  message = str(error.value)
  assert message.startswith(f'{tmp_path}: checkpoint {tmp_path}/checkpoints/1 does not fit')
  assert 'params/dense/kernel: stored (3, 4), model (5, 4)' in message
  assert 'strict' not in message and len(message) < 500


def test_a_run_is_never_shortened(tiny_lra_data, finished_run, tmp_path):
  workdir = copy_run(finished_run, tmp_path)
  with pytest.raises(
    config_utils.ConfigError, match='trained to step 6, past the 4 steps asked for'
  ):
    trainer.train_and_evaluate(six_steps(tiny_lra_data, num_train_steps=4), str(workdir))
  assert json.loads((workdir / 'results.json').read_text())['step'] == 6


def test_resuming_on_another_device_count_is_stated_and_recorded(
  tiny_lra_data, finished_run, tmp_path, caplog, monkeypatch
):
  workdir = copy_run(finished_run, tmp_path)
  config = six_steps(tiny_lra_data, num_train_steps=7, num_devices=2)
  parses = count_optimizer_parses(monkeypatch)
  with caplog.at_level(logging.WARNING):
    results = trainer.train_and_evaluate(config, str(workdir))
  assert parses == [1]  # The config is parsed once per run; the sections are passed around.
  stated = [r.getMessage() for r in caplog.records if 'not be bit-identical' in r.getMessage()]
  assert len(stated) == 1 and 'trained so far on 1 devices, on 2 devices' in stated[0]
  assert results['devices']['changes'] == [{'step': 6, 'from': 1, 'to': 2}]
  with open(workdir / 'results.json', encoding='utf-8') as f:
    assert json.load(f)['devices']['changes'] == results['devices']['changes']
  assert finished_run[1]['devices']['changes'] == []
  # So may the number of hosts (train.py sets training.distributed with --num_processes).
  stored = run_config.parse_config(six_steps(tiny_lra_data)).to_dict()
  on_hosts = {**stored, 'training': {**stored['training'], 'distributed': True}}
  assert run_config.config_changes(stored, on_hosts) == []


# --------------------------------------------------------------------------------------------------
# Kind 2: a damaged checkpoint never stops or poisons a run.
# --------------------------------------------------------------------------------------------------


def truncate_largest_data_file(step_dir):
  files = [p for p in glob.glob(os.path.join(step_dir, 'default', '**', 'd', '*'), recursive=True)]
  path = max(files, key=os.path.getsize)
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def remove_commit_marker(step_dir):
  os.remove(os.path.join(step_dir, 'commit_success.txt'))


def truncate_metadata(step_dir):
  with open(os.path.join(step_dir, '_CHECKPOINT_METADATA'), 'r+b') as f:
    f.truncate(20)


@pytest.mark.parametrize(
  'damage', [truncate_largest_data_file, remove_commit_marker, truncate_metadata]
)
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_previous_one(
  tiny_lra_data, finished_run, tmp_path, caplog, damage
):
  workdir = copy_run(finished_run, tmp_path)
  damage(str(workdir / 'checkpoints' / '6'))
  with caplog.at_level(logging.WARNING):
    results = trainer.train_and_evaluate(six_steps(tiny_lra_data), str(workdir))
  warnings = [r.getMessage() for r in caplog.records if 'is damaged' in r.getMessage()]
  assert len(warnings) == 1 and f'{workdir}/checkpoints/6 is damaged' in warnings[0]
  assert os.path.isdir(workdir / 'damaged_checkpoints' / 'checkpoints_6')
  # Steps 4-6 were trained again from checkpoint 3, to the same parameters.
  assert results['step'] == 6
  jax.tree.map(
    np.testing.assert_array_equal,
    checkpoint_params(workdir, 6),
    checkpoint_params(finished_run[0], 6),
  )
  assert results['test'] == finished_run[1]['test']


@pytest.mark.parametrize('content', ['', '{"accuracy": 0.', '[1, 2]', '{"loss": 1.0}', None])
def test_a_best_checkpoint_whose_metrics_do_not_read_is_set_aside(
  tiny_lra_data, finished_run, tmp_path, caplog, content
):
  """A metrics file a crash left empty, or garbled, had stopped every start of the run with
  orbax's JSONDecodeError: the run could not be resumed, extended or evaluated again."""
  workdir = copy_run(finished_run, tmp_path)
  (first, *_) = sorted(os.listdir(workdir / 'best'), key=int)
  metrics = workdir / 'best' / first / 'metrics' / 'metrics'
  if content is None:  # A folder in its place.
    metrics.unlink()
    metrics.mkdir()
  else:
    metrics.write_text(content)
  with caplog.at_level(logging.WARNING):
    results = trainer.train_and_evaluate(six_steps(tiny_lra_data), str(workdir))
  assert f'{workdir}/best/{first} is damaged (metrics unreadable' in caplog.text
  assert os.path.isdir(workdir / 'damaged_checkpoints' / f'best_{first}')
  assert results['test'] == finished_run[1]['test']


def test_last_good_checkpoint_is_a_verified_one(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=3)
  state = {'w': jnp.arange(6.0), 'step': jnp.zeros((), jnp.int32)}
  checkpointer.save(1, state, {})
  checkpointer.save(2, {**state, 'w': state['w'] + 1}, {})
  assert checkpointer.restore_latest(state)[0]['w'][0] == 1.0
  truncate_largest_data_file(str(tmp_path / 'checkpoints' / '2'))
  assert checkpointer.last_good_step() == 1
  checkpointer.close()


@pytest.mark.parametrize('method', ['restore', 'metadata', 'item_metadata'])
@pytest.mark.parametrize(
  'error', [OSError(errno.EIO, 'Input/output error'), MemoryError()], ids=['eio', 'memory']
)
def test_an_error_of_the_machine_while_reading_is_no_damage(tmp_path, monkeypatch, method, error):
  """An error that may pass leaves the checkpoint where it is (it had been set aside, and the run
  had fallen back to an older one, dropping the best parameters after it); a missing file is
  damage, as before."""
  import orbax.checkpoint as ocp

  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=3)
  state = {'w': jnp.arange(6.0), 'step': jnp.zeros((), jnp.int32)}
  checkpointer.save(1, state, {})
  checkpointer.save(2, {**state, 'w': state['w'] + 1}, {})
  real = getattr(ocp.CheckpointManager, method)

  def failing(failure):
    def read(self, *args, **kwargs):
      monkeypatch.setattr(ocp.CheckpointManager, method, real)  # Once.
      raise failure

    return read

  monkeypatch.setattr(ocp.CheckpointManager, method, failing(error))
  path = tmp_path / 'checkpoints' / '2'
  with pytest.raises(checkpointing.CheckpointUnreadableError, match=f'{path}: could not be read'):
    checkpointer.restore_latest(state)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['1', '2']
  assert not (tmp_path / 'damaged_checkpoints').exists()
  assert checkpointer.restore_latest(state)[0]['w'][0] == 1.0  # Read at the next try.
  monkeypatch.setattr(
    ocp.CheckpointManager, method, failing(FileNotFoundError(errno.ENOENT, 'gone'))
  )
  assert checkpointer.restore_latest(state)[0]['w'][0] == 0.0  # Damaged: step 1's arrays.
  assert os.listdir(tmp_path / 'damaged_checkpoints') == ['checkpoints_2']
  checkpointer.close()


def test_a_checkpoint_whose_arrays_differ_from_their_digest_is_set_aside(tmp_path):
  """Arrays that orbax reads without complaint but that are not the ones saved: only the
  SHA-256 of the arrays (`tree_digest`, in the checkpoint's metadata) tells."""
  assert checkpointing.tree_digest({'w': jnp.zeros(3)}) != checkpointing.tree_digest(
    {'w': jnp.ones(3)}
  )
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=3)
  state = {'w': jnp.arange(6.0), 'step': jnp.zeros((), jnp.int32)}
  checkpointer.save(1, state, {})
  checkpointer.save(2, {**state, 'w': state['w'] + 1}, {})
  checkpointer.close()
  metadata = tmp_path / 'checkpoints' / '2' / '_CHECKPOINT_METADATA'
  digest = checkpointing.tree_digest({**state, 'w': state['w'] + 1})
  assert digest in metadata.read_text()
  metadata.write_text(metadata.read_text().replace(digest, '0' * 64))
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=3)
  assert checkpointer.restore_latest(state)[0]['w'][0] == 0.0  # Step 1's arrays.
  checkpointer.close()
  assert os.path.isdir(tmp_path / 'damaged_checkpoints' / 'checkpoints_2')


def test_a_step_damaged_twice_is_set_aside_twice_and_the_run_restores_the_older_one(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=3)
  state = {'w': jnp.arange(6.0), 'step': jnp.zeros((), jnp.int32)}
  checkpointer.save(1, state, {'saved': 1})
  for attempt in (1, 2):  # Step 2 saved, damaged, set aside; saved again, damaged again.
    checkpointer.save(2, {**state, 'w': state['w'] + attempt}, {'saved': 2})
    truncate_largest_data_file(str(tmp_path / 'checkpoints' / '2'))
    restored, record = checkpointer.restore_latest(state)
    assert restored['w'][0] == 0.0 and record == {'saved': 1}
  checkpointer.close()
  assert sorted(os.listdir(tmp_path / 'damaged_checkpoints')) == [
    'checkpoints_2',
    'checkpoints_2.2',
  ]


def test_saving_the_newest_step_again_keeps_it(tmp_path):
  """Saving the newest step again keeps the checkpoint there (orbax itself would refuse it)."""
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=3)
  state = {'w': jnp.arange(6.0), 'step': jnp.zeros((), jnp.int32)}
  checkpointer.save(1, state, {'saved': 1})
  checkpointer.save(2, {**state, 'w': state['w'] + 1}, {'saved': 2})
  checkpointer.save(2, {**state, 'w': state['w'] + 2}, {'saved': 3})
  restored, record = checkpointer.restore_latest(state)
  assert restored['w'][0] == 1.0 and record == {'saved': 2}
  checkpointer.close()
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['1', '2']


def test_reading_a_run_passes_over_a_checkpoint_without_its_array_metadata(tmp_path):
  """`read_checkpoint` ended in an AttributeError (orbax reads the missing file as None)."""
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=3)
  state = {'w': jnp.arange(6.0), 'step': jnp.zeros((), jnp.int32)}
  checkpointer.save(1, state, {})
  checkpointer.save(2, {**state, 'w': state['w'] + 1}, {})
  checkpointer.close()
  os.remove(tmp_path / 'checkpoints' / '2' / 'default' / '_METADATA')
  tree, _, path = checkpointing.read_checkpoint(str(tmp_path))
  assert path == str(tmp_path / 'checkpoints' / '1') and tree['w'][0] == 0.0


def test_reading_a_run_names_the_damaged_checkpoints_it_skips_or_set_aside(tmp_path, caplog):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=3)
  state = {'w': jax.random.normal(jax.random.PRNGKey(0), (20000,))}
  for step in (1, 2):
    checkpointer.save(step, {'w': state['w'] + step}, {})
  checkpointer.restore_latest(state)
  truncate_largest_data_file(str(tmp_path / 'checkpoints' / '2'))
  with caplog.at_level(logging.WARNING):
    tree, _, folder = checkpointing.read_checkpoint(str(tmp_path))
  assert folder == str(tmp_path / 'checkpoints' / '1') and tree['w'][0] == state['w'][0] + 1
  warnings = [r.getMessage() for r in caplog.records if 'newer ones are damaged' in r.getMessage()]
  assert len(warnings) == 1 and str(tmp_path / 'checkpoints' / '2') in warnings[0]
  truncate_largest_data_file(str(tmp_path / 'checkpoints' / '1'))
  assert checkpointer.last_good_step() is None  # A run sets both aside.
  checkpointer.close()
  damaged = tmp_path / 'damaged_checkpoints'
  with pytest.raises(FileNotFoundError, match=f'set aside in {damaged}: checkpoints_1, checkp'):
    checkpointing.read_checkpoint(str(tmp_path))


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_setting_up_ends_train_py_at_once_with_one_line(signum, tmp_path):
  """Before training there is nothing to save: train.py ends at once, saying so (a
  KeyboardInterrupt inside XLA's compilation could crash the interpreter). Called from Python (a
  notebook) the trainer leaves the signals alone: a KeyboardInterrupt, the kernel kept."""
  script = textwrap.dedent(f"""
    import os, runpy, sys, time
    from luna_jax.training import trainer

    def setup(*args):
      os.kill(os.getpid(), {int(signum)})
      time.sleep(60)

    trainer._setup = setup
    trainer.initialize_distributed = lambda: None  # For --config.training.distributed=True.
    sys.argv = ['train.py', '--config=configs/quickstart.py', '--workdir={tmp_path / 'run'}',
                '--config.data.data_dir={tmp_path / 'data'}', *sys.argv[1:]]
    if sys.argv[-1] == 'in-process':
      from configs import quickstart
      config = quickstart.get_config()
      config.data.data_dir = {str(tmp_path / 'data')!r}
      try:
        trainer.train_and_evaluate(config, {str(tmp_path / 'run2')!r})
      except KeyboardInterrupt:
        print('KeyboardInterrupt caught')
    else:
      runpy.run_path('train.py', run_name='__main__')
  """)
  run = lambda *args: subprocess.run(
    [sys.executable, '-c', script, *args], capture_output=True, text=True, timeout=120, cwd=ROOT
  )
  result = run()
  assert result.returncode == 128 + signum and 'Traceback' not in result.stderr, result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
    f'{signal.Signals(signum).name}: stopped outside the training loop; every trained step is '
    'saved. Run the same command to go on.'
  )
  assert not (tmp_path / 'run').exists()  # Nothing written yet: no run left behind.
  if signum == signal.SIGINT:
    assert run('in-process').stdout.strip() == 'KeyboardInterrupt caught'
    assert not (tmp_path / 'run2').exists()
    # Several processes stop at once in the loop too: they resume from the last checkpoint.
    result = run('--config.training.distributed=True')
    assert result.returncode == 130 and 'Traceback' not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
      'SIGINT: stopped at once (several processes); the run resumes from its last checkpoint. '
      'Run the same command to go on.'
    )


def test_a_failed_restore_prints_no_closed_event_loop_tracebacks(tmp_path, monkeypatch):
  """The reads a failed restore leaves under way end after orbax closed its event loop; their
  'Event loop is closed' errors are dropped (Python printed about 160 tracebacks), others not."""
  seen = []
  monkeypatch.setattr(sys, 'unraisablehook', seen.append)
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=3)
  keys = jax.random.split(jax.random.PRNGKey(0), 40)
  state = {f'w{i}': jax.random.normal(key, (5000,)) for i, key in enumerate(keys)}
  checkpointer.save(1, state, {})
  checkpointer.save(2, jax.tree.map(lambda w: w + 1, state), {})
  checkpointer.restore_latest(state)
  path = max(glob.glob(str(tmp_path / 'checkpoints' / '2' / '**' / 'd' / '*'), recursive=True),
             key=os.path.getsize)  # fmt: skip
  with open(path, 'r+b') as f:
    f.truncate(1000)
  assert checkpointer.last_good_step() == 1
  checkpointer.close()
  time.sleep(0.5)  # The reads' callbacks run on tensorstore's threads.
  gc.collect()
  assert [str(u.exc_value) for u in seen] == []
  other = types.SimpleNamespace(exc_value=ValueError('other'))
  sys.unraisablehook(other)
  assert seen == [other]


# --------------------------------------------------------------------------------------------------
# Kind 3: what was logged stays logged, once.
# --------------------------------------------------------------------------------------------------


def test_rerunning_a_finished_run_logs_each_step_once_and_keeps_its_figures(
  tiny_lra_data, finished_run, tmp_path
):
  workdir = copy_run(finished_run, tmp_path)
  jsonl = (workdir / 'metrics.jsonl').read_text()
  results = trainer.train_and_evaluate(six_steps(tiny_lra_data), str(workdir))
  assert results['steps_per_sec'] == finished_run[1]['steps_per_sec'] is not None
  assert (workdir / 'metrics.jsonl').read_text() == jsonl
  scalars = tensorboard_scalars(workdir / 'tensorboard')
  assert logged_once(scalars)
  assert {(s, t) for s, t, _ in scalars} == {
    (s, t) for s, t, _ in tensorboard_scalars(finished_run[0] / 'tensorboard')
  }


def test_sigkill_after_a_checkpoint_loses_no_tensorboard_scalar_and_resume_logs_each_step_once(
  tiny_lra_data, finished_run, tmp_path
):
  workdir = tmp_path / 'killed'
  config = six_steps(tiny_lra_data)
  script = textwrap.dedent(f"""
      import json, os, signal, sys
      sys.path.insert(0, {ROOT!r})
      import jax, ml_collections
      from luna_jax.training import checkpointing, trainer
      jax.config.update('jax_disable_most_optimizations', True)  # As in this test module.
      save = checkpointing.Checkpointer.save
      def save_then_die(self, step, state, record):
        save(self, step, state, record)
        if step == 3:
          os.kill(os.getpid(), signal.SIGKILL)
      checkpointing.Checkpointer.save = save_then_die
      config = ml_collections.ConfigDict(json.loads({json.dumps(config.to_dict())!r}))
      trainer.train_and_evaluate(config, {str(workdir)!r})""")
  killed = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  scalars = tensorboard_scalars(workdir / 'tensorboard')
  assert (3, 'validation_accuracy') in {(s, t) for s, t, _ in scalars}

  results = trainer.train_and_evaluate(config, str(workdir))
  assert results['steps_per_sec'] is not None
  scalars = tensorboard_scalars(workdir / 'tensorboard')
  assert logged_once(scalars)
  expected = tensorboard_scalars(finished_run[0] / 'tensorboard')
  assert {(s, t) for s, t, _ in scalars} == {(s, t) for s, t, _ in expected}
  losses = lambda path: [
    (m['step'], m['train_loss']) for m in read_jsonl(path) if 'train_loss' in m
  ]
  assert losses(workdir / 'metrics.jsonl') == losses(finished_run[0] / 'metrics.jsonl')


# --------------------------------------------------------------------------------------------------
# Kind 7: model selection never looks at test data unflagged.
# --------------------------------------------------------------------------------------------------


def test_text_validation_is_held_out_from_train_by_default(tiny_lra_data):
  data_dir, options = tiny_lra_data['text']
  heldout = lra.load_task('text', data_dir, **options)
  official = lra.load_task('text', data_dir, **options, validation='test')
  assert official.validation is official.test
  assert heldout.validation is not heldout.test
  total = official.train.num_examples
  assert heldout.validation.num_examples == round(0.1 * total) > 0
  assert heldout.train.num_examples + heldout.validation.num_examples == total
  rows = lambda split: {bytes(row) for row in split.inputs}
  assert rows(heldout.validation) <= rows(official.train)
  assert not rows(heldout.validation) & rows(heldout.train)
  np.testing.assert_array_equal(heldout.test.inputs, official.test.inputs)
  with pytest.raises(lra.DataError, match="validation='dev'"):
    lra.load_task('text', data_dir, **options, validation='dev')


def test_a_best_checkpoint_chosen_on_test_data_is_marked(tiny_lra_data, finished_run, tmp_path):
  assert finished_run[1]['best']['selected_on_test'] is False  # ListOps has its own validation.
  config = tiny_config(tiny_lra_data, 'text', num_train_steps=2, eval_every=1)
  config.data.options.validation = 'test'
  results = trainer.train_and_evaluate(config, str(tmp_path))
  assert results['best']['selected_on_test'] is True
  with open(tmp_path / 'results.json', encoding='utf-8') as f:
    assert json.load(f)['best']['selected_on_test'] is True


def test_report_marks_figures_selected_on_test(tmp_path):
  from benchmarks import report

  model = dict(name='luna', projection_length=16, contextual_p=True)
  for task, on_test in (('text', True), ('listops', False), ('image', None)):
    run = tmp_path / task
    run.mkdir()
    best = {'step': 1, 'test': {'accuracy': 0.5}}
    if on_test is not None:
      best['selected_on_test'] = on_test
    (run / 'results.json').write_text(
      json.dumps(
        {
          'config': {'seed': 0, 'data': {'task': task}, 'model': model},
          'test': {'accuracy': 0.5},
          'best': best,
        }
      )
    )
  runs = report.read_runs(report.find_results(str(tmp_path)))[0]
  assert {run.key for run in runs if run.selected_on_test} == {('luna16', 'text')}
  report.main(
    [
      '--runs_dir',
      str(tmp_path),
      '--output_dir',
      str(tmp_path / 'out'),
      '--benchmark_json',
      '',
      '--checkpoint',
      'best',
    ]
  )
  markdown = (tmp_path / 'out' / 'leaderboard.md').read_text()
  assert '| Luna-16 | ours (1 run) | 50.00 | 50.00† | - | 50.00 | - | - | - |' in markdown
  assert '† Selected on test data' in markdown
  report.main(
    ['--runs_dir', str(tmp_path), '--output_dir', str(tmp_path / 'final'), '--benchmark_json', '']
  )
  assert '†' not in (tmp_path / 'final' / 'leaderboard.md').read_text()


# --------------------------------------------------------------------------------------------------
# Kind 10: what is and is not the same on 1 and 8 devices (the README's Devices paragraph).
# --------------------------------------------------------------------------------------------------


def test_one_and_eight_devices_do_not_share_the_dropout_masks():
  """The same global batch and initial state give another loss with dropout on 8 devices than on
  one (one dropout key per device); without dropout they agree (tests/test_train.py)."""
  rng = np.random.default_rng(0)
  batch = {
    'inputs': rng.integers(1, 16, (8, 12)).astype(np.int32),
    'lengths': np.full(8, 12, np.int32),
    'targets': rng.integers(0, 4, 8).astype(np.int32),
  }
  optimizer = constant_optimizer(1e-3)
  model = luna_jax.build_model(
    {
      'name': 'luna',
      'num_layers': 1,
      'emb_dim': 16,
      'num_heads': 2,
      'mlp_dim': 16,
      'projection_length': 4,
      'classifier_hidden_dim': 16,
      'dropout_rate': 0.3,
      'attention_dropout_rate': 0.0,
    },
    vocab_size=16,
    num_classes=4,
    max_length=12,
  )
  state = steps.create_train_state(jax.random.PRNGKey(0), model, optimizer, batch)
  step = lambda axis: functools.partial(
    steps.train_step, model=model, optimizer=optimizer, axis_name=axis
  )
  _, one = jax.jit(step(None))(state, batch)
  devices = jax.local_devices()[:8]
  _, eight = jax.pmap(step('batch'), axis_name='batch', devices=devices)(
    jax_utils.replicate(state, devices), steps.shard(batch, 8)
  )
  assert abs(float(one['loss']) - float(eight['loss'][0])) > 1e-4


def test_a_tilde_data_folder_recorded_unexpanded_still_resumes(tmp_path, monkeypatch):
  """Checkpoints written before `~` was expanded recorded `~/lq` as `<cwd>/~/lq`."""
  monkeypatch.setenv('HOME', str(tmp_path))
  stored = {'data': {'data_dir': '~/lq'}}
  recorded = {'data_dir': str(tmp_path / 'elsewhere' / '~' / 'lq')}
  for new in ('~/lq', str(tmp_path / 'lq')):
    as_stored = run_config.paths_as_stored({'data': {'data_dir': new}}, stored, recorded)
    assert as_stored['data']['data_dir'] == '~/lq'
  other = run_config.paths_as_stored({'data': {'data_dir': '/other/lq'}}, stored, recorded)
  assert other['data']['data_dir'] == '/other/lq'


def _padded_classification_step(weights, learning_rate=1e-3):
  """One train step (no dropout) of a tiny classifier at `learning_rate` on 4 rows whose targets
  are its own predictions, weighed by `weights`; returns (state before, state after, metrics)."""
  model = tiny_classifier()
  batch = {**random_rows(2, 4, targets=np.zeros(4)), 'weights': np.asarray(weights, np.float32)}
  optimizer = constant_optimizer(learning_rate)
  state = steps.create_train_state(jax.random.PRNGKey(0), model, optimizer, batch)
  logits = model.apply({'params': state.params}, batch['inputs'], batch['lengths'])
  batch['targets'] = np.asarray(jnp.argmax(logits, -1), np.int32)
  step = jax.jit(functools.partial(steps.train_step, model=model, optimizer=optimizer))
  return (state, *step(state, batch))


def test_train_step_accuracy_counts_the_real_rows_alone():
  """Two real rows and two weight-0 rows, every target predicted: the accuracy is 1, not the share
  of all four rows."""
  _, _, metrics = _padded_classification_step([1, 1, 0, 0])
  assert float(metrics['accuracy']) == 1.0


def test_a_batch_of_weight_0_rows_takes_a_zero_step_not_a_nan_one():
  """A batch with no real row (total weight 0): the loss, accuracy and gradients are 0 and the
  parameters stay as they were."""
  before, after, metrics = _padded_classification_step([0, 0, 0, 0])
  assert {name: float(metrics[name]) for name in ('loss', 'accuracy', 'grad_norm')} == {
    'loss': 0.0,
    'accuracy': 0.0,
    'grad_norm': 0.0,
  }
  for new, old in zip(jax.tree.leaves(after.params), jax.tree.leaves(before.params)):
    np.testing.assert_array_equal(new, old)


def test_grad_norm_is_of_the_gradients_and_param_norm_of_the_new_parameters():
  """grad_norm does not depend on the learning rate (it is taken before the optimizer), and
  param_norm is the norm of the parameters the step returns."""
  metrics = {}
  for learning_rate in (1e-3, 1e-1):
    _, after, metrics[learning_rate] = _padded_classification_step([1, 1, 1, 0], learning_rate)
    norm = float(optax.tree.norm(after.params))
    assert float(metrics[learning_rate]['param_norm']) == pytest.approx(norm, rel=1e-6)
  grad_norms = [float(m['grad_norm']) for m in metrics.values()]
  assert grad_norms[0] > 0 and grad_norms[0] == pytest.approx(grad_norms[1], rel=1e-6)


def test_a_full_disk_is_recognised_anywhere_in_the_chain_of_errors():
  """An ENOSPC OSError, or tensorstore's 'No space left on device', counts as a full disk whether it
  is the error raised, its cause or the error it was raised while handling."""

  def raised(outer, inner, how):
    try:
      try:
        raise inner
      except Exception as e:
        if how == 'from':
          raise outer from e
        raise outer  # noqa: B904  (the implicit context, as an error while handling one)
    except Exception as e:
      return e

  full = OSError(28, 'No space left on device')
  assert command_line._out_of_space(full)
  assert command_line._out_of_space(ValueError('Failed to write: No space left on device'))
  for how in ('from', 'context'):
    assert command_line._out_of_space(raised(RuntimeError('save failed'), full, how))
  assert not command_line._out_of_space(raised(RuntimeError('x'), OSError(5, 'I/O'), 'context'))


def test_an_error_raised_from_itself_ends_its_chain():
  """`raise e from e` makes a cycle of causes (Python breaks cycles of contexts only): the chain
  holds each error once, so a full disk is still found and any other error is not one."""
  for cause in (OSError(28, 'No space left on device'), ValueError('bad value')):
    error = RuntimeError('save failed')
    error.__cause__ = cause
    cause.__cause__ = error
    assert command_line._chain(error) == [error, cause]
    assert command_line._out_of_space(error) == isinstance(cause, OSError)


def test_a_diverged_run_ends_train_py_with_its_message_alone(monkeypatch):
  """FloatingPointError (a diverged run, whose message names the step and the kept checkpoint) is a
  user error: one 'Error:' line and exit status 1, no traceback."""
  monkeypatch.setattr(signal, 'signal', lambda number, handler: None)
  monkeypatch.setattr(command_line.xla_settings, 'apply', lambda remat: '')
  # What `run` sets for the process's logs stays as it is for the tests that follow.
  monkeypatch.setattr(command_line.absl_logging.get_absl_handler(), 'addFilter', lambda f: None)
  monkeypatch.setattr(logging.getLogger('jax._src.xla_bridge'), 'setLevel', lambda level: None)

  def diverged(config, workdir):
    raise FloatingPointError('loss is nan at step 3')

  monkeypatch.setattr(command_line.trainer, 'train_and_evaluate', diverged)
  with pytest.raises(SystemExit) as stopped:
    command_line.run(config_base.get_config(), 'run', {})
  assert stopped.value.code == 'Error: loss is nan at step 3'


def test_the_config_file_of_a_command_line_is_read_without_parsing_it():
  """`--config=F`, `--config F` and `-config F` name F; a `--config` with nothing after it, or
  none, is '?'."""
  for argv in (['t', '--config=a.py:x'], ['t', '--config', 'a.py:x'], ['t', '-config', 'a.py:x']):
    assert command_line._config_file(argv) == 'a.py:x'
  assert command_line._config_file(['t', '--workdir', 'w', '--config']) == '?'
  assert command_line._config_file(['t']) == '?'


def test_upgrading_a_stored_config_keeps_the_values_it_stored():
  """The added keys fill in what a stored config lacks and never replace what it has."""
  stored = {
    'optimizer': {'name': 'apollo', 'decay_rate': 0.5, 'learning_rate': 0.1},
    'training': {'gradient_accumulation_steps': 4, 'batch_size': 8},
  }
  upgraded = run_config.upgrade_stored_config(stored)
  assert upgraded['optimizer'] == {
    **run_config.ADDED_KEYS['optimizer'],
    'name': 'apollo',
    'decay_rate': 0.5,
    'learning_rate': 0.1,
  }
  assert upgraded['training'] == {'gradient_accumulation_steps': 4, 'batch_size': 8}


def test_an_init_from_added_or_dropped_is_never_read_as_the_stored_one(tmp_path, monkeypatch):
  """Only two init_from folders are compared by real path: one given where none was stored, or none
  where one was, stays as given, even the working directory (which '' would resolve to)."""
  monkeypatch.chdir(tmp_path)
  for stored, new in (('', str(tmp_path)), (str(tmp_path), '')):
    as_stored = run_config.paths_as_stored({'init_from': new}, {'init_from': stored})
    assert as_stored['init_from'] == new


def test_a_failed_start_in_an_existing_empty_workdir_keeps_the_folder(tmp_path):
  """A block that fails in a workdir that existed empty removes the lock, never the folder."""
  workdir = tmp_path / 'mine'
  workdir.mkdir()
  with pytest.raises(KeyboardInterrupt), workdir_lib.lock(str(workdir)):
    workdir_lib.claim_kind(str(workdir), 'plain', False)
    raise KeyboardInterrupt
  assert workdir.is_dir() and list(workdir.iterdir()) == []


def test_a_finetuning_run_whose_checkpoints_were_all_set_aside_is_claimed_as_itself(tmp_path):
  """Resumed as 'plain' with only damaged checkpoints, a finetuning workdir stays finetuning."""
  workdir_lib.claim_kind(str(tmp_path), 'finetuning', False)
  (tmp_path / 'config.json').write_text('{}')
  (tmp_path / checkpointing.DAMAGED_DIR).mkdir()
  workdir_lib.claim_kind(str(tmp_path), 'plain', False)
  assert json.loads((tmp_path / workdir_lib.KIND_FILE).read_text())['kind'] == 'finetuning'


def test_only_a_steps_folder_counts_as_a_checkpoint(tmp_path):
  """has_checkpoint: a `checkpoints/` folder with no step's folder (a temporary one) holds none."""
  folder = tmp_path / checkpointing.CHECKPOINTS_DIR
  folder.mkdir()
  (folder / '3.orbax-checkpoint-tmp-1').mkdir()
  assert not workdir_lib.has_checkpoint(str(tmp_path))
  (folder / '3').mkdir()
  assert workdir_lib.has_checkpoint(str(tmp_path))


def test_the_kind_of_a_run_follows_its_config():
  """run_kind: self-pretraining first, then a masked LM, then finetuning with init_from."""
  config = {'self_pretraining': {'num_train_steps': 0}, 'model': {'name': 'luna'}, 'init_from': ''}
  assert workdir_lib.run_kind(config) == 'plain'
  assert workdir_lib.run_kind({**config, 'init_from': '/pretrained'}) == 'finetuning'
  mlm = {**config, 'model': {'name': sorted(luna_jax.MLM_MODELS)[0]}}
  assert workdir_lib.run_kind(mlm) == 'pretraining'
  both = {**mlm, 'self_pretraining': {'num_train_steps': 2}, 'init_from': '/pretrained'}
  assert workdir_lib.run_kind(both) == 'self-pretraining'


def test_a_workdir_with_a_pretrain_stage_alone_is_a_self_pretraining_run(tmp_path):
  """recorded_kind: an old workdir with only its pretrain stage is a self-pretraining run."""
  (tmp_path / 'pretrain').mkdir()
  assert workdir_lib.recorded_kind(str(tmp_path)) == ('self-pretraining', False)
  with pytest.raises(workdir_lib.WorkdirKindError, match='holds a self-pretraining run'):
    workdir_lib.claim_kind(str(tmp_path), 'plain', False)


def test_a_run_logs_at_step_1_and_at_each_evaluation_and_checkpoint(finished_run):
  """metrics.jsonl: train_* at step 1 and at each evaluation or checkpoint step, validation_* at
  each evaluation, test_* and best_test_* at the last step (six_steps: log_every past the run)."""
  logged = read_jsonl(finished_run[0] / 'metrics.jsonl')
  at = lambda key: [m['step'] for m in logged if key in m]
  assert at('train_loss') == at('learning_rate') == [1, 3, 6]
  assert at('validation_accuracy') == [3, 6]
  assert at('test_accuracy') == at('best_test_accuracy') == [6]
