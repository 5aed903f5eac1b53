"""Causal Luna speed and memory: naive vs scan vs chunked, beside bidirectional Luna, and decoding.

  python -m benchmarks.causal_speed --output_dir benchmarks/results/cpu/causal

Mode 1 (attention): forward + backward of the attention functions alone (no projections, no FFN),
batch 1, 4 heads of 64 (d = 256), l = 16, at each length:
  naive          the authors' parallel form: cumulative sums of per-position l x dh outer products
                 (O(n*l*dh) memory per head);
  scan           `causal_luna_attention`, one step per position;
  chunked        `causal_luna_attention_chunked` (exact chunked-parallel form);
  bidirectional  pack + unpack softmax attention (`dot_product_attention` twice), the non-causal
                 cost.
Mode 2 (decoding): tokens/s of a 4-layer, 256-wide `LunaLM` generating with its O(l*d) cache
(`luna_jax.model.generation.generate`) against recomputing the whole prefix for every new token.

Writes `results.json` and `table.md` in `--output_dir`; prints the table.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks.speed_memory_harness import (
  compiled_memory,
  describe_machine,
  median_seconds,
  write_results,
)
from benchmarks.speed_memory_report import length_label
from lra import cli
from luna_jax.model import attention as attn
from luna_jax.model import generation
from luna_jax.model.config import ModelConfig
from luna_jax.model.decoders import LunaLM

IMPLEMENTATIONS = ('naive', 'scan', 'chunked', 'bidirectional')
HEADS, HEAD_DIM, PROJECTION_LENGTH = 4, 64, 16


def naive_causal_luna(
  pq: jax.Array, q: jax.Array, pk: jax.Array, k: jax.Array, v: jax.Array
) -> jax.Array:
  """The authors' parallel causal Luna: prefix sums of outer products, `[b, n, h, dh]` inputs."""
  scale = q.shape[-1] ** -0.5
  t = jnp.arange(1, q.shape[1] + 1, dtype=jnp.float32)[None, :, None, None]
  a = attn.causal_pack_activation(jnp.einsum('bnhd,blhd->bnhl', pk, pq * scale))
  key_sums = jnp.cumsum(jnp.einsum('bnhd,bnhl->bnhdl', k, a), axis=1)
  probs = jax.nn.softmax(jnp.einsum('bnhd,bnhdl->bnhl', q * scale, key_sums) / t, axis=-1)
  value_sums = jnp.cumsum(jnp.einsum('bnhl,bnhd->bnhld', a, v), axis=1)
  return jnp.einsum('bnhl,bnhld->bnhd', probs, value_sums) / t


def bidirectional_luna(
  pq: jax.Array, q: jax.Array, pk: jax.Array, k: jax.Array, v: jax.Array
) -> jax.Array:
  """Pack then unpack softmax attention, the bidirectional Luna cost without projections (`k`, the
  causal forms' second key, is not needed: the pack attends over `pk` and `v`)."""
  del k
  y_p, _ = attn.dot_product_attention(pq, pk, v)
  y, _ = attn.dot_product_attention(q, y_p, y_p)
  return y


def attention_function(name: str, chunk_size: int) -> Callable:
  """The attention function of implementation `name` (one of IMPLEMENTATIONS), taking (pq, q, pk,
  k, v) and returning the `[b, n, h, dh]` output."""
  if name == 'naive':
    return naive_causal_luna
  if name == 'scan':
    return lambda *a: attn.causal_luna_attention(*a)[0]
  if name == 'chunked':
    return lambda *a: attn.causal_luna_attention_chunked(*a, chunk_size=chunk_size)[0]
  return bidirectional_luna


def measure_attention(name: str, length: int, repeats: int, chunk_size: int) -> dict[str, Any]:
  """Compile time, median forward+backward time and compiled memory of one implementation."""
  keys = jax.random.split(jax.random.PRNGKey(0), 5)
  pq = jax.random.normal(keys[0], (1, PROJECTION_LENGTH, HEADS, HEAD_DIM))
  q, pk, k, v = (jax.random.normal(key, (1, length, HEADS, HEAD_DIM)) for key in keys[1:])
  fn = attention_function(name, chunk_size)
  grad = jax.grad(lambda *a: jnp.sum(fn(*a) ** 2), argnums=(0, 1, 2, 3, 4))
  start = time.perf_counter()
  compiled = jax.jit(grad).lower(pq, q, pk, k, v).compile()
  compile_s = time.perf_counter() - start
  seconds = median_seconds(compiled, (pq, q, pk, k, v), repeats, warmup=1)
  memory = compiled_memory(compiled)['compiled_peak_bytes']
  return {
    'implementation': name,
    'length': length,
    'seconds': seconds,
    'compile_s': compile_s,
    'memory_bytes': memory,
    'load_average_1min': os.getloadavg()[0],
  }


def measure_decoding(num_tokens: int, recompute_samples: int) -> dict[str, Any]:
  """Tokens/s of cached generation vs recomputing the prefix (padded to num_tokens, one compile)."""
  cfg = ModelConfig(
    vocab_size=259,
    max_length=num_tokens + 1,
    num_layers=4,
    emb_dim=256,
    num_heads=4,
    mlp_dim=1024,
    projection_length=PROJECTION_LENGTH,
    prepend_cls=False,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
  )
  model = LunaLM(cfg)
  prompt = jnp.ones((1, 1), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), prompt)['params']
  rng = jax.random.PRNGKey(1)
  generate = lambda: generation.generate(model, params, prompt, num_tokens, rng)
  jax.block_until_ready(generate())  # compile
  start = time.perf_counter()
  jax.block_until_ready(generate())
  cached_s = time.perf_counter() - start

  forward = jax.jit(lambda tokens: model.apply({'params': params}, tokens))
  tokens = jnp.ones((1, num_tokens), jnp.int32)
  per_token = median_seconds(forward, (tokens,), recompute_samples, warmup=1)
  return {
    'num_tokens': num_tokens,
    'cached_tokens_per_s': num_tokens / cached_s,
    'recompute_tokens_per_s': 1.0 / per_token,
    'note': 'recompute: one full forward over the padded prefix per new token (its cost does '
    'not depend on the position, so the median of a few forwards gives the rate)',
  }


def table(results: dict[str, Any]) -> str:
  """The markdown tables of a `run` results document: seconds / MiB per implementation and length,
  the speed-ups, and the decoding rates."""
  cells = {(c['implementation'], c['length']): c for c in results['attention']}
  lengths = sorted({c['length'] for c in results['attention']})
  head = ' | '.join(length_label(n) for n in lengths)
  lines = [
    'Forward + backward of the attention alone (batch 1, 4 x 64, l = 16): seconds / MiB',
    '',
    f'| implementation | {head} |',
    '|---' * (len(lengths) + 1) + '|',
  ]
  for name in results['implementations']:
    row = []
    for n in lengths:
      c = cells.get((name, n))
      row.append('-' if c is None else f'{c["seconds"]:.3f} s / {c["memory_bytes"] / 2**20:.0f}')
    lines.append(f'| {name} | ' + ' | '.join(row) + ' |')
  ratios = []
  for n in lengths:
    if ('scan', n) in cells and ('chunked', n) in cells and ('bidirectional', n) in cells:
      chunked = cells[('chunked', n)]['seconds']
      ratios.append(
        f'{length_label(n)}: chunked is {cells[("scan", n)]["seconds"] / chunked:.1f}x faster '
        f'than scan and {chunked / cells[("bidirectional", n)]["seconds"]:.2f}x the '
        f'bidirectional time'
      )
  lines += [''] + [f'- {r}' for r in ratios]
  if results.get('decoding'):
    d = results['decoding']
    lines += [
      '',
      f'Decoding {d["num_tokens"]} tokens (4-layer, 256-wide LunaLM): cached '
      f'{d["cached_tokens_per_s"]:.0f} tokens/s, recomputing the prefix '
      f'{d["recompute_tokens_per_s"]:.1f} tokens/s '
      f'({d["cached_tokens_per_s"] / d["recompute_tokens_per_s"]:.0f}x).',
    ]
  return '\n'.join(lines) + '\n'


def run(
  lengths: Sequence[int],
  implementations: Sequence[str],
  repeats: int,
  chunk_size: int,
  decode_tokens: int,
  skip: dict[str, int] | None = None,
) -> dict[str, Any]:
  """Measures every (implementation, length) cell and the decoding comparison.

  Args:
    lengths: sequence lengths.
    implementations: subset of IMPLEMENTATIONS.
    repeats: timed runs per cell (median).
    chunk_size: chunk of the chunked form.
    decode_tokens: tokens to generate in the decoding comparison (0: skip it).
    skip: implementation -> longest length to run it at (e.g. the scan is slow on long inputs).

  Returns:
    The results dict written to results.json.
  """
  cells = []
  for n in lengths:
    for name in implementations:
      if skip and n > skip.get(name, n):
        continue
      cells.append(measure_attention(name, n, repeats, chunk_size))
      print(f'{name:>13} {n:6d}: {cells[-1]["seconds"]:.4f} s', flush=True)
  return {
    'machine': describe_machine(),
    'chunk_size': chunk_size,
    'repeats': repeats,
    'implementations': list(implementations),
    'attention': cells,
    'decoding': measure_decoding(decode_tokens, 3) if decode_tokens else None,
  }


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--lengths', type=cli.lengths, default='1024,2048,4096,8192,16384')
  parser.add_argument('--implementations', default=','.join(IMPLEMENTATIONS))
  parser.add_argument('--repeats', type=cli.integer(1), default=3)
  parser.add_argument('--chunk_size', type=cli.integer(1), default=64)
  parser.add_argument(
    '--scan_max_length',
    type=cli.integer(1),
    default=16384,
    help='longest length at which the (slow) scan is measured',
  )
  parser.add_argument('--decode_tokens', type=cli.integer(0), default=1024)
  parser.add_argument('--output_dir', type=cli.path, default='benchmarks/results/cpu/causal')
  args = parser.parse_args(argv)
  results = run(
    args.lengths,
    args.implementations.split(','),
    args.repeats,
    args.chunk_size,
    args.decode_tokens,
    skip={'scan': args.scan_max_length},
  )
  text = table(results)
  write_results(args.output_dir, results, text)
  print(text)


if __name__ == '__main__':
  main()
