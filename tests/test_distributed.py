"""Data parallelism over devices and processes: two `train.py` processes on 127.0.0.1 (4 CPU
devices each, gloo collectives) train exactly like one process with 8 devices and write one set of
outputs; each device draws its own dropout masks and evaluation rows; batch sizes divide over the
devices of every process."""

import functools
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import jax_utils

import lra
from configs import listops
from luna_jax.config_utils import ConfigError
from luna_jax.model import objectives
from luna_jax.training import steps, trainer
from tests.test_objectives import NUM_CLASSES, models
from tests.test_train import constant_optimizer, random_rows

REPO = Path(__file__).resolve().parents[1]
#: Seconds the two processes may take together (compiling and 5 steps take well under a minute).
TIMEOUT_S = 300


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _train_metrics(workdir: Path) -> dict[int, dict[str, float]]:
  """The training metrics of `workdir/metrics.jsonl` by step (checking that each is logged once)."""
  with open(workdir / 'metrics.jsonl', encoding='utf-8') as f:
    lines = [json.loads(line) for line in f if 'train_loss' in line]
  steps = [line['step'] for line in lines]
  assert len(steps) == len(set(steps)), f'a step was logged twice: {steps}'
  return {line['step']: line for line in lines}


def _params(workdir: Path, step: int):
  path = workdir / 'checkpoints' / str(step) / 'default'
  return ocp.StandardCheckpointer().restore(path)['params']


@pytest.mark.usefixtures('fast_compilation')
def test_two_processes_train_like_one_process_with_all_devices(
  tiny_lra_data, tmp_path, monkeypatch
):
  monkeypatch.setenv('JAX_DISABLE_MOST_OPTIMIZATIONS', 'true')  # The child processes too.
  data_dir, options = tiny_lra_data['listops']
  overrides = [
    f'--config.data.data_dir={data_dir}',
    f'--config.data.options.max_length={options["max_length"]}',
  ]

  # Reference: this process, 8 CPU devices (conftest), the same debug config (batch 8, 5 steps).
  config = listops.get_config('luna16,debug')
  config.data.data_dir = data_dir
  config.data.options.max_length = options['max_length']
  reference = trainer.train_and_evaluate(config, str(tmp_path / 'one'))
  assert reference['devices']['global_devices'] == 8

  # Two processes with 4 devices each; process 0 is configured by flags, process 1 by environment
  # variables, the two ways the README gives.
  port = _free_port()
  address = f'127.0.0.1:{port}'
  xla_flags = re.sub(
    r'--xla_force_host_platform_device_count=\d+', '', os.environ.get('XLA_FLAGS', '')
  )
  env = dict(
    os.environ,
    XLA_FLAGS=f'{xla_flags} --xla_force_host_platform_device_count=4',
    JAX_COORDINATOR_BIND_ADDRESS=address,
  )
  workdir = tmp_path / 'two'
  command = [
    sys.executable,
    'train.py',
    '--config',
    'configs/listops.py:luna16,debug',
    '--workdir',
    str(workdir),
    *overrides,
  ]
  launches = [
    (command + [f'--coordinator_address={address}', '--num_processes=2', '--process_id=0'], env),
    (
      command + ['--config.training.distributed=True'],
      dict(env, JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES='2', JAX_PROCESS_ID='1'),
    ),
  ]
  processes, logs = [], []
  for i, (args, process_env) in enumerate(launches):
    logs.append(tmp_path / f'process{i}.log')
    with open(logs[-1], 'w', encoding='utf-8') as log:
      processes.append(
        subprocess.Popen(args, cwd=REPO, env=process_env, stdout=log, stderr=subprocess.STDOUT)
      )
  try:
    codes = [p.wait(timeout=TIMEOUT_S) for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
        p.wait()
  output = '\n'.join(f'--- {log.name}\n{log.read_text()[-3000:]}' for log in logs)
  assert codes == [0, 0], output

  # Same losses, gradient and parameter norms at every step. (Parameters near zero may differ by
  # about one learning rate: Adam normalises their rounding-level gradient differences.)
  expected = _train_metrics(tmp_path / 'one')
  metrics = _train_metrics(workdir)
  assert sorted(metrics) == sorted(expected) == list(range(1, 6))
  for name in ('train_loss', 'train_grad_norm', 'train_param_norm'):
    np.testing.assert_allclose(
      [metrics[s][name] for s in expected],
      [expected[s][name] for s in expected],
      rtol=1e-5,
      err_msg=name,
    )
  assert jax.tree.structure(_params(workdir, 5)) == jax.tree.structure(_params(tmp_path / 'one', 5))
  with open(workdir / 'results.json', encoding='utf-8') as f:
    results = json.load(f)
  assert results['devices']['process_count'] == 2
  assert results['devices']['local_devices'] == 4
  assert results['devices']['global_devices'] == 8
  for split in ('validation', 'test'):
    assert results[split]['num_examples'] == reference[split]['num_examples']
    np.testing.assert_allclose(results[split]['loss'], reference[split]['loss'], rtol=1e-5)
  # One set of outputs: one checkpoint per saved step, no leftover temporaries, one config.
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == ['5']
  assert sorted(p.name for p in (workdir / 'best').iterdir()) == [str(results['best']['step'])]
  assert sorted(os.listdir(workdir)) == sorted(os.listdir(tmp_path / 'one'))
  assert 'Finished step 5' in logs[0].read_text()
  assert 'Finished step 5' not in logs[1].read_text()


def _same_rows_on_every_device(batch, state):
  """2 devices, `batch` on each of them (the pmapped layout) and `state` replicated onto them."""
  devices = jax.local_devices()[:2]
  stacked = {name: np.stack([value] * len(devices)) for name, value in batch.items()}
  return devices, stacked, jax_utils.replicate(state, devices)


@pytest.mark.usefixtures('fast_compilation')
def test_every_device_draws_dropout_masks_of_its_own():
  """The same rows on 2 devices: with one dropout key a device, the step is not the one-device step
  on those rows (what a key shared by the devices would give)."""
  model, _ = models(dropout_rate=0.5)
  rows = random_rows(0, 2, num_classes=NUM_CLASSES)
  optimizer = constant_optimizer(1e-3)
  state = steps.create_train_state(jax.random.PRNGKey(0), model, optimizer, rows)
  step = functools.partial(steps.train_step, model=model, optimizer=optimizer)
  _, one = jax.jit(step)(state, rows)
  devices, stacked, replicated = _same_rows_on_every_device(rows, state)
  _, two = jax.pmap(
    functools.partial(step, axis_name=steps.AXIS), axis_name=steps.AXIS, devices=devices
  )(replicated, stacked)
  # Each device divides by the global weight (2 x 2 rows): a shared key gives one's loss exactly.
  assert float(two['loss'][0]) != pytest.approx(float(one['loss']), rel=1e-4)


@pytest.mark.usefixtures('fast_compilation')
def test_every_device_prepares_its_evaluation_rows_with_a_key_of_its_own():
  """The same rows and key on 2 devices: the metrics are summed over the devices (twice the count),
  and each device draws its own prepared rows (the key folded with its index), so the summed loss
  is not twice the one-device one."""
  _, random_labels = models()
  rows = random_rows(0, 4, targets=np.zeros(4))
  params = jax.jit(random_labels.init)(jax.random.PRNGKey(0), rows['inputs'], rows['lengths'])
  key = jax.random.PRNGKey(3)
  evaluate = functools.partial(steps.eval_step, model=random_labels)
  one = jax.jit(evaluate)(params['params'], rows, key)
  devices, stacked, replicated = _same_rows_on_every_device(rows, params['params'])
  two = jax.pmap(
    functools.partial(evaluate, axis_name=steps.AXIS),
    axis_name=steps.AXIS,
    in_axes=(0, 0, None),
    devices=devices,
  )(replicated, stacked, key)
  assert float(two['count'][0]) == 2 * float(one['count'])
  assert float(two['loss'][0]) != pytest.approx(2 * float(one['loss']), rel=1e-4)


def test_batch_sizes_divide_over_the_devices_of_every_process(monkeypatch):
  """With two processes of 8 devices each, a batch size must divide over 16 devices, and a device
  count other than -1 (all) is refused."""
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  assert steps.global_device_count(jax.local_devices()[:8]) == 16
  assert len(steps.select_devices(-1, [16, 32])) == len(jax.local_devices())
  with pytest.raises(
    ConfigError, match=r'batch size 8 is not divisible by the number of devices 16'
  ):
    steps.select_devices(-1, [16, 8])
  with pytest.raises(ConfigError, match=r'num_devices=1: use -1 \(all\) .*\(2 processes here\)'):
    steps.select_devices(1, [16])
  monkeypatch.setattr(jax, 'process_count', lambda: 1)
  with pytest.raises(
    ConfigError, match=r'num_devices=99: use -1 \(all\) or 1..8 on a single process\.$'
  ):
    steps.select_devices(99, [16])


def test_evaluation_batch_i_is_prepared_with_the_key_of_its_index():
  """`steps.evaluate` hands batch i the key fold_in(PRNGKey(EVAL_SEED), i) and adds up the
  batches' sums over the devices."""
  devices = jax.local_devices()[:2]
  split = lra.Split(
    inputs=np.ones((10, 4), np.int32), lengths=np.full(10, 4, np.int32), targets=np.zeros(10)
  )
  summed = jax.pmap(lambda weights: jax.lax.psum(jnp.sum(weights), 'i'), 'i', devices=devices)
  keys = []

  def p_eval_step(params, batch, key):
    keys.append(np.asarray(key))
    count = summed(batch['weights'])
    return {'loss': count, 'correct': count, 'count': count}

  metrics = steps.evaluate(p_eval_step, None, split, 4, devices, objectives.Classification())
  assert metrics['num_examples'] == 10 and len(keys) == 3
  base_key = jax.random.PRNGKey(steps.EVAL_SEED)
  for i, key in enumerate(keys):
    np.testing.assert_array_equal(key, jax.random.fold_in(base_key, i))
