r"""Leaderboard report: a Table-1-style markdown of LRA runs next to the paper, and a Figure-1-style
plot.

  python -m benchmarks.report --runs_dir runs --output_dir reports \
      [--benchmark_json benchmarks/results/cpu/train_step/results.json] [--length 4096] \
      [--checkpoint final|best]

Every `results.json` under `--runs_dir` (written by `luna_jax.training.trainer.train_and_evaluate`)
is one run, counted once (a self-pretraining run's stages are part of it; a run trained inside
another's folder is a run of its own). Only LRA classifier runs on the five Table-1 tasks are in the
table, each with its task's metric (test accuracy); the other results.json files (masked-LM
pretraining, whose accuracy is a token accuracy, token models, other tasks, Path-X) and unfinished
workdirs (with how far they got, from their metrics.jsonl) are listed under the table. Debug runs
(`config.debug`) have their own rows, never averaged with real ones, and so have self-pretrained
runs (`spt`: their results.json has `pretraining`; the notes give their pretraining steps and
time); a run evaluated on part of its test split (`training.num_eval_batches`) is marked *, and
runs of one seed counted in one cell (repeats, not other seeds) ‡. A missing `--runs_dir`, one
without any such run, or an unreadable results.json (named) is an error (exit status 1). Runs are
grouped by model variant (read from the stored config: model name, attention, projection length,
contextual P, P-mean pooling) and task. `leaderboard.md` gives the test accuracy (%) per task (of
the final parameters, the official LRA protocol, or with `--checkpoint best` of the best validation
checkpoint's; both are in every `results.json`; a best checkpoint chosen on test data, because the
run's validation split was its test split, is marked †), mean ± sample standard deviation over the
runs (seeds) when there are several, how many of them collapsed or never learned (`health`, from
each run's metrics.jsonl), the 5-task average and the average without Retrieval (computed from the
per-task means, only when every task is there), each model's row from the Luna paper's Table 1 (or,
for the P-mean variants, Table 3) next to it. `figure1.png` plots, like the paper's Figure 1, the
average accuracy without Retrieval against training steps/s, bubble area proportional to peak
memory, from a `benchmarks.speed_memory` train_step JSON at one sequence length; a model's accuracy
is ours when every task but Retrieval has runs, else the paper's (hollow bubble).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import math
import os
import statistics
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks import speed_memory_report
from configs.variants import (
  CONFIG_VARIANTS,
  TABLE1_TASKS,
  TABLE1_TITLES,
  TABLE3_TASKS,
  VARIANTS,
  label,
  variant_of,
)
from lra import cli, image, listops, pathfinder, retrieval, text
from lra.files import write_atomically

#: `--checkpoint` choices -> how `leaderboard.md` names the parameters its accuracies come from.
CHECKPOINTS = {'final': 'the final parameters', 'best': 'the best validation checkpoint'}
#: The models the leaderboard scores: the LRA classifiers (`luna_jax.model.encoders.ENCODERS`;
#: masked LMs and token models report other metrics).
CLASSIFIER_MODELS = ('luna', 'transformer')
#: Suffix of the variant key of debug (smoke-test) runs: their own rows, never averaged with real
#: runs.
DEBUG = ' (debug)'
#: Suffix of the variant key of self-pretrained runs (results.json with `pretraining`): their own
#: rows, never averaged with runs trained from scratch.
SPT = ' (self-pretrained)'
#: Suffix of the variant key of runs with other training steps or sequence length than their task
#: config's recipe (e.g. configs/pathfinder32_short.py, the quick start's ListOps of 60 tokens):
#: their own rows, named with them ('2500 steps, length 60').
OTHER_PROTOCOL = ' ({})'
#: Mark of a cell with a run evaluated on part of its test split (`training.num_eval_batches`).
PARTIAL = '*'
#: Mark of a cell whose runs include several of one seed: repeats of one run, not other seeds.
REPEATED = '‡'
#: Chance accuracy of each Table-1 task: one over its number of classes.
CHANCE = {
  'listops': 1 / listops.NUM_CLASSES,
  'text': 1 / text.NUM_CLASSES,
  'retrieval': 1 / retrieval.NUM_CLASSES,
  'image': 1 / image.NUM_CLASSES,
  'pathfinder32': 1 / pathfinder.NUM_CLASSES,
}
#: A run learned when its best validation accuracy gained at least this share of the room above
#: chance (ListOps: 10% + 0.1 x 90% = 19%, above any constant prediction of the official
#: distribution, whose largest class holds about 17%; the binary tasks: 55%).
LEARNED_GAIN = 0.1
#: A run that learned collapsed when its final validation accuracy kept less than this share of its
#: best gain over chance.
KEPT_GAIN = 0.5
#: The stages of a self-pretraining run: the classifier's, whose metrics are the run's, and the
#: masked LM's (`luna_jax.training.self_pretraining`'s names, repeated here so that the report
#: does not import JAX).
FINETUNE_DIR, PRETRAIN_DIR = 'finetune', 'pretrain'
STAGE_DIRS = (PRETRAIN_DIR, FINETUNE_DIR)
#: A run's metric log (`luna_jax.training.metric_log` writes it; named here for the same reason).
METRICS_FILE = 'metrics.jsonl'


class ReportError(ValueError):
  """The runs cannot be reported (a missing folder, no runs, an unreadable results.json)."""


@dataclasses.dataclass(frozen=True)
class RunResult:
  """One run's figures, read from its `results.json`.

  Attributes:
    path: the results.json.
    variant: the model variant (`configs.variants.variant_of`), with `DEBUG` for a debug run.
    task: the LRA task.
    seed: `config.seed`.
    final: test accuracy (%) of the final parameters.
    best: test accuracy (%) of the best validation checkpoint, or None where not recorded.
    partial: evaluated on a sample of a split (`partial_evaluation`; older results:
      `training.num_eval_batches` != -1).
    selected_on_test: the best checkpoint was chosen on test data (`selected_on_test`).
    health: what its validation accuracies say (`health`), or None without a metrics.jsonl.
    pretraining: a self-pretrained run's `pretraining` record (results.json), else None.
    config: the run's stored config (results.json).
  """

  path: str
  variant: str
  task: str
  seed: int
  final: float
  best: float | None
  partial: bool
  selected_on_test: bool
  health: Health | None = None
  pretraining: Mapping[str, Any] | None = None
  config: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def key(self) -> tuple[str, str]:
    return self.variant, self.task


@dataclasses.dataclass(frozen=True)
class Health:
  """Whether a run learned and kept it, from its validation accuracies (%).

  With chance c (`CHANCE`), best validation accuracy b and final validation accuracy f: the run
  learned when b >= c + `LEARNED_GAIN` x (100 - c); a run that learned collapsed when
  f < c + `KEPT_GAIN` x (b - c), i.e. it lost more than half of its best gain over chance by the
  end (the H200 ListOps Transformer of benchmarks/results/gpu/listops: best 35.85% at step 500,
  final 20.00%). A run that never learned did not collapse (it is counted apart). Predictions are
  not logged, so a constant prediction is not detected as such; these are the figures that are.

  Attributes:
    best: best validation accuracy (%) of its logged evaluations and its final one.
    best_step: the step of `best`.
    final: validation accuracy (%) of the final parameters (results.json).
    learned: see above.
    collapsed: see above.
  """

  best: float
  best_step: int
  final: float
  learned: bool
  collapsed: bool


def read_metrics(path: str) -> list[dict[str, Any]]:
  """The entries of a metrics.jsonl, in file order; a line that is not a JSON object (the last line
  of a killed writer) is skipped."""
  entries = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        entry = json.loads(line)
      except ValueError:
        continue
      if isinstance(entry, dict):
        entries.append(entry)
  return entries


def metrics_file(run_dir: str) -> str | None:
  """The metrics.jsonl of the classifier a run folder trained: its own, or its finetune stage's
  (self-pretraining); None if there is neither."""
  for path in (
    os.path.join(run_dir, METRICS_FILE),
    os.path.join(run_dir, FINETUNE_DIR, METRICS_FILE),
  ):
    if os.path.isfile(path):
      return path
  return None


def health(
  task: str, final_validation: float, final_step: int, entries: Sequence[Mapping[str, Any]]
) -> Health:
  """The `Health` of a finished run of `task`.

  Args:
    task: a Table-1 task (its chance level, `CHANCE`).
    final_validation: validation accuracy (fraction) of the final parameters (results.json).
    final_step: the run's last step (results.json).
    entries: its metrics.jsonl (`read_metrics`); the entries with 'validation_accuracy' count.
  """
  chance = 100.0 * CHANCE[task]
  final = 100.0 * final_validation
  evaluations = [
    (100.0 * e['validation_accuracy'], e.get('step', 0))
    for e in entries
    if 'validation_accuracy' in e
  ]
  # Ties go to the later step, as the trainer's best checkpoint (results.json's 'best').
  best, best_step = max([*evaluations, (final, final_step)])
  learned = best >= chance + LEARNED_GAIN * (100.0 - chance)
  return Health(
    best=best,
    best_step=best_step,
    final=final,
    learned=learned,
    collapsed=learned and final < chance + KEPT_GAIN * (best - chance),
  )


def find_results(runs_dir: str) -> list[str]:
  """The `results.json` files under `runs_dir`, one per run, in path order.

  A folder with a results.json is one run: its stages (a self-pretraining run's `pretrain` and
  `finetune`) are part of it; its other sub-folders are searched (`_inside_a_run`).

  Raises:
    ReportError: `runs_dir` is not a folder.
  """
  if not os.path.isdir(runs_dir):
    raise ReportError(
      f'--runs_dir {runs_dir}: no such folder. Give the folder of the runs (the --runs_dir of '
      'benchmarks.reproduce, runs/ by default).'
    )
  found = []
  for root, dirs, files in os.walk(runs_dir):
    dirs.sort()
    if 'results.json' in files:
      found.append(os.path.join(root, 'results.json'))
      _inside_a_run(dirs)
  return sorted(found)


def _inside_a_run(dirs: list[str]) -> None:
  """Prunes `os.walk`'s listing of a run's folder to what may hold other runs (one trained with
  its workdir inside this run's, e.g. a sweep under a run of the same name): not its stages, which
  are part of it, nor its checkpoints."""
  dirs[:] = [name for name in dirs if name not in (*STAGE_DIRS, 'checkpoints', 'best')]


def unfinished_runs(runs_dir: str) -> list[str]:
  """The workdirs under `runs_dir` without results.json (runs in progress, stopped, or copied
  unfinished by `benchmarks.reproduce --collect_to`): folders with checkpoints, a `kind.json`
  (every trainer workdir, a self-pretraining run's too) or a metrics.jsonl, but not a run's stages,
  which are part of it (`_inside_a_run`)."""
  unfinished = []
  for root, dirs, files in os.walk(runs_dir):
    dirs.sort()
    if 'results.json' in files:
      _inside_a_run(dirs)
    elif ('checkpoints' in dirs or {'kind.json', METRICS_FILE} & set(files)) and (
      os.path.basename(root) not in STAGE_DIRS
    ):
      unfinished.append(root)
      _inside_a_run(dirs)
  return sorted(unfinished)


def progress(workdir: str) -> str:
  """How far an unfinished run got, from its metrics.jsonl (a self-pretraining run: the stage it
  reached), e.g. 'at step 2300 of 5000, validation accuracy 16.10% (best 35.85% at step 850)'."""
  candidates = [
    ('', workdir),
    (f'{FINETUNE_DIR} stage ', os.path.join(workdir, FINETUNE_DIR)),
    (f'{PRETRAIN_DIR} stage ', os.path.join(workdir, PRETRAIN_DIR)),
  ]
  for stage, folder in candidates:
    path = os.path.join(folder, METRICS_FILE)
    if not os.path.isfile(path):
      continue
    entries = read_metrics(path)
    if not entries:
      break
    text = f'{stage}at step {max(e.get("step", 0) for e in entries)}'
    config = os.path.join(folder, 'config.json')
    if os.path.isfile(config):
      with open(config, encoding='utf-8') as f:
        text += f' of {json.load(f)["training"]["num_train_steps"]}'
    evaluations = [(e['validation_accuracy'], e.get('step', 0)) for e in entries if
                   'validation_accuracy' in e]  # fmt: skip
    if evaluations:
      best, step = max(evaluations, key=lambda pair: (pair[0], -pair[1]))
      text += (
        f', validation accuracy {100 * evaluations[-1][0]:.2f}% (best {100 * best:.2f}% at step '
        f'{step})'
      )
    return text
  return 'nothing logged'


#: What every results.json of `train.py` holds and the report reads.
_REQUIRED = (
  ('config', 'seed'),
  ('config', 'data', 'task'),
  ('config', 'model'),
  ('test', 'accuracy'),
)


def _read(path: str) -> dict[str, Any]:
  """A results.json's content; ReportError naming the file when it is not one train.py wrote."""
  try:
    with open(path, encoding='utf-8') as f:
      results = json.load(f)
  except (OSError, ValueError) as e:
    raise ReportError(f'{path}: unreadable results.json ({e})') from None
  for keys in _REQUIRED:
    value = results
    for key in keys:
      if not isinstance(value, Mapping) or key not in value:
        raise ReportError(f'{path}: unreadable results.json (no {".".join(keys)})')
      value = value[key]
  return results


def read_runs(paths: Sequence[str]) -> tuple[list[RunResult], list[str]]:
  """The LRA classifier runs among `results.json` files, and why the others are left out.

  Args:
    paths: results.json files (`find_results`).

  Returns:
    (runs of the Table-1 tasks by an LRA classifier, 'path: reason' for every other file: a
    masked LM (its accuracy is a token accuracy), a token model, a non-LRA task, Path-X).

  Raises:
    ReportError: naming every results.json that cannot be read.
  """
  runs, skipped, unreadable = [], [], []
  for path in paths:
    try:
      results = _read(path)
    except ReportError as e:
      unreadable.append(str(e))
      continue
    config = results['config']
    task, model = config['data']['task'], config['model'].get('name', 'luna')
    if model not in CLASSIFIER_MODELS:
      skipped.append(f'{path}: model {model!r} is not an LRA classifier')
      continue
    if task not in TABLE1_TASKS:
      skipped.append(f'{path}: task {task!r} is not a column of Table 1')
      continue
    best = results.get('best', {}).get('test')
    metrics = metrics_file(os.path.dirname(path))
    final_validation = results.get('validation', {}).get('accuracy')
    pretraining = results.get('pretraining')
    variant = variant_of(config['model'])
    variant += (SPT if pretraining is not None else '') + _other_protocol(config, task, variant)
    runs.append(
      RunResult(
        path=path,
        variant=variant + (DEBUG if config.get('debug') else ''),
        task=task,
        seed=config['seed'],
        final=100.0 * results['test']['accuracy'],
        best=None if best is None else 100.0 * best['accuracy'],
        partial=results.get(
          'partial_evaluation', config.get('training', {}).get('num_eval_batches', -1) != -1
        ),
        selected_on_test=selected_on_test(results),
        health=None
        if metrics is None or final_validation is None
        else health(task, final_validation, results.get('step', 0), read_metrics(metrics)),
        pretraining=pretraining,
        config=config,
      )
    )
  if unreadable:
    raise ReportError(
      'cannot read ' + '; '.join(unreadable) + '. Run its training command again (the same '
      '--workdir evaluates it again and rewrites results.json), or move the folder away.'
    )
  return runs, skipped


def accuracies(runs: Sequence[RunResult], checkpoint: str = 'final') -> dict[tuple[str, str], list]:
  """Test accuracies (%) by (variant, task), in seed order, of the final parameters or the best
  checkpoint.

  Raises:
    ValueError: an unknown `checkpoint`; a ReportError (with 'best') for a run without the best
      checkpoint's test metrics, naming the file and what to do.
  """
  if checkpoint not in CHECKPOINTS:
    raise ValueError(f'checkpoint must be one of {tuple(CHECKPOINTS)}, got {checkpoint!r}.')
  grouped: dict[tuple[str, str], list[tuple[int, float]]] = {}
  for run in runs:
    value = run.final if checkpoint == 'final' else run.best
    if value is None:
      raise ReportError(
        f"{run.path} has no test metrics of the best checkpoint ('best': {{'test': ...}}): the "
        'checkpoint could not be read when the run ended (damaged: see its '
        'damaged_checkpoints/), or an older trainer wrote it. Use --checkpoint final, or '
        'evaluate again by running the same train.py command with the same --workdir.'
      )
    grouped.setdefault(run.key, []).append((run.seed, value))
  return {key: [acc for _, acc in sorted(values)] for key, values in grouped.items()}


def selected_on_test(results: Mapping[str, Any]) -> bool:
  """Whether the run's best checkpoint was chosen on test data (validation split = test split).

  Results written before the trainer recorded it (`best.selected_on_test`) are Text runs when true:
  the Text loader then always validated on the test split.
  """
  return bool(
    results.get('best', {}).get('selected_on_test', results['config']['data']['task'] == 'text')
  )


def averages(task_means: Mapping[str, float]) -> tuple[float | None, float | None]:
  """(5-task average, average without Retrieval); None where a task is missing."""

  def mean(tasks):
    return (
      statistics.fmean(task_means[t] for t in tasks)
      if all(t in task_means for t in tasks)
      else None
    )

  return mean(TABLE1_TASKS), mean([t for t in TABLE1_TASKS if t != 'retrieval'])


#: Mark of a figure that involves a best checkpoint chosen on test data.
ON_TEST = '†'


def _cell(
  values: Sequence[float] | None,
  on_test: bool = False,
  partial: bool = False,
  failures: tuple[int, int, int] = (0, 0, 0),
  repeated: bool = False,
) -> str:
  if not values:
    return '-'
  mark = (
    (ON_TEST if on_test else '') + (PARTIAL if partial else '') + (REPEATED if repeated else '')
  )
  if len(values) == 1:
    text = f'{values[0]:.2f}{mark}'
  else:
    text = f'{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}{mark}'
  collapsed, never_learned, checked = failures
  counts = [f'{collapsed} collapsed'] * bool(collapsed) + [f'{never_learned} never learned'] * bool(
    never_learned
  )
  return text + (f' ({", ".join(counts)} of {checked})' if counts else '')


def _number(value: float | None, on_test: bool = False) -> str:
  return '-' if value is None else f'{value:.2f}' + (ON_TEST if on_test else '')


@functools.cache
def recipe(task: str, variant: str) -> tuple[int, int] | None:
  """(`training.num_train_steps`, `data.options.max_length`) of `configs/<task>.py:<variant>`, None
  for a variant the task configs do not take."""
  if variant not in CONFIG_VARIANTS:
    return None
  config = importlib.import_module(f'configs.{task}').get_config(variant)
  return config.training.num_train_steps, config.data.options.max_length


def _other_protocol(config: Mapping[str, Any], task: str, variant: str) -> str:
  """`OTHER_PROTOCOL` with a (non-debug) run's steps and length where they are not its recipe's
  (`recipe`; a variant without one: both), else ''."""
  given = (
    config.get('training', {}).get('num_train_steps'),
    config.get('data', {}).get('options', {}).get('max_length'),
  )
  if config.get('debug'):
    return ''
  other = [
    text.format(value)
    for text, value, usual in zip(
      ('{} steps', 'length {}'), given, recipe(task, variant) or (None, None)
    )
    if value not in (None, usual)
  ]
  return OTHER_PROTOCOL.format(', '.join(other)) if other else ''


def _parts(variant: str) -> tuple[str, str, bool]:
  """A variant key's model variant, its protocol suffix (`SPT`, `OTHER_PROTOCOL`; '' for the
  recipe) and whether debug (`DEBUG`)."""
  debug = variant.endswith(DEBUG)
  model, _, protocol = variant.removesuffix(DEBUG).partition(' ')
  return model, f' {protocol}' if protocol else '', debug


def repeated_seeds(
  runs: Sequence[RunResult],
) -> dict[tuple[str, str], dict[int, list[RunResult]]]:
  """By (variant, task), the seeds that more than one run has, with those runs."""
  groups: dict[tuple[str, str], dict[int, list[RunResult]]] = {}
  for run in runs:
    groups.setdefault(run.key, {}).setdefault(run.seed, []).append(run)
  repeated = {
    key: {seed: found for seed, found in seeds.items() if len(found) > 1}
    for key, seeds in groups.items()
  }
  return {key: seeds for key, seeds in repeated.items() if seeds}


#: Config keys that change neither a run's updates nor its figures, only how often it logs and
#: saves and how far ahead its batches are sent (configs/base.py's `training` section).
BOOKKEEPING_KEYS = (
  'training.log_every',
  'training.checkpoint_every',
  'training.keep_checkpoints',
  'training.prefetch_batches',
)


def differing_settings(runs: Sequence[RunResult]) -> list[str]:
  """The config keys (dotted) whose values differ between `runs` (1 and 1.0 being one value, True
  and 1 two, NaN one), the folders (`data.data_dir`, `init_from`: where a run read its data and
  source, not how it trained) and `BOOKKEEPING_KEYS` aside."""

  def flat(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
    items = {}
    for key, value in tree.items():
      if isinstance(value, Mapping):
        items.update(flat(value, f'{prefix}{key}.'))
      else:
        items[f'{prefix}{key}'] = value
    return items

  def comparable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
      return (None, 'NaN')
    return (type(value) is bool, value)

  configs = [flat(run.config) for run in runs]
  keys = set().union(*configs) - {'data.data_dir', 'init_from', *BOOKKEEPING_KEYS}
  absent = object()
  return sorted(
    key
    for key in keys
    if any(
      comparable(config.get(key, absent)) != comparable(configs[0].get(key, absent))
      for config in configs
    )
  )


def health_counts(runs: Sequence[RunResult]) -> dict[tuple[str, str], tuple[int, int, int]]:
  """By (variant, task): (runs that collapsed, runs that never learned, runs with a `Health`)."""
  counts: dict[tuple[str, str], tuple[int, int, int]] = {}
  for run in runs:
    if run.health is not None:
      collapsed, never_learned, checked = counts.get(run.key, (0, 0, 0))
      counts[run.key] = (
        collapsed + run.health.collapsed,
        never_learned + (not run.health.learned),
        checked + 1,
      )
  return counts


def leaderboard(
  runs: Mapping[tuple[str, str], Sequence[float]],
  on_test: frozenset[tuple[str, str]] = frozenset(),
  partial: frozenset[tuple[str, str]] = frozenset(),
  failures: Mapping[tuple[str, str], tuple[int, int, int]] | None = None,
  repeated: frozenset[tuple[str, str]] = frozenset(),
) -> str:
  """The markdown table: for every model with runs, its paper row and its rows of runs.

  Cells (and averages over them) of the (variant, task) keys in `on_test` are marked † (chosen on
  test data), cells of the keys in `partial` * (evaluated on part of the test split), cells of the
  keys in `repeated` ‡ (runs of one seed among them, `repeated_seeds`); a cell whose
  runs include some that collapsed or never learned (`failures`, `health_counts`) says how many,
  e.g. '27.92 ± 11.30 (1 collapsed of 3)'. Self-pretrained runs (variants ending in `SPT`), runs
  of other steps or lengths than the recipe (`OTHER_PROTOCOL`) and debug runs (`DEBUG`) have their
  own rows after the model's. The paper row is Table 1's, or Table 3's for the P-mean variants
  (ListOps, Text and Retrieval only).
  """
  failures = failures or {}
  models = {_parts(key[0])[0] for key in runs}
  ordered_models = [v for v in CONFIG_VARIANTS if v in models] + sorted(models - set(VARIANTS))
  lines = [
    '| Model | Source | ' + ' | '.join(TABLE1_TITLES) + ' | Avg | Avg (w/o rtl) |',
    '|---|---|' + '---:|' * (len(TABLE1_TASKS) + 2),
  ]
  for model in ordered_models:
    rows = sorted(
      {key[0] for key in runs if _parts(key[0])[0] == model},
      key=lambda row: (_parts(row)[2], _parts(row)[1]),
    )
    known = VARIANTS.get(model)
    if known is not None and not all(_parts(row)[2] for row in rows):
      if known.table1 is not None:
        paper, source = dict(zip(TABLE1_TASKS, known.table1)), 'paper'
      elif known.table3 is not None:
        paper, source = dict(zip(TABLE3_TASKS, known.table3)), 'paper (Table 3)'
      else:
        paper = {}
      if paper:
        lines.append(
          f'| {label(model)} | {source} | '
          + ' | '.join(_number(paper.get(t)) for t in TABLE1_TASKS)
          + ' | '
          + ' | '.join(_number(a) for a in averages(paper))
          + ' |'
        )
    for row in rows:
      _, protocol, is_debug = _parts(row)
      counts = sorted({len(runs[(row, t)]) for t in TABLE1_TASKS if (row, t) in runs})
      source = 'ours, debug (' if is_debug else 'ours ('
      source += '/'.join(map(str, counts)) + (' run)' if counts == [1] else ' runs)')
      means = {t: statistics.fmean(runs[(row, t)]) for t in TABLE1_TASKS if (row, t) in runs}
      marked = {t for t in TABLE1_TASKS if (row, t) in on_test}
      average_marks = (bool(marked), bool(marked - {'retrieval'}))
      cells = [
        _cell(
          runs.get((row, t)),
          t in marked,
          (row, t) in partial,
          failures.get((row, t), (0, 0, 0)),
          (row, t) in repeated,
        )
        for t in TABLE1_TASKS
      ]
      name = label(model) + protocol.replace(SPT, ' + self-pretraining') + DEBUG * is_debug
      lines.append(
        f'| {name} | {source} | '
        + ' | '.join(cells)
        + ' | '
        + ' | '.join(_number(a, m) for a, m in zip(averages(means), average_marks))
        + ' |'
      )
  return '\n'.join(lines)


def health_notes(runs: Sequence[RunResult]) -> list[str]:
  """The leaderboard's notes on collapse: the definition, how many runs it could check, and every
  run that collapsed or never learned with its best and final validation accuracy."""
  checked = [run for run in runs if run.health is not None]
  if not checked:
    return []
  lines = [
    f"Collapsed / never learned (from each run's metrics.jsonl and results.json; {len(checked)} of "
    f'{len(runs)} runs have a metrics.jsonl): with chance c (one over the number of classes), best '
    f'validation accuracy b over the logged evaluations and the final one, and final validation '
    f'accuracy f, a run learned when b >= c + {LEARNED_GAIN:g} x (100 - c) (ListOps: 19%, above '
    f'any constant prediction; binary tasks: 55%); a run that learned collapsed when '
    f'f < c + {KEPT_GAIN:g} x (b - c), i.e. it lost more than half of its best gain over chance.'
  ]
  for run in checked:
    if run.health.collapsed or not run.health.learned:
      what = 'collapsed' if run.health.collapsed else 'never learned'
      lines.append(
        f'- {run.path}: {what}: best validation {run.health.best:.2f}% (step '
        f'{run.health.best_step}), final {run.health.final:.2f}%, test {run.final:.2f}%'
      )
  return ['\n'.join(lines)]


def pretraining_notes(runs: Sequence[RunResult]) -> list[str]:
  """The leaderboard's notes on the self-pretrained runs: each one's masked-LM steps, their speed
  and time (compilation excluded) and the masked-token validation accuracy."""
  lines = []
  for run in runs:
    if run.pretraining is None:
      continue
    steps, speed = run.pretraining.get('step'), run.pretraining.get('steps_per_sec')
    text = f'- {run.path}: {steps} masked-LM steps'
    if steps and speed:
      text += f' at {speed:.3g} steps/s ({steps / speed / 60:.2f} min, compilation excluded)'
    accuracy = run.pretraining.get('validation', {}).get('accuracy')
    if accuracy is not None:
      text += f', masked-token validation accuracy {100 * accuracy:.2f}%'
    lines.append(text)
  if not lines:
    return []
  return [
    "Self-pretrained rows (+ self-pretraining): masked-LM pretraining on the task's own training "
    "inputs, then the task's recipe from that encoder (Amos, Berant and Gupta, ICLR 2024):\n"
    + '\n'.join(lines)
  ]


def leaderboard_markdown(
  runs: Mapping[tuple[str, str], Sequence[float]],
  runs_dir: str,
  checkpoint: str = 'final',
  on_test: frozenset[tuple[str, str]] = frozenset(),
  partial: frozenset[tuple[str, str]] = frozenset(),
  left_out: Sequence[str] = (),
  failures: Mapping[tuple[str, str], tuple[int, int, int]] | None = None,
  notes: Sequence[str] = (),
  repeated: Mapping[tuple[str, str], Mapping[int, Sequence[RunResult]]] | None = None,
) -> str:
  """The whole `leaderboard.md`: title, provenance (runs, which checkpoint), the table, the notes
  on its marks († `on_test`, * `partial`, ‡ `repeated`: `repeated_seeds`, debug rows), more
  `notes` (`health_notes`, `pretraining_notes`) and the runs `left_out` (results.json files that
  are not LRA classifier runs, unfinished workdirs), one per line."""
  total = sum(len(v) for v in runs.values())
  marks = []
  if on_test:
    marks.append(
      f'{ON_TEST} Selected on test data: the best checkpoint of at least one of these runs '
      'was chosen on its validation split, which is its test split (the official LRA Text '
      'protocol), so the figure is not a held-out one.'
    )
  if partial:
    marks.append(
      f'{PARTIAL} Partial: at least one of these runs was evaluated on a sample of its test '
      'split (training.num_eval_batches != -1), not on all of it.'
    )
  if repeated:
    marks.append(
      f'{REPEATED} Runs of one seed: several of these runs have the same config.seed, so they are '
      'not independent seeds (each is counted as a run, and the spread says nothing of '
      'seed-to-seed variation). With the same settings they are repeats of one run '
      '(bit-identical on one machine); the settings that differ are named:\n'
      + '\n'.join(
        f'- {label(_parts(variant)[0])}, {task}, seed {seed}: '
        f'{", ".join(run.path for run in group)} ({_same_or_not(group)})'
        for (variant, task), seeds in sorted(repeated.items())
        for seed, group in sorted(seeds.items())
      )
    )
  if any(variant.endswith(DEBUG) for variant, _ in runs):
    marks.append(
      'Rows marked (debug) are smoke-test runs (config.debug: one small layer, 5 steps): they '
      'check the pipeline and say nothing about the model; they are never averaged with real runs.'
    )
  marks += notes
  if left_out:
    marks.append('Not in the table:\n' + '\n'.join(f'- {line}' for line in left_out))
  return '\n'.join(
    [
      '# LRA leaderboard',
      '',
      f'{total} runs from `{runs_dir}`: test accuracy (%) of {CHECKPOINTS[checkpoint]}, '
      'mean ± sample standard deviation over runs (seeds) where there are several. '
      'Avg: mean of the 5 task means; Avg (w/o rtl): without Retrieval (both only when every '
      'task has runs). Paper rows: Luna paper (Ma et al., NeurIPS 2021) Table 1 (Table 3 for the '
      'P-mean pooling), the baselines there from Tay et al. (2021).',
      '',
      leaderboard(runs, on_test, partial, failures, frozenset(repeated or {})),
      '',
      *[line for note in marks for line in (note, '')],
    ]
  )


def _same_or_not(runs: Sequence[RunResult]) -> str:
  differing = differing_settings(runs)
  return f'other settings: {", ".join(differing)}' if differing else 'the same settings'


def figure1(
  benchmark: Mapping[str, Any],
  runs: Mapping[tuple[str, str], Sequence[float]],
  path: str,
  length: int | None = None,
) -> None:
  """Figure 1 of the paper: average accuracy without Retrieval against steps/s, bubble area =
  memory.

  Args:
    benchmark: a `benchmarks.speed_memory` results document (train_step mode).
    runs: `accuracies` output (may be empty: paper accuracies only).
    path: output PNG.
    length: sequence length of the speed/memory cells (default: the longest length at which every
      model with an accuracy has an 'ok' cell).

  Raises:
    ReportError: no benchmarked model has an accuracy (ours or the paper's), or a cell at
      `length` (by default the longest length they share).
  """
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import matplotlib.ticker

  points = {}
  for variant in CONFIG_VARIANTS:
    ours = averages(
      {t: statistics.fmean(runs[(variant, t)]) for t in TABLE1_TASKS if (variant, t) in runs}
    )[1]
    table1 = VARIANTS[variant].table1
    paper = averages(dict(zip(TABLE1_TASKS, table1)))[1] if table1 is not None else None
    cells = {
      c['length']: c for c in benchmark['cells'] if c['model'] == variant and c['status'] == 'ok'
    }
    if (ours is not None or paper is not None) and cells:
      points[variant] = (ours if ours is not None else paper, ours is not None, cells)
  if not points:
    raise ReportError("figure 1: no benchmarked model has an accuracy (ours or the paper's).")
  if length is None:
    shared = set.intersection(*(set(cells) for _, _, cells in points.values()))
    if not shared:
      raise ReportError(
        'figure 1: the benchmarked models share no sequence length; choose one with --length.'
      )
    length = max(shared)
  if not any(length in cells for _, _, cells in points.values()):
    raise ReportError(f'figure 1: no benchmarked model has a cell at length {length}.')
  fig, ax = plt.subplots(figsize=(7, 5))
  largest = (  # 1 where memory was not measured (0 bytes): bubbles of no area.
    max(cells[length]['memory_bytes'] for _, _, cells in points.values() if length in cells) or 1
  )
  labels = []
  for i, (variant, (accuracy, is_ours, cells)) in enumerate(points.items()):
    if length not in cells:
      continue
    cell = cells[length]
    color = f'C{i}'
    ax.scatter(
      cell['steps_per_s'],
      accuracy,
      s=2000 * cell['memory_bytes'] / largest,
      alpha=0.5,
      facecolors=color if is_ours else 'none',
      edgecolors=color,
      linewidths=2,
    )
    labels.append(
      ax.annotate(
        f'{label(variant)}\n{cell["memory_bytes"] / 2**30:.2f} GiB',
        (cell['steps_per_s'], accuracy),
        xytext=(0, 0),  # In points: `_separate` moves it from there.
        textcoords='offset points',
        ha='center',
        va='center',
        fontsize=8,
      )
    )
  ax.set_xscale('log')
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_xlabel(f'training steps / s at length {length}')
  ax.set_ylabel('LRA average accuracy without Retrieval (%)')
  machine = benchmark.get('machine', {})
  ax.set_title(
    f'Accuracy, speed and memory (bubble area) on {machine.get("backend", "?")}; '
    'hollow = paper accuracy',
    fontsize=9,
  )
  ax.margins(0.25)
  ax.grid(True, alpha=0.3)
  fig.tight_layout()
  _separate(labels, fig)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _separate(labels: Sequence[Any], fig: Any) -> None:
  """Moves figure annotations down, a line at a time, until none overlaps one above it (close
  bubbles, such as Luna-128's and Luna-256's, had their labels printed over each other)."""
  renderer = fig.canvas.get_renderer()
  placed = []
  for annotation in sorted(labels, key=lambda a: -a.get_window_extent(renderer).y1):
    box = annotation.get_window_extent(renderer)
    line = box.height / len(annotation.get_text().splitlines()) * 72 / fig.dpi  # In points.
    while any(box.overlaps(other) for other in placed):
      x, y = annotation.xyann
      annotation.xyann = (x, y - line)
      moved, box = box, annotation.get_window_extent(renderer)
      if moved.bounds == box.bounds:  # Not drawn where it can move (a speed of 0 on a log axis).
        break
    placed.append(box)


def write_report(
  paths: Sequence[str],
  output_dir: str,
  *,
  source: str,
  checkpoint: str = 'final',
  benchmark_json: str = '',
  length: int | None = None,
  unfinished: Sequence[str] = (),
) -> int:
  """Writes `leaderboard.md` (and, with `benchmark_json`, `figure1.png`) from `results.json` files.

  Args:
    paths: the runs' results.json files (`find_results`).
    output_dir: the report's folder (created).
    source: where the runs come from, for the title (e.g. the runs folder).
    checkpoint: 'final' or 'best' (`CHECKPOINTS`).
    benchmark_json: a `benchmarks.speed_memory` train_step results file, or '' for no figure.
    length: sequence length of the figure's cells (default: see `figure1`).
    unfinished: workdirs without results.json, listed as not in the table.

  Returns:
    The number of runs in the table.

  Raises:
    ReportError: an unreadable results.json, no LRA classifier run among `paths`, an unreadable
      `benchmark_json` or nothing in it to plot (`figure1`).
    ValueError: see `accuracies`.
  """
  runs, skipped = read_runs(paths)
  if not runs:
    listing = ''.join(f'\n  {line}' for line in skipped)
    raise ReportError(
      f'{source}: no results.json of an LRA classifier run on a Table-1 task '
      f'({len(paths)} results.json found{listing and ", none of them one:"}){listing}'
    )
  table = accuracies(runs, checkpoint)
  on_test = frozenset(run.key for run in runs if run.selected_on_test and checkpoint == 'best')
  partial = frozenset(run.key for run in runs if run.partial)
  left_out = [
    *skipped,
    *(f'{path}: unfinished (no results.json), {progress(path)}' for path in unfinished),
  ]
  os.makedirs(output_dir, exist_ok=True)
  markdown = leaderboard_markdown(
    table,
    source,
    checkpoint,
    on_test,
    partial,
    left_out,
    health_counts(runs),
    [*health_notes(runs), *pretraining_notes(runs)],
    repeated_seeds(runs),
  )
  write_atomically(os.path.join(output_dir, 'leaderboard.md'), markdown)
  print(f'{len(runs)} runs -> {os.path.join(output_dir, "leaderboard.md")}')
  if left_out:
    print(f'{len(left_out)} not in the table (listed in leaderboard.md):')
    for line in left_out:
      print(f'  {line}')
  if benchmark_json:
    try:
      benchmark = speed_memory_report.read_results(benchmark_json)
    except ValueError as e:
      raise ReportError(f"{e} (--benchmark_json '' leaves the figure out)") from None
    figure1(benchmark, table, os.path.join(output_dir, 'figure1.png'), length)
    print(f'figure -> {os.path.join(output_dir, "figure1.png")}')
  return len(runs)


def main(argv: Sequence[str] | None = None) -> None:
  """The command line (module docstring).

  Raises:
    ReportError: a missing or empty `--runs_dir`, an unreadable results.json.
  """
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--runs_dir', required=True, help='folder searched for results.json files.')
  parser.add_argument(
    '--output_dir', required=True, help='where leaderboard.md and figure1.png go.'
  )
  parser.add_argument(
    '--benchmark_json',
    default='benchmarks/results/cpu/train_step/results.json',
    help="speed_memory train_step results for figure1.png ('' to skip the plot).",
  )
  parser.add_argument(
    '--length', type=cli.integer(1), default=None, help='sequence length of the plotted cells.'
  )
  parser.add_argument(
    '--checkpoint',
    choices=tuple(CHECKPOINTS),
    default='final',
    help='test accuracy of the final parameters (official LRA protocol) or of the best '
    'validation checkpoint.',
  )
  args = parser.parse_args(argv)
  write_report(
    find_results(args.runs_dir),
    args.output_dir,
    source=args.runs_dir,
    checkpoint=args.checkpoint,
    benchmark_json=args.benchmark_json,
    length=args.length,
    unfinished=unfinished_runs(args.runs_dir),
  )


if __name__ == '__main__':
  try:
    main()
  except (ReportError, OSError) as e:
    sys.exit(f'Error: {e}')
