"""Which accelerator the machine has, which JAX build it needs, and a warning when JAX runs on the
CPU beside an unused GPU or TPU.

`pip install -r requirements.txt` installs the CPU build of jaxlib on any machine: JAX then runs on
the CPU, silently, even on a GPU box. The trainer calls `log_backend()` at start (after any
multi-process set-up, before the first device is used): it logs the JAX backend and devices, and
warns, naming the pip requirement to install, when this module finds an accelerator that JAX does
not use. The README's set-up lines and the notebook's set-up cell use the same detection.

Detection (heuristics, no JAX needed):
  NVIDIA GPU  `nvidia-smi` on the PATH, or the device file /dev/nvidia0; the driver version from
              `nvidia-smi --query-gpu=driver_version` picks the CUDA build: `jax[cuda13]` for driver
              580 or newer, `jax[cuda12]` below (JAX's CUDA 13 wheels need driver 580).
  TPU         a TPU VM's device files: /dev/accel<N> (TPU v2-v4) or /dev/vfio/<N> (v5e and newer);
              `jax[tpu]`.

This module imports JAX only inside `backend_report`, so the notebook can load it by path
(`runpy.run_path`) before the right JAX build is installed.
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import shutil
import subprocess

from absl import logging

#: The JAX extra for each accelerator this module knows (`jax_requirement`).
GPU, TPU = 'gpu', 'tpu'
#: Oldest NVIDIA driver for JAX's CUDA 13 wheels; older drivers take the CUDA 12 ones.
CUDA13_MIN_DRIVER = 580


def detect_accelerator() -> str | None:
  """'gpu' (an NVIDIA GPU), 'tpu' (a TPU VM's device files) or None."""
  if shutil.which('nvidia-smi') or os.path.exists('/dev/nvidia0'):
    return GPU
  if glob.glob('/dev/accel[0-9]*') or glob.glob('/dev/vfio/[0-9]*'):
    return TPU
  return None


def nvidia_driver_major() -> int | None:
  """The NVIDIA driver's major version (e.g. 580), or None when nvidia-smi is missing or fails."""
  if not shutil.which('nvidia-smi'):
    return None
  try:
    out = subprocess.run(
      ['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
      capture_output=True,
      text=True,
      timeout=30,
      check=True,
    ).stdout
    return int(out.split()[0].split('.')[0])
  except (OSError, subprocess.SubprocessError, ValueError, IndexError):
    return None


def jax_extra(accelerator: str, driver_major: int | None = None) -> str:
  """The extra of the `jax` package that installs the build for `accelerator`.

  Args:
    accelerator: 'gpu' or 'tpu' (`detect_accelerator`).
    driver_major: the NVIDIA driver's major version (default: `nvidia_driver_major()`); unknown
      gives the CUDA 13 build, JAX's default.

  Returns:
    'cuda13', 'cuda12' or 'tpu'.

  Raises:
    ValueError: an accelerator other than 'gpu' or 'tpu'.
  """
  if accelerator == TPU:
    return 'tpu'
  if accelerator != GPU:
    raise ValueError(f"accelerator must be 'gpu' or 'tpu', got {accelerator!r}.")
  driver = nvidia_driver_major() if driver_major is None else driver_major
  return 'cuda12' if driver is not None and driver < CUDA13_MIN_DRIVER else 'cuda13'


def jax_requirement(
  accelerator: str, jax_version: str | None = None, driver_major: int | None = None
) -> str:
  """The pip requirement of the JAX build for `accelerator`, pinned to the installed JAX version.

  Args:
    accelerator: 'gpu' or 'tpu'.
    jax_version: the version to pin (default: the installed `jax` distribution's, read without
      importing JAX; unpinned when JAX is not installed).
    driver_major: as for `jax_extra`.

  Returns:
    E.g. 'jax[cuda13]==0.10.2', 'jax[cuda12]==0.10.2' or 'jax[tpu]==0.10.2'.

  Raises:
    ValueError: an accelerator other than 'gpu' or 'tpu'.
  """
  extra = jax_extra(accelerator, driver_major)
  if jax_version is None:
    try:
      jax_version = importlib.metadata.version('jax')
    except importlib.metadata.PackageNotFoundError:
      return f'jax[{extra}]'
  return f'jax[{extra}]=={jax_version}'


def cpu_fallback_warning(
  backend: str, accelerator: str | None, requirement: str, platforms: str = ''
) -> str | None:
  """The warning for JAX on the CPU beside an accelerator, or None when there is nothing to say.

  Args:
    backend: `jax.default_backend()` ('cpu', 'gpu', 'tpu').
    accelerator: what `detect_accelerator` found.
    requirement: the pip requirement that installs JAX's build for it (`jax_requirement`).
    platforms: the `JAX_PLATFORMS` environment variable; a value that names 'cpu' alone is a
      deliberate CPU run and gets no warning.

  Returns:
    One paragraph naming the accelerator, the pip command and the check, or None.
  """
  if backend != 'cpu' or accelerator is None or platforms.strip() == 'cpu':
    return None
  name = 'an NVIDIA GPU' if accelerator == GPU else 'a TPU'
  return (
    f'JAX runs on the CPU, but this machine has {name}: the installed jaxlib is the CPU build. '
    f'Install the {accelerator.upper()} build with  pip install "{requirement}"  and check with  '
    'python -c "import jax; print(jax.devices())"  (set JAX_PLATFORMS=cpu to run on the CPU '
    'without this warning).'
  )


def backend_report() -> tuple[str, str | None]:
  """What JAX runs on, and the warning when that is the CPU beside a GPU or TPU.

  Returns:
    `(line, warning)`: the line names the JAX version, backend, process and local devices; the
    warning is `cpu_fallback_warning`'s (None when there is nothing to say).
  """
  import jax

  devices = jax.local_devices()
  backend = jax.default_backend()
  shown = ', '.join(f'{d.platform}:{d.device_kind}' for d in devices[:8])
  line = (
    f'JAX {jax.__version__}, backend {backend}, process {jax.process_index()}/'
    f'{jax.process_count()}, {len(devices)} local devices: {shown}'
    + (' ...' if len(devices) > 8 else '')
  )
  accelerator = detect_accelerator() if backend == 'cpu' else None
  if accelerator is None:
    return line, None
  requirement = jax_requirement(accelerator)
  platforms = os.environ.get('JAX_PLATFORMS', '')
  return line, cpu_fallback_warning(backend, accelerator, requirement, platforms)


def log_backend() -> None:
  """Logs `backend_report()`'s line (INFO) and warning (WARNING) with absl logging."""
  line, warning = backend_report()
  logging.info(line)
  if warning:
    logging.warning(warning)
