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
"""

from __future__ import annotations

import os

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
