"""benchmarks.gpu_compile: the kernel count of XLA:GPU's optimised HLO, the missing-plugin error,
and (where the CUDA plugin is installed) a compile-only H100 step whose fused attention is cuDNN's."""

# ruff: noqa: E501  (the HLO text below keeps XLA's long lines)

import importlib.metadata

import pytest

from benchmarks import gpu_compile, step_cost

# XLA:GPU's optimised-HLO text format (`compiled.as_text()`), cut down: an entry computation with a
# loop, fusions of both kinds, library calls and bookkeeping, and the computations they name.
HLO = """HloModule jit_train_step, entry_computation_layout={(f32[8]{0})->f32[8]{0}}

%fused_add (param_0: f32[8]) -> f32[8] {
  %param_0 = f32[8]{0} parameter(0)
  ROOT %add.1 = f32[8]{0} add(%param_0, %param_0)
}

%gemm_fusion_dot (parameter_0: bf16[8,8]) -> bf16[8,8] {
  %parameter_0 = bf16[8,8]{1,0} parameter(0)
  ROOT %dot.0 = bf16[8,8]{1,0} dot(%parameter_0, %parameter_0), lhs_contracting_dims={1}
}

%body (state: (s32[], f32[8])) -> (s32[], f32[8]) {
  %state = (s32[], f32[8]{0}) parameter(0)
  %x = f32[8]{0} get-tuple-element(%state), index=1
  %i = s32[] get-tuple-element(%state), index=0
  %step = f32[8]{0} fusion(%x), kind=kLoop, calls=%fused_add
  %copy.3 = f32[8]{0} copy(%step)
  ROOT %next = (s32[], f32[8]{0}) tuple(%i, %copy.3)
}

%cond (state.1: (s32[], f32[8])) -> pred[] {
  %state.1 = (s32[], f32[8]{0}) parameter(0)
  ROOT %lt = pred[] constant(false)
}

ENTRY %main.9 (p0: f32[8], p1: bf16[8,8]) -> f32[8] {
  %p0 = f32[8]{0} parameter(0)
  %p1 = bf16[8,8]{1,0} parameter(1)
  %gemm = bf16[8,8]{1,0} fusion(%p1), kind=kCustom, calls=%gemm_fusion_dot, metadata={op_name="jit(train_step)/dot_general"}, backend_config={"fusion_backend_config":{"kind":"__triton_gemm"}}
  %softmax = bf16[8,8]{1,0} fusion(%gemm), kind=kCustom, calls=%triton_softmax_computation, backend_config={"fusion_backend_config":{"kind":"__triton"}}
  %attn = (bf16[1,8,8,8]{3,1,2,0}, f32[1,8,8]{2,1,0}, u8[0]{0}) custom-call(%p1, %p1, %p1), custom_call_target="__cudnn$fmhaSoftmax"
  %attn_bwd = (bf16[1,8,8,8]{3,1,2,0}, /*index=1*/u8[0]{0}) custom-call(%p1), custom_call_target="__cudnn$fmhaSoftmaxBackward"
  %blas = bf16[8,8]{1,0} custom-call(%p1, %p1), custom_call_target="__cublas$gemm"
  %sort = f32[8]{0} custom-call(%p0), custom_call_target="some_library_call"
  %reduce = f32[8]{0} fusion(%p0), kind=kInput, calls=%fused_add
  %pair = (f32[8]{0}, (f32[8]{0}, s32[])) fusion(%p0), kind=kLoop, calls=%fused_add
  %c = s32[] constant(0)
  %init = (s32[], f32[8]{0}) tuple(%c, %reduce)
  %loop = (s32[], f32[8]{0}) while(%init), condition=%cond, body=%body
  %view = f32[8]{0} bitcast(%reduce)
  %out = f32[8]{0} get-tuple-element(%loop), index=1
  ROOT %rng = f32[8]{0} rng-bit-generator(%out)
}
"""


def test_kernel_counts_read_launches_from_the_entry_and_its_loop_bodies():
  counts = gpu_compile.summarize(*gpu_compile.kernels(HLO))
  assert counts == {
    'kernels': 11,  # Entry: 8 fusions and library calls, 1 other; loop body: a fusion, a copy.
    'gemm': 2,
    'cudnn_attention': 2,
    'other_library': 1,
    'fusion': 4,  # The softmax reads a GEMM's result, and is no GEMM.
    'copy': 1,
    'other': 1,
    'while_loops': 1,
    # Results and operands of each kernel, in bytes (p0: 32, p1: 128): gemm 128 + 128, softmax
    # 128 + 128, attn
    # (1024 + 256) + 3 x 128, attn_bwd 1024 + 128, blas 128 + 256, the library call 32 + 32,
    # reduce 32 + 32, pair (32 + 32 + 4) + 32, rng 32 + 32; loop body: step 32 + 32, copy 32 + 32.
    'kernel_bytes': 256 + 256 + 1664 + 1152 + 384 + 64 + 64 + 100 + 64 + 64 + 64,
  }
  assert counts['kernels'] == sum(
    counts[k] for k in ('gemm', 'cudnn_attention', 'other_library', 'fusion', 'copy', 'other')
  )
  launched, loops = gpu_compile.kernels(HLO)
  assert loops == 1 and len(launched) == counts['kernels']
  largest = max(launched, key=lambda k: k.bytes)
  assert (largest.name, largest.kind, largest.bytes) == ('attn', 'cudnn_attention', 1664)
  [gemm] = [k for k in launched if k.name == 'gemm']
  assert (gemm.kind, gemm.op_name, gemm.shape) == (
    'gemm',
    'jit(train_step)/dot_general',
    'bf16[8,8]{1,0}',
  )
  assert gpu_compile.shape_bytes('bf16[2,3]{1,0}') == 12
  assert gpu_compile.shape_bytes('(f32[], (pred[5]{0}, u8[0]{0}))') == 9
  with pytest.raises(ValueError, match='f8e4m3fn'):
    gpu_compile.shape_bytes('f8e4m3fn[4]{0}')
  with pytest.raises(ValueError, match='conditional'):  # Its branches would go uncounted.
    gpu_compile.kernels(HLO.replace(') while(%init)', ') conditional(%init)'))
  with pytest.raises(ValueError, match='ENTRY'):
    gpu_compile.kernels(HLO.replace('ENTRY ', ''))


def test_target_configs_describe_each_card():
  for name, card in gpu_compile.TARGETS.items():
    text = gpu_compile.target_config(name, dnn_version=(9, 10))
    assert f'device_memory_size: {card["memory_bytes"]}' in text
    assert f'core_count: {card["core_count"]}' in text
    assert 'cuda_compute_capability { major: 9 minor: 0 }' in text
    assert 'dnn_version_info { major: 9 minor: 10 }' in text
    assert f'device_description_str: "{card["description"]}"' in text
  with pytest.raises(KeyError):
    gpu_compile.target_config('a100')


def _has_cuda_plugin() -> bool:
  for version in ('12', '13'):
    try:
      importlib.metadata.version(f'jax-cuda{version}-plugin')
      return True
    except importlib.metadata.PackageNotFoundError:
      pass
  return False


@pytest.mark.skipif(_has_cuda_plugin(), reason='a CUDA plugin is installed here')
def test_without_jax_0_11_or_the_cuda_plugin_the_error_says_what_to_install():
  import jax

  if tuple(int(part) for part in jax.__version__.split('.')[:2]) < (0, 11):
    message = r'needs jax >= 0\.11'
  else:
    message = r'pip install "jax-cuda13-plugin\[with-cuda\]'
  with pytest.raises(RuntimeError, match=message):
    gpu_compile.compile_only_device('h100')
  with pytest.raises(KeyError, match='unknown target'):
    gpu_compile.compile_only_device('a100')


@pytest.mark.skipif(not _has_cuda_plugin(), reason='needs jax-cuda13-plugin (no GPU needed)')
def test_a_compile_only_h100_step_runs_the_fused_attention_on_cudnn_at_an_odd_length(monkeypatch):
  monkeypatch.setenv('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  device = gpu_compile.compile_only_device('h100')
  small = [
    '--config.model.num_layers=2',
    '--config.model.emb_dim=64',
    '--config.model.mlp_dim=128',
    '--config.model.num_heads=2',
    '--config.model.qkv_dim=64',
    '--config.training.batch_size=4',
    '--config.data.options.max_length=64',  # 65 positions with the CLS: odd.
    '--config.model.precision=bfloat16',
  ]
  counts = {}
  for attention in ('softmax', 'fused'):
    config = step_cost.run_config_of(
      'listops:transformer', [*small, f'--config.model.attention_implementation={attention}']
    )
    counts[attention] = gpu_compile.compile_step(config, device)
  assert counts['fused']['cudnn_attention'] == 4  # Two layers, forward and backward each.
  assert counts['softmax']['cudnn_attention'] == 0
  for measured in counts.values():
    assert measured['compiled_peak_bytes'] > measured['argument_bytes'] > 0
    assert measured['gemm'] > 0


def test_kernel_kinds_of_gemm_fusions_copies_and_other_ops():
  """A fusion is a GEMM when the computation it calls or its backend config says so (cuDNN's GEMM
  fusions included), a loop fusion is not; a copy is 'copy' and another op 'other'."""
  kinds = {k.name: k.kind for k in gpu_compile.kernels(HLO)[0]}
  assert (kinds['copy.3'], kinds['rng']) == ('copy', 'other')
  hlo = """HloModule m

ENTRY %main (p: bf16[8,8]) -> bf16[8,8] {
  %p = bf16[8,8]{1,0} parameter(0)
  %cudnn = bf16[8,8]{1,0} fusion(%p), kind=kCustom, calls=%fused_dot, backend_config={"fusion_backend_config":{"kind":"__cudnn$fusion"}}
  %named = bf16[8,8]{1,0} fusion(%cudnn), kind=kCustom, calls=%gemm_fusion_dot.1
  ROOT %loop = bf16[8,8]{1,0} fusion(%named), kind=kLoop, calls=%fused_add
}
"""
  launched, _ = gpu_compile.kernels(hlo)
  assert [(k.name, k.kind) for k in launched] == [
    ('cudnn', 'gemm'),
    ('named', 'gemm'),
    ('loop', 'fusion'),
  ]


def test_table_gives_gib_the_share_of_the_card_and_memory_bound_milliseconds():
  """Peak in GiB and as a share of the card's memory; bytes moved in GB and at the card's
  bandwidth in milliseconds."""
  for name, card in gpu_compile.TARGETS.items():
    text = gpu_compile.target_config(name)
    assert f'memory_bandwidth: {int(card["bandwidth"])}' in text
    assert f'l2_cache_size: {card["l2_bytes"]}' in text
    row = {
      'run': 'listops:luna16',
      'precision': 'float32',
      'attention': '-',
      'batch_size': 32,
      'max_length': 2000,
      'compiled_peak_bytes': 3 * 2**30,
      'kernels': 9,
      'gemm': 4,
      'cudnn_attention': 0,
      'fusion': 3,
      'copy': 2,
      'kernel_bytes': card['bandwidth'] * 4e-3,  # Four milliseconds of traffic.
    }
    last = gpu_compile.table([row], card).splitlines()[-1]
    share = f'{3 * 2**30 / card["memory_bytes"]:.0%}'
    assert f'| 32 x 2000 | 3.00 | {share} | 9 | 4 | 0 | 3 | 2 |' in last
    assert last.endswith(f'| {card["bandwidth"] * 4e-3 / 1e9:.1f} | 4.0 |')
