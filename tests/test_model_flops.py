"""`benchmarks.model_flops` against the matmuls XLA compiles: the forward count equals the FLOPs of
the dot ops of the compiled forward exactly, and 3x it those of the compiled training step (Luna
and the softmax Transformer, where the convention is exact).

The dot FLOPs are read from the optimised HLO (`compiled.as_text()`, after XLA removed dead code),
each dot as 2 x its output size x its contraction size, which is also what XLA's
`cost_analysis()` counts for a dot (checked on a program of dots alone). Matrix-vector products and
outer products are left out: the model's kernels write LayerNorm statistics and bias gradients as
products with a vector of ones (`luna_jax.model.kernels`), which are sums, not model matmuls.
"""

import collections
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import luna_jax
from benchmarks import model_flops
from benchmarks.speed_memory_harness import (
  NUM_CLASSES,
  Architecture,
  make_attention_step,
  make_train_step,
  model_config,
  model_flops_per_step,
  xla_cost,
)

LENGTH, BATCH, CLASSES = 12, 2, 3
#: One layer, except where P flowing from layer to layer is under test.
SMALL = dict(num_layers=1, emb_dim=16, num_heads=2, mlp_dim=24)

_COMPUTATION = re.compile(r'^(?:ENTRY )?%?([\w.\-]+) [^=]*\{\s*$')
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = \w+\[([\d,]*)\]\S* ([\w\-]+)\(([^)]*)\)')
_CALLED = re.compile(r'(?:calls|to_apply|body|condition)=%?([\w.\-]+)')


def _ints(text: str) -> list[int]:
  return [int(x) for x in text.split(',') if x.strip()]


def _dims_attribute(line: str, key: str) -> list[int]:
  """The dimension numbers of a dot attribute (`lhs_contracting_dims={1}`); [] when absent."""
  found = re.search(key + r'=\{([\d,]*)\}', line)
  return _ints(found.group(1)) if found else []


def hlo_matmul_flops(hlo: str) -> int:
  """FLOPs of the matmuls of an optimised HLO module: `2 * output size * contraction size` per dot,
  leaving out dots with a vector operand (no free dimension but size-1 ones) or no contraction.

  Raises:
    AssertionError: a dot runs inside a loop or in a computation called more than once (its count
      would not be its number of runs).
  """
  flops, calls, loops = collections.Counter(), collections.Counter(), set()
  shapes, computation = {}, None
  for line in hlo.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      computation, shapes = header.group(1), {}
      continue
    instruction = _INSTRUCTION.match(line)
    if not instruction:
      continue
    name, dims, op, operands = instruction.groups()
    shapes[name] = _ints(dims)
    calls.update(_CALLED.findall(line))
    if op == 'while':
      loops.update(re.findall(r'(?:body|condition)=%?([\w.\-]+)', line))
    if op != 'dot':
      continue
    lhs, rhs = (shapes[o] for o in re.findall(r'%([\w.\-]+)', operands))
    contracting = _dims_attribute(line, 'lhs_contracting_dims')
    lhs_kept = contracting + _dims_attribute(line, 'lhs_batch_dims')
    rhs_kept = _dims_attribute(line, 'rhs_contracting_dims') + _dims_attribute(
      line, 'rhs_batch_dims'
    )
    contraction = math.prod(lhs[i] for i in contracting)
    lhs_free = math.prod(s for i, s in enumerate(lhs) if i not in lhs_kept)
    rhs_free = math.prod(s for i, s in enumerate(rhs) if i not in rhs_kept)
    if min(contraction, lhs_free, rhs_free) > 1:
      flops[computation] += 2 * math.prod(shapes[name]) * contraction
  assert not loops & set(flops), f'dots in loops: {loops & set(flops)}'
  assert all(calls[c] <= 1 for c in flops), f'dots in shared computations: {dict(calls)}'
  return sum(flops.values())


def xla_flops(compiled) -> float:
  """XLA's FLOP count of a compiled program."""
  return xla_cost(compiled)['flops']


def _batch(dual: bool = False) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  tokens = lambda: rng.integers(1, 20, (BATCH, LENGTH), dtype=np.int32)
  batch = {
    'inputs': tokens(),
    'lengths': np.array([LENGTH, LENGTH - 3], np.int32),
    'targets': rng.integers(0, CLASSES, (BATCH,), dtype=np.int32),
  }
  if dual:
    batch.update(inputs2=tokens(), lengths2=np.array([LENGTH - 1, LENGTH], np.int32))
  return batch


def _build(cfg: dict, dual: bool = False):
  return luna_jax.build_model(cfg, vocab_size=20, num_classes=CLASSES, max_length=LENGTH, dual=dual)


def _compiled_forward(cfg: dict, dual: bool = False):
  model, batch = _build(cfg, dual), _batch(dual)
  inputs = {k: v for k, v in batch.items() if k != 'targets'}
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), **inputs))
  return jax.jit(lambda v, x: model.apply(v, **x)).lower(variables, inputs).compile()


def test_hlo_dot_count_is_xla_cost_analysis_on_dots_alone():
  a, b = jnp.ones((24, 40)), jnp.ones((40, 56))
  q, k = jnp.ones((2, 12, 3, 8)), jnp.ones((2, 20, 3, 8))

  def dots(a, b, q, k):
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k)
    return (a @ b) @ b.T, jnp.einsum('bhqk,bkhd->bqhd', logits, k)

  compiled = jax.jit(dots).lower(a, b, q, k).compile()
  expected = 2 * (24 * 40 * 56 + 24 * 56 * 40 + 2 * (2 * 3 * 12 * 20 * 8))
  assert hlo_matmul_flops(compiled.as_text()) == expected == xla_flops(compiled)


#: Dropout (the benchmark's 0.1) changes no matmul; it is off where it would only add compile time.
NO_DROPOUT = dict(dropout_rate=0.0, attention_dropout_rate=0.0)
TRAINED = {
  'luna': dict(name='luna', projection_length=4, pooling='mean', **dict(SMALL, num_layers=2)),
  'luna_tied_cls': dict(
    name='luna',
    projection_length=5,
    tie_kv=True,
    pooling='cls',
    classifier_hidden_layers=2,
    **SMALL,
    **NO_DROPOUT,
  ),
  'transformer': dict(name='transformer', qkv_dim=8, pooling='cls', **SMALL, **NO_DROPOUT),
}


@pytest.mark.parametrize('name', list(TRAINED))
def test_forward_and_train_step_count_the_compiled_matmuls(name):
  cfg = TRAINED[name]
  forward = model_flops.forward_flops(cfg, length=LENGTH, num_classes=CLASSES, batch_size=BATCH)
  compiled = _compiled_forward(cfg)
  assert hlo_matmul_flops(compiled.as_text()) == forward
  # XLA counts the element-wise work too.
  assert xla_flops(compiled) > forward

  model, made = _build(cfg), {}

  def init():
    state, made['step'] = make_train_step(model, _batch(), seed=0)
    return state

  state = jax.eval_shape(init)
  step = jax.jit(made['step']).lower(state, _batch()).compile()
  train = model_flops.train_step_flops(cfg, length=LENGTH, num_classes=CLASSES, batch_size=BATCH)
  assert train == 3 * forward
  assert hlo_matmul_flops(step.as_text()) == train


FORWARD_ONLY = {
  'linformer': dict(
    name='transformer', attention_implementation='linformer', low_rank_features=5, **SMALL
  ),
  'linear': dict(name='transformer', attention_implementation='linear', **SMALL),
  'performer': dict(
    name='transformer', attention_implementation='performer', nb_features=6, **SMALL
  ),
}


@pytest.mark.parametrize('name', list(FORWARD_ONLY))
def test_forward_counts_the_compiled_matmuls_of_the_baselines(name):
  cfg = dict(FORWARD_ONLY[name], pooling='mean')
  forward = model_flops.forward_flops(cfg, length=LENGTH, num_classes=CLASSES, batch_size=BATCH)
  assert hlo_matmul_flops(_compiled_forward(cfg).as_text()) == forward


def test_retrieval_pair_counts_both_documents_and_the_wider_head():
  cfg = dict(name='luna', projection_length=4, pooling='mean', interaction='nli', **SMALL)
  kwargs = dict(length=LENGTH, num_classes=CLASSES, batch_size=BATCH)
  dual = model_flops.forward_flops(cfg, dual=True, **kwargs)
  assert hlo_matmul_flops(_compiled_forward(cfg, dual=True).as_text()) == dual
  assert dual > 2 * model_flops.forward_flops(cfg, **kwargs)


def test_attention_count_is_linear_for_luna_and_quadratic_for_softmax():
  config = lambda **kw: model_flops.encoder_config(dict(SMALL, **kw), 256)[1]
  counts = lambda name, cfg: [model_flops.attention_flops(name, cfg, n) for n in (64, 128, 256)]
  a, b, c = counts('luna', config(name='luna', projection_length=8))
  assert c - b == 2 * (b - a)
  a, b, c = counts('transformer', config(name='transformer'))
  assert c - b > 2 * (b - a)


def test_only_the_classifiers_are_counted():
  with pytest.raises(ValueError, match="not 'luna_lm'"):
    model_flops.forward_flops({'name': 'luna_lm'}, length=8, num_classes=2)


@pytest.mark.parametrize(
  'mode, model',
  [('attention', 'luna8'), ('attention', 'luna8_tied'), ('attention', 'transformer')]
  + [('train_step', 'transformer')],  # The other training steps are those of the tests above.
)
def test_benchmark_cells_count_the_compiled_matmuls(mode, model):
  """`speed_memory_harness.model_flops_per_step`, the MFU numerator, on the steps the benchmark
  times (its own models, batch and step functions)."""
  arch = Architecture(num_layers=1, emb_dim=16, num_heads=2, mlp_dim=24, **NO_DROPOUT)
  spec = {'mode': mode, 'model': model, 'length': LENGTH, 'batch_size': BATCH, 'arch': vars(arch)}
  if mode == 'attention':
    args, step = make_attention_step(model, arch, BATCH, LENGTH, seed=0)
  else:
    cfg = model_config(model, arch)
    built = luna_jax.build_model(cfg, vocab_size=257, num_classes=NUM_CLASSES, max_length=LENGTH)
    batch, made = dict(_batch(), targets=np.zeros((BATCH,), np.int32)), {}

    def init():
      state, made['step'] = make_train_step(built, batch, seed=0)
      return state

    args, step = (jax.eval_shape(init), batch), made['step']
  compiled = jax.jit(step).lower(*args).compile()
  assert hlo_matmul_flops(compiled.as_text()) == model_flops_per_step(spec)


@pytest.mark.parametrize('name', list(FORWARD_ONLY))
def test_baselines_count_a_narrower_attention_first_token_pooling_and_a_set_head_width(name):
  """The count equals the compiled matmuls where `qkv_dim` (8) differs from `emb_dim` (16, so
  dh = 4, not d / h), 'first' pooling prepends no CLS and `classifier_hidden_dim` sets the head."""
  cfg = dict(FORWARD_ONLY[name], pooling='first', qkv_dim=8, classifier_hidden_dim=10)
  forward = model_flops.forward_flops(cfg, length=LENGTH, num_classes=CLASSES, batch_size=BATCH)
  assert hlo_matmul_flops(_compiled_forward(cfg).as_text()) == forward


def test_retrieval_concat_pair_counts_the_two_document_features():
  """With 'concat' the head reads `[u, v]` (2d features): the count equals the compiled matmuls."""
  cfg = dict(name='transformer', pooling='mean', interaction='concat', **SMALL, **NO_DROPOUT)
  kwargs = dict(length=LENGTH, num_classes=CLASSES, batch_size=BATCH)
  dual = model_flops.forward_flops(cfg, dual=True, **kwargs)
  assert hlo_matmul_flops(_compiled_forward(cfg, dual=True).as_text()) == dual
