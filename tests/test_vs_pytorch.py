"""The side-by-side tables of `benchmarks.vs_pytorch`: the committed CPU table renders again from
its files, and GPU cells (documents in the shape speed_memory and the PyTorch anchor write, made
from committed files) are matched by device, model, batch, length and precision."""

import copy
import json
import os

import pytest

from benchmarks import speed_memory_report, vs_pytorch

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


def test_table2_leaves_out_a_memory_ratio_it_cannot_form():
  """A baseline whose memory is 0 (a CPU dry run's step RSS increase can be) or a cell without a
  measured memory gives its speed ratio and '-' for the memory, not a ZeroDivisionError."""

  def record(model, memory):
    return dict(
      side='jax',
      device='cpu',
      model=model,
      label=model,
      batch=2,
      length=128,
      precision='float32',
      status='ok',
      step_s=0.01 if model == 'transformer' else 0.02,
      memory_gib=memory,
    )

  for memories in ((0.0, 0.1), (1.0, None), (None, 1.0)):
    text = vs_pytorch.table2([record('transformer', memories[0]), record('luna16', memories[1])])
    assert rows(text, '| luna16 |') == [['luna16', '0.50x / -']]
  text = vs_pytorch.table2([record('transformer', 2.0), record('luna16', 1.0)])
  assert rows(text, '| luna16 |') == [['luna16', '0.50x / 0.50x']]


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


def test_a_later_session_s_measurement_replaces_an_earlier_finished_one(tmp_path):
  """Of two finished measurements of one cell (a rerun), the later session's fills the tables,
  the profiles' included."""
  paths = []
  for n, step in ((1, 0.1), (2, 0.2)):
    profiled = jax_doc('luna16', 4096, 32, 'bfloat16', step, 1.0)
    profiled['cells'][0]['op_class_ms'] = {'kernel': 1e3 * step / 2}
    plain = jax_doc('luna16', 4096, 32, 'bfloat16', step, 1.0)
    cells = [('jax', 'bfloat16', plain), ('jax', 'bfloat16-profile', profiled)]
    paths.append(session(tmp_path, f'session_{n}.json', cells))
  tables, profiles = vs_pytorch.render(session_paths=paths).split('Profiles (')
  (row,) = rows(tables, f'| {H200} | Luna16 |')
  assert row[5] == '200.0'
  (row,) = rows(profiles, f'| {H200} |')
  assert row[5:7] == ['200.0', 'kernel 100.0 (50%)']


def test_a_dry_run_s_cpu_cells_compare_the_step_s_rss_increase(tmp_path):
  """On a CPU (a session's dry run) both sides' memory is the step's RSS increase; a zero one
  gives no ratio rather than a division by zero."""
  jax = jax_doc('luna16', 128, 2, 'float32', 0.01, 5.0)
  jax['machine'].update(backend='cpu', devices=['cpu:cpu'])
  jax['cells'][0]['step_rss_increase_bytes'] = 2**29
  torch = torch_doc('luna16', 128, 2, 'none', False, 0.02, 5.0, device='cpu')
  (j,), (t,) = vs_pytorch.jax_records(jax), vs_pytorch.torch_records(torch)
  assert (j['device'], j['memory_gib']) == ('cpu', 0.5)
  assert (t['device'], t['memory_gib']) == ('cpu', torch['cells'][0]['rss_increase_gb'])
  torch['cells'][0]['rss_increase_gb'] = 0.0
  path = session(tmp_path, 's.json', [('jax', 'float32', jax), ('torch', 'tf32', torch)], None)
  (row,) = rows(vs_pytorch.render(session_paths=[path]), '| cpu | Luna16 |')
  assert row[8:10] == ['0.50', '0.00']


def test_the_cpu_table_takes_the_last_pytorch_file_s_cell(tmp_path):
  """A PyTorch cell measured again in a later --torch file replaces the earlier one."""
  with open(os.path.join(CPU_RUN, 'torch_luna.json')) as f:
    again = json.load(f)
  for cell in again['cells']:
    cell['step_s_median'] *= 2
  text = vs_pytorch.render(
    [os.path.join(CPU_RUN, 'jax_luna/train_step/results.json')],
    [os.path.join(CPU_RUN, 'torch_luna.json'), write(tmp_path, 'again.json', again)],
  )
  (luna,) = rows(text, '| Luna-16 | 1024')
  (cell,) = [c for c in again['cells'] if c['model'] == 'luna16' and c['length'] == 1024]
  assert luna[4] == f'{cell["step_s_median"]:.2f}'


def test_absolute_table_gives_mfu_in_percent_and_model_flop_rates_in_tflop_s():
  """`speed_memory_report.absolute_table`: MFU and % matmul peak as percentages, model FLOP/s in
  TFLOP/s and model FLOPs per step in GFLOP."""
  path = 'benchmarks/results/cpu/attention_backward/train_step_2k_b4/after/results.json'
  with open(os.path.join(ROOT, path)) as f:
    cells = json.load(f)['cells']
  header, _, *lines = [
    [c.strip() for c in line.strip('|').split('|')]
    for line in speed_memory_report.absolute_table(cells).splitlines()
  ]
  column = lambda row, name: row[header.index(name)]
  for row, cell in zip(lines, cells, strict=True):
    assert column(row, 'MFU (%)') == f'{100 * cell["mfu"]:.1f}'
    assert column(row, '% matmul peak') == f'{100 * cell["matmul_peak_fraction"]:.0f}'
    assert column(row, 'model TFLOP/s') == f'{cell["model_flop_per_s"] / 1e12:.3g}'
    assert column(row, 'model GFLOP/step') == f'{cell["model_flops_per_step"] / 1e9:.1f}'


def test_targets_summary_ratios_and_verdicts():
  """Luna-16's speed-up over the Transformer at 4K (steps/s ratio) and its growth from 4K to 16K,
  which meets its target only if both step time and memory grow at most 4.4x."""
  cell = lambda model, length, steps_per_s, memory: {
    'model': model,
    'length': length,
    'status': 'ok',
    'steps_per_s': steps_per_s,
    'step_time_s': 1 / steps_per_s,
    'memory_bytes': memory,
  }
  cells = [
    cell('luna16', 4096, 6.0, 5.0),
    cell('transformer', 4096, 1.0, 100.0),
    cell('luna16', 16384, 1.2, 10.0),
  ]
  speed, growth = speed_memory_report.targets_summary(cells)
  assert speed.startswith('- Luna-16 vs Transformer at 4K: 6.00x steps/s (target >= 5.5x: met)')
  assert growth == (
    '- Luna-16 from 4K to 16K: 5.00x step time, 2.00x peak memory (target <= 4.4x each: missed).'
  )


def test_profile_table_ranks_op_classes_by_their_largest_cell():
  """The op classes listed are the largest in some cell, not the largest summed over cells."""
  cell = lambda length, ops: {
    'label': 'Luna-16',
    'length': length,
    'step_time_s': 0.1,
    'op_class_ms': ops,
  }
  cells = [cell(1024, {'fusion': 5.0, 'sort': 1.0}), cell(2048, {'fusion': 5.0, 'dot': 8.0})]
  table = speed_memory_report.profile_table(cells, top=1)
  assert [r[0] for r in rows(table, '| `')] == ['`dot`']
