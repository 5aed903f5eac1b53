"""XLA backend settings that `train.py` and the benchmarks apply: the one place they are chosen.

`apply()` adds `XLA_FLAGS` to the process environment, where XLA reads them when JAX first
initialises a backend; so it must run before the first JAX computation (train.py and the benchmark
processes call it first thing). Flags already in `XLA_FLAGS` win: `apply()` never overrides a flag
the user set, and `LUNA_JAX_XLA_DEFAULTS=1` skips this module's flags altogether (the benchmark's
`--xla_defaults`). Their effect is measured in the README ("Backend settings").

CPU flags (ignored by the GPU and TPU backends):
  --xla_cpu_experimental_ynn_fusion_type=   no YNNPACK fusions: XLA's own (Eigen) matmuls, which
      take transposed operands without a copy and run the FFN-shaped matmuls of these models faster.
  --xla_cpu_enable_concurrency_optimized_scheduler=false   only with rematerialisation
      (`apply(remat=...)` with `config.model.remat` other than 'none'): the CPU scheduler that
      orders ops for concurrency runs the backward pass's recomputations early, so every layer's
      recomputed activations are alive at once and remat lowers nothing; XLA's memory-aware
      scheduler keeps them layer by layer.

GPU memory of processes that share a GPU (the benchmarks' parent and cell processes, a sweep's
runs): `gpu_memory_on_demand` and `environment_with`. JAX's GPU allocator may use
`XLA_CLIENT_MEM_FRACTION` of the GPU's memory, 0.75 unless set, whether or not it preallocates
(JAX's GPU memory documentation); `XLA_PYTHON_CLIENT_PREALLOCATE=false` makes it take memory as it
needs it, so a process that only initialised the GPU leaves the rest to the next.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: Flags added to `XLA_FLAGS` by `apply()`.
FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=',)
#: Flags added by `apply()` when the model rematerialises its layers.
REMAT_FLAGS = ('--xla_cpu_enable_concurrency_optimized_scheduler=false',)
#: Environment variable that, set to 1, keeps XLA's defaults.
DEFAULTS_VARIABLE = 'LUNA_JAX_XLA_DEFAULTS'


def flags_for(existing: str, flags: tuple[str, ...] = FLAGS) -> str:
  """`existing` XLA_FLAGS plus each of `flags` whose name it does not set yet.

  Args:
    existing: the current `XLA_FLAGS` value (space-separated `--name=value` items).
    flags: flags to add.

  Returns:
    The new `XLA_FLAGS` value.
  """
  names = {item.split('=', 1)[0] for item in existing.split()}
  added = [flag for flag in flags if flag.split('=', 1)[0] not in names]
  return ' '.join([*existing.split(), *added])


def apply(remat: str = 'none') -> str:
  """Adds this module's flags to `os.environ['XLA_FLAGS']` (unless `LUNA_JAX_XLA_DEFAULTS=1`).

  Args:
    remat: the model's `config.model.remat`; anything but 'none' adds `REMAT_FLAGS` too.

  Returns:
    The `XLA_FLAGS` value now in effect for backends initialised from here on.
  """
  if os.environ.get(DEFAULTS_VARIABLE) != '1':
    flags = FLAGS + (REMAT_FLAGS if remat != 'none' else ())
    os.environ['XLA_FLAGS'] = flags_for(os.environ.get('XLA_FLAGS', ''), flags)
  return os.environ.get('XLA_FLAGS', '')


#: The share of its GPU's memory that JAX may use (jax >= 0.10 reads this name).
MEMORY_FRACTION_VARIABLE = 'XLA_CLIENT_MEM_FRACTION'
#: The former name, which jax still reads, and refuses beside `MEMORY_FRACTION_VARIABLE`.
DEPRECATED_MEMORY_FRACTION_VARIABLE = 'XLA_PYTHON_CLIENT_MEM_FRACTION'
#: Share of a GPU's memory given to the processes that run on it, together: the rest is for
#: CUDA contexts and the processes that only initialised the GPU.
GPU_MEMORY_SHARE = 0.9


def gpu_memory_on_demand(fraction: float = GPU_MEMORY_SHARE) -> dict[str, str]:
  """The environment settings under which JAX takes GPU memory as it needs it, up to `fraction`.

  Args:
    fraction: the share of the GPU's memory the process may use, in (0, 1].

  Returns:
    {`MEMORY_FRACTION_VARIABLE`: fraction with 3 decimals, 'XLA_PYTHON_CLIENT_PREALLOCATE':
    'false'}, in that order (the order in which they are logged). They do nothing on a CPU.
  """
  return {MEMORY_FRACTION_VARIABLE: f'{fraction:.3f}', 'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}


def default_gpu_memory_on_demand() -> None:
  """Puts `gpu_memory_on_demand()` into `os.environ`, before JAX initialises a GPU, where the user
  chose nothing: no variable already set is changed, and no fraction is added beside one set
  under either name."""
  memory = gpu_memory_on_demand()
  if os.environ.keys() & {MEMORY_FRACTION_VARIABLE, DEPRECATED_MEMORY_FRACTION_VARIABLE}:
    del memory[MEMORY_FRACTION_VARIABLE]
  for name, value in memory.items():
    os.environ.setdefault(name, value)


def environment_with(
  settings: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
  """A child process's environment: `environ` (default `os.environ`) updated with `settings`,
  without `DEPRECATED_MEMORY_FRACTION_VARIABLE` where `settings` give `MEMORY_FRACTION_VARIABLE`
  (jax refuses to start with both)."""
  env = dict(os.environ if environ is None else environ, **settings)
  if MEMORY_FRACTION_VARIABLE in settings:
    env.pop(DEPRECATED_MEMORY_FRACTION_VARIABLE, None)
  return env
