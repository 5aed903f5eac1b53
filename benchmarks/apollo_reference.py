"""The authors' Apollo recipe on a small problem, recorded for `tests/test_apollo.py`: runs in a
Python with PyTorch and NumPy (not luna_jax's environment; it imports neither jax nor luna_jax).

From a bare git snapshot of XuezheMax/fairseq-apollo it loads, at run time, the authors' own code:
the `Apollo` optimizer (`fairseq/optim/apollo.py`), the `milestone` learning-rate scheduler
(`fairseq/optim/lr_scheduler/milestone_lr_scheduler.py`) and per-parameter gradient clipping
(`clip_param_grad_norm_` of `fairseq/utils.py`, fairseq's `--clip-mode each`). The fairseq base
classes and registries they import are replaced by the small stand-ins below (our code).

For each case of CASES it trains, in float32 (the authors' clipping takes float32 gradients only),
the parameters of SHAPES on a fixed least-squares
problem for STEPS updates in the order of fairseq's trainer (gradient, clipping, `optimizer.step()`,
`lr_scheduler.step_update(num_updates)`), and stores the parameters after every update and the
learning rate each update used.

  /path/to/python-with-torch benchmarks/apollo_reference.py --snapshot SNAPSHOT \\
      --out tests/data/apollo_reference

SNAPSHOT is a bare git repository (or a clone's .git) of XuezheMax/fairseq-apollo. OUT receives
`spec.json` (the problem, the cases and the snapshot commit) and `reference.npz` (the data, the
initial parameters, and per case `<case>/params_<name>` of shape [STEPS + 1, ...] and `<case>/lr`).
"""

import argparse
import ast
import json
import os
import subprocess
import sys
import types

import numpy as np
import torch

#: The parameters trained: a weight matrix, a bias and a second, separately scaled matrix (so that
#: per-tensor norms, clipping and weight decay differ between tensors).
SHAPES = {'w': (6, 4), 'b': (4,), 'v': (4, 3)}
#: Examples and outputs of the least-squares problem.
EXAMPLES = 16
STEPS = 20
#: The schedule of every case (fairseq `--warmup-updates`, `--milestones`, `--lr-decay-rate`), at
#: the scale of 20 updates.
SCHEDULE = {'warmup_updates': 5, 'milestones': [10, 15], 'decay_rate': 0.1}
#: The recipes: the WMT'14 Luna script's (fairseq-apollo `examples/luna/README.wmt.md`) and the
#: other rebound and weight-decay types, with a larger decay so that it shows. The 'belief' floor
#: is max|g - m|, which after a first update at a tiny learning rate is a float32 cancellation
#: (the same in both codes, but not the same bits), so that case warms up from a larger rate.
CASES = {
  'wmt_luna': dict(
    lr=0.1,
    warmup_init_lr=1e-5,
    eps=1e-4,
    rebound='constant',
    weight_decay=1e-8,
    weight_decay_type='L2',
    clip=0.1,
  ),
  'belief_decoupled': dict(
    lr=0.01,
    warmup_init_lr=2e-3,
    eps=1e-4,
    rebound='belief',
    weight_decay=1e-2,
    weight_decay_type='decoupled',
    clip=0.0,
  ),
  'constant_stable': dict(
    lr=0.1,
    warmup_init_lr=1e-5,
    eps=1e-4,
    rebound='constant',
    weight_decay=1e-2,
    weight_decay_type='stable',
    clip=0.5,
  ),
}
BETA = 0.9

#: Stand-ins for the fairseq base classes and registries the authors' files import (our code).
STAND_INS = {
  'fairseq.optim': """
class FairseqOptimizer:
  def __init__(self, args):
    self.args = args

def register_optimizer(name):
  return lambda cls: cls
""",
  'fairseq.optim.lr_scheduler': """
class FairseqLRScheduler:
  def __init__(self, args, optimizer):
    self.args = args
    self.optimizer = optimizer

  def step(self, epoch, val_loss=None):
    pass

def register_lr_scheduler(name):
  return lambda cls: cls
""",
}


def git_show(snapshot: str, commit: str, path: str) -> str:
  return subprocess.run(
    ['git', '--git-dir', snapshot, 'show', f'{commit}:{path}'],
    check=True,
    capture_output=True,
    text=True,
  ).stdout


def load_authors_code(snapshot: str, commit: str) -> types.SimpleNamespace:
  """The authors' Apollo, MilestoneScheduler and clip_param_grad_norm_, from the snapshot."""
  for name in ('fairseq', *STAND_INS):
    module = types.ModuleType(name)
    module.__path__ = []
    exec(STAND_INS.get(name, ''), module.__dict__)
    sys.modules[name] = module
  apollo = types.ModuleType('fairseq.optim.apollo')
  exec(git_show(snapshot, commit, 'fairseq/optim/apollo.py'), apollo.__dict__)
  milestone = types.ModuleType('fairseq.optim.lr_scheduler.milestone_lr_scheduler')
  milestone.__package__ = 'fairseq.optim.lr_scheduler'
  source = git_show(snapshot, commit, 'fairseq/optim/lr_scheduler/milestone_lr_scheduler.py')
  exec(source, milestone.__dict__)
  # Only the one function of fairseq/utils.py (the module imports much of fairseq).
  utils_tree = ast.parse(git_show(snapshot, commit, 'fairseq/utils.py'))
  (clip,) = [
    node
    for node in utils_tree.body
    if isinstance(node, ast.FunctionDef) and node.name == 'clip_param_grad_norm_'
  ]
  utils = {'torch': torch}
  exec(compile(ast.Module([clip], []), 'fairseq/utils.py', 'exec'), utils)
  return types.SimpleNamespace(
    Apollo=apollo.Apollo,
    MilestoneScheduler=milestone.MilestoneScheduler,
    clip_param_grad_norm_=utils['clip_param_grad_norm_'],
  )


class LearningRate:
  """What the scheduler needs of fairseq's optimizer wrapper: set_lr / get_lr."""

  def __init__(self, optimizer):
    self.optimizer = optimizer

  def set_lr(self, lr):
    for group in self.optimizer.param_groups:
      group['lr'] = lr

  def get_lr(self):
    return self.optimizer.param_groups[0]['lr']


def loss_fn(params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
  """The problem (also in tests/test_apollo.py): sum((tanh(x w + b) v - y)^2) / examples."""
  hidden = torch.tanh(x @ params['w'] + params['b'])
  return ((hidden @ params['v'] - y) ** 2).sum() / x.shape[0]


def run_case(code, case: dict, data: dict) -> dict:
  params = {k: torch.tensor(data[f'init_{k}'], requires_grad=True) for k in SHAPES}
  optimizer = code.Apollo(
    list(params.values()),
    lr=case['lr'],
    beta=BETA,
    eps=case['eps'],
    rebound=case['rebound'],
    weight_decay=case['weight_decay'],
    weight_decay_type=case['weight_decay_type'],
  )
  args = types.SimpleNamespace(
    lr=[case['lr']],
    warmup_updates=SCHEDULE['warmup_updates'],
    warmup_init_lr=case['warmup_init_lr'],
    lr_decay_rate=SCHEDULE['decay_rate'],
    milestones=SCHEDULE['milestones'],
  )
  wrapper = LearningRate(optimizer)
  scheduler = code.MilestoneScheduler(args, wrapper)
  x, y = torch.tensor(data['x']), torch.tensor(data['y'])
  trajectory = {k: [p.detach().numpy().copy()] for k, p in params.items()}
  rates = []
  for num_updates in range(STEPS):
    optimizer.zero_grad()
    loss_fn(params, x, y).backward()
    if case['clip'] > 0:
      code.clip_param_grad_norm_(list(params.values()), case['clip'])
    rates.append(wrapper.get_lr())
    optimizer.step()
    scheduler.step_update(num_updates + 1)
    for k, p in params.items():
      trajectory[k].append(p.detach().numpy().copy())
  out = {f'params_{k}': np.stack(v) for k, v in trajectory.items()}
  out['lr'] = np.asarray(rates)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--snapshot', required=True, help='bare git repository of fairseq-apollo')
  parser.add_argument('--commit', default='HEAD', help='the snapshot commit to load')
  parser.add_argument('--out', required=True, help='folder for spec.json and reference.npz')
  args = parser.parse_args()
  commit = subprocess.run(
    ['git', '--git-dir', args.snapshot, 'rev-parse', args.commit],
    check=True,
    capture_output=True,
    text=True,
  ).stdout.strip()
  code = load_authors_code(args.snapshot, commit)
  rng = np.random.default_rng(0)
  data = {
    'x': rng.standard_normal((EXAMPLES, SHAPES['w'][0])),
    'y': rng.standard_normal((EXAMPLES, SHAPES['v'][1])),
    **{f'init_{k}': 0.5 * rng.standard_normal(shape) for k, shape in SHAPES.items()},
  }
  data = {k: v.astype(np.float32) for k, v in data.items()}
  arrays = dict(data)
  for name, case in CASES.items():
    for key, value in run_case(code, case, data).items():
      arrays[f'{name}/{key}'] = value
  os.makedirs(args.out, exist_ok=True)
  np.savez(os.path.join(args.out, 'reference.npz'), **arrays)
  spec = {
    'source': f'XuezheMax/fairseq-apollo {commit}',
    'torch': torch.__version__,
    'shapes': SHAPES,
    'steps': STEPS,
    'beta': BETA,
    'schedule': SCHEDULE,
    'cases': CASES,
  }
  with open(os.path.join(args.out, 'spec.json'), 'w') as f:
    json.dump(spec, f, indent=2)
  print(f'wrote {args.out}/reference.npz and spec.json ({len(CASES)} cases, {STEPS} updates)')


if __name__ == '__main__':
  main()
