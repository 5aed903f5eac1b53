"""Several processes: two `train.py` processes on 127.0.0.1 (4 CPU devices each, gloo collectives)
train exactly like one process with 8 devices and write one set of outputs."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import listops
from luna_jax.training import trainer

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
