"""The accelerator check (`luna_jax.training.accelerators`): a GPU or TPU that JAX does not use is
named with the pip requirement that fixes it, at the trainer's start. The machine's accelerator is
faked (no GPU is needed): `shutil.which`, the device files and nvidia-smi's driver version."""

import fnmatch
import glob
import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys

import jax
import pytest

from luna_jax.training import accelerators, trainer
from tests.test_train import tiny_config


def fake_machine(monkeypatch, nvidia_smi=False, device_files=(), driver=None):
  """Replaces what `detect_accelerator` and `nvidia_driver_major` look at."""
  real_exists, real_glob = os.path.exists, glob.glob
  monkeypatch.setattr(
    shutil,
    'which',
    lambda name: '/usr/bin/nvidia-smi' if nvidia_smi and name == 'nvidia-smi' else None,
  )
  monkeypatch.setattr(
    os.path,
    'exists',
    lambda path: path in device_files if str(path).startswith('/dev/') else real_exists(path),
  )
  monkeypatch.setattr(
    glob,
    'glob',
    lambda pattern, **kw: (
      [f for f in device_files if fnmatch.fnmatch(f, pattern)]
      if pattern.startswith('/dev/')
      else real_glob(pattern, **kw)
    ),
  )
  monkeypatch.setattr(accelerators, 'nvidia_driver_major', lambda: driver)


@pytest.mark.parametrize(
  'machine, expected',
  [
    (dict(nvidia_smi=True), 'gpu'),
    (dict(device_files=('/dev/nvidia0',)), 'gpu'),
    (dict(device_files=('/dev/accel0',)), 'tpu'),
    (dict(device_files=('/dev/vfio/0', '/dev/vfio/vfio')), 'tpu'),
    (dict(device_files=('/dev/vfio/vfio',)), None),
    ({}, None),
  ],
)
def test_detects_the_accelerator_from_the_machine(monkeypatch, machine, expected):
  fake_machine(monkeypatch, **machine)
  assert accelerators.detect_accelerator() == expected


def test_requirement_follows_the_driver_and_pins_the_installed_jax():
  version = importlib.metadata.version('jax')
  assert accelerators.jax_requirement('gpu', driver_major=580) == f'jax[cuda13]=={version}'
  assert accelerators.jax_requirement('gpu', '0.10.2', driver_major=550) == 'jax[cuda12]==0.10.2'
  assert accelerators.jax_requirement('tpu', '0.10.2') == 'jax[tpu]==0.10.2'
  assert accelerators.jax_extra('gpu', driver_major=579) == 'cuda12'
  with pytest.raises(ValueError, match="'gpu' or 'tpu'"):
    accelerators.jax_requirement('cuda')


def test_unknown_driver_takes_the_cuda13_build(monkeypatch):
  fake_machine(monkeypatch, nvidia_smi=True, driver=None)
  assert accelerators.jax_requirement('gpu', '0.10.2') == 'jax[cuda13]==0.10.2'


def test_warning_only_for_an_accelerator_that_jax_does_not_use():
  warning = accelerators.cpu_fallback_warning('cpu', 'gpu', 'jax[cuda13]==0.10.2')
  assert 'has an NVIDIA GPU' in warning and 'pip install "jax[cuda13]==0.10.2"' in warning
  assert 'print(jax.devices())' in warning
  assert 'has a TPU' in accelerators.cpu_fallback_warning('cpu', 'tpu', 'jax[tpu]')
  assert accelerators.cpu_fallback_warning('gpu', 'gpu', 'jax[cuda13]') is None
  assert accelerators.cpu_fallback_warning('cpu', None, 'jax[cuda13]') is None
  # JAX_PLATFORMS=cpu is a deliberate CPU run; a list that allows the GPU is not.
  assert accelerators.cpu_fallback_warning('cpu', 'gpu', 'jax[cuda13]', 'cpu') is None
  assert accelerators.cpu_fallback_warning('cpu', 'gpu', 'jax[cuda13]', 'cuda,cpu')


def test_trainer_logs_the_backend_and_warns_on_a_gpu_machine(
  tiny_lra_data, tmp_path, monkeypatch, caplog
):
  fake_machine(monkeypatch, nvidia_smi=True, driver=550)
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  # Stops right after the start-up log: 12 examples do not split over 8 devices.
  config = tiny_config(tiny_lra_data, num_devices=8, batch_size=12)
  with caplog.at_level(logging.INFO), pytest.raises(ValueError, match='not divisible'):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert 'backend cpu' in caplog.text and 'local devices: cpu:cpu' in caplog.text
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  version = importlib.metadata.version('jax')
  assert any(f'pip install "jax[cuda12]=={version}"' in w for w in warnings), warnings


def test_no_warning_without_an_accelerator(monkeypatch, caplog):
  fake_machine(monkeypatch)
  with caplog.at_level(logging.INFO):
    accelerators.log_backend()
  assert 'backend cpu' in caplog.text
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_loads_by_path_without_jax():
  """The notebook's set-up cell reads the module by path before the right JAX build is installed:
  loading it and naming the requirement must not import JAX."""
  code = (
    "import runpy, sys; sys.modules['jax'] = None; "
    f'module = runpy.run_path({accelerators.__file__!r}); '
    "print(module['jax_requirement']('tpu', '1.0'))"
  )
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == 'jax[tpu]==1.0'


def test_the_driver_major_is_read_from_nvidia_smi(monkeypatch):
  """nvidia-smi's '580.65.06' is driver 580; no nvidia-smi, or output that is no version: None."""
  monkeypatch.setattr(shutil, 'which', lambda name: '/usr/bin/nvidia-smi')
  answer = {'stdout': '580.65.06\n'}
  monkeypatch.setattr(
    subprocess, 'run', lambda *args, **kwargs: subprocess.CompletedProcess(args, 0, **answer)
  )
  assert accelerators.nvidia_driver_major() == 580
  answer['stdout'] = 'No devices were found\n'
  assert accelerators.nvidia_driver_major() is None
  monkeypatch.setattr(shutil, 'which', lambda name: None)
  assert accelerators.nvidia_driver_major() is None


def test_the_backend_line_names_up_to_8_devices_and_marks_more():
  """The tests' 8 CPU devices are all named, with no ' ...' (which marks a longer list)."""
  line, _ = accelerators.backend_report()
  devices = jax.local_devices()
  assert line.count('cpu:') == min(len(devices), 8)
  assert line.endswith(' ...') == (len(devices) > 8)
