"""The GPU session's orchestration (`benchmarks.gpu_session`) without a GPU: the cell plan, the
command lines given to both tools, the deadline, the rerun of unfinished cells and the session file
that `benchmarks.vs_pytorch` renders. The tools are replaced by stand-ins that write documents of
the tools' shape (`tests/test_vs_pytorch.py` builds them from committed files). And what issue 24's
`benchmarks/gpu_evidence.sh` leaves for the device tool to bring back."""

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

import pytest

from benchmarks import gpu_session
from tests.test_vs_pytorch import H200, jax_doc, rows, torch_doc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_plan_covers_the_comparison_once_in_priority_order():
  cells = gpu_session.plan()
  ids = [c.id for c in cells]
  assert len(ids) == len(set(ids))
  assert len(ids) == 144
  # Stage 1: batch 32 at 4K in the bfloat16 policy, each side's best setting: luna_jax and eager
  # PyTorch alternating, the fused Transformer, then torch.compile; stage 2: the profiles.
  assert ids[:13] == [
    'jax-luna16-bfloat16-b32-4096',
    'torch-luna16-bf16-b32-4096',
    'jax-transformer-bfloat16-b32-4096',
    'torch-softmax-bf16-b32-4096',
    'jax-luna256-bfloat16-b32-4096',
    'torch-luna256-bf16-b32-4096',
    'jax-transformer_fused-bfloat16-b32-4096',
    'torch-luna16-bf16-compile-b32-4096',
    'torch-softmax-bf16-compile-b32-4096',
    'torch-luna256-bf16-compile-b32-4096',
    'jax-luna16-bfloat16-profile-b32-4096',
    'jax-transformer-bfloat16-profile-b32-4096',
    'jax-transformer_fused-bfloat16-profile-b32-4096',
  ]
  # Then 1K and 2K in the same order, and only then float32 / tf32, which begins at 4K.
  assert [c.length for c in cells[13:33]] == [1024] * 10 + [2048] * 10
  assert {c.setting for c in cells[13:33]} == {'bfloat16', 'bf16', 'bf16-compile'}
  assert ids[33:41] == [
    'jax-luna16-float32-b32-4096',
    'torch-luna16-tf32-b32-4096',
    'jax-transformer-float32-b32-4096',
    'torch-softmax-tf32-b32-4096',
    'jax-luna256-float32-b32-4096',
    'torch-luna256-tf32-b32-4096',
    'jax-transformer_fused-float32-b32-4096',
    'torch-luna16-tf32-compile-b32-4096',
  ]
  # Batch 4 after every batch-32 luna_jax cell; fp16 (PyTorch alone) last.
  first_small = next(i for i, c in enumerate(cells) if c.batch == 4)
  assert all(c.batch == 32 for c in cells[:first_small] if c.side == 'jax')
  assert all(c.setting == 'fp16' for c in cells[first_small:] if c.batch == 32)
  assert [c.setting for c in cells[-9:]] == ['fp16'] * 9
  assert {c.id for c in cells if c.setting.endswith('-profile')} == set(ids[10:13])
  # Every id planned before (`--previous` skips finished cells by id) is still there.
  expected = set()
  for batch in (32, 4):
    for length in (1024, 2048, 4096):
      for jax_model, torch_model in gpu_session.PAIRS:
        for precision in ('float32', 'bfloat16'):
          expected.add(f'jax-{jax_model}-{precision}-b{batch}-{length}')
        for setting in ('tf32', 'bf16', 'tf32-compile', 'bf16-compile'):
          expected.add(f'torch-{torch_model}-{setting}-b{batch}-{length}')
      for precision in ('float32', 'bfloat16'):
        expected.add(f'jax-transformer_fused-{precision}-b{batch}-{length}')
  assert expected <= set(ids)
  assert 'jax-luna256-bfloat16_all-b32-1024' in ids and 'torch-softmax-fp16-b32-2048' in ids
  # The docstring's totals are the estimates' sums.
  totals = [sum(c.estimate_s for c in cells[:n]) for n in (10, 13, 33, len(cells))]
  assert totals == [396, 576, 1368, 5580]
  assert (
    'Stage 1 takes 396 s, stages 1-2 576 s, stages 1-4 1,368 s, all eight about 5,580 s (144 cells'
    in ' '.join(gpu_session.__doc__.split())
  )


def test_selection_by_pattern_and_previous_sessions(tmp_path):
  cells = gpu_session.plan()
  previous = {
    'cells': [
      {'id': 'jax-luna16-float32-b32-4096', 'status': 'ok'},
      {'id': 'jax-transformer-float32-b32-4096', 'status': 'oom'},
      {'id': 'jax-luna256-float32-b32-4096', 'status': 'timeout'},
      {'id': 'jax-luna16-bfloat16-b32-4096', 'status': 'deferred'},
    ]
  }
  (tmp_path / 'session_1.json').write_text(json.dumps(previous))
  (tmp_path / 'notes.json').write_text('{}')  # Not a session*.json: not read.
  files = gpu_session.previous_files([str(tmp_path)])
  assert files == [str(tmp_path / 'session_1.json')]
  done = gpu_session.finished_ids(files)
  assert done == {'jax-luna16-float32-b32-4096', 'jax-transformer-float32-b32-4096'}
  chosen = gpu_session.select(cells, ['jax-*-float32-b32-4096', 'jax-*-bfloat16-b32-4096'], done)
  assert [c.id for c in chosen] == [  # The profile cells' ids end otherwise.
    'jax-luna16-bfloat16-b32-4096',
    'jax-transformer-bfloat16-b32-4096',
    'jax-luna256-bfloat16-b32-4096',
    'jax-transformer_fused-bfloat16-b32-4096',
    'jax-luna256-float32-b32-4096',
    'jax-transformer_fused-float32-b32-4096',
  ]


def test_command_lines_of_both_tools():
  jax = gpu_session.Cell('jax', 'transformer_fused', 'bfloat16_all', 32, 4096)
  command = gpu_session.jax_command(jax, 'python3', '/tmp/cell', 100)
  flags = dict(zip(command[3::2], command[4::2]))
  assert command[:3] == ['python3', '-m', 'benchmarks.speed_memory']
  assert flags['--precision'] == 'bfloat16_all' and flags['--models'] == 'transformer_fused'
  assert flags['--lengths'] == '4096' and flags['--batch_size'] == '32'
  assert flags['--long_lengths'] == '' and flags['--cell_timeout_s'] == '90'
  assert '--profile' not in command
  profile = gpu_session.Cell('jax', 'luna16', 'bfloat16-profile', 32, 4096)
  command = gpu_session.jax_command(profile, 'python3', '/tmp/cell', 100)
  assert command[-1] == '--profile'
  flags = dict(zip(command[3:-1:2], command[4:-1:2]))
  assert flags['--precision'] == 'bfloat16' and flags['--output_dir'] == '/tmp/cell'
  assert profile.estimate_s == gpu_session.JAX_PROFILE_CELL_S > gpu_session.JAX_CELL_S
  torch = gpu_session.Cell('torch', 'softmax', 'bf16-compile', 4, 1024)
  command = gpu_session.torch_command(torch, 'python3', '.anchor', 'out.json', 100, 'cuda')
  assert command[1:3] == ['.anchor/torch_luna_anchor.py', '.anchor/fairseq_luna']
  assert command[command.index('--amp') + 1] == 'bf16' and '--compile' in command
  assert command[command.index('--budget') + 1] == '95'
  tf32 = gpu_session.Cell('torch', 'luna16', 'tf32', 32, 1024)
  command = gpu_session.torch_command(tf32, 'python3', '.anchor', 'out.json', 100, 'cuda')
  assert '--amp' not in command and '--compile' not in command  # float32; TF32 by environment.


def test_a_cell_past_its_timeout_is_killed_with_its_children(tmp_path):
  """The tool's own child (speed_memory's cell process) dies with it."""
  child = 'import time; time.sleep(600)'
  parent = (
    'import subprocess, sys, time; '
    f'print(subprocess.Popen([sys.executable, "-c", {child!r}]).pid, flush=True); time.sleep(600)'
  )
  code, output = gpu_session.run_process(
    [sys.executable, '-c', parent], dict(os.environ), 5, str(tmp_path / 'log')
  )
  assert code is None
  status = f'/proc/{int(output.split()[0])}/status'
  for _ in range(100):  # SIGKILL is sent; the process may take a moment to exit.
    if not os.path.exists(status) or 'zombie' in open(status).read():
      return
    time.sleep(0.1)
  raise AssertionError(f'the killed cell left its child running: {open(status).read()[:120]}')


def fake_tools(monkeypatch, steps):
  """Replaces the tools with stand-ins that write one document each (step time from `steps`, by
  model; with --profile, 30 op classes of 1 to 30 ms, a GPU step's kernels) and the environment
  probe with a fixed H200."""
  commands = []

  def run_process(command, env, timeout_s, log_path):
    commands.append((command, env))
    if command[1] == '-m':  # speed_memory
      out = command[command.index('--output_dir') + 1]
      model, precision = (
        command[command.index('--models') + 1],
        command[command.index('--precision') + 1],
      )
      length, batch = (
        int(command[command.index('--lengths') + 1]),
        int(command[command.index('--batch_size') + 1]),
      )
      os.makedirs(os.path.join(out, 'train_step'))
      doc = jax_doc(model, length, batch, precision, steps[model], 1.0)
      if '--profile' in command:
        doc['cells'][0]['op_class_ms'] = {f'kernel_{ms}': float(ms) for ms in range(30, 0, -1)}
      with open(os.path.join(out, 'train_step', 'results.json'), 'w') as f:
        json.dump(doc, f)
      return 0, ''
    model = command[command.index('--models') + 1]
    if steps[model] is None:
      return None, 'killed'
    amp = command[command.index('--amp') + 1] if '--amp' in command else 'none'
    length, batch = (
      int(command[command.index('--lengths') + 1]),
      int(command[command.index('--batch') + 1]),
    )
    doc = torch_doc(model, length, batch, amp, '--compile' in command, steps[model], 2.0)
    with open(command[command.index('--out') + 1], 'w') as f:
      json.dump(doc, f)
    return 0, ''

  monkeypatch.setattr(gpu_session, 'run_process', run_process)
  monkeypatch.setattr(gpu_session, 'environment', lambda args, log: {'gpu': H200})
  anchor = tempfile.mkdtemp(prefix='anchor_')  # What prepare_gpu_session.sh lays out, empty.
  open(os.path.join(anchor, gpu_session.ANCHOR_SCRIPT), 'w').close()
  os.mkdir(os.path.join(anchor, gpu_session.AUTHORS_MODULES))
  monkeypatch.setattr(gpu_session, 'DEFAULT_ANCHOR', anchor)
  return commands


def test_session_runs_records_and_renders(tmp_path, monkeypatch):
  steps = {'luna16': 0.1, 'transformer': 0.2, 'luna256': 0.1, 'transformer_fused': 0.1}
  commands = fake_tools(monkeypatch, dict(steps, softmax=None))
  monkeypatch.setenv('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.5')  # The deprecated name.
  out = tmp_path / 'out'
  gpu_session.main(
    [
      '--out',
      str(out),
      '--cells',
      'jax-luna16-float32-b32-4096,*-b32-1024',
      '--deadline_s',
      '10000',
    ]
  )
  session = json.loads((out / 'session.json').read_text())
  statuses = {c['id']: c['status'] for c in session['cells']}
  assert statuses['jax-luna16-float32-b32-4096'] == 'ok'
  assert statuses['torch-softmax-tf32-b32-1024'] == 'timeout'  # Killed: no document.
  assert statuses['torch-luna16-bf16-compile-b32-1024'] == 'ok'
  assert set(os.listdir(out)) == {'session.json', 'gpu_session.log', 'table.md'}
  # The JAX processes take memory as needed, up to 90% (XLA's default cap is 75%), under the name
  # jax reads (it refuses both); the tf32 cells allow TF32, the others do not.
  jax_envs = [e for c, e in commands if c[1] == '-m']
  assert jax_envs and all(
    e['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'
    and e['XLA_CLIENT_MEM_FRACTION'] == '0.900'
    and 'XLA_PYTHON_CLIENT_MEM_FRACTION' not in e
    for e in jax_envs
  )
  for command, env in commands:
    if command[1] != '-m':
      tf32 = '--amp' not in command
      assert (env.get('TORCH_ALLOW_TF32_CUBLAS_OVERRIDE') == '1') == tf32
  table = (out / 'table.md').read_text()
  row = (
    '| NVIDIA H200 | Luna16 | 32 | 1024 | float32 / tf32 | 100.0 | 100.0 (1.00x) | 100.0 (1.00x) |'
  )
  assert row in table
  assert '| NVIDIA H200 | Luna16 | 32 | 4096 | float32 / - | 100.0 | not run | not run |' in table
  log = (out / 'gpu_session.log').read_text()
  assert 'jax-luna16-float32-b32-4096: ok 100.0 ms, 1.00 GiB' in log

  # Again with this session as the previous one: only the unfinished cell runs.
  commands.clear()
  again = tmp_path / 'again'
  (tmp_path / 'done').mkdir()
  os.replace(out / 'session.json', tmp_path / 'done' / 'session_1.json')
  gpu_session.main(
    ['--out', str(again), '--cells', '*-b32-1024', '--previous', str(tmp_path / 'done')]
  )
  assert [c['id'] for c in json.loads((again / 'session.json').read_text())['cells']] == [
    'torch-softmax-bf16-b32-1024',
    'torch-softmax-bf16-compile-b32-1024',
    'torch-softmax-tf32-b32-1024',
    'torch-softmax-tf32-compile-b32-1024',
    'torch-softmax-fp16-b32-1024',
  ]
  # The table renders both sessions: the first one's Luna-16 row is still there.
  assert 'float32 / tf32 | 100.0 | 100.0 (1.00x)' in (again / 'table.md').read_text()


def test_profile_cells_bring_their_op_classes_into_the_session(tmp_path, monkeypatch):
  """The op classes travel in session.json (the one JSON a GPU call brings back), cut to the
  largest PROFILE_TOP; the traces stay in the cell's temporary folder, outside --out."""
  steps = {'luna16': 0.1, 'transformer': 0.2, 'luna256': 0.1, 'transformer_fused': 0.05}
  commands = fake_tools(monkeypatch, steps)
  out = tmp_path / 'out'
  gpu_session.main(['--out', str(out), '--cells', 'jax-*-b32-4096', '--deadline_s', '10000'])
  cells = json.loads((out / 'session.json').read_text())['cells']
  profiles = [c for c in cells if c['setting'] == 'bfloat16-profile']
  assert [c['model'] for c in profiles] == list(gpu_session.PROFILED)
  for record in profiles:
    assert record['status'] == 'ok' and record['command'][-1] == '--profile'
    cell = record['result']['cells'][0]
    assert list(cell['op_class_ms'].values()) == [float(ms) for ms in range(30, 5, -1)]
    assert cell['op_class_ms_left_out'] == {'classes': 5, 'ms': 15.0}
  for command, _ in commands:
    output_dir = command[command.index('--output_dir') + 1]
    assert not output_dir.startswith(str(tmp_path)) and not os.path.exists(output_dir)
  assert sum('--profile' in c for c, _ in commands) == 3
  assert set(os.listdir(out)) == {'session.json', 'gpu_session.log', 'table.md'}
  log = (out / 'gpu_session.log').read_text()
  assert (
    'jax-luna16-bfloat16-profile-b32-4096: ok 100.0 ms, 1.00 GiB; top op class kernel_30' in log
  )
  # The table: one side-by-side row per model and precision, the profiles in their own section
  # (tests/test_vs_pytorch.py: the plain cell fills the row).
  table = (out / 'table.md').read_text()
  side_by_side, profile = rows(table, f'| {H200} | Luna16 | 32 | 4096 | bfloat16 ')
  assert side_by_side[4:6] == ['bfloat16 / -', '100.0']
  assert profile[4:7] == [
    'bfloat16',
    '100.0',
    'kernel_30 30.0 (30%); kernel_29 29.0 (29%); '
    'kernel_28 28.0 (28%); kernel_27 27.0 (27%); kernel_26 26.0 (26%); kernel_25 25.0 (25%)',
  ]
  assert profile[7] == '465.0 (465%)'  # All 30 classes: 1 + ... + 30 ms.


def test_cells_that_do_not_fit_the_deadline_are_deferred(tmp_path, monkeypatch):
  fake_tools(monkeypatch, {'luna16': 0.1, 'transformer': 0.2, 'softmax': 0.3, 'luna256': 0.1})
  # 25 s: the reserve (10 s) leaves 15 s, enough for a PyTorch cell (12 s), not a JAX one (45 s).
  gpu_session.main(['--out', str(tmp_path), '--cells', '*-b32-4096', '--deadline_s', '25'])
  cells = json.loads((tmp_path / 'session.json').read_text())['cells']
  assert [c['status'] for c in cells[:2]] == ['deferred', 'ok']
  assert {c['status'] for c in cells if c['side'] == 'jax'} == {'deferred'}
  assert all(c['result'] is None for c in cells if c['status'] == 'deferred')


def test_pytorch_cells_without_the_prepared_anchor_stop_before_anything_runs(tmp_path, capsys):
  with pytest.raises(SystemExit, match='prepare_gpu_session.sh'):
    gpu_session.main(['--out', str(tmp_path / 'out'), '--anchor', str(tmp_path / 'none')])
  assert not (tmp_path / 'out').exists()


def test_out_is_required_to_run(capsys):
  with pytest.raises(SystemExit):
    gpu_session.parse_args([])
  assert '--out is required' in capsys.readouterr().err


def test_a_failing_nvidia_smi_is_recorded_and_the_session_goes_on(monkeypatch):
  def hang(command, **kwargs):
    raise subprocess.TimeoutExpired(command, kwargs['timeout'])

  monkeypatch.setattr(gpu_session.shutil, 'which', lambda name: f'/usr/bin/{name}')
  monkeypatch.setattr(gpu_session.subprocess, 'run', hang)
  monkeypatch.setattr(gpu_session, '_probe', lambda side, python, extra: {'side': side})
  args = argparse.Namespace(dry_run=False, torch_python=sys.executable)
  env = gpu_session.environment(args, log=lambda line: None)
  assert env['nvidia_smi'].startswith('failed: Command') and env['gpu'] is None
  assert (env['jax'], env['torch']) == ({'side': 'jax'}, {'side': 'torch'})


def test_gpu_evidence_leaves_one_archive_even_when_it_fails(tmp_path):
  """The device tool brings back at most 8 files from $OUT, 2 folders down, and a part's runs lie
  deeper: the part's folder comes back packed as $OUT/<part>.tgz, also when the script stops on an
  error (here an unknown part, after the machine's record)."""
  out = tmp_path / 'out'
  proc = subprocess.run(
    ['bash', 'benchmarks/gpu_evidence.sh', 'nonsense'],
    cwd=ROOT,
    env=dict(os.environ, OUT=str(out), PYTHON=sys.executable),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2 and 'unknown part nonsense' in proc.stderr
  assert os.listdir(out) == ['nonsense.tgz']
  with tarfile.open(out / 'nonsense.tgz') as archive:
    assert 'nonsense/machine.txt' in archive.getnames()
