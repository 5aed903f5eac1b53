r"""What the full WMT'14 recipe costs: the FLOPs of one training step of a `configs/wmt14.py`
variant at `max_tokens` tokens (XLA's cost analysis of the compiled step: forward, backward and the
variant's optimizer update), its measured time on this machine, and the device hours of the
paper's 500k updates of 8 x 8192 tokens at a stated sustained throughput.

  python -m benchmarks.wmt14_cost --variant luna16_softplus_tied --lengths 32 --steps 2 \
      --output benchmarks/results/cpu/wmt14_cost/luna16_softplus_tied

A batch of padded length L holds max_tokens // L sentence pairs (`corpora.token_batches`); random
token ids stand in for data (the cost does not depend on them). The estimate is
  hours = updates x devices x FLOPs per device-batch / sustained FLOP/s / 3600,
for the throughputs given with `--sustained_tflops` (e.g. 30% of a V100's 125 fp16 TFLOP/s, the
paper's GPU, or of an H100's 989 bf16 TFLOP/s); it leaves out evaluation, checkpoints and input.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

import luna_jax
from benchmarks.speed_memory_harness import xla_cost
from configs import wmt14
from lra import cli
from lra.files import write_atomically
from luna_jax.training import optim, run_config, steps

#: The paper's run: 500k updates on 8 GPUs (appendix A.2).
PAPER_UPDATES, PAPER_DEVICES = 500_000, 8


def measure(
  config: ml_collections.ConfigDict, vocab_size: int, lengths: list[int], num_steps: int
) -> list[dict[str, Any]]:
  """Compiles and times the train step of `config`'s model on one device for each padded length.

  Args:
    config: a `configs/wmt14.py` config (its model, optimizer and `data.options.max_tokens`).
    vocab_size: the shared vocabulary's size.
    lengths: padded lengths L (source and target) to measure.
    num_steps: timed steps per length (after one untimed step).

  Returns:
    Per length: 'length', 'rows', 'tokens' (rows x L), 'flops' (XLA's count for one step),
    'seconds' (mean measured step time) and 'tflops_per_second' (achieved).
  """
  run = run_config.parse_config(config)
  options = run.data.options
  model = luna_jax.build_model(
    run.model,
    vocab_size=vocab_size,
    num_classes=vocab_size,
    max_length=max(options['max_length'], options['max_target_length']),
    bos_id=2,
  )
  optimizer = optim.make_optimizer(run.optimizer)
  rng = np.random.default_rng(0)
  results = []
  for length in lengths:
    rows = options['max_tokens'] // length
    tokens = rng.integers(4, vocab_size, (rows, length)).astype(np.int32)
    batch = {'inputs': tokens, 'lengths': np.full(rows, length, np.int32), 'targets': tokens}
    state = steps.create_train_state(jax.random.PRNGKey(0), model, optimizer, batch)
    step = jax.jit(steps.run_train_step(model, optimizer, run.training), donate_argnums=(0,))
    compiled = step.lower(state, batch).compile()
    flops = float(xla_cost(compiled)['flops'])
    state, _ = compiled(state, batch)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(num_steps):
      state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / num_steps
    results.append(
      {
        'length': length,
        'rows': rows,
        'tokens': rows * length,
        'flops': flops,
        'seconds': seconds,
        'tflops_per_second': flops / seconds / 1e12,
      }
    )
  return results


def device_hours(flops_per_batch: float, sustained_tflops: float) -> float:
  """Hours of one device for the paper's 500k updates x 8 device-batches at `sustained_tflops`."""
  return PAPER_UPDATES * PAPER_DEVICES * flops_per_batch / (sustained_tflops * 1e12) / 3600


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--variant', default=wmt14.DEFAULT_VARIANT, choices=list(wmt14.VARIANTS))
  parser.add_argument('--vocab_size', type=cli.integer(5), default=37000)
  parser.add_argument(
    '--lengths', type=cli.lengths, default=[32], help='padded lengths, comma-separated'
  )
  parser.add_argument('--steps', type=cli.integer(1), default=2, help='timed steps per length')
  parser.add_argument(
    '--sustained_tflops',
    default='37.5,297',
    help='device throughputs for the estimate (default: 30%% of V100 fp16 and of H100 bf16 peak)',
  )
  parser.add_argument('--output', help='folder for results.json')
  args = parser.parse_args(argv)
  config = wmt14.get_config(args.variant)
  measured = measure(config, args.vocab_size, args.lengths, args.steps)
  mean_flops = float(np.mean([m['flops'] for m in measured]))
  estimates = {
    tflops: device_hours(mean_flops, float(tflops)) for tflops in args.sustained_tflops.split(',')
  }
  result = {
    'variant': args.variant,
    'vocab_size': args.vocab_size,
    'max_tokens': config.data.options.max_tokens,
    'device': f'{jax.devices()[0].device_kind} ({jax.default_backend()})',
    'measured': measured,
    'updates': PAPER_UPDATES,
    'devices': PAPER_DEVICES,
    'device_hours_at_sustained_tflops': estimates,
  }
  for m in measured:
    print(
      f'L={m["length"]}: {m["rows"]} x {m["length"]} tokens, {m["flops"] / 1e12:.2f} TFLOP a '
      f'step, {m["seconds"]:.2f} s here ({m["tflops_per_second"] * 1e3:.1f} GFLOP/s)'
    )
  for tflops, hours in estimates.items():
    print(f'{PAPER_UPDATES} updates x {PAPER_DEVICES} devices at {tflops} TFLOP/s: {hours:.0f} h')
  if args.output:
    os.makedirs(args.output, exist_ok=True)
    write_atomically(os.path.join(args.output, 'results.json'), json.dumps(result, indent=2))


if __name__ == '__main__':
  main()
