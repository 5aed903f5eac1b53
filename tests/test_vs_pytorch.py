"""The side-by-side tables of `benchmarks.vs_pytorch`: the committed CPU table renders again from
its files, and GPU cells (documents in the shape speed_memory and the PyTorch anchor write, made
from committed files) are matched by device, model, batch, length and precision."""

import copy
import json
import os

import pytest

from benchmarks import vs_pytorch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_RUN = os.path.join(ROOT, 'benchmarks/results/cpu/vs_pytorch/quiet_after_threefry')
GPU_JAX = os.path.join(
  ROOT, 'benchmarks/results/gpu/train_step/transformer/train_step/results.json'
)
H200 = 'NVIDIA H200'


def jax_doc(model, length, batch, precision, step_s, memory_gib, device=H200, status='ok'):
  """A speed_memory results document of one GPU cell (the committed H200 file, edited)."""
  with open(GPU_JAX) as f:
    doc = json.load(f)
  cell = doc['cells'][0]
  cell.update(model=model, label=model.capitalize(), length=length, batch_size=batch, status=status)
  cell.update(step_time_s=step_s, device_peak_bytes=int(memory_gib * 2**30))
  doc['cells'] = [cell]
  doc['machine']['devices'] = [f'gpu:{device}']
  doc['settings']['arch']['precision'] = precision
  return doc


def torch_doc(model, length, batch, amp, compiled, step_s, memory_gib, device=H200, status='OK'):
  """A PyTorch anchor document of one CUDA cell (a committed CPU cell, edited as on a GPU)."""
  with open(os.path.join(CPU_RUN, 'torch_luna.json')) as f:
    doc = json.load(f)
  cell = copy.deepcopy(doc['cells'][0])
  cell.update(model=model, length=length, batch=batch, status=status, amp=amp, compile=compiled)
  cell.update(device=device, step_s_median=step_s, peak_rss_gb=memory_gib, rss_increase_gb=0.1)
  cell['memory'] = 'cuda_max_memory_allocated'
  if status != 'OK':
    for key in ('device', 'amp', 'compile', 'step_s_median', 'peak_rss_gb'):
      cell.pop(key)
  doc['meta'].update(device='cuda')
  doc['meta']['config'].update(amp=amp, compile=compiled)
  doc['cells'] = [cell]
  return doc


def write(tmp_path, name, doc):
  path = tmp_path / name
  path.write_text(json.dumps(doc))
  return str(path)


def session(tmp_path, name, cells, gpu=H200):
  """A `benchmarks.gpu_session` file: cells are (side, setting, document) triples."""
  records = [
    {'id': f'{side}-{i}', 'side': side, 'setting': setting, 'status': 'ok', 'result': doc}
    for i, (side, setting, doc) in enumerate(cells)
  ]
  body = {'format': vs_pytorch.SESSION_FORMAT, 'environment': {'gpu': gpu}, 'cells': records}
  return write(tmp_path, name, body)


def rows(text, start):
  """The table rows of `text` that begin with `start`, split into stripped cells."""
  return [
    [c.strip() for c in line.strip('|').split('|')]
    for line in text.splitlines()
    if line.startswith(start)
  ]


def test_committed_cpu_table_renders_again_in_gib():
  text = vs_pytorch.render(
    [os.path.join(CPU_RUN, f'jax_{m}/train_step/results.json') for m in ('luna', 'softmax')],
    [os.path.join(CPU_RUN, f'torch_{m}.json') for m in ('luna', 'softmax')],
  )
  with open(os.path.join(CPU_RUN, 'table.md')) as f:
    assert text + '\n' == f.read()
  # Luna-16 at 1K: 424,894,464 bytes of step RSS against the anchor's 0.507 GiB.
  (luna,) = rows(text, '| Luna-16 | 1024')
  assert luna[6:9] == ['0.40', '0.51', '0.78x']


def test_gpu_cells_side_by_side_with_eager_and_compiled_pytorch(tmp_path):
  path = session(
    tmp_path,
    'session_1.json',
    [
      ('jax', 'float32', jax_doc('luna16', 4096, 32, 'float32', 0.100, 2.0)),
      ('torch', 'tf32', torch_doc('luna16', 4096, 32, 'none', False, 0.150, 3.0)),
      ('torch', 'tf32-compile', torch_doc('luna16', 4096, 32, 'none', True, 0.120, 2.5)),
      ('jax', 'bfloat16', jax_doc('luna16', 4096, 32, 'bfloat16', 0.050, 1.0)),
      ('jax', 'bfloat16_all', jax_doc('luna16', 4096, 32, 'bfloat16_all', 0.040, 0.8)),
      ('torch', 'bf16', torch_doc('luna16', 4096, 32, 'bf16', False, 0.080, 2.0)),
    ],
  )
  text = vs_pytorch.render(session_paths=[path])
  f32, bf16, bf16_all = rows(text, f'| {H200} | Luna16')
  assert f32[4:] == [
    'float32 / tf32',
    '100.0',
    '150.0 (1.50x)',
    '120.0 (1.20x)',
    '2.00',
    '3.00 (0.67x)',
    '2.50 (0.80x)',
  ]
  assert bf16[4:8] == ['bfloat16 / bf16', '50.0', '80.0 (1.60x)', 'not run']
  assert bf16_all[4:7] == ['bfloat16_all / bf16', '40.0', '80.0 (2.00x)']
  assert bf16[8:10] == ['1.00', '2.00 (0.50x)']


def test_pytorch_float32_without_tf32_is_named_so(tmp_path):
  jax = write(tmp_path, 'jax.json', jax_doc('luna16', 1024, 32, 'float32', 0.01, 1.0))
  torch = write(tmp_path, 'torch.json', torch_doc('luna16', 1024, 32, 'none', False, 0.02, 1.0))
  (row,) = rows(vs_pytorch.render([jax], [torch]), f'| {H200} |')
  assert row[4] == 'float32 / float32'  # The anchor alone runs true float32 matmuls.


def test_cells_of_another_gpu_are_not_compared(tmp_path):
  path = session(
    tmp_path,
    's.json',
    [
      ('jax', 'float32', jax_doc('luna16', 1024, 32, 'float32', 0.01, 1.0)),
      ('torch', 'tf32', torch_doc('luna16', 1024, 32, 'none', False, 0.02, 1.0, 'NVIDIA H100')),
    ],
    gpu=None,
  )
  (row,) = rows(vs_pytorch.render(session_paths=[path]), f'| {H200} |')
  assert row[6:8] == ['not run', 'not run']


def test_a_later_session_s_finished_cell_wins(tmp_path):
  first = session(
    tmp_path,
    'session_1.json',
    [
      ('jax', 'float32', jax_doc('transformer', 4096, 32, 'float32', 0.3, 60.0)),
      (
        'torch',
        'tf32',
        torch_doc('softmax', 4096, 32, 'none', False, None, None, status='TIMEOUT'),
      ),
    ],
  )
  second = session(
    tmp_path,
    'session_2.json',
    [('torch', 'tf32', torch_doc('softmax', 4096, 32, 'none', False, 0.6, 20.0))],
  )
  assert rows(vs_pytorch.render(session_paths=[first]), f'| {H200} |')[0][6] == 'TIMEOUT'
  (row,) = rows(vs_pytorch.render(session_paths=[first, second]), f'| {H200} |')
  assert row[1] == 'Transformer' and row[6] == '600.0 (2.00x)' and row[9] == '20.00 (3.00x)'


def test_table2_against_the_exact_and_the_fused_transformer(tmp_path):
  cells = []
  for model, step, memory in (
    ('luna16', 0.1, 1.0),
    ('transformer', 0.5, 8.0),
    ('transformer_fused', 0.2, 4.0),
  ):
    cells.append(('jax', 'float32', jax_doc(model, 4096, 32, 'float32', step, memory)))
  cells.append(
    ('jax', 'float32', jax_doc('transformer_fused', 1024, 32, 'float32', 0.1, 1.0, status='OOM'))
  )
  cells.append(('jax', 'float32', jax_doc('luna16', 1024, 32, 'float32', 0.02, 0.3)))
  text = vs_pytorch.render(session_paths=[session(tmp_path, 's.json', cells)])
  exact, fused = text.split('Table 2, ')[1:]
  assert 'relative to Transformer\n' in exact and 'relative to Transformer_fused' in fused
  # At 1K the exact Transformer did not run and the fused one was OOM: no ratio.
  assert rows(exact, '| Luna16 |') == [['Luna16', 'n/a', '5.00x / 0.12x']]
  assert rows(exact, '| Transformer_fused |') == [['Transformer_fused', 'OOM', '2.50x / 0.50x']]
  assert rows(fused, '| Luna16 |') == [['Luna16', 'n/a', '2.00x / 0.25x']]
  assert rows(fused, '| Transformer |') == [['Transformer', '-', '0.40x / 2.00x']]


def test_fp16_pytorch_cells_are_listed_apart(tmp_path):
  path = session(
    tmp_path,
    's.json',
    [
      ('jax', 'float32', jax_doc('luna16', 1024, 32, 'float32', 0.01, 1.0)),
      ('torch', 'fp16', torch_doc('luna16', 1024, 32, 'fp16', False, 0.005, 0.5)),
    ],
  )
  text = vs_pytorch.render(session_paths=[path])
  listed = '- NVIDIA H200 luna16 batch 32 length 1024 fp16: 5.0 ms, 0.50 GiB'
  assert f'without a luna_jax partner:\n\n{listed}' in text


def test_profile_cells_are_listed_apart_with_their_largest_op_classes(tmp_path):
  """A profile cell (its step timed like the plain cell's, a traced step after) stays out of the
  side-by-side table and Table 2, which the plain cell fills; its own section lists its largest
  op classes with their share of the step, and all of them (the ones the session left out too)."""
  profiled = jax_doc('luna16', 4096, 32, 'bfloat16', 0.200, 3.0)
  ops = {f'kernel_{i}': 10.0 - i for i in range(8)}  # 10, 9, ..., 3 ms.
  profiled['cells'][0].update(op_class_ms=ops, op_class_ms_left_out={'classes': 40, 'ms': 20.0})
  unfinished = jax_doc('transformer', 4096, 32, 'bfloat16', None, 0.0, status='OOM')
  path = session(
    tmp_path,
    's.json',
    [
      ('jax', 'bfloat16', jax_doc('luna16', 4096, 32, 'bfloat16', 0.100, 2.0)),
      ('torch', 'bf16', torch_doc('luna16', 4096, 32, 'bf16', False, 0.150, 3.0)),
      ('jax', 'bfloat16-profile', profiled),
      ('jax', 'bfloat16-profile', unfinished),
    ],
  )
  text = vs_pytorch.render(session_paths=[path])
  tables, profiles = text.split('Profiles (')
  (row,) = rows(tables, f'| {H200} | Luna16 |')
  assert row[5:7] == ['100.0', '150.0 (1.50x)'] and row[8] == '2.00'
  assert 'Transformer' not in tables  # Only the profile cell had it (OOM): no row.
  (row,) = rows(profiles, f'| {H200} |')
  assert row[1:6] == ['Luna16', '32', '4096', 'bfloat16', '200.0']
  assert row[6] == (
    'kernel_0 10.0 (5%); kernel_1 9.0 (4%); kernel_2 8.0 (4%); kernel_3 7.0 (4%); '
    'kernel_4 6.0 (3%); kernel_5 5.0 (2%)'
  )
  assert row[7] == '72.0 (36%)'  # 52 ms kept and 20 ms left out.
  assert vs_pytorch.session_records(path)[-1]['side'] == 'torch'


def test_files_written_before_the_precision_option_read_their_dtype(tmp_path):
  doc = jax_doc('luna16', 1024, 4, 'float32', 0.01, 1.0)
  del doc['settings']['arch']['precision']
  doc['settings']['arch']['dtype'] = 'bfloat16'
  (record,) = vs_pytorch.jax_records(doc)
  assert record['precision'] == 'bfloat16' and record['device'] == H200


def test_refuses_other_files(tmp_path):
  doc = jax_doc('luna16', 1024, 4, 'float32', 0.01, 1.0)
  doc['settings']['mode'] = 'attention'
  with pytest.raises(ValueError, match='expected train_step'):
    vs_pytorch.render([write(tmp_path, 'a.json', doc)])
  with pytest.raises(ValueError, match='not a benchmarks.gpu_session/1 session file'):
    vs_pytorch.render(session_paths=[write(tmp_path, 'b.json', {'cells': []})])
