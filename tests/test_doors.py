"""Breaking it at every door: each entry point fed the bad inputs that once failed silently, lost
data or failed unclearly, asserting one clear error that names the problem, or the right behaviour.

Host-side checks only (nothing here compiles a model but two subprocess runs of `train.py` and
`benchmarks.report`); the trainer-level cases that need a run are in tests/test_mlm_train.py and
tests/test_train_guards.py.
"""

import argparse
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tomllib

import corpora
import lra
import luna_jax
from benchmarks import (
  causal_speed,
  gpu_session,
  precision_curves,
  precision_gradients,
  report,
  reproduce,
  speed_memory,
  wmt14_cost,
)
from configs import listops as listops_config
from configs import pathfinder32 as pathfinder_config
from configs import pretrain_mlm, quickstart
from corpora import sequence_generator, text_tokenizers, translation, translation_generator
from lra import cli, listops_generator, pathfinder_generator, synthetic
from luna_jax import config_utils
from luna_jax.model import generation
from luna_jax.training import checkpointing, run_config, trainer
from luna_jax.training import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def listops_run_config(**changes):
  """The quick-start config, parsed (no data is read), with `changes` to its top-level keys."""
  config = quickstart.get_config()
  config.data.data_dir = '/data/listops'
  for key, value in changes.items():
    setattr(config, key, value)
  return run_config.parse_config(config)


# --------------------------------------------------------------------------------------------------
# Configs: no implicit places, no non-finite numbers.
# --------------------------------------------------------------------------------------------------


def test_pretraining_without_data_dir_names_the_flag_and_touches_nothing(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'notes.txt').write_text('a stray text file in the working directory\n' * 100)
  config = pretrain_mlm.get_config('cpu,debug')
  with pytest.raises(config_utils.ConfigError, match=r'--config\.data\.data_dir=DIR') as error:
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert 'corpora.sequence_generator' in str(error.value)
  assert sorted(os.listdir(tmp_path)) == ['notes.txt']  # No lra_cache, no workdir.


@pytest.mark.parametrize(
  'load,task', [(lra.load_task, 'listops'), (corpora.load_task, 'corpus'), (lra.load_task, 'text')]
)
def test_loaders_refuse_an_empty_data_dir(load, task):
  with pytest.raises(lra.DataError, match=f'data_dir is empty: give the folder of the {task}'):
    load(task, '')


@pytest.mark.parametrize(
  'options,message',
  [
    ({'split_seed': -1}, 'option split_seed=-1 must be >= 0'),
    ({'split_seed': 1.5}, 'option split_seed=1.5 must be an integer'),
    ({'tokenizer': 3}, 'option tokenizer=3 must be a string'),
    ({'heldout_fraction': 'x'}, "option heldout_fraction='x' must be a finite number"),
    ({'cache': 'no'}, "option cache='no' must be True or False"),
    ({'max_length': True}, 'max_length must be a positive integer, got True'),
  ],
)
def test_task_options_of_the_wrong_kind_are_refused_by_name(tmp_path, options, message):
  (tmp_path / 'c.txt').write_text('some text\n' * 10)
  with pytest.raises(lra.DataError, match=re.escape(message)):
    corpora.load_task('corpus', str(tmp_path / 'c.txt'), **options)


@pytest.mark.parametrize('value', [0, -3, 2.0])
@pytest.mark.parametrize('task', ['seq2seq', 'translation'])
def test_a_target_length_that_is_no_positive_integer_is_refused(task, value, tmp_path):
  # 0 trained on empty targets (a zero loss); -3 ended in numpy's negative dimensions.
  with pytest.raises(
    lra.DataError, match=f'max_target_length must be a positive integer, got {value}'
  ):
    corpora.load_task(task, str(tmp_path), max_target_length=value)


def test_batches_refuse_a_seed_that_is_no_integer():
  with pytest.raises(lra.DataError, match=r'seed \(1.5\) and start_step \(0\) must be'):
    next(lra.train_batches(_split([0, 1] * 8), 4, seed=1.5))


def test_a_corpus_file_caches_beside_itself(tmp_path):
  corpus = tmp_path / 'corpus.txt'
  corpus.write_text('one document of some words\n' * 200)
  corpora.load_task('corpus', str(corpus), max_length=32)
  assert (tmp_path / 'lra_cache').is_dir()


@pytest.mark.parametrize(
  'section,key,value',
  [
    ('optimizer', 'learning_rate', float('inf')),
    ('optimizer', 'eps', float('nan')),
    ('model', 'dropout_rate', float('nan')),
    ('training', 'label_smoothing', float('-inf')),
  ],
)
def test_non_finite_numbers_are_refused_anywhere(section, key, value):
  config = quickstart.get_config()
  config[section][key] = value
  with pytest.raises(config_utils.ConfigError, match=f'config.{section}.{key}={value}: must be a'):
    run_config.parse_config(config)


def test_non_finite_data_options_are_refused():
  config = pretrain_mlm.get_config('cpu')
  config.data.options.heldout_fraction = float('nan')
  with pytest.raises(config_utils.ConfigError, match=r'options\.heldout_fraction=nan'):
    run_config.parse_config(config)


def test_quickstart_missing_data_gives_its_own_generator_command(tmp_path):
  with pytest.raises(lra.DataError) as error:
    lra.load_task('listops', tmp_path / 'listops_quickstart', max_length=60)
  documented = re.search(
    r'(python -m lra\.listops_generator.*?)\n\s+python train', quickstart.__doc__, re.S
  )
  command = ' '.join(documented.group(1).replace('\\', ' ').split())
  expected = command.replace('data/listops_quickstart', str(tmp_path / 'listops_quickstart'))
  assert expected in str(error.value)


def test_train_py_runs_from_another_directory_and_prints_one_error_line(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, 'train.py'),
      '--config',
      os.path.join(ROOT, 'configs', 'pretrain_mlm.py') + ':cpu,debug',
      '--workdir',
      'run',
    ],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 1
  assert result.stderr.strip().startswith('Error: config.data.data_dir is not set')
  assert 'Traceback' not in result.stderr and len(result.stderr.strip().splitlines()) == 1
  assert os.listdir(tmp_path) == []


def _train_py_where_training_raises(tmp_path, error: str) -> subprocess.CompletedProcess:
  """train.py (quickstart:debug, workdir 'run') with `trainer.train_and_evaluate` raising `error`
  (Python source)."""
  script = f"""
import runpy, signal, sys
from luna_jax.training import trainer
def train_and_evaluate(config, workdir):
  raise {error}
trainer.train_and_evaluate = train_and_evaluate
sys.argv = ['train.py', '--config', {os.path.join(ROOT, 'configs', 'quickstart.py')!r} + ':debug',
            '--workdir', 'run']
runpy.run_path({os.path.join(ROOT, 'train.py')!r}, run_name='__main__')
"""
  return subprocess.run(
    [sys.executable, '-c', script],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=120,
    env={**os.environ, 'PYTHONPATH': ROOT},
  )


def test_a_full_disk_ends_train_py_with_one_error_line_that_says_the_run_resumes(tmp_path):
  # As orbax reports it: a ValueError carrying tensorstore's message.
  result = _train_py_where_training_raises(
    tmp_path,
    'ValueError("RESOURCE_EXHAUSTED: Error writing in OCDBT database: Failed to write 887434 '
    'bytes to file 17: No space left on device [os_error_code=28]")',
  )
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('Error: no space left on the device of run (RESOURCE_EXHAUSTED')
  assert 'run the same command again: the run resumes from its last complete checkpoint' in last
  assert 'Traceback' not in result.stderr


def test_a_stopped_run_ends_train_py_with_the_signal_status_and_how_to_resume(tmp_path):
  result = _train_py_where_training_raises(
    tmp_path, "trainer.TrainingInterrupted(signal.SIGTERM, 5, 'run')"
  )
  assert result.returncode == 128 + signal.SIGTERM
  assert result.stderr.strip().splitlines()[-1] == (
    'SIGTERM: training stopped after step 5, saved in run/checkpoints/5. Run the same command to '
    'resume: the run goes on as if it had not stopped.'
  )
  assert 'Traceback' not in result.stderr


# --------------------------------------------------------------------------------------------------
# The tokenizer command: documents of any length, nothing overwritten.
# --------------------------------------------------------------------------------------------------


def test_split_document_keeps_every_character_within_the_limit():
  text = ('Short one. ' * 300) + 'x' * 10 + ' ' + 'é' * 5000
  pieces = text_tokenizers.split_document(text, 100)
  assert all(len(p.encode('utf-8')) <= 100 for p in pieces)
  assert ''.join(''.join(p.split()) for p in pieces) == ''.join(text.split())
  assert text_tokenizers.split_document('short', 100) == ['short']


def test_sentencepiece_learns_from_long_documents_and_records_the_counts(tmp_path):
  rng = np.random.default_rng(0)
  words = ['alpha', 'beta', 'gamma', 'delta']
  lines = [' '.join(rng.choice(words, 8)) for _ in range(40)]
  # Longer than SentencePiece's 4192-byte sentence limit: the only place 'zeta' occurs.
  lines += ['. '.join(' '.join(rng.choice(['zeta', 'theta'], 50)) for _ in range(20))] * 3
  (tmp_path / 'c.txt').write_text('\n'.join(lines) + '\n')
  model = text_tokenizers.train_sentencepiece([tmp_path / 'c.txt'], str(tmp_path / 'spm'), 20)
  stats = json.loads(text_tokenizers.stats_path(model).read_text())
  assert (stats['documents'], stats['documents_split'], stats['skipped_documents']) == (43, 3, 0)
  assert stats['vocabulary'] == text_tokenizers.load_tokenizer(str(model)).name
  assert text_tokenizers.SP_UNK_ID not in text_tokenizers.load_tokenizer(str(model)).encode('zeta')
  # A SentencePiece check that fails with no message of its own is named, not left blank.
  with pytest.raises(lra.DataError, match=r'its check .*input_sentence_size\(\) > 100 failed'):
    text_tokenizers.train_sentencepiece_on(lines, str(tmp_path / 'small'), 20, max_sentences=50)


def test_retraining_a_tokenizer_never_replaces_it_without_overwrite(tmp_path, capsys):
  (tmp_path / 'c.txt').write_text('the cat sat on the mat\n' * 50)
  argv = ['--input_dir', str(tmp_path / 'c.txt'), '--model_prefix', str(tmp_path / 'spm')]
  text_tokenizers.main([*argv, '--vocab_size', '14'])
  model = tmp_path / 'spm.model'
  before = model.read_bytes()
  text_tokenizers.main([*argv, '--vocab_size', '14'])  # The same command: kept.
  assert 'kept: already trained with these settings' in capsys.readouterr().out
  with pytest.raises(SystemExit):
    text_tokenizers.main([*argv, '--vocab_size', '15'])
  assert 'Refusing to overwrite' in capsys.readouterr().err and model.read_bytes() == before
  text_tokenizers.main([*argv, '--vocab_size', '15', '--overwrite'])
  assert model.read_bytes() != before


# --------------------------------------------------------------------------------------------------
# Resume: the vocabulary's identity, init_from not needed; one kind of run per workdir.
# --------------------------------------------------------------------------------------------------


@flax.struct.dataclass
class _State:
  step: jax.Array
  params: dict


def _saved_run(tmp_path, run, vocabulary):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), 1)
  state = _State(np.int32(3), {'w': np.ones(2, np.float32)})
  record = {'config': run.to_dict(), 'vocabulary': vocabulary, 'global_devices': 1}
  checkpointer.save(3, state, {**record, 'device_changes': [], 'train_time': 1.0, 'timed_steps': 2})
  return checkpointer, _State(np.int32(0), {'w': np.zeros(2, np.float32)})


def test_resuming_on_another_vocabulary_is_refused(tmp_path):
  run = listops_run_config()
  checkpointer, fresh = _saved_run(tmp_path, run, 'sentencepiece:0123456789abcdef')
  with pytest.raises(trainer.VocabularyChangedError, match='sentencepiece:0123456789abcdef'):
    trainer.restore_run(checkpointer, fresh, run, str(tmp_path), 1, 'sentencepiece:fedcba')
  checkpointer.close()


def test_a_finetuning_run_resumes_with_its_source_gone_or_dropped(tmp_path):
  run = listops_run_config(init_from=str(tmp_path / 'moved_away'))
  checkpointer, fresh = _saved_run(tmp_path, run, 'listops')
  for init_from in (run.init_from, ''):
    state, _, resumed = trainer.restore_run(
      checkpointer, fresh, listops_run_config(init_from=init_from), str(tmp_path), 1, 'listops'
    )
    assert int(state.step) == 3 and resumed.init_from == run.init_from  # The record keeps it.
  with pytest.raises(run_config.ConfigChangedError, match='init_from'):
    trainer.restore_run(
      checkpointer, fresh, listops_run_config(init_from='other'), str(tmp_path), 1, 'listops'
    )
  checkpointer.close()


def test_a_workdir_holds_one_kind_of_run(tmp_path):
  workdir_lib.claim_kind(str(tmp_path), 'plain', False)
  workdir_lib.claim_kind(str(tmp_path), 'finetuning', False)  # Stopped before writing: free.
  (tmp_path / 'checkpoints').mkdir()  # The checkpointer's, made before init_from failed.
  workdir_lib.claim_kind(str(tmp_path), 'plain', False)
  (tmp_path / 'checkpoints' / '3').mkdir(parents=True)
  workdir_lib.claim_kind(str(tmp_path), 'plain', False)  # The same kind again: resumed.
  for kind, debug in (('self-pretraining', False), ('plain', True), ('pretraining', False)):
    with pytest.raises(workdir_lib.WorkdirKindError, match='holds a plain run'):
      workdir_lib.claim_kind(str(tmp_path), kind, debug)


def test_a_start_refused_before_writing_leaves_no_run_behind(tiny_lra_data, tmp_path):
  from tests.test_train import tiny_config

  config = tiny_config(tiny_lra_data)
  config.data.data_dir = str(tmp_path / 'no_data')
  with pytest.raises(lra.DataError, match='no_data'):
    trainer.train_and_evaluate(config, str(tmp_path / 'runs' / 'new'))
  assert not (tmp_path / 'runs' / 'new').exists()  # benchmarks.report counted it unfinished.
  kept = tmp_path / 'kept'
  kept.mkdir()
  (kept / 'notes.txt').write_text('mine')
  with pytest.raises(lra.DataError, match='no_data'):
    trainer.train_and_evaluate(config, str(kept))
  assert [p.name for p in kept.iterdir()] == ['notes.txt']
  # A missing init_from: the checkpointer made its empty folders first.
  config = tiny_config(tiny_lra_data)
  config.init_from = str(tmp_path / 'nowhere')
  with pytest.raises(config_utils.ConfigError, match='nowhere'):
    trainer.train_and_evaluate(config, str(tmp_path / 'runs' / 'new'))
  assert not (tmp_path / 'runs' / 'new').exists()
  # The lock file goes last: until then no other start can take the workdir and write in it.
  removed, remove = [], os.remove
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(os, 'remove', lambda path: (removed.append(os.path.basename(path)), remove(path)))
    with pytest.raises(KeyboardInterrupt), workdir_lib.lock(str(tmp_path / 'w')):
      workdir_lib.claim_kind(str(tmp_path / 'w'), 'plain', False)
      raise KeyboardInterrupt
  assert removed == ['kind.json', '.lock'] and not (tmp_path / 'w').exists()
  # A folder the user made meanwhile, empty or not, is theirs: everything stays.
  with pytest.raises(KeyboardInterrupt), workdir_lib.lock(str(tmp_path / 'w')):
    (tmp_path / 'w' / 'my_notes').mkdir()
    raise KeyboardInterrupt
  assert sorted(p.name for p in (tmp_path / 'w').iterdir()) == ['.lock', 'my_notes']
  # A block that wrote something keeps all of it.
  written = tmp_path / 'written'
  with pytest.raises(KeyboardInterrupt), workdir_lib.lock(str(written)):
    workdir_lib.claim_kind(str(written), 'plain', False)
    (written / 'metrics.jsonl').write_text('')
    raise KeyboardInterrupt
  assert sorted(p.name for p in written.iterdir()) == ['.lock', 'kind.json', 'metrics.jsonl']


def test_a_failed_start_removes_the_parents_it_made_and_no_others(tmp_path):
  (tmp_path / 'runs' / 'mine').mkdir(parents=True)  # The user's, empty: kept.
  workdir = tmp_path / 'runs' / 'mine' / 'a' / 'b' / 'c'
  with pytest.raises(KeyboardInterrupt), workdir_lib.lock(str(workdir)):
    workdir_lib.claim_kind(str(workdir), 'plain', False)
    raise KeyboardInterrupt
  assert (tmp_path / 'runs' / 'mine').is_dir() and not (tmp_path / 'runs' / 'mine' / 'a').exists()
  # A parent another writer filled meanwhile stays, with what it holds.
  with pytest.raises(KeyboardInterrupt), workdir_lib.lock(str(workdir)):
    (tmp_path / 'runs' / 'mine' / 'a' / 'notes.txt').write_text('mine')
    raise KeyboardInterrupt
  assert [p.name for p in (tmp_path / 'runs' / 'mine' / 'a').iterdir()] == ['notes.txt']

  # A workdir whose lock cannot be written takes away the folders made for it.
  def refused(path):
    raise PermissionError(13, 'Permission denied', path)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(workdir_lib, 'acquire_lock', refused)
    with pytest.raises(workdir_lib.WorkdirUnusableError):
      with workdir_lib.lock(str(tmp_path / 'x' / 'y')):
        pass
  assert not (tmp_path / 'x').exists()


def test_a_workdir_written_before_the_record_is_recognised(tmp_path):
  config = listops_run_config(debug=True).to_dict()
  (tmp_path / 'config.json').write_text(json.dumps(config))
  with pytest.raises(workdir_lib.WorkdirKindError, match='holds a debug plain run'):
    workdir_lib.claim_kind(str(tmp_path), 'plain', False)


@pytest.mark.parametrize(
  'name, content',
  [('kind.json', 'garbage'), ('config.json', '{}'), ('results.json', '{"pretraining": 1}')],
)
def test_a_workdir_file_another_program_wrote_is_named(tmp_path, name, content):
  (tmp_path / name).write_text(content)
  with pytest.raises(workdir_lib.WorkdirKindError, match=f'{tmp_path / name} is not the file a'):
    workdir_lib.claim_kind(str(tmp_path), 'plain', False)


def test_a_finetuning_run_with_a_checkpoint_may_drop_init_from(tmp_path):
  workdir_lib.claim_kind(str(tmp_path), 'finetuning', False)
  (tmp_path / 'config.json').write_text('{}')
  with pytest.raises(workdir_lib.WorkdirKindError, match='holds a finetuning run'):
    workdir_lib.claim_kind(str(tmp_path), 'plain', False)  # No checkpoint: it needs its source.
  (tmp_path / 'checkpoints' / '5').mkdir(parents=True)
  workdir_lib.claim_kind(str(tmp_path), 'plain', False)
  assert json.loads((tmp_path / 'kind.json').read_text())['kind'] == 'finetuning'


def test_self_pretraining_in_a_plain_runs_workdir_is_refused_before_writing(
  tiny_lra_data, tmp_path
):
  from tests.test_mlm_train import spt_config

  workdir_lib.claim_kind(str(tmp_path), 'plain', False)
  (tmp_path / 'results.json').write_text('{"plain": true}')
  with pytest.raises(workdir_lib.WorkdirKindError, match='self-pretraining'):
    trainer.train_and_evaluate(spt_config(tiny_lra_data), str(tmp_path))
  assert (tmp_path / 'results.json').read_text() == '{"plain": true}'
  assert not (tmp_path / 'pretrain').exists()


# --------------------------------------------------------------------------------------------------
# Generation: the models' input contract, checked before anything is compiled.
# --------------------------------------------------------------------------------------------------

_SIZES = dict(num_layers=1, emb_dim=16, num_heads=2, mlp_dim=32, projection_length=4)
LM = luna_jax.build_model(
  {'name': 'luna_lm', **_SIZES}, vocab_size=10, num_classes=10, max_length=8
)
SEQ2SEQ = luna_jax.build_model(
  {'name': 'luna_seq2seq', **_SIZES}, vocab_size=10, num_classes=10, max_length=8, bos_id=1
)
PROMPT = np.ones((2, 3), np.int32)
SOURCE, LENGTHS = np.ones((2, 4), np.int32), np.array([4, 2], np.int32)


@pytest.mark.parametrize(
  'call,message',
  [
    (lambda: generation.generate(LM, None, PROMPT + 9, 2, None), 'prompt holds token id 10'),
    (lambda: generation.generate(LM, None, -PROMPT, 2, None), r'token id -1: ids must lie in'),
    (lambda: generation.generate(LM, None, PROMPT * 1.0, 2, None), 'dtype float64'),
    (lambda: generation.generate(LM, None, PROMPT[0], 2, None), r'shape \(3,\)'),
    (lambda: generation.generate(LM, None, PROMPT.tolist(), 2, None), 'prompt is a list'),
    (lambda: generation.generate(LM, None, PROMPT, 0, None), 'num_tokens=0'),
    (lambda: generation.generate(LM, None, PROMPT, 2, None, temperature=-1.0), 'must be >= 0'),
    (
      lambda: generation.generate(LM, None, PROMPT, 2, None, temperature=float('nan')),
      'finite number',
    ),
    (lambda: generation.generate(LM, None, PROMPT, 2, None, top_k=0), r'top_k=0.*\[1, 10\]'),
    (lambda: generation.generate(LM, None, PROMPT, 6, None), 'positions for 8 tokens'),
    (lambda: generation.generate(SEQ2SEQ, None, PROMPT, 2, None), 'needs a LunaLM'),
    (
      lambda: generation.beam_search(
        SEQ2SEQ, None, SOURCE, LENGTHS, beam_size=0, max_length=4, eos_id=2
      ),
      'beam_size=0: must be an integer >= 1',
    ),
    (
      lambda: generation.beam_search(
        SEQ2SEQ, None, SOURCE, LENGTHS, beam_size=2, max_length=4, eos_id=2, length_penalty=-1
      ),
      'length_penalty=-1',
    ),
    (
      lambda: generation.beam_search(
        SEQ2SEQ, None, SOURCE, LENGTHS, beam_size=2, max_length=4, eos_id=2, min_length=-1
      ),
      'min_length=-1: must be an integer >= 0',
    ),
    (
      lambda: generation.beam_search(
        SEQ2SEQ,
        None,
        SOURCE,
        LENGTHS,
        beam_size=2,
        max_length=4,
        eos_id=2,
        max_output_lengths=np.array([3, 0]),
      ),
      r'max_output_lengths holds 0: each must be >= 1',
    ),
    (
      lambda: generation.greedy_decode(SEQ2SEQ, None, SOURCE + 20, LENGTHS, max_length=4, eos_id=2),
      'inputs holds token id 21',
    ),
    (
      lambda: generation.greedy_decode(SEQ2SEQ, None, SOURCE, LENGTHS * 0, max_length=4, eos_id=2),
      r'lengths holds 0: every source length must lie in \[1, 4\]',
    ),
    (
      lambda: generation.greedy_decode(SEQ2SEQ, None, SOURCE, LENGTHS[:1], max_length=4, eos_id=2),
      r'expected \[batch\] = \(2,\)',
    ),
    (
      lambda: generation.greedy_decode(SEQ2SEQ, None, SOURCE, LENGTHS, max_length=4, eos_id=0),
      r'eos_id=0: must be an integer in \[1, 9\]',
    ),
    (
      lambda: generation.greedy_decode(LM, None, SOURCE, LENGTHS, max_length=4, eos_id=2),
      'needs an encoder-decoder',
    ),
  ],
)
def test_generation_refuses_bad_arguments_by_name(call, message):
  with pytest.raises(ValueError, match=message):
    call()


@pytest.mark.parametrize(
  'field,value,message',
  [
    ('projection_length', 0, 'projection_length=0: must be >= 1'),
    ('precision', 'float16', "precision='float16': must be one of"),
    ('dropout_rate', 1.0, 'dropout_rate=1.0: must be < 1'),
  ],
)
def test_a_model_config_built_in_python_is_checked_field_by_field(field, value, message):
  luna_jax.ModelConfig(vocab_size=np.int64(5), max_length=4)  # Data sizes may be NumPy ints.
  with pytest.raises(config_utils.ConfigError, match=f'ModelConfig.{message}'):
    luna_jax.ModelConfig(vocab_size=5, max_length=4, **{field: value})


# --------------------------------------------------------------------------------------------------
# Data: the arrays the models take; partial evaluation on a sample.
# --------------------------------------------------------------------------------------------------


def _split(targets, inputs=None):
  n = len(targets)
  inputs = np.ones((n, 4), np.uint8) if inputs is None else inputs
  return lra.Split(inputs, np.full(n, 4, np.int32), np.asarray(targets, np.int32))


@pytest.mark.parametrize(
  'split,message',
  [
    (_split([0, 1], np.full((2, 4), 9, np.uint8)), r'inputs holds 9, outside \[0, 5\)'),
    (_split([0, 3]), r'targets holds 3, outside \[0, 2\)'),
    (lra.Split(np.ones((2, 4), np.uint8), np.array([4, 5]), np.zeros(2, np.int32)), 'lengths'),
    (_split([0, 1], np.ones((2, 3), np.uint8)), r'expected \(2, 4\)'),
    (_split([0, 1], np.ones((2, 4), np.float32)), 'dtype float32'),
  ],
)
def test_loaded_arrays_out_of_the_models_contract_are_refused(split, message):
  with pytest.raises(lra.DataError, match=f'x.tsv: toy train split: .*{message}'):
    lra.core.check_arrays(
      'toy', {'train': split}, {'train': 'x.tsv'}, vocab_size=5, num_classes=2, max_length=4
    )


class _MeanTarget:
  """An objective stand-in: the mean target of the evaluated examples, and their positions."""

  @staticmethod
  def summarize(sums):
    return {'mean': float(sums['sum'] / sums['count']), 'count': int(sums['count'])}


def _evaluate(split, max_batches):
  seen = []

  def p_eval_step(params, batch, key):
    weights = batch['weights'][0]
    seen.extend(batch['inputs'][0][weights > 0, 0].tolist())
    total = jnp.sum(weights * batch['targets'][0])
    return {'sum': total[None], 'count': jnp.sum(weights)[None]}

  from luna_jax.training import steps

  metrics = steps.evaluate(
    p_eval_step, None, split, 8, jax.local_devices()[:1], _MeanTarget, max_batches=max_batches
  )
  return metrics, seen


def test_partial_evaluation_samples_a_class_sorted_split_and_full_evaluation_is_unchanged():
  inputs = np.repeat(np.arange(100, dtype=np.int32)[:, None], 4, axis=1)
  split = _split([0] * 50 + [1] * 50, inputs)  # Stored sorted by class, as IMDb is.
  full, seen = _evaluate(split, -1)
  assert full == {'mean': 0.5, 'count': 100} and seen == list(range(100))
  sample, seen = _evaluate(split, 2)
  assert sample['count'] == 16 and 0.2 < sample['mean'] < 0.8  # The first 16 were all class 0.
  assert seen == sorted(seen) and _evaluate(split, 2)[1] == seen  # Fixed, in stored order.
  assert _evaluate(split, 13)[0] == full  # A cap above the split's size is the whole split.


# --------------------------------------------------------------------------------------------------
# Honest tables: the report and the sweep.
# --------------------------------------------------------------------------------------------------

LUNA16 = {'name': 'luna', 'projection_length': 16}


def _results(path, task='listops', accuracy=0.5, model=LUNA16, debug=False, **extra):
  path.mkdir(parents=True, exist_ok=True)
  config = {'seed': 0, 'debug': debug, 'data': {'task': task}, 'model': model}
  results = {'config': config, 'test': {'accuracy': accuracy}, 'step': 5, **extra}
  (path / 'results.json').write_text(json.dumps(results))


def test_report_counts_each_run_once_with_its_tasks_metric(tmp_path):
  spt = tmp_path / 'listops_spt'
  _results(spt, accuracy=0.30, pretraining={'step': 5})
  _results(spt / 'finetune', accuracy=0.30)
  _results(spt / 'pretrain', accuracy=0.90, model={**LUNA16, 'name': 'luna_mlm'})
  _results(tmp_path / 'mlm', accuracy=0.80, model={**LUNA16, 'name': 'luna_mlm'})
  _results(tmp_path / 'lm', task='lm', model={'name': 'luna_lm'})
  _results(tmp_path / 'pathx', task='pathx', model={**LUNA16, 'projection_length': 64})
  _results(tmp_path / 'smoke', accuracy=0.10, debug=True)
  _results(tmp_path / 'sample', task='text', accuracy=0.6, partial_evaluation=True)
  (tmp_path / 'running' / 'checkpoints').mkdir(parents=True)
  report.main(['--runs_dir', str(tmp_path), '--output_dir', str(tmp_path / 'out'),
               '--benchmark_json', ''])  # fmt: skip
  markdown = (tmp_path / 'out' / 'leaderboard.md').read_text()
  assert '3 runs from' in markdown
  assert '| Luna-16 | ours (1 run) | - | 60.00* | - | - | - | - | - |' in markdown
  # The self-pretrained run: its own row, never averaged with runs from scratch.
  assert '| Luna-16 + self-pretraining | ours (1 run) | 30.00 | - |' in markdown
  assert '| Luna-16 (debug) | ours, debug (1 run) | 10.00 | - |' in markdown
  assert 'Luna-64' not in markdown.split('Not in the table')[0]  # No empty row.
  for left_out in ('mlm', 'lm', 'pathx', 'running'):
    assert os.path.join(str(tmp_path), left_out) in markdown.split('Not in the table')[1]


def test_report_fails_on_missing_empty_or_unreadable_runs(tmp_path):
  run = lambda *argv: subprocess.run(
    [sys.executable, '-m', 'benchmarks.report', '--output_dir', str(tmp_path / 'out'), *argv],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  missing = run('--runs_dir', str(tmp_path / 'runz'))
  assert missing.returncode == 1 and 'runz: no such folder' in missing.stderr
  assert 'Traceback' not in missing.stderr
  (tmp_path / 'empty').mkdir()
  with pytest.raises(report.ReportError, match='no results.json of an LRA classifier run'):
    report.main(['--runs_dir', str(tmp_path / 'empty'), '--output_dir', str(tmp_path / 'o')])
  _results(tmp_path / 'runs' / 'good')
  (tmp_path / 'runs' / 'bad').mkdir()
  (tmp_path / 'runs' / 'bad' / 'results.json').write_text('{"config": ')
  with pytest.raises(report.ReportError, match=r'bad/results.json: unreadable results.json'):
    report.main(['--runs_dir', str(tmp_path / 'runs'), '--output_dir', str(tmp_path / 'o')])


def test_the_sweep_keeps_debug_runs_apart_and_counts_only_its_recipe(tmp_path):
  runs = reproduce.plan(['listops'], ['luna16'], 1, tmp_path / 'data', tmp_path / 'runs')
  debug = reproduce.plan(['listops'], ['luna16'], 1, tmp_path / 'data', tmp_path / 'runs', True)
  assert debug[0].workdir == (tmp_path / 'runs' / 'debug' / 'listops' / 'luna16' / 'seed0')
  assert runs[0].workdir == (tmp_path / 'runs' / 'listops' / 'luna16' / 'seed0')
  results = {'config': debug[0].recipe, 'step': 5, 'test': {'accuracy': 0.1}}
  runs[0].workdir.mkdir(parents=True)
  (runs[0].workdir / 'results.json').write_text(json.dumps(results))
  assert runs[0].state().startswith('holds another run: debug: True -> False')
  results['config'] = runs[0].recipe
  (runs[0].workdir / 'results.json').write_text(json.dumps(results))
  assert runs[0].state() == 'new'  # 5 of the recipe's 5000 steps: not finished.
  results['step'] = 5000
  (runs[0].workdir / 'results.json').write_text(json.dumps(results))
  assert runs[0].state() == 'finished'
  # The same data folder, spelt relative to the working directory: the same recipe.
  data = runs[0].recipe['data']
  results['config'] = {
    **runs[0].recipe,
    'data': {**data, 'data_dir': os.path.relpath(data['data_dir'])},
  }
  assert results['config'] != runs[0].recipe
  (runs[0].workdir / 'results.json').write_text(json.dumps(results))
  assert runs[0].state() == 'finished'
  flags = ['--config.self_pretraining.num_train_steps=-1']  # Results of its finetune stage.
  spt = reproduce.plan(['listops'], ['luna16'], 1, tmp_path, tmp_path / 'spt', False, flags)[0]
  spt.workdir.mkdir(parents=True)
  finetune = {**spt.recipe, 'self_pretraining': {'num_train_steps': 0}}
  finetune['init_from'] = str(spt.workdir / 'pretrain')
  results = {'config': finetune, 'step': 5000, 'test': {'accuracy': 0.1}, 'pretraining': {}}
  (spt.workdir / 'results.json').write_text(json.dumps(results))
  assert spt.state() == 'finished'


# --------------------------------------------------------------------------------------------------
# Command lines: values checked where they enter.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  'main,argv,message',
  [
    (
      speed_memory.parse_args,
      ['--batch_size', '0'],
      "--batch_size: must be an integer >= 1, got '0'",
    ),
    (speed_memory.parse_args, ['--repeats', '0'], '--repeats: must be an integer >= 1'),
    (speed_memory.parse_args, ['--lengths', '1K,0'], '--lengths: must be comma-separated lengths'),
    (speed_memory.parse_args, ['--dropout_rate', 'nan'], '--dropout_rate: must be a finite'),
    (speed_memory.parse_args, ['--models', 'luna16,lunar'], "--models: unknown model 'lunar'"),
    (speed_memory.parse_args, ['--mode', 'train'], '--mode: must be a subset of'),
    (causal_speed.main, ['--lengths', '-5'], '--lengths: must be comma-separated lengths >= 1'),
    (causal_speed.main, ['--repeats', '0'], '--repeats: must be an integer >= 1'),
    (reproduce.main, ['--seeds', '0', '--dry_run'], '--seeds: must be an integer >= 1'),
    (listops_generator.main, ['--output_dir', '', '--num_train', '5'], 'never the working'),
    (listops_generator.main, ['--output_dir', 'x', '--num_train', '0'], '--num_train: must be'),
    (pathfinder_generator.main, ['--output_dir', 'x', '--num_examples', '3'], 'integer >= 10'),
    (synthetic.main, ['--task', 'image', '--output_dir', 'x', '--num_examples', '1'], '>= 10'),
    (sequence_generator.main, ['--task', 'sort', '--output_dir', 'x', '--seed', '-1'], '>= 0'),
    (text_tokenizers.main, ['--input_dir', '', '--model_prefix', 'x'], '--input_dir is empty'),
    (
      text_tokenizers.main,
      ['--input_dir', 'x', '--model_prefix', 'x', '--vocab_size', '3'],
      '>= 5',
    ),
    (lra.prepare.main, ['--data_dir', ''], 'argument --data_dir: must name a folder'),
    (translation_generator.main, ['--output_dir', 'x', '--num_train', '-1'], '--num_train: must'),
    (translation.main, ['vocabulary', '--data_dir', 'x', '--vocab_size', '4'], 'integer >= 5'),
    (translation.main, ['vocabulary', '--data_dir', 'x', '--max_sentences', '50'], '0 (all) or'),
    (wmt14_cost.main, ['--steps', '0'], '--steps: must be an integer >= 1'),
    (precision_curves.parse_args, ['--config', 'x', '--output_dir', 'x', '--seeds', '0,a'], '>= 0'),
    (precision_gradients.parse_args, ['--data_dir', 'x', '--batch_size', '0'], '>= 1'),
    (gpu_session.parse_args, ['--deadline_s', '-5'], '--deadline_s: must be a finite number > 0'),
  ],
)
def test_command_lines_refuse_bad_values_in_one_line(main, argv, message, capsys):
  with pytest.raises(SystemExit):
    main(argv)
  error = capsys.readouterr().err
  assert message in error and 'Traceback' not in error


def test_cli_number_types():
  assert cli.number(minimum=0, below=1)('0.5') == 0.5
  with pytest.raises(argparse.ArgumentTypeError, match='finite number > 0'):
    cli.number(above=0)('inf')
  assert cli.lengths('1K, 2048') == [1024, 2048]


# --------------------------------------------------------------------------------------------------
# The package as a new user installs it.
# --------------------------------------------------------------------------------------------------


def test_every_library_package_is_installed_with_its_dependencies():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)
  packages = {
    os.path.relpath(root, ROOT).replace(os.sep, '.')
    for top in ('luna_jax', 'lra', 'corpora')
    for root, _, files in os.walk(os.path.join(ROOT, top))
    if '__init__.py' in files
  }
  assert set(project['tool']['setuptools']['packages']) == packages
  with open(os.path.join(ROOT, 'requirements.txt'), encoding='utf-8') as f:
    required = [line.strip() for line in f if line.strip() and not line.startswith('#')]
  declared = project['project']['dependencies'] + project['project']['optional-dependencies']['dev']
  assert sorted(declared) == sorted(required)


def test_generated_folders_are_ignored_by_git():
  with open(os.path.join(ROOT, '.gitignore'), encoding='utf-8') as f:
    ignored = f.read().split()
  assert {'/data/', '/runs/', '/corpus/', '/glue/', '/reports/', 'lra_cache/'} <= set(ignored)


@pytest.mark.parametrize('task', lra.registry.PREPARED_DIRS)
def test_missing_data_names_the_lra_prepare_command(task, tmp_path):
  """The missing-files error of every task of the LRA release ends with the `lra.prepare` command
  and its folder."""
  with pytest.raises(lra.DataError) as raised:
    lra.load_task(task, tmp_path)
  assert f'python -m lra.prepare --tasks {task} --data_dir data writes' in str(raised.value)
  assert str(lra.prepare.task_data_dir(task, 'data')) in str(raised.value)
  if task in ('pathfinder32', 'pathx'):  # The difficulty asked for, which the command extracts.
    with pytest.raises(lra.DataError, match=f'--tasks {task} --data_dir data --difficulty easy'):
      lra.load_task(task, tmp_path, difficulty='easy')
    for data_dir in ('', tmp_path):  # Unset, or without the files.
      with pytest.raises(lra.DataError) as raised:
        lra.load_task(task, data_dir, difficulty='easy')
      assert '--difficulty hard' not in str(raised.value)


def test_a_task_added_without_official_data_loads_and_names_its_loader(
  monkeypatch, tiny_lra_data, tmp_path
):
  """A task registered beside the six (here ListOps' loader under another name) that the LRA
  release does not have loads, and its missing-data messages send to its loader, not to an
  `lra.prepare` command that would refuse it."""
  monkeypatch.setitem(lra.registry._REGISTRY, 'parity', lra.registry._REGISTRY['listops'])
  data_dir, options = tiny_lra_data['listops']
  data = lra.load_task('parity', data_dir, **options, cache=False)
  assert data.train.num_examples > 0
  assert lra.data_source('parity') == 'lra.listops describes its files.'
  for folder in ('', tmp_path):
    with pytest.raises(lra.DataError) as raised:
      lra.load_task('parity', folder)
    assert 'lra.prepare' not in str(raised.value)
  # Its ids are a vocabulary of their own: masked-LM pretraining on it finetunes only on it.
  renamed = dataclasses.replace(data, name='parity', info={})
  assert lra.vocabulary(renamed) == 'parity' and lra.special_ids(renamed) == (0,)


@pytest.mark.parametrize(
  'load, task',
  [(lra.load_task, task) for task in lra.registry.PREPARED_DIRS if task != 'pathx']
  + [(corpora.load_task, task) for task in ('seq2seq', 'lm', 'translation')],
)
def test_the_commands_in_missing_data_errors_survive_the_shell(load, task, tmp_path):
  """The folder in each command a missing-data error prints reaches the command whole."""
  data_dir = tmp_path / 'it\'s "my" $HOME data'
  with pytest.raises(lra.DataError) as raised:
    load(task, data_dir)
  commands = re.findall(r'python -m (?:lra|corpora)\.\w+ [^\n]*', str(raised.value))
  folders = []
  for command in commands:
    words = shlex.split(command.split('; ')[0])
    folders += [words[i + 1] for i, word in enumerate(words) if word == '--output_dir']
  assert folders and all(folder == str(data_dir) for folder in folders), commands


@pytest.mark.parametrize(
  'load, task',
  [(lra.load_task, task) for task in lra.TASKS]
  + [(corpora.load_task, task) for task in ('lm', 'translation')],
)
def test_a_data_dir_naming_a_file_is_said_to_be_one(load, task, tmp_path):
  """A data_dir naming one of the data's files gets no command that would write into it."""
  data_file = tmp_path / 'basic_train.tsv'
  data_file.write_text('Source\tTarget\n')
  with pytest.raises(lra.DataError) as raised:
    load(task, data_file)
  message = str(raised.value)
  assert message.startswith(f'{data_file} is a file, not a folder: give data_dir the folder')
  assert '--output_dir' not in message


def test_the_task_configs_name_the_folder_lra_prepare_writes():
  """The missing-data_dir message of every task of the LRA release names the folder
  `lra.prepare` fills."""
  for task in lra.registry.PREPARED_DIRS:
    assert str(lra.prepare.task_data_dir(task, 'data')) in lra.data_source(task)
  config = listops_config.get_config('luna16')
  with pytest.raises(config_utils.ConfigError, match='data/lra_release/lra_release/listops-1000'):
    run_config.require_data_dir(run_config.parse_config(config).data)
  config = pathfinder_config.get_config('luna16')
  config.data.options.difficulty = 'easy'
  with pytest.raises(config_utils.ConfigError) as raised:
    run_config.require_data_dir(run_config.parse_config(config).data)
  assert str(raised.value).count('--difficulty easy') == 2  # lra.prepare's and the generator's.
