r"""Float32 against bfloat16 training gradients of one model, from one set of weights, on real
batches: does a bfloat16 precision policy change the gradient the optimizer sees?

  python -m lra.listops_generator --output_dir data/listops_precision --num_train 128 \
      --num_val 16 --num_test 16 --seed 0
  python -m benchmarks.precision_gradients --data_dir data/listops_precision \
      --output_dir benchmarks/results/cpu/precision

The model is a task config's (default `configs/listops.py:transformer`, the recipe whose bfloat16
run collapsed at its learning-rate peak on a GPU, benchmarks/results/gpu/README.md), initialised
as the trainer does (`luna_jax.training.steps.create_train_state`, `--seed`). Each of the first
`--num_batches` training batches (`lra.train_batches`, the recipe's length) gives one training
gradient of the same parameters with the same dropout key per `--precisions` policy
(`model.precision`, `luna_jax.model.config.PRECISIONS`): 'float32' (the reference), 'bfloat16'
(bfloat16 matmul inputs, everything else float32) and 'bfloat16_all' (bfloat16 activations too;
parameters, softmax and normalisers float32 in every policy). Reported, per batch and over the
batches, for each bfloat16 policy against float32:

  per parameter   cosine similarity of the two gradients, relative error |g16 - g32| / |g32|,
                  norm ratio |g16| / |g32| and the share of entries whose signs agree (Adam's
                  first updates are close to the sign of the gradient);
  whole model     loss, global gradient norm in every policy, global cosine and relative error;
  per layer       entropy of the softmax attention (nats; mean over batch, heads and real query
                  rows) in every policy, beside log(real keys), the entropy of uniform attention.

Then (`--adam_steps K`, default 1; 0 skips it) the same comparison runs again after K steps of the
recipe's optimizer at its peak learning rate on the first batch (float32 gradients): AdamW's first
step moves every weight by the learning rate against its gradient's sign, the jolt the peak of the
schedule gives. The defaults (3 batches of 4 at length 2000, three policies) take about 15 minutes
on 2 CPU cores.

Writes `results.json` and `table.md` in `--output_dir` and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

import lra
import luna_jax
from benchmarks.speed_memory_harness import describe_machine, write_results
from lra import cli
from luna_jax.model.config import PRECISIONS
from luna_jax.training import optim, steps

PyTree = Any
#: The policy every other one is compared with.
REFERENCE = 'float32'


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """The command line (see the module docstring)."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data_dir', required=True, help='ListOps TSV files (the task of --config).')
  parser.add_argument('--config', default='listops:transformer', help='<config file>:<argument>.')
  parser.add_argument('--batch_size', type=cli.integer(1), default=4)
  parser.add_argument(
    '--max_length', type=cli.integer(1), default=None, help="default: the config's"
  )
  parser.add_argument('--num_batches', type=cli.integer(1), default=3)
  parser.add_argument(
    '--seed', type=cli.integer(0), default=0, help='parameters, dropout and data order'
  )
  parser.add_argument(
    '--adam_steps', type=cli.integer(0), default=1, help='compare again after K steps (0: not)'
  )
  parser.add_argument(
    '--precisions',
    default=','.join(PRECISIONS),
    help=f'comma-separated policies, {REFERENCE!r} first (the reference); of {list(PRECISIONS)}',
  )
  parser.add_argument('--output_dir', default='benchmarks/results/cpu/precision')
  args = parser.parse_args(argv)
  args.precisions = tuple(args.precisions.split(','))
  unknown = sorted(set(args.precisions) - set(PRECISIONS))
  if unknown or args.precisions[0] != REFERENCE or len(args.precisions) < 2:
    parser.error(
      f'--precisions={",".join(args.precisions)}: {REFERENCE!r} first, then one or more of '
      f'{list(PRECISIONS)}' + (f' (unknown: {unknown})' if unknown else '') + '.'
    )
  return args


def load_config(spec: str) -> Any:
  """`configs/<name>.py`'s config for `<name>:<argument>` (e.g. 'listops:transformer')."""
  name, _, arg = spec.partition(':')
  return importlib.import_module(f'configs.{name}').get_config(arg or None)


def attention_entropy(probs: jax.Array, query_mask: jax.Array) -> jax.Array:
  """Mean entropy in nats of `[batch, heads, q, k]` float32 attention rows over the batch, the
  heads and the queries where `query_mask` (`[batch, q]` bool) is True."""
  logs = jnp.log(jnp.where(probs > 0, probs, 1.0))
  entropy = -jnp.sum(probs * logs, axis=-1)  # [batch, heads, q]
  weights = jnp.broadcast_to(query_mask[:, None, :], entropy.shape).astype(jnp.float32)
  return jnp.sum(entropy * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def make_gradient_fn(model: flax.linen.Module, max_length: int):
  """A jitted `(params, batch, dropout_key) -> (loss, grads, entropies)`: the trainer's training
  loss (`luna_jax.training.steps.train_step`: dropout on, mean over the batch) and its gradient,
  with the entropy of every softmax attention that sows its probabilities."""
  objective = model.objective

  def loss_fn(params, batch, key):
    logits, state = model.apply(
      {'params': params},
      **steps.batch_inputs(batch, model),
      train=True,
      rngs={'dropout': key},
      mutable=['intermediates'],
    )
    weights = objective.weights(batch)
    loss = jnp.sum(objective.losses(logits, batch) * weights) / jnp.sum(weights)
    offset = model.encoder.prepend_cls
    lengths = batch['lengths'] + offset
    query_mask = jnp.arange(max_length + offset)[None, :] < lengths[:, None]
    sown = flax.traverse_util.flatten_dict(state['intermediates'], sep='/')
    entropies = {
      name.removesuffix('/probs').removesuffix('/attention'): attention_entropy(
        probs[0], query_mask
      )
      for name, probs in sown.items()
      if name.endswith('probs')
    }
    return loss, entropies

  def gradient(params, batch, key):
    (loss, entropies), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key)
    return loss, grads, entropies

  return jax.jit(gradient)


def compare(g32: PyTree, g16: PyTree) -> dict[str, dict[str, float]]:
  """Per parameter path and for the whole model ('all'): cosine, relative error, norm ratio and
  sign agreement of the bfloat16 gradient `g16` against the float32 one `g32`."""
  flat32 = flax.traverse_util.flatten_dict(jax.device_get(g32), sep='/')
  flat16 = flax.traverse_util.flatten_dict(jax.device_get(g16), sep='/')

  def figures(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return {
      'cosine': float(a @ b / max(na * nb, 1e-300)),
      'relative_error': float(np.linalg.norm(b - a) / max(na, 1e-300)),
      'norm_ratio': float(nb / max(na, 1e-300)),
      'sign_agreement': float(np.mean(np.sign(a) == np.sign(b))),
      'norm32': float(na),
    }

  out = {path: figures(flat32[path], flat16[path]) for path in sorted(flat32)}
  out['all'] = figures(
    np.concatenate([flat32[p].ravel() for p in sorted(flat32)]),
    np.concatenate([flat16[p].ravel() for p in sorted(flat16)]),
  )
  return out


def measure(
  params: PyTree,
  batches: Sequence[Mapping[str, np.ndarray]],
  gradients: Mapping[str, Any],
  seed: int,
  prepend_cls: bool,
) -> dict[str, Any]:
  """Every policy's losses, gradients and entropies on every batch (`gradients` maps policy names,
  the reference first, to `make_gradient_fn`s), each policy's comparison with the reference, and
  the comparison of each batch's reference gradient with the previous batch's; the entropy of
  uniform attention over the real keys counts the CLS position where the model has one
  (`prepend_cls`)."""
  per_batch, previous = [], None
  for index, batch in enumerate(batches):
    key = jax.random.fold_in(jax.random.PRNGKey(seed), index)
    record: dict[str, Any] = {'batch': index}
    grads = {}
    for name, gradient in gradients.items():
      start = time.perf_counter()
      loss, grads[name], entropies = gradient(params, batch, key)
      jax.block_until_ready(grads[name])
      record[name] = {
        'loss': float(loss),
        'grad_norm': float(optax.tree.norm(grads[name])),
        'entropy': {layer: float(value) for layer, value in sorted(entropies.items())},
        'seconds': time.perf_counter() - start,
      }
      print(f'  batch {index} {name}: loss {float(loss):.5f}, {record[name]["seconds"]:.1f} s')
    record['comparison'] = {
      name: compare(grads[REFERENCE], g) for name, g in grads.items() if name != REFERENCE
    }
    if previous is not None:  # The scale of minibatch noise: the last batch's float32 gradient.
      record['previous_batch'] = compare(previous, grads[REFERENCE])['all']
    previous = grads[REFERENCE]
    rows = np.asarray(batch['lengths'], np.float64) + prepend_cls  # Real tokens (and the CLS).
    record['uniform_entropy'] = float(np.sum(rows * np.log(rows)) / np.sum(rows))
    per_batch.append(record)
  return {'batches': per_batch, 'summary': summarize(per_batch)}


def summarize(per_batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Mean and minimum over the batches of every comparison figure (per compared policy), and the
  mean entropies, gradient norms and losses of every policy."""
  compared = list(per_batch[0]['comparison'])
  names = [REFERENCE, *compared]
  figures = ('cosine', 'relative_error', 'norm_ratio', 'sign_agreement')
  comparison = {
    name: {
      path: {
        f'{stat}_{figure}': float(fn([b['comparison'][name][path][figure] for b in per_batch]))
        for figure in figures
        for stat, fn in (('mean', np.mean), ('min', np.min), ('max', np.max))
      }
      for path in per_batch[0]['comparison'][name]
    }
    for name in compared
  }
  mean = lambda values: float(np.mean(list(values)))
  entropy = {
    layer: {name: mean(b[name]['entropy'][layer] for b in per_batch) for name in names}
    for layer in per_batch[0][REFERENCE]['entropy']
  }
  between = [b['previous_batch']['cosine'] for b in per_batch if 'previous_batch' in b]
  return {
    'comparison': comparison,
    'batch_to_batch_cosine': float(np.mean(between)) if between else None,
    'entropy': entropy,
    'uniform_entropy': float(np.mean([b['uniform_entropy'] for b in per_batch])),
    'grad_norm': {name: mean(b[name]['grad_norm'] for b in per_batch) for name in names},
    'loss': {name: mean(b[name]['loss'] for b in per_batch) for name in names},
  }


def adam_steps(
  params: PyTree,
  batch: Mapping[str, np.ndarray],
  gradient: Any,
  optimizer_config: optim.OptimizerConfig,
  num_steps: int,
  seed: int,
) -> tuple[PyTree, float]:
  """`num_steps` steps of the recipe's optimizer (AdamW, its betas, eps, weight decay and clipping)
  at the schedule's peak learning rate on `batch` with float32 gradients; returns the parameters
  and that rate."""
  peak = float(optim.schedule_from_config(optimizer_config)(optimizer_config.warmup_steps))
  constant = dataclasses.replace(optimizer_config, schedule='constant', learning_rate=peak)
  tx = optim.make_optimizer(constant)
  state = tx.init(params)
  for step in range(num_steps):
    _, grads, _ = gradient(params, batch, jax.random.PRNGKey(seed + 1000 + step))
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, peak


def table(results: Mapping[str, Any]) -> str:
  """The markdown report of `results` (one section per compared state)."""
  lines = []
  for state in results['states']:
    summary = state['summary']
    names = list(summary['loss'])
    compared = list(summary['comparison'])
    lines += [
      f'### {state["name"]}',
      '',
      f'Means over {len(state["batches"])} batches: '
      + '; '.join(
        f'{name} loss {summary["loss"][name]:.5f}, gradient norm {summary["grad_norm"][name]:.4g}'
        for name in names
      ),
      '',
      'Cosine of the float32 gradients of consecutive batches (the scale of minibatch noise): '
      + (
        f'{summary["batch_to_batch_cosine"]:.4f}'
        if summary['batch_to_batch_cosine'] is not None
        else 'n/a (one batch)'
      ),
      '',
      'Each policy against float32: cosine mean (min), relative error mean (max), norm ratio mean,'
      ' sign agreement mean.',
      '',
      '| parameter | ' + ' | '.join(compared) + ' |',
      '|---|' + '---:|' * len(compared),
    ]
    for path in summary['comparison'][compared[0]]:
      cells = []
      for name in compared:
        f = summary['comparison'][name][path]
        cells.append(
          f'{f["mean_cosine"]:.5f} ({f["min_cosine"]:.5f}), {f["mean_relative_error"]:.4f} '
          f'({f["max_relative_error"]:.4f}), {f["mean_norm_ratio"]:.4f}, '
          f'{f["mean_sign_agreement"]:.4f}'
        )
      lines.append(f'| {path} | ' + ' | '.join(cells) + ' |')
    lines += [
      '',
      f'Attention entropy (nats; uniform over the real keys: {summary["uniform_entropy"]:.3f})',
      '',
      '| layer | ' + ' | '.join(names) + ' |',
      '|---|' + '---:|' * len(names),
    ]
    for layer, values in summary['entropy'].items():
      lines.append(f'| {layer} | ' + ' | '.join(f'{values[n]:.4f}' for n in names) + ' |')
    lines.append('')
  return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the comparison and writes `results.json` and `table.md` (see the module docstring)."""
  args = parse_args(argv)
  config = load_config(args.config)
  options = dict(config.data.options)
  if args.max_length:
    options['max_length'] = args.max_length
  data = lra.load_task(config.data.task, args.data_dir, **options)
  model_config = config.model.to_dict()
  models = {
    name: luna_jax.build_model(
      {**model_config, 'precision': name},
      vocab_size=data.vocab_size,
      num_classes=data.num_classes,
      max_length=data.max_length,
      dual=data.dual,
    )
    for name in args.precisions
  }
  optimizer_config = optim.OptimizerConfig.from_mapping(config.optimizer)
  example = {name: np.asarray(a[:1], np.int32) for name, a in data.train.arrays().items()}
  state = steps.create_train_state(
    jax.random.PRNGKey(args.seed),
    models[REFERENCE],
    optim.make_optimizer(optimizer_config),
    example,
  )
  iterator = lra.train_batches(data.train, args.batch_size, seed=args.seed, start_step=0)
  batches = [next(iterator) for _ in range(args.num_batches)]
  gradients = {name: make_gradient_fn(model, data.max_length) for name, model in models.items()}
  print(f'{args.config}: {args.num_batches} batches of {args.batch_size} x {data.max_length}')
  cls = models[REFERENCE].encoder.prepend_cls
  first = measure(state.params, batches, gradients, args.seed, prepend_cls=cls)
  states = [{'name': f'initialisation (seed {args.seed})', **first}]
  if args.adam_steps:
    params, peak = adam_steps(
      state.params, batches[0], gradients[REFERENCE], optimizer_config, args.adam_steps, args.seed
    )
    name = f'after {args.adam_steps} AdamW steps at the peak learning rate {peak:.3g}'
    print(name)
    states.append({'name': name, **measure(params, batches, gradients, args.seed, prepend_cls=cls)})
  results = {
    'config': args.config,
    'model': model_config,
    'batch_size': args.batch_size,
    'num_batches': args.num_batches,
    'max_length': data.max_length,
    'real_lengths': [np.asarray(b['lengths']).tolist() for b in batches],
    'seed': args.seed,
    'machine': describe_machine(),
    'states': states,
  }
  report = table(results)
  write_results(args.output_dir, results, report)
  print(report)
  return results


if __name__ == '__main__':
  main()
