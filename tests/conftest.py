"""Shared test setup: 8 fake CPU devices, fast compiles, a session compilation cache, tiny LRA data.

XLA_FLAGS and the JAX cache settings must be in place before jax is first imported, so they are set
here, at conftest import time (subprocesses, such as the notebook's kernel and the benchmark's
cells, inherit them). Code under test still defaults to one device wherever it does not ask for
`jax.local_devices()`. The tests' programs are tiny and compiled once or twice each, and compiling
takes about 70% of the suite's time, so XLA's CPU backend compiles for speed of compiling: no LLVM
optimisations (`--xla_backend_optimization_level=0`, `--xla_llvm_disable_expensive_passes`) and its
elemental IR emitter instead of the MLIR fusion emitters (`--xla_cpu_use_fusion_emitters=false`,
which took a fifth off the suite's time; jaxlib 0.11 and newer have only the fusion emitters and
stop at the flag, so it is set only before 0.11). Only the generated code is slower. The persistent
compilation cache lives in a fresh temporary folder per session, shared by the xdist workers and
subprocesses: programs compiled twice in one session (e.g. a training run and its resumed copy)
compile once.

Each test module starts from the session's environment variables and leaves no compiled programs
behind (`_module_isolation`).
"""

import atexit
import os
import re
import shutil
import tempfile
from importlib import metadata

_XLA_FLAGS = {
  'xla_force_host_platform_device_count': '8',
  'xla_backend_optimization_level': '0',
  'xla_llvm_disable_expensive_passes': 'true',
}
if tuple(int(part) for part in re.findall(r'\d+', metadata.version('jaxlib'))[:2]) < (0, 11):
  _XLA_FLAGS['xla_cpu_use_fusion_emitters'] = 'false'
for _name, _value in _XLA_FLAGS.items():
  if _name not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} --{_name}={_value}'.strip()
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE_DIR = tempfile.mkdtemp(prefix='jax_test_cache_')
  atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
  os.environ.update(
    JAX_COMPILATION_CACHE_DIR=_CACHE_DIR,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
  )

import pytest  # noqa: E402  (after XLA_FLAGS)


@pytest.fixture(autouse=True, scope='module')
def _module_isolation():
  """Starts jax's backend under the session's XLA_FLAGS before a module's own fixtures, restores
  the environment variables after the module and empties jax's caches.

  Code under test that sets XLA_FLAGS in its own process (`xla_settings.apply`, through the
  benchmarks' `main`) would otherwise start the worker's backend under them, when it ran first,
  or pass them to later modules' subprocesses: either way a subprocess's numerics differed from
  the worker's in the last bits (the SIGKILL resume test compares the two). Every compiled program
  in jax's in-memory caches keeps its code mapped: with XLA's fusion emitters (jaxlib >= 0.11) a
  worker reached the kernel's limit of 65530 memory maps and its compiles failed. A later module
  compiles again from the persistent cache.
  """
  import jax

  jax.devices()  # XLA reads XLA_FLAGS once, when the backend starts.
  before = dict(os.environ)
  yield
  for name in set(os.environ) - set(before):
    del os.environ[name]
  os.environ.update(before)
  jax.clear_caches()


#: Tiny sizes of the generated data (examples in the training split).
TINY_EXAMPLES = 64


@pytest.fixture(scope='session')
def tiny_lra_data(tmp_path_factory) -> dict[str, tuple[str, dict]]:
  """Generates every LRA task once, tiny: task -> (data_dir, lra.load_task options), for each task
  of `lra.TASKS` (tests/test_configs.py checks that none is missing)."""
  from lra import listops_generator, pathfinder_generator, synthetic

  root = tmp_path_factory.mktemp('lra_tiny')
  listops_generator.main(
    [
      '--output_dir',
      str(root / 'listops'),
      '--num_train',
      str(TINY_EXAMPLES),
      '--num_val',
      '16',
      '--num_test',
      '16',
      '--min_length',
      '5',
      '--max_length',
      '30',
      '--max_depth',
      '3',
      '--max_args',
      '4',
    ]
  )
  for task in synthetic.TASKS:
    synthetic.main(
      ['--task', task, '--output_dir', str(root / task), '--num_examples', str(TINY_EXAMPLES)]
    )
  pathfinder_generator.main(
    ['--output_dir', str(root / 'pathfinder'), '--resolution', '32', '--num_examples', '80']
  )
  pathfinder_generator.main(
    ['--output_dir', str(root / 'pathfinder'), '--resolution', '128', '--num_examples', '40']
  )
  return {
    'listops': (str(root / 'listops'), {'max_length': 32}),
    'text': (str(root / 'text'), {'max_length': 64}),
    'retrieval': (str(root / 'retrieval'), {'max_length': 64}),
    'image': (str(root / 'image'), {}),
    'pathfinder32': (str(root / 'pathfinder'), {}),
    'pathx': (str(root / 'pathfinder'), {}),
  }


@pytest.fixture(scope='module')
def fast_compilation():
  """Tiny models compile much faster without XLA optimisations (jax_disable_most_optimizations)."""
  import jax

  previous = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)
