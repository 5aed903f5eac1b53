"""Masked-LM pretraining, finetuning (`init_from`) and self-pretraining through the trainer."""

import functools
import json
import os
import shutil

import jax
import numpy as np
import pytest

import lra
import luna_jax
from configs import glue as glue_config
from configs import pretrain_mlm
from luna_jax.config_utils import ConfigError
from luna_jax.training import checkpointing, pretrained, run_config, self_pretraining, trainer
from luna_jax.training.loading import LoadRunError, load_run
from tests.test_mlm import GLUE_FILES
from tests.test_train import checkpoint_params, read_jsonl, tiny_config

pytestmark = pytest.mark.usefixtures('fast_compilation')


class _Interrupted(Exception):
  """Stands in for a killed process."""


def spt_config(tiny_lra_data):
  """Tiny ListOps with 4 self-pretraining and 4 finetuning steps, checkpoints every 2."""
  config = tiny_config(
    tiny_lra_data, num_train_steps=4, checkpoint_every=2, eval_every=2, log_every=1
  )
  config.self_pretraining.num_train_steps = 4
  return config


@pytest.fixture(scope='module')
def straight_run(tiny_lra_data, tmp_path_factory):
  """An uninterrupted self-pretraining run: (workdir, results)."""
  workdir = tmp_path_factory.mktemp('spt') / 'straight'
  return workdir, trainer.train_and_evaluate(spt_config(tiny_lra_data), str(workdir))


def test_self_pretraining_runs_both_stages(straight_run):
  workdir, results = straight_run
  pretrain = read_jsonl(workdir / 'pretrain' / 'metrics.jsonl')
  assert [m['step'] for m in pretrain if 'validation_perplexity' in m] == [2, 4]
  assert all(m['validation_perplexity'] > 1 for m in pretrain if 'validation_perplexity' in m)
  with open(workdir / 'finetune' / 'config.json', encoding='utf-8') as f:
    finetune_config = json.load(f)
  assert finetune_config['init_from'] == str(workdir / 'pretrain')
  assert finetune_config['model']['name'] == 'luna'
  assert results['step'] == 4 and results['pretraining']['step'] == 4
  assert 0 <= results['test']['accuracy'] <= 1


def test_self_pretraining_resumes_within_and_across_stages(
  tiny_lra_data, tmp_path, monkeypatch, straight_run
):
  start_steps = []
  real_train_batches = lra.batching.train_batches

  def train_batches(*args, start_step=0, **kwargs):
    start_steps.append(start_step)
    for step, batch in enumerate(
      real_train_batches(*args, start_step=start_step, **kwargs), start=start_step
    ):
      # Session 1 dies in the pretraining stage, session 2 in the finetuning stage (their 4th
      # batch, after the checkpoint at step 2).
      if len(start_steps) in (1, 3) and step == 3:
        raise _Interrupted
      yield batch

  monkeypatch.setattr(lra.batching, 'train_batches', train_batches)
  config = spt_config(tiny_lra_data)
  # Started from one working directory with a relative data folder (re-run from another below).
  started, elsewhere = tmp_path / 'started', tmp_path / 'else' / 'where'
  started.mkdir()
  elsewhere.mkdir(parents=True)
  monkeypatch.chdir(started)
  data_dir = config.data.data_dir
  config.data.data_dir = os.path.relpath(data_dir)
  workdir = tmp_path / 'spt'
  # Batches read as their steps take them (prefetching reads ahead, and would die before the
  # checkpoint at step 2), so the kills come where the comment above says; the straight run
  # prefetches, so that resuming is also checked across prefetching settings.
  config.training.prefetch_batches = 0
  for _ in range(2):
    with pytest.raises(_Interrupted):
      trainer.train_and_evaluate(config, str(workdir))
  results = trainer.train_and_evaluate(config, str(workdir))
  # Pretraining resumed at 2 (same masks as uninterrupted), then skipped once finished.
  assert start_steps == [0, 2, 0, 2]
  straight = straight_run[0]
  for stage in ('pretrain', 'finetune'):
    jax.tree.map(
      np.testing.assert_array_equal,
      checkpoint_params(workdir / stage, 4),
      checkpoint_params(straight / stage, 4),
    )
  assert results['test'] == straight_run[1]['test']
  # From another directory: the data folder spelt from there is the same run, and both finished
  # stages are reused; the old spelling, naming a copy from there, is another folder.
  monkeypatch.chdir(elsewhere)
  monkeypatch.setattr(trainer, 'train_and_evaluate', None)  # Neither stage may run again.
  shutil.copytree(data_dir, os.path.realpath(config.data.data_dir))
  with pytest.raises(run_config.ConfigChangedError, match='data.data_dir: '):
    trainer.train_with_self_pretraining(config, str(workdir))
  config.data.data_dir = os.path.relpath(data_dir)
  assert trainer.train_with_self_pretraining(config, str(workdir))['test'] == results['test']


def test_a_finished_self_pretraining_run_is_reused_only_with_its_settings(
  tiny_lra_data, straight_run, tmp_path, monkeypatch, capsys
):
  workdir = tmp_path / 'spt'
  shutil.copytree(straight_run[0], workdir)
  monkeypatch.setattr(trainer, 'train_and_evaluate', None)  # Neither stage may run again.
  config = spt_config(tiny_lra_data)
  assert (
    trainer.train_with_self_pretraining(config, str(workdir))['test'] == (straight_run[1]['test'])
  )
  # The last line names the run's results.json, not the finetune stage's.
  last = capsys.readouterr().out.strip().splitlines()[-1]
  assert last.startswith('Finished step 4 after 4 self-pretraining steps: validation accuracy')
  assert last.endswith(f'Results in {workdir / "results.json"}')
  config.optimizer.learning_rate *= 2
  with pytest.raises(run_config.ConfigChangedError, match='optimizer.learning_rate'):
    trainer.train_with_self_pretraining(config, str(workdir))


def test_a_finished_self_pretraining_run_is_never_shortened_nor_pretrained_further(
  tiny_lra_data, straight_run, tmp_path
):
  workdir = tmp_path / 'spt'
  shutil.copytree(straight_run[0], workdir)
  config = spt_config(tiny_lra_data)
  config.self_pretraining.num_train_steps = 2  # Its pretrain stage reached step 4.
  with pytest.raises(
    ConfigError, match='pretrain holds a run trained to step 4, past the 2 steps asked for'
  ):
    trainer.train_with_self_pretraining(config, str(workdir))
  # Nor pretrained further under a classifier finetuned from the shorter pretraining.
  config.self_pretraining.num_train_steps = 6
  with pytest.raises(ConfigError, match='its finetune stage started from the 4-step pretraining'):
    trainer.train_with_self_pretraining(config, str(workdir))
  assert not (workdir / 'pretrain' / 'checkpoints' / '6').exists()
  # `,spt`'s -1 follows training.num_train_steps: extending training names the steps to pin.
  config.self_pretraining.num_train_steps, config.training.num_train_steps = -1, 6
  said = r'=-1 \(-1: as many as training.num_train_steps\) would pretrain to step 6.*steps=4'
  with pytest.raises(ConfigError, match=said):
    trainer.train_with_self_pretraining(config, str(workdir))


def test_a_finetuning_run_resumes_from_its_own_checkpoints_without_its_source(
  tiny_lra_data, straight_run, tmp_path, monkeypatch
):
  """The source moved away: the same command resumes (re-evaluates) the run, and so do the
  command without init_from and one that spells the source's path otherwise; none reads the
  source, and the record keeps where it came from. Another source is refused."""
  straight = straight_run[0]
  workdir = tmp_path / 'finetune'
  shutil.copytree(straight / 'finetune', workdir)

  def moved_away(path):
    raise pretrained.InitFromError(f'{path}: moved away')

  monkeypatch.setattr(pretrained, 'load_encoder', moved_away)
  _, finetune = self_pretraining.stage_configs(spt_config(tiny_lra_data), str(straight))[1]
  source = finetune.init_from
  for init_from in (source, '', os.path.relpath(source) + os.sep):
    finetune.init_from = init_from
    results = trainer.train_and_evaluate(finetune, str(workdir))
    assert results['test'] == straight_run[1]['test']
    assert results['config']['init_from'] == str(straight / 'pretrain')
  # Another source, even one laid out as a self-pretraining run's stages are (a 'pretrain'
  # beside this 'finetune', in a folder that holds no such run).
  for other in ('other', 'pretrain'):
    finetune.init_from = str(tmp_path / other)
    with pytest.raises(run_config.ConfigChangedError, match='init_from'):
      trainer.train_and_evaluate(finetune, str(workdir))
  # Every checkpoint damaged (no commit marker): without init_from it would start from a random
  # encoder, so it is refused, naming the way out, and again the same way once they are set aside.
  for marker in (workdir / 'checkpoints').glob('*/commit_success.txt'):
    marker.unlink()
  finetune.init_from = ''
  for _ in range(2):
    with pytest.raises(ConfigError, match='none of whose checkpoints could be restored'):
      trainer.train_and_evaluate(finetune, str(workdir))


def test_load_run_gives_a_trained_model_and_its_parameters(tiny_lra_data, straight_run):
  straight = straight_run[0]
  run = load_run(str(straight / 'finetune'))
  assert run.step == 4 and run.vocabulary == 'listops'
  jax.tree.map(
    np.testing.assert_array_equal, run.params, checkpoint_params(straight / 'finetune', 4)
  )
  data = lra.load_task('listops', tiny_lra_data['listops'][0], **tiny_lra_data['listops'][1])
  apply = jax.jit(functools.partial(run.model.apply, {'params': run.params}))
  logits = apply(data.test.inputs[:3], data.test.lengths[:3])
  assert logits.shape == (3, data.num_classes) and np.isfinite(logits).all()
  best = load_run(str(straight / 'finetune'), checkpoint='best')
  assert best.checkpoint.startswith(str(straight / 'finetune' / 'best'))
  assert load_run(str(straight / 'pretrain')).model.objective is not run.model.objective
  with pytest.raises(LoadRunError, match='is a self-pretraining run: load one of its stages'):
    load_run(str(straight))
  with pytest.raises(LoadRunError, match="checkpoint='last': must be one of"):
    load_run(str(straight / 'finetune'), checkpoint='last')


def test_load_run_of_an_attention_no_longer_registered_says_so(monkeypatch, straight_run):
  """A run whose attention is gone from the registry (one registered from one's own code, in a
  new process) is named with the checkpoint it was read from, and how to load it."""
  monkeypatch.delitem(luna_jax.LUNA_ATTENTIONS, 'luna')
  with pytest.raises(LoadRunError) as raised:
    load_run(str(straight_run[0] / 'finetune'))
  message = str(raised.value)
  assert message.startswith(str(straight_run[0] / 'finetune' / 'checkpoints' / '4'))
  assert "luna_attention_implementation='luna': must be one of" in message
  assert 'registered again before load_run' in message


def test_init_from_loads_the_pretrained_encoder_bitwise_and_a_new_head(tiny_lra_data, straight_run):
  pretrain_dir = straight_run[0] / 'pretrain'
  config = tiny_config(tiny_lra_data)
  run = run_config.parse_config(config)
  data = trainer.load_data(run)
  model, optimizer, state = trainer.build(run, data)
  loaded = trainer.initialize_from(state, str(pretrain_dir), model, data, optimizer)
  stored = checkpoint_params(pretrain_dir, 4)['sequence_encoder']
  flat_loaded = checkpointing.flat_leaves(jax.device_get(loaded.params['sequence_encoder']))
  flat_stored = checkpointing.flat_leaves(stored)
  assert set(flat_loaded) == set(flat_stored)
  for path, array in flat_loaded.items():
    # The masked LM's token table has one more row, the mask id's.
    expected = flat_stored[path][: array.shape[0]]
    assert array.dtype == expected.dtype
    np.testing.assert_array_equal(array, expected, err_msg=path)
  assert flat_stored['embed/token_embedding/embedding'].shape[0] == data.vocab_size + 1
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.device_get(loaded.params['head']),
    jax.device_get(state.params['head']),
  )


def test_init_from_a_checkpoint_folder_and_bad_paths(tiny_lra_data, straight_run, tmp_path):
  checkpoint = straight_run[0] / 'pretrain' / 'checkpoints' / '2'
  encoder = pretrained.load_encoder(str(checkpoint))
  stored = checkpoint_params(straight_run[0] / 'pretrain', 2)['sequence_encoder']
  np.testing.assert_array_equal(
    encoder.params['projected_embeddings'], stored['projected_embeddings']
  )
  config = tiny_config(tiny_lra_data)
  config.init_from = str(tmp_path / 'missing')
  with pytest.raises(pretrained.InitFromError, match='missing: neither a run.s workdir'):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  # A self-pretraining run's top folder: its stages are named, as load_run names them.
  with pytest.raises(pretrained.InitFromError, match='start from one of its stages, .*pretrain'):
    pretrained.load_encoder(str(straight_run[0]))


def test_vocabulary_mismatch_with_the_checkpoint_fails(tiny_lra_data, straight_run, tmp_path):
  config = tiny_config(tiny_lra_data, task='text')
  config.init_from = str(straight_run[0] / 'pretrain')
  with pytest.raises(
    pretrained.InitFromError, match="pretrained on vocabulary 'listops', this task uses 'bytes'"
  ):
    trainer.train_and_evaluate(config, str(tmp_path))


def small_text_config(config, data_dir, **options):
  """A debug config on `data_dir`, 2 steps of batch 4 on one device."""
  config.data.data_dir = str(data_dir)
  config.data.options.update(options)
  config = run_config.resolve_config(config)  # Applies debug; the fields below refine it.
  config.debug = False
  config.training.update(
    num_devices=1,
    num_train_steps=2,
    eval_every=2,
    checkpoint_every=2,
    batch_size=4,
    eval_batch_size=4,
  )
  return config


def test_documented_pretraining_and_glue_finetuning_commands_work(tmp_path, capsys):
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  (corpus / 'a.txt').write_text('\n'.join(f'document {i} is here.' for i in range(40)) + '\n')
  config = small_text_config(pretrain_mlm.get_config('cpu,debug'), corpus, max_length=16)
  pretrain = trainer.train_and_evaluate(config, str(tmp_path / 'pretrain'))
  assert pretrain['config']['model']['name'] == 'luna_mlm'
  assert 'perplexity' in pretrain['validation']
  perplexity = f'validation perplexity {pretrain["validation"]["perplexity"]:.2f}. Results in '
  assert perplexity in capsys.readouterr().out.strip().splitlines()[-1]
  glue = tmp_path / 'sst2'
  glue.mkdir()
  header, rows = GLUE_FILES['sst2']
  for name in ('train.tsv', 'dev.tsv'):
    (glue / name).write_text(header + '\n'.join(rows * 4) + '\n')
  config = small_text_config(glue_config.get_config('sst2,cpu,debug'), glue, max_length=16)
  config.init_from = str(tmp_path / 'pretrain')
  results = trainer.train_and_evaluate(config, str(tmp_path / 'finetune'))
  assert results['step'] == 2 and results['config']['init_from'] == str(tmp_path / 'pretrain')
  assert os.path.exists(tmp_path / 'finetune' / 'results.json')


@pytest.mark.parametrize('damaged', [False, True], ids=['intact', 'damaged'])
def test_a_self_pretraining_workdir_moved_mid_finetuning_resumes_there(
  tiny_lra_data, tmp_path, monkeypatch, straight_run, damaged
):
  real_train_batches = lra.batching.train_batches
  sessions = []

  def train_batches(*args, start_step=0, **kwargs):
    sessions.append(start_step)
    for step, batch in enumerate(
      real_train_batches(*args, start_step=start_step, **kwargs), start=start_step
    ):
      # The finetune stage (the second stage started) dies after its checkpoint at step 2.
      if len(sessions) == 2 and step == 3:
        raise _Interrupted
      yield batch

  monkeypatch.setattr(lra.batching, 'train_batches', train_batches)
  config = spt_config(tiny_lra_data)
  config.training.prefetch_batches = 0
  with pytest.raises(_Interrupted):
    trainer.train_and_evaluate(config, str(tmp_path / 'before'))
  # Moved (as from a Colab drive to a laptop): the old folder, the finetune stage's recorded
  # init_from, is gone.
  shutil.move(tmp_path / 'before', tmp_path / 'after')
  if damaged:  # Its only checkpoint: the stage starts again, from the pretrain stage's encoder.
    (tmp_path / 'after' / 'finetune' / 'checkpoints' / '2' / 'commit_success.txt').unlink()
  results = trainer.train_and_evaluate(config, str(tmp_path / 'after'))
  assert sessions == [0, 0, 0 if damaged else 2]
  jax.tree.map(
    np.testing.assert_array_equal,
    checkpoint_params(tmp_path / 'after' / 'finetune', 4),
    checkpoint_params(straight_run[0] / 'finetune', 4),
  )
  assert results['test'] == straight_run[1]['test']


def _tiny_encoder_params(rows=4, kernel_rows=2, dtype=np.float32):
  """A model's parameters with a token table, one layer kernel and a head, all zeros."""
  return {
    'sequence_encoder': {
      'embed': {'token_embedding': {'embedding': np.zeros((rows, 2), dtype)}},
      'layer_0': {'kernel': np.zeros((kernel_rows, 2), dtype)},
    },
    'head': {'kernel': np.ones((2, 3), np.float32)},
  }


def test_graft_takes_leading_rows_of_the_tables_alone_and_refuses_other_dtypes():
  """Only the token and position tables may have more rows; a larger kernel or dtype is refused."""
  fresh = _tiny_encoder_params()
  encoder = lambda params: pretrained.PretrainedEncoder(
    params['sequence_encoder'], 'listops', 'luna', 'ckpt'
  )
  larger_table = _tiny_encoder_params(rows=5)
  larger_table['sequence_encoder']['embed']['token_embedding']['embedding'][:] = np.arange(5)[
    :, None
  ]
  grafted = pretrained.graft(
    fresh, encoder(larger_table), vocabulary='listops', encoder_name='luna'
  )
  table = grafted['sequence_encoder']['embed']['token_embedding']['embedding']
  np.testing.assert_array_equal(table, np.arange(4)[:, None] * np.ones((1, 2)))
  assert grafted['head'] is fresh['head']
  for source, message in (
    (_tiny_encoder_params(kernel_rows=3), r'layer_0/kernel is \(3, 2\) pretrained, \(2, 2\)'),
    (_tiny_encoder_params(dtype=np.float16), 'is float16 pretrained, float32 in this model'),
  ):
    with pytest.raises(pretrained.InitFromError, match=message):
      pretrained.graft(fresh, encoder(source), vocabulary='listops', encoder_name='luna')


def test_load_run_of_the_best_gives_the_best_steps_parameters_and_step(straight_run, tmp_path):
  """load_run(checkpoint='best'): the step and parameters of the best folder, not the latest's."""
  workdir = tmp_path / 'finetune'
  shutil.copytree(straight_run[0] / 'finetune', workdir)
  shutil.rmtree(workdir / checkpointing.BEST_DIR)
  shifted = jax.tree.map(lambda x: x + 1, checkpoint_params(workdir, 4))
  checkpointer = checkpointing.Checkpointer(str(workdir), keep=2)
  checkpointer.save_if_best(3, shifted, 1.0)
  checkpointer.close()
  best = load_run(str(workdir), checkpoint='best')
  assert best.step == 3 and load_run(str(workdir)).step == 4
  jax.tree.map(np.testing.assert_array_equal, best.params, shifted)
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(best.params))
  # One checkpoint folder is read as it is; its 'best' is refused (it read that folder again).
  one = load_run(str(workdir / 'checkpoints' / '4'))
  assert one.step == 4 and one.checkpoint == str(workdir / 'checkpoints' / '4')
  with pytest.raises(LoadRunError, match=f"'best' .* give load_run its workdir, {workdir}"):
    load_run(str(workdir / 'checkpoints' / '4'), checkpoint='best')
  numbered = shutil.copytree(workdir, tmp_path / 'checkpoints' / '2024')  # A workdir of digits.
  assert load_run(str(numbered), checkpoint='best').step == 3


def test_an_encoder_is_read_only_from_a_checkpoint_that_records_its_vocabulary(tmp_path):
  """load_encoder: the MLM suffix is dropped from the encoder's name; a checkpoint without its
  vocabulary in the record is refused by name."""
  encoder = _tiny_encoder_params()['sequence_encoder']
  state = {'params': {'sequence_encoder': encoder}, 'step': np.int32(2)}
  for name, record in (('with', {'vocabulary': 'listops'}), ('without', {})):
    checkpointer = checkpointing.Checkpointer(str(tmp_path / name), keep=1)
    checkpointer.save(2, state, {**record, 'config': {'model': {'name': 'transformer_mlm'}}})
    checkpointer.close()
  loaded = pretrained.load_encoder(str(tmp_path / 'with'))
  assert (loaded.vocabulary, loaded.encoder_name) == ('listops', 'transformer')
  jax.tree.map(np.testing.assert_array_equal, loaded.params, encoder)
  with pytest.raises(pretrained.InitFromError, match='does not record its vocabulary'):
    pretrained.load_encoder(str(tmp_path / 'without'))


def test_self_pretraining_results_are_the_finetune_stages_with_the_pretrain_stages_figures(
  tiny_lra_data, tmp_path, monkeypatch
):
  """results.json of a self-pretraining run: the finetune stage's results, and under 'pretraining'
  the pretrain stage's step, validation, speed and folder (stages of other lengths, run here by a
  stand-in for train_and_evaluate)."""
  figures = {
    'pretrain': {'step': 3, 'validation': {'accuracy': 0.1}, 'steps_per_sec': 7.0},
    'finetune': {'step': 5, 'validation': {'accuracy': 0.6}, 'steps_per_sec': 9.0},
  }

  def stage(config, workdir):
    del config
    name = os.path.basename(workdir)
    return {**figures[name], 'test': {'accuracy': figures[name]['validation']['accuracy']}}

  monkeypatch.setattr(trainer, 'train_and_evaluate', stage)
  workdir = tmp_path / 'spt'
  results = trainer.train_with_self_pretraining(spt_config(tiny_lra_data), str(workdir))
  assert results == {
    **stage(None, 'finetune'),
    'pretraining': {**figures['pretrain'], 'directory': str(workdir / 'pretrain')},
  }
  assert json.loads((workdir / 'results.json').read_text()) == results


@pytest.mark.parametrize('content', ['{"step": 150, "valid', '[1]', '{"step": "150"}'])
def test_a_stage_results_file_another_program_wrote_is_named(tmp_path, content):
  """A truncated pretrain/results.json had ended the run in json's traceback."""
  (tmp_path / 'results.json').write_text(content)
  with pytest.raises(ConfigError, match=f'{tmp_path / "results.json"} is not the results of a'):
    self_pretraining.stage_results(str(tmp_path))
  (tmp_path / 'results.json').write_text('{"step": 150}')
  assert self_pretraining.stage_results(str(tmp_path)) == {'step': 150}
