"""End-to-end tests of the LRA trainer (`luna_jax.training.trainer`) on tiny generated data."""

import functools
import importlib
import json
import os
import signal
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import lra
import luna_jax
from luna_jax.training import checkpointing, metric_log, optim, run_config, steps, trainer

pytestmark = pytest.mark.usefixtures('fast_compilation')


def constant_optimizer(learning_rate: float, grad_clip_norm: float = 0.0):
  """AdamW (0.9, 0.98, eps 1e-9) at a constant learning rate, no weight decay (tiny step tests)."""
  return optim.make_optimizer(
    optim.OptimizerConfig(
      learning_rate=learning_rate,
      schedule='constant',
      warmup_steps=0,
      steps_per_cycle=1,
      weight_decay=0.0,
      b1=0.9,
      b2=0.98,
      eps=1e-9,
      grad_clip_norm=grad_clip_norm,
    )
  )


def tiny_classifier():
  """A one-layer Transformer classifier of 8 token ids, 3 classes and 6 positions."""
  return luna_jax.build_model(
    {'name': 'transformer', 'num_layers': 1, 'emb_dim': 16, 'num_heads': 2, 'mlp_dim': 16},
    vocab_size=8,
    num_classes=3,
    max_length=6,
  )


def random_rows(seed: int, num_rows: int, targets=None, num_classes: int = 3) -> dict:
  """`num_rows` full rows of 6 random token ids (1 to 7), with `targets` or, if None, random
  classes below `num_classes` (drawn after the ids, from the same generator)."""
  rng = np.random.default_rng(seed)
  inputs = rng.integers(1, 8, (num_rows, 6)).astype(np.int32)
  if targets is None:
    targets = rng.integers(0, num_classes, num_rows)
  return {
    'inputs': inputs,
    'lengths': np.full(num_rows, 6, np.int32),
    'targets': np.asarray(targets, np.int32),
  }


def tiny_config(tiny_lra_data, task='listops', variant='luna16', **training):
  """The real task config in its debug version, on tiny generated data, on one device, 3 steps."""
  config = importlib.import_module(f'configs.{task}').get_config(f'{variant},debug')
  data_dir, options = tiny_lra_data[task]
  config.data.data_dir = data_dir
  config.data.options.update(options)
  config.training.num_devices = 1
  config = run_config.resolve_config(config)  # Applies debug; the fields below refine it.
  config.debug = False
  config.training.update(num_train_steps=3, eval_every=3, checkpoint_every=3, num_eval_batches=1)
  config.training.update(training)
  return config


def read_jsonl(path):
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def checkpoint_params(workdir, step):
  """The parameters stored in `workdir/checkpoints/<step>` as numpy arrays."""
  restored = ocp.StandardCheckpointer().restore(
    os.path.join(workdir, 'checkpoints', str(step), 'default')
  )
  return restored['params']


@pytest.mark.parametrize(
  'task,variant',
  [
    (task, variant)
    for task in lra.TASKS
    for variant in ('luna16', 'transformer')
    # Quadratic attention over Path-X's 16384 pixels does not fit a CI machine.
    if (task, variant) != ('pathx', 'transformer')
  ],
)
def test_every_task_config_trains_end_to_end(tiny_lra_data, tmp_path, task, variant):
  config = tiny_config(tiny_lra_data, task, variant)
  results = trainer.train_and_evaluate(config, str(tmp_path))

  assert results['step'] == config.training.num_train_steps == 3
  for split in ('validation', 'test'):
    assert 0.0 <= results[split]['accuracy'] <= 1.0
    assert np.isfinite(results[split]['loss'])
    assert results[split]['num_examples'] > 0
  assert results['num_params'] > 0
  assert results['devices']['local_devices'] == 1
  assert results['config']['data']['task'] == task
  with open(tmp_path / 'results.json', encoding='utf-8') as f:
    assert json.load(f)['test'] == results['test']
  with open(tmp_path / 'config.json', encoding='utf-8') as f:
    assert json.load(f)['model']['name'] == variant.rstrip('0123456789')
  logged = read_jsonl(tmp_path / 'metrics.jsonl')
  assert [m['step'] for m in logged if 'train_loss' in m] == [1, 2, 3]
  assert any('validation_accuracy' in m for m in logged)
  assert any(
    name.startswith('events.out.tfevents') for name in os.listdir(tmp_path / 'tensorboard')
  )
  assert os.listdir(tmp_path / 'checkpoints') and os.listdir(tmp_path / 'best')


def test_one_and_eight_devices_give_the_same_losses(tiny_lra_data, tmp_path):
  """pmap over 8 fake CPU devices (batch 8 -> 1 per device) matches one device to 1e-5.

  Dropout is off: its masks depend on how the batch is split over devices, by design (one key per
  device), so only a dropout-free run is comparable across device counts.
  """
  assert len(jax.local_devices()) == 8, 'tests/conftest.py should give 8 fake CPU devices'
  losses = {}
  for num_devices in (1, 8):
    config = tiny_config(tiny_lra_data, num_devices=num_devices)
    config.model.update(dropout_rate=0.0, attention_dropout_rate=0.0)
    workdir = tmp_path / f'devices{num_devices}'
    results = trainer.train_and_evaluate(config, str(workdir))
    assert results['devices']['local_devices'] == num_devices
    losses[num_devices] = [
      m['train_loss'] for m in read_jsonl(workdir / 'metrics.jsonl') if 'train_loss' in m
    ]
  assert len(losses[1]) == 3
  np.testing.assert_allclose(losses[8], losses[1], rtol=1e-5, atol=1e-5)


def test_best_checkpoint_is_test_evaluated(tiny_lra_data, tmp_path, monkeypatch):
  """results['best']['test'] is the test metrics of the best validation checkpoint's parameters."""
  # Make step 1 the best validation result; its parameters are those a 1-step run ends with.
  save_if_best = checkpointing.Checkpointer.save_if_best
  monkeypatch.setattr(
    checkpointing.Checkpointer,
    'save_if_best',
    lambda self, step, params, accuracy: save_if_best(self, step, params, 1 / step),
  )
  results = trainer.train_and_evaluate(
    tiny_config(tiny_lra_data, num_train_steps=4, eval_every=1), str(tmp_path / 'four_steps')
  )
  one_step = trainer.train_and_evaluate(
    tiny_config(tiny_lra_data, num_train_steps=1, eval_every=1), str(tmp_path / 'one_step')
  )

  assert results['best']['step'] == 1 and results['step'] == 4
  assert results['best']['test'] == one_step['test']
  assert results['best']['test']['loss'] != results['test']['loss']
  assert (
    one_step['best']['test'] == one_step['test']
  )  # Best is the last step: no second evaluation.
  logged = read_jsonl(tmp_path / 'four_steps' / 'metrics.jsonl')
  assert logged[-1]['best_test_loss'] == results['best']['test']['loss']


class _Interrupted(Exception):
  """Stands in for a killed process."""


def batches_that_die(monkeypatch, dies) -> list[int]:
  """Makes `lra.batching.train_batches` raise _Interrupted before the batch of index `step` when
  `dies(call, step)` (call: 1 for the first run, 2 for the next...); returns the start steps of
  the calls, filled as they come."""
  start_steps = []
  real_train_batches = lra.batching.train_batches

  def train_batches(*args, start_step=0, **kwargs):
    start_steps.append(start_step)
    call = len(start_steps)
    for step, batch in enumerate(
      real_train_batches(*args, start_step=start_step, **kwargs), start=start_step
    ):
      if dies(call, step):
        raise _Interrupted
      yield batch

  monkeypatch.setattr(lra.batching, 'train_batches', train_batches)
  return start_steps


def test_best_parameters_of_redone_steps_are_dropped_on_resume(
  tiny_lra_data, tmp_path, monkeypatch
):
  """A session that dies after saving the best parameters of step 4 but before the checkpoint
  after it: the resumed session redoes step 4, and its parameters there, not the dead session's,
  are the run's best."""
  save_if_best = checkpointing.Checkpointer.save_if_best
  # Validation accuracy peaks at step 4 whatever the parameters.
  peak = lambda self, step, params, accuracy: save_if_best(self, step, params, -abs(step - 4))
  monkeypatch.setattr(checkpointing.Checkpointer, 'save_if_best', peak)
  config = tiny_config(
    tiny_lra_data, num_train_steps=6, checkpoint_every=3, eval_every=1, prefetch_batches=0
  )
  straight = trainer.train_and_evaluate(config, str(tmp_path / 'straight'))

  # The dead session's parameters at step 4 differ from any resumed run's (a trajectory that does
  # not repeat bit for bit: another device count, non-deterministic kernels).
  shifted = lambda self, step, params, accuracy: peak(
    self, step, jax.tree.map(lambda x: x + 1, params), accuracy
  )
  monkeypatch.setattr(checkpointing.Checkpointer, 'save_if_best', shifted)
  batches_that_die(monkeypatch, lambda call, step: call == 1 and step == 4)  # At step 5.
  workdir = tmp_path / 'resumed'
  with pytest.raises(_Interrupted):
    trainer.train_and_evaluate(config, str(workdir))
  # The dead session's best (step 4) and the best up to its kept train state (step 3).
  assert sorted(os.listdir(workdir / 'best')) == ['3', '4']
  monkeypatch.setattr(checkpointing.Checkpointer, 'save_if_best', peak)
  resumed = trainer.train_and_evaluate(config, str(workdir))

  assert resumed['best']['step'] == straight['best']['step'] == 4
  best = [
    checkpointing.read_checkpoint(str(path), 'best')[0] for path in (workdir, tmp_path / 'straight')
  ]
  jax.tree.map(np.testing.assert_array_equal, *best)
  assert resumed['best']['test'] == straight['best']['test']


def test_a_resume_keeps_the_best_its_earlier_steps_reached(tmp_path):
  """The best parameters up to each kept train state survive later, better ones: a resumed run
  that does not repeat bit for bit (another device count, other evaluation batches) must still
  choose among all of its steps, not only those after the resume."""

  def state(step):
    return {'params': {'w': jnp.full((2,), float(step))}, 'step': jnp.asarray(step, jnp.int32)}

  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=1)
  checkpointer.save_if_best(1, state(1)['params'], 0.5)
  checkpointer.save(2, state(2), {})
  checkpointer.save_if_best(3, state(3)['params'], 0.6)
  checkpointer.save_if_best(4, state(4)['params'], 0.6)  # A tie goes to the later step.
  checkpointer.save(5, state(5), {})  # Step 1 is no longer the best up to a kept state.
  checkpointer.save_if_best(6, state(6)['params'], 0.55)  # Never the best.
  checkpointer.save_if_best(7, state(7)['params'], 0.7)  # The session dies after this.
  assert sorted(os.listdir(tmp_path / 'best')) == ['4', '7']
  checkpointer.close()

  resumed = checkpointing.Checkpointer(str(tmp_path), keep=1)
  assert int(resumed.restore_latest(state(0))[0]['step']) == 5
  resumed.drop_best_after(5)
  resumed.save_if_best(7, state(7)['params'], 0.58)  # Step 7 redone, and worse this time.
  assert resumed.best_step() == 4
  np.testing.assert_array_equal(resumed.restore_best_params(state(0)['params'])['w'], [4.0, 4.0])
  resumed.close()


def test_batch_size_must_divide_over_devices(tiny_lra_data, tmp_path):
  config = tiny_config(tiny_lra_data, num_devices=8, batch_size=12)
  with pytest.raises(ValueError, match='batch size 12 is not divisible by the number of devices 8'):
    trainer.train_and_evaluate(config, str(tmp_path))


def test_apollo_trains_and_resumes_bit_identically(tiny_lra_data, tmp_path):
  """The WMT'14 Luna rows' optimizer through the whole trainer: Apollo's state (step count,
  moving average, curvature, last direction) is checkpointed, and 3 + 3 resumed steps equal 6."""

  def config(steps):
    config = tiny_config(tiny_lra_data, num_train_steps=steps, checkpoint_every=3, eval_every=3)
    config.optimizer.update(
      name='apollo',
      learning_rate=0.1,
      schedule='constant * linear_warmup * milestone_decay',
      warmup_steps=2,
      warmup_init_learning_rate=1e-5,
      milestones=(4,),
      eps=1e-4,
      weight_decay=1e-8,
      weight_decay_type='L2',
      grad_clip_norm=0.1,
      grad_clip_mode='each',
    )
    return config

  results = trainer.train_and_evaluate(config(6), str(tmp_path / 'straight'))
  assert np.isfinite(results['validation']['loss'])
  trainer.train_and_evaluate(config(3), str(tmp_path / 'resumed'))
  trainer.train_and_evaluate(config(6), str(tmp_path / 'resumed'))
  straight, resumed = (checkpoint_params(tmp_path / name, 6) for name in ('straight', 'resumed'))
  jax.tree.map(np.testing.assert_array_equal, resumed, straight)
  moved = jax.tree.map(
    lambda a, b: np.abs(a - b).max(), straight, checkpoint_params(tmp_path / 'straight', 3)
  )
  assert max(jax.tree.leaves(moved)) > 0  # Steps 4 to 6 moved the parameters.


def resumed_as_uninterrupted(results, workdir, straight):
  """Asserts that the resumed run in `workdir` (its `results`) ended at step 8 with the parameters
  of the uninterrupted run in `straight`; returns both runs' metrics.jsonl records."""
  assert results['step'] == 8
  jax.tree.map(
    np.testing.assert_array_equal, checkpoint_params(workdir, 8), checkpoint_params(straight, 8)
  )
  return [read_jsonl(path / 'metrics.jsonl') for path in (workdir, straight)]


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(
  tiny_lra_data, tmp_path, monkeypatch
):
  prefetch = 2
  config = tiny_config(
    tiny_lra_data,
    num_train_steps=8,
    checkpoint_every=3,
    eval_every=3,
    log_every=1,
    prefetch_batches=prefetch,
  )
  trainer.train_and_evaluate(config, str(tmp_path / 'straight'))

  # The first run dies while its loop takes the batch of step 5 (index 4), when the prefetch
  # reads the host batch `prefetch` further on.
  start_steps = batches_that_die(monkeypatch, lambda call, step: call == 1 and step == 4 + prefetch)
  workdir = tmp_path / 'interrupted'
  with pytest.raises(_Interrupted):
    trainer.train_and_evaluate(config, str(workdir))
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['3']
  assert [m['step'] for m in read_jsonl(workdir / 'metrics.jsonl')][-1] == 4  # Logged, not saved.
  with open(workdir / 'metrics.jsonl', 'a', encoding='utf-8') as f:
    f.write('{"step": 5, "train_lo')  # And a line torn by the kill.
  # A save that died half-way leaves an unfinalised temporary folder; it must not be resumed from.
  (workdir / 'checkpoints' / '5.orbax-checkpoint-tmp-1234567890').mkdir()
  results = trainer.train_and_evaluate(config, str(workdir))

  assert start_steps == [0, 3]
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['6', '8']
  # What the first run logged after its checkpoint at step 3 is dropped on resume: every step is
  # logged once, with the losses of the uninterrupted run.
  logs = resumed_as_uninterrupted(results, workdir, tmp_path / 'straight')
  assert [m['step'] for m in logs[0]] == [m['step'] for m in logs[1]]
  assert [m['train_loss'] for m in logs[0] if 'train_loss' in m] == [
    m['train_loss'] for m in logs[1] if 'train_loss' in m
  ]


def test_sigterm_stops_after_the_step_with_a_checkpoint_and_the_run_resumes_as_if_uninterrupted(
  tiny_lra_data, tmp_path, monkeypatch
):
  config = tiny_config(
    tiny_lra_data,
    num_train_steps=8,
    checkpoint_every=3,
    eval_every=3,
    log_every=2,
    prefetch_batches=0,
    keep_checkpoints=3,
  )
  trainer.train_and_evaluate(config, str(tmp_path / 'straight'))
  real_train_batches = lra.batching.train_batches

  def train_batches(*args, start_step=0, **kwargs):
    for step, batch in enumerate(
      real_train_batches(*args, start_step=start_step, **kwargs), start=start_step
    ):
      if start_step == 0 and step == 4:  # While the loop takes the batch of step 5.
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch

  monkeypatch.setattr(lra.batching, 'train_batches', train_batches)
  handler = signal.getsignal(signal.SIGTERM)
  workdir = tmp_path / 'stopped'
  with pytest.raises(trainer.TrainingInterrupted, match='SIGTERM: training stopped after step 5'):
    trainer.train_and_evaluate(config, str(workdir))
  assert signal.getsignal(signal.SIGTERM) == handler  # Restored.
  # Step 5 is neither a checkpoint nor a log point: saved all the same, with its metrics.
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['3', '5']
  assert [m['step'] for m in read_jsonl(workdir / 'metrics.jsonl')][-1] == 4
  results = trainer.train_and_evaluate(config, str(workdir))
  logs = resumed_as_uninterrupted(results, workdir, tmp_path / 'straight')
  strip = lambda log: [{k: v for k, v in m.items() if k != 'steps_per_sec'} for m in log]
  # Step 6 logs the mean of steps 5 and 6, as the uninterrupted run does.
  assert strip(logs[0]) == strip(logs[1])
  # The stop's checkpoint went at the next save, taking no place of a scheduled one (with 3 kept,
  # step 3's had gone for it: average_checkpoints, which passes it over, then found 2 of 3).
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['3', '6', '8']
  assert sorted(os.listdir(tmp_path / 'straight' / 'checkpoints')) == ['3', '6', '8']
  assert checkpointing.average_checkpoints(str(workdir), 3).endswith('averaged/8')
  # Extended to 10 steps: step 8, the last of the run that saved it, stays on its schedule (as
  # average_checkpoints judges it, by the config saved with it); 3 and 6 leave as the oldest.
  config.training.num_train_steps = 10
  trainer.train_and_evaluate(config, str(workdir))
  assert sorted(os.listdir(workdir / 'checkpoints'), key=int) == ['8', '9', '10']
  assert checkpointing.average_checkpoints(str(workdir), 3).endswith('averaged/10')


def test_tiny_model_overfits_a_fixed_batch():
  """`train_step` under plain jax.jit (no device axis) drives the loss on one batch to ~0."""
  model = luna_jax.build_model(
    {
      'name': 'luna',
      'num_layers': 1,
      'emb_dim': 32,
      'num_heads': 2,
      'mlp_dim': 64,
      'projection_length': 4,
      'classifier_hidden_dim': 32,
      'dropout_rate': 0.0,
      'attention_dropout_rate': 0.0,
    },
    vocab_size=16,
    num_classes=4,
    max_length=12,
  )
  rng = np.random.default_rng(0)
  batch = {
    'inputs': rng.integers(1, 16, (8, 12)).astype(np.int32),
    'lengths': rng.integers(4, 13, 8).astype(np.int32),
    'targets': rng.integers(0, 4, 8).astype(np.int32),
  }
  optimizer = constant_optimizer(3e-3, grad_clip_norm=1.0)
  state = steps.create_train_state(jax.random.PRNGKey(0), model, optimizer, batch)
  step = jax.jit(functools.partial(steps.train_step, model=model, optimizer=optimizer))
  for _ in range(150):
    state, metrics = step(state, batch)
  assert float(metrics['loss']) < 0.05
  assert float(metrics['accuracy']) == 1.0
  assert int(state.step) == 150


def test_eval_step_ignores_padding_rows():
  model = tiny_classifier()
  batch = random_rows(1, 4, targets=[0, 1, 2, 0])
  params = jax.jit(model.init)(jax.random.PRNGKey(0), batch['inputs'], batch['lengths'])['params']
  evaluate = jax.jit(functools.partial(steps.eval_step, model=model))
  full = evaluate(params, {k: v[:2] for k, v in batch.items()})
  padded = evaluate(params, {**batch, 'weights': np.array([1, 1, 0, 0], np.float32)})
  assert float(padded['count']) == 2.0
  np.testing.assert_allclose(padded['loss'], full['loss'], rtol=1e-6)
  assert float(padded['correct']) == float(full['correct'])


def poison_third_update(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """Wraps an optimizer so that its third update is NaN (a stand-in for a diverging run)."""

  def init(params):
    return inner.init(params), jnp.zeros((), jnp.int32)

  def update(updates, state, params=None):
    inner_state, count = state
    updates, inner_state = inner.update(updates, inner_state, params)
    scale = jnp.where(count == 2, jnp.nan, 1.0)
    return jax.tree.map(lambda u: u * scale, updates), (inner_state, count + 1)

  return optax.GradientTransformation(init, update)


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(
  tiny_lra_data, tmp_path, monkeypatch
):
  config = tiny_config(tiny_lra_data, num_train_steps=4, checkpoint_every=2)
  real_make_optimizer = optim.make_optimizer
  monkeypatch.setattr(
    optim, 'make_optimizer', lambda cfg: poison_third_update(real_make_optimizer(cfg))
  )
  with pytest.raises(FloatingPointError, match=r'Non-finite .*param_norm=nan.* at step 3.*step 2'):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2']
  params = checkpoint_params(tmp_path, 2)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_training_stops_at_an_infinite_metric_as_at_a_nan():
  """`check_finite` stops at the first step with an infinite metric, naming the last good
  checkpoint; the speed is timed steps per second of training time."""
  checkpointer = SimpleNamespace(directory='ckpt', last_good_step=lambda: 4)
  metric_log.check_finite([5], [{'loss': 1.0}], checkpointer)
  with pytest.raises(FloatingPointError, match=r'Non-finite loss=-inf at step 6.*step 4'):
    metric_log.check_finite([5, 6], [{'loss': 1.0}, {'loss': float('-inf')}], checkpointer)
  assert metric_log.TrainLog(train_time=2.0, timed_steps=10).steps_per_sec() == 5.0
  assert metric_log.TrainLog().steps_per_sec() is None


@pytest.mark.parametrize(
  'section,key',
  [
    ('model', 'projection_lenght'),
    ('training', 'num_step'),
    ('optimizer', 'lr'),
    ('data', 'dir'),
    (None, 'sed'),
  ],
)
def test_unknown_config_key_fails_with_its_name(tiny_lra_data, tmp_path, section, key):
  config = tiny_config(tiny_lra_data)
  target = config if section is None else config[section]
  with target.unlocked():
    target[key] = 1
  with pytest.raises(ValueError, match=key):
    trainer.train_and_evaluate(config, str(tmp_path))


def test_unknown_data_option_fails_with_its_name(tiny_lra_data, tmp_path):
  config = tiny_config(tiny_lra_data)
  config.data.options = ml_collections.ConfigDict({'max_lenght': 32})
  with pytest.raises(lra.DataError, match='max_lenght'):
    trainer.train_and_evaluate(config, str(tmp_path))


def test_the_last_step_is_evaluated_and_checkpointed_off_the_schedule(tiny_lra_data, tmp_path):
  """A run ending between eval_every and checkpoint_every steps evaluates and saves its last step;
  its first step (compilation) is left out of the timed steps; one batch of a split is partial."""
  config = tiny_config(tiny_lra_data, num_train_steps=2, eval_every=5, checkpoint_every=5)
  results = trainer.train_and_evaluate(config, str(tmp_path))
  saved = os.listdir(tmp_path / checkpointing.CHECKPOINTS_DIR)
  assert [name for name in saved if name.isdigit()] == ['2']
  assert results['best']['step'] == results['step'] == 2
  logged = read_jsonl(tmp_path / 'metrics.jsonl')
  assert [m['step'] for m in logged if 'validation_accuracy' in m] == [2]
  assert checkpointing.read_record(str(tmp_path), 2)['timed_steps'] == 2 - 1
  # One evaluation batch, fewer examples than the test split: a partial evaluation.
  data_dir, options = tiny_lra_data['listops']
  training = results['config']['training']
  sample = training['num_eval_batches'] * (training['eval_batch_size'] or training['batch_size'])
  assert sample < lra.load_task('listops', data_dir, **options).test.num_examples
  assert results['partial_evaluation'] is True


def test_an_evaluation_capped_at_exactly_each_splits_size_is_not_partial(tiny_lra_data, tmp_path):
  """partial_evaluation is False when num_eval_batches batches hold exactly every split."""
  config = tiny_config(tiny_lra_data, num_train_steps=1)
  data_dir, options = tiny_lra_data['listops']
  data = lra.load_task('listops', data_dir, **options)
  batch = config.training.eval_batch_size or config.training.batch_size
  config.training.num_eval_batches = data.test.num_examples // batch
  sample = config.training.num_eval_batches * batch
  assert sample == data.test.num_examples == data.validation.num_examples
  assert trainer.train_and_evaluate(config, str(tmp_path))['partial_evaluation'] is False
