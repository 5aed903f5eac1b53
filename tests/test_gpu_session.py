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


def _never_started(monkeypatch):
  """Makes a session that gets past its checks fail at once instead of running its real cells."""

  def environment(args, log):
    raise AssertionError('the session started')

  monkeypatch.setattr(gpu_session, 'environment', environment)


def test_pytorch_cells_without_the_prepared_anchor_stop_before_anything_runs(
  tmp_path, capsys, monkeypatch
):
  _never_started(monkeypatch)
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


def _recording(monkeypatch, before=None, after=None):
  """Wraps the stand-in `run_process` (`fake_tools` first): `before(command, timeout_s)` runs
  before each cell's tool, `after(command)` may rewrite the tool's output; returns the timeouts."""
  run, timeouts = gpu_session.run_process, []

  def run_process(command, env, timeout_s, log_path):
    timeouts.append(timeout_s)
    if before:
      before(command, timeout_s)
    code, tail = run(command, env, timeout_s, log_path)
    return (code, tail) if after is None else after(command, code, tail)

  monkeypatch.setattr(gpu_session, 'run_process', run_process)
  return timeouts


def test_session_json_holds_every_finished_cell_before_the_next_starts(tmp_path, monkeypatch):
  """session.json is written again after each cell: a call cut short keeps what it measured."""
  fake_tools(monkeypatch, {'luna16': 0.1, 'softmax': 0.2, 'transformer_fused': 0.1})
  seen = []
  session = tmp_path / 'session.json'
  before = lambda command, timeout_s: seen.append(
    [c['id'] for c in json.loads(session.read_text())['cells']]
  )
  _recording(monkeypatch, before)
  cells = '*-luna16-*-b32-4096'
  gpu_session.main(['--out', str(tmp_path), '--cells', cells, '--deadline_s', '10000'])
  ids = [c['id'] for c in json.loads(session.read_text())['cells']]
  assert len(ids) > 2 and seen == [ids[:i] for i in range(len(ids))]


def test_the_reserve_and_the_deadline_bound_each_cell(tmp_path, monkeypatch):
  """A cell starts only if its estimate fits before the reserve at the deadline's end, and its
  timeout is the smaller of --cell_timeout_s and what is left before the reserve."""
  fake_tools(monkeypatch, {'luna16': 0.1})
  timeouts = _recording(monkeypatch)
  estimate, reserve = gpu_session.JAX_CELL_S, gpu_session.RESERVE_S

  def run(name, deadline_s, cell_timeout_s):
    argv = ['--out', str(tmp_path / name), '--cells', 'jax-luna16-bfloat16-b32-4096']
    argv += ['--deadline_s', str(deadline_s), '--cell_timeout_s', str(cell_timeout_s)]
    gpu_session.main(argv)
    (cell,) = json.loads((tmp_path / name / 'session.json').read_text())['cells']
    return cell['status']

  assert run('short', estimate + reserve - 1, 1000) == 'deferred' and timeouts == []
  deadline = estimate + reserve + 30
  assert run('fits', deadline, 1000) == 'ok'
  assert estimate <= timeouts[-1] <= deadline - reserve
  assert run('long', 10000, 100) == 'ok' and timeouts[-1] == 100


def test_tool_statuses_map_to_the_session_s_and_failures_keep_their_output(tmp_path, monkeypatch):
  """A tool's 'OOM' is 'oom' (finished: not run again), an unknown status is 'error' (run again);
  only the cells that did not finish keep their output's tail."""
  fake_tools(
    monkeypatch, {m: 0.1 for m in ('luna16', 'transformer', 'luna256', 'transformer_fused')}
  )
  statuses = {'luna16': 'OOM', 'transformer': 'crashed'}

  def after(command, code, tail):
    path = os.path.join(command[command.index('--output_dir') + 1], 'train_step', 'results.json')
    with open(path) as f:
      doc = json.load(f)
    model = command[command.index('--models') + 1]
    doc['cells'][0]['status'] = statuses.get(model, 'ok')
    with open(path, 'w') as f:
      json.dump(doc, f)
    return code, 'the last line of the tool'

  _recording(monkeypatch, after=after)
  gpu_session.main(['--out', str(tmp_path), '--cells', 'jax-*-bfloat16-b32-4096'])
  cells = {c['model']: c for c in json.loads((tmp_path / 'session.json').read_text())['cells']}
  assert {m: c['status'] for m, c in cells.items()} == {
    'luna16': 'oom',
    'transformer': 'error',
    'luna256': 'ok',
    'transformer_fused': 'ok',
  }
  assert [m for m, c in cells.items() if 'output_tail' in c] == ['luna16', 'transformer']
  done = gpu_session.finished_ids([str(tmp_path / 'session.json')])
  assert done == {c['id'] for m, c in cells.items() if m != 'transformer'}
  log = (tmp_path / 'gpu_session.log').read_text()
  assert 'jax-transformer-bfloat16-b32-4096: error: the last line of the tool' in log


def test_the_gpu_is_named_by_nvidia_smi_s_row_under_its_header(monkeypatch):
  """nvidia-smi's CSV: a header, then the GPU's row; the GPU's name is that row's first field."""
  header = 'name, driver_version, memory.total [MiB]'
  output = f'{header}\n{H200}, 550.54.15, 143771 MiB\n'
  monkeypatch.setattr(gpu_session.shutil, 'which', lambda name: f'/usr/bin/{name}')
  monkeypatch.setattr(
    gpu_session.subprocess, 'run', lambda command, **kwargs: argparse.Namespace(stdout=output)
  )
  monkeypatch.setattr(gpu_session, '_probe', lambda side, python, extra: {'side': side})
  args = argparse.Namespace(dry_run=False, torch_python=sys.executable)
  env = gpu_session.environment(args, log=lambda line: None)
  assert env['gpu'] == H200 and env['nvidia_smi'] == output.strip()


def test_an_anchor_without_the_authors_modules_stops_before_anything_runs(tmp_path, monkeypatch):
  """The PyTorch cells need both the anchor script and the authors' module folder."""
  _never_started(monkeypatch)
  anchor = tmp_path / 'anchor'
  anchor.mkdir()
  (anchor / gpu_session.ANCHOR_SCRIPT).write_text('')
  with pytest.raises(SystemExit, match='prepare_gpu_session.sh'):
    gpu_session.main(['--out', str(tmp_path / 'out'), '--anchor', str(anchor)])
  assert not (tmp_path / 'out').exists()


def test_list_prints_every_cell_with_the_cumulative_estimate(capsys):
  """`--list` runs nothing and needs no --out; its last line's cumulative time is the plan's sum."""
  gpu_session.main(['--list'])
  lines = capsys.readouterr().out.splitlines()
  cells = gpu_session.plan()
  assert [line.split()[0] for line in lines] == [c.id for c in cells]
  total = sum(c.estimate_s for c in cells)
  assert lines[-1].endswith(f'(cumulative {total:5.0f} s)')


def test_a_dry_run_runs_toy_sizes_with_pytorch_on_the_cpu(tmp_path, monkeypatch):
  """`--dry_run`: batches 2 and 1, lengths 128 to 512, the anchor on the CPU."""
  commands = fake_tools(monkeypatch, {'luna16': 0.1})
  cells = 'jax-luna16-float32-b2-128,torch-luna16-tf32-b2-128'
  gpu_session.main(['--out', str(tmp_path), '--dry_run', '--cells', cells])
  (jax, _), (torch, _) = commands
  assert jax[jax.index('--lengths') + 1] == '128' and jax[jax.index('--batch_size') + 1] == '2'
  assert torch[torch.index('--device') + 1] == 'cpu'


def test_finished_cells_of_every_previous_session_are_skipped(tmp_path):
  """`--previous` takes folders and files, none by default; a cell finished in any is done."""
  assert gpu_session.parse_args(['--out', str(tmp_path)]).previous == []
  folder = tmp_path / 'sessions'
  folder.mkdir()
  for n, (cell_id, status) in enumerate([('a', 'ok'), ('b', 'oom'), ('c', 'ok')], start=1):
    path = folder / f'session_{n}.json' if n < 3 else tmp_path / 'other.json'
    path.write_text(json.dumps({'cells': [{'id': cell_id, 'status': status}]}))
  files = gpu_session.previous_files([str(folder), str(tmp_path / 'other.json')])
  assert gpu_session.finished_ids(files) == {'a', 'b', 'c'}


def test_op_classes_are_trimmed_only_beyond_the_top(tmp_path):
  """A profiled cell with exactly PROFILE_TOP op classes is kept whole, with nothing left out."""
  top = gpu_session.PROFILE_TOP
  ops = {f'kernel_{i}': float(i) for i in range(top)}
  result = gpu_session.trim_op_classes({'cells': [{'op_class_ms': dict(ops)}]})
  assert result == {'cells': [{'op_class_ms': ops}]}


def test_later_stages_run_in_the_documented_order():
  """Stage 6: bfloat16_all, the models in pair order then the fused Transformer, at 4K, 1K, 2K;
  stage 7: batch 4, the bfloat16 / bf16 blocks before the float32 / tf32 ones."""
  cells = gpu_session.plan()
  every = [c for c in cells if c.setting == 'bfloat16_all']
  models = [*(m for m, _ in gpu_session.PAIRS), gpu_session.FUSED]
  assert [(c.model, c.length) for c in every] == [
    (m, n) for n in (4096, 1024, 2048) for m in models
  ]
  small = [c.setting for c in cells if c.batch == 4]
  assert small.index('float32') > max(i for i, s in enumerate(small) if s.startswith('bf'))


def test_each_record_holds_its_cell_s_measured_wall_time(tmp_path, monkeypatch):
  """A cell's `wall_s` is the time its tool ran (what corrects the estimates), the session's its
  whole time."""
  fake_tools(monkeypatch, {'luna16': 0.1, 'softmax': 0.2})
  clock = [100.0]  # Any time: the wall times are differences.
  monkeypatch.setattr(gpu_session.time, 'perf_counter', lambda: clock[0])
  durations = iter([30.0, 7.0])

  def before(command, timeout_s):
    clock[0] += next(durations)

  _recording(monkeypatch, before)
  cells = 'jax-luna16-bfloat16-b32-4096,torch-luna16-bf16-b32-4096'
  gpu_session.main(['--out', str(tmp_path), '--cells', cells])
  session = json.loads((tmp_path / 'session.json').read_text())
  assert [c['wall_s'] for c in session['cells']] == [30.0, 7.0] and session['wall_s'] == 37.0


def test_a_failed_cell_whose_output_is_blank_is_summed_up_without_its_last_line():
  """A failure's one-line summary quotes the last line of its output; a blank or missing output
  (a tool killed before it printed) leaves the quote out instead of ending the session."""
  record = {'status': 'timeout', 'wall_s': 1.0, 'estimate_s': 45.0}
  for tail in ('\n', ' \n\n', None):
    assert gpu_session.summary({**record, 'output_tail': tail}, None) == (
      gpu_session.summary(record, None)
    )
  quoted = gpu_session.summary({**record, 'output_tail': 'compiling\nkilled at 45 s\n'}, None)
  assert ': killed at 45 s (1 s, estimate 45 s)' in quoted
