"""The official recipes' quirks, each the default of the config that reproduces its paper row and
each with our earlier behaviour as a named option: first-byte pooling and the two-hidden-layer head
of LRA's Retrieval Transformer, LRA's `inputs > 0` padding mask on the pixel tasks, the authors'
BERT initialisation, Adam eps 1e-8 and tied layers for Luna."""

import importlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lra
import luna_jax
from configs import base, variants
from luna_jax import config_utils
from luna_jax.model import attention as attn
from luna_jax.model import config as model_config
from luna_jax.model.classifiers import pool
from luna_jax.model.encoders import EncoderOutput
from luna_jax.training import optim

SMALL = {'num_layers': 1, 'emb_dim': 32, 'mlp_dim': 64, 'num_heads': 4, 'qkv_dim': 32}


def load(name, arg=None):
  return importlib.import_module(f'configs.{name}').get_config(arg)


def flat(params):
  return {
    '/'.join(str(getattr(k, 'key', k)) for k in path): leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
  }


def test_first_token_pooling_reads_position_zero_and_prepends_no_cls():
  model = luna_jax.build_model(
    {'name': 'transformer', 'pooling': 'first', 'dropout_rate': 0.0, **SMALL},
    vocab_size=20,
    num_classes=2,
    max_length=12,
    dual=True,
  )
  tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 12), 1, 20)
  lengths = jnp.array([12, 7, 3])
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, lengths, tokens, lengths)
  assert 'cls' not in variables['params']['sequence_encoder']['embed']
  pooled, states = model.apply(
    variables,
    tokens,
    lengths,
    method=lambda m, t, n: (m.encode(t, n), m.sequence_encoder(t, n).x),
  )
  assert states.shape[1] == 12  # One state per byte, none for a CLS vector.
  np.testing.assert_array_equal(pooled, states[:, 0])
  x = jnp.arange(24.0).reshape(2, 3, 4)
  np.testing.assert_array_equal(pool(EncoderOutput(x, jnp.ones((2, 3), bool)), 'first'), x[:, 0])


@pytest.mark.parametrize('variant', ['transformer', 'performer', 'luna16'])
def test_retrieval_heads_official_transformer_two_hidden_layers_luna_one(variant):
  config = load('retrieval', variant)
  model = luna_jax.build_model(
    config.model.to_dict(),
    vocab_size=257,
    num_classes=2,
    max_length=config.data.options.max_length,
    dual=True,
  )
  tokens, lengths = jnp.ones((2, 4000), jnp.int32), jnp.full((2,), 4000)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens, lengths, tokens, lengths)
  params = flat(shapes['params'])
  head = {k: v.shape for k, v in params.items() if k.startswith('head/')}
  if variant == 'luna16':
    # The paper-era Luna head: [u, v] 256 -> 512 -> 2 after a CLS token, no bias on the logits
    # (fairseq-apollo fairseq/models/luna_lra/model.py, sentence_projection_layer).
    assert head == {
      'head/hidden/kernel': (256, 512),
      'head/hidden/bias': (512,),
      'head/logits/kernel': (512, 2),
    }
    assert 'sequence_encoder/embed/cls' in params
    return
  # LRA classifier_head_dual: [u, v] 256 -> 512 -> 256 -> 2, on the first byte (no CLS).
  assert head == {
    'head/hidden/kernel': (256, 512),
    'head/hidden/bias': (512,),
    'head/hidden_2/kernel': (512, 256),
    'head/hidden_2/bias': (256,),
    'head/logits/kernel': (256, 2),
    'head/logits/bias': (2,),
  }
  assert not any(k.endswith('/cls') for k in params)
  ours = luna_jax.build_model(
    {**config.model.to_dict(), 'pooling': 'cls', 'classifier_hidden_layers': 1},
    vocab_size=257,
    num_classes=2,
    max_length=4000,
    dual=True,
  )
  shapes = jax.eval_shape(ours.init, jax.random.PRNGKey(0), tokens, lengths, tokens, lengths)
  ours_params = flat(shapes['params'])
  assert 'sequence_encoder/embed/cls' in ours_params and 'head/hidden_2/kernel' not in ours_params


BLACK_AND_WHITE = jnp.array([[0, 5, 0, 0, 9, 200, 0, 17], [3, 0, 4, 0, 0, 255, 6, 0]])


def _grads_from_black_pixels(padding_mask, pooling='mean', tokens=BLACK_AND_WHITE):
  """Gradients of the states of the non-black positions w.r.t. the black pixel's embedding row
  (token 0) and the CLS vector, in a one-layer Transformer (no dropout)."""
  model = luna_jax.build_model(
    {'name': 'transformer', 'pooling': pooling, 'padding_mask': padding_mask, **SMALL},
    vocab_size=256,
    num_classes=2,
    max_length=8,
  )
  lengths = jnp.full((tokens.shape[0],), 8)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, lengths)['params']
  offset = int(pooling == 'cls')
  lit = jnp.concatenate([jnp.zeros((tokens.shape[0], offset), bool), tokens > 0], axis=1)

  def lit_states(p):
    x = model.apply({'params': p}, tokens, lengths, method=lambda m, t, n: m.sequence_encoder(t, n))
    return jnp.sum(jnp.where(lit[..., None], x.x, 0.0) ** 2)

  grads = jax.jit(jax.grad(lit_states))(params)['sequence_encoder']['embed']
  return grads['token_embedding']['embedding'][0], grads.get('cls')


def test_official_padding_mask_gives_black_pixels_no_attention():
  black, _ = _grads_from_black_pixels('nonzero')
  np.testing.assert_array_equal(black, 0.0)  # No non-black position attends to a black pixel.
  black, _ = _grads_from_black_pixels('lengths')
  assert float(jnp.abs(black).max()) > 1e-7  # Ours: every pixel is attended.
  # A prepended CLS takes the first pixel's entry: masked after a black first pixel only.
  _, cls = _grads_from_black_pixels('nonzero', 'cls', BLACK_AND_WHITE[:1])
  np.testing.assert_array_equal(cls, 0.0)
  _, cls = _grads_from_black_pixels('nonzero', 'cls', BLACK_AND_WHITE[1:])
  assert float(jnp.abs(cls).max()) > 1e-7
  # LRA's bias is the mask's outer product: a black pixel's own query attends uniformly to all.
  q, k = jax.random.normal(jax.random.PRNGKey(0), (2, 1, 8, 2, 4))
  lit = BLACK_AND_WHITE[:1] > 0
  probs = attn.attention_weights(q, k, lit, lit)[0]
  np.testing.assert_array_equal(probs[:, lit[0]][:, :, ~lit[0]], 0.0)
  np.testing.assert_allclose(probs[:, ~lit[0]], 1 / 8, rtol=1e-6)
  # The softmax Transformer's mask: LRA's baselines ignore theirs, so they attend to every pixel.
  for task in ('image', 'pathfinder32', 'pathx'):
    for variant in variants.CONFIG_VARIANTS:
      official = 'nonzero' if variant == 'transformer' else 'lengths'
      assert load(task, variant).model.padding_mask == official
  with pytest.raises(config_utils.ConfigError, match="padding_mask='nonzero'"):
    model_config.check_model_config(
      {'name': 'transformer', 'attention_implementation': 'linear', 'padding_mask': 'nonzero'}
    )
  # The fused kernel is the same softmax attention: it takes the official mask too.
  for name in ('transformer', 'transformer_mlm'):
    model_config.check_model_config(
      {'name': name, 'attention_implementation': 'fused', 'padding_mask': 'nonzero'}
    )


def test_bert_init_statistics_zero_biases_and_what_it_leaves_alone():
  d = 128
  settings = {'name': 'luna', 'num_layers': 1, 'emb_dim': d, 'mlp_dim': 256, 'num_heads': 4}
  build = lambda init: luna_jax.build_model(
    {**settings, 'param_init': init, 'projection_length': 64},
    vocab_size=300,
    num_classes=10,
    max_length=200,
  )
  tokens, lengths = jnp.ones((1, 200), jnp.int32), jnp.array([200])
  init = lambda name: jax.jit(build(name).init)(jax.random.PRNGKey(0), tokens, lengths)['params']
  bert, default = flat(init('bert')), flat(init('default'))
  kernels = [k for k in bert if k.endswith('/kernel')]
  assert len(kernels) == 7 + 2 + 2  # 7 attention projections, 2 FFN kernels, the head's 2.
  for name in kernels:
    assert abs(float(bert[name].std()) - 0.02) < 0.002, name
    assert abs(float(bert[name].mean())) < 0.002, name
    assert abs(float(default[name].std()) - 0.02) > 0.01, name
  embedding = bert['sequence_encoder/embed/token_embedding/embedding']
  np.testing.assert_array_equal(embedding[0], 0.0)  # The padding row, as nn.Embedding(padding_idx).
  for name in ('token_embedding/embedding', 'position_embedding', 'cls'):
    table = bert[f'sequence_encoder/embed/{name}']
    values = table[1:] if name.startswith('token') else table
    assert abs(float(values.std()) - 0.02) < 0.004, name
    assert abs(float(default[f'sequence_encoder/embed/{name}'].std()) - d**-0.5) < 0.01, name
  for name, value in bert.items():
    if name.endswith('/bias'):
      np.testing.assert_array_equal(value, 0.0, err_msg=name)
    if name.endswith('/scale'):
      np.testing.assert_array_equal(value, 1.0, err_msg=name)
  # The first P is a parameter of the authors' LunaLRAEncoder, which init_bert_params skips.
  p_table = bert['sequence_encoder/projected_embeddings']
  assert abs(float(p_table.std()) - d**-0.5) < 0.01
  with pytest.raises(config_utils.ConfigError, match="param_init='bert'"):
    model_config.check_model_config({'name': 'transformer', 'param_init': 'bert'})


def test_bert_init_covers_the_masked_lm_and_its_lm_head():
  """The authors' Luna-BERT applies init_bert_params to the whole model: the LM head's Dense
  kernel is N(0, 0.02) as well (lecun_normal would give d^-1/2 = 0.088)."""
  model_config.check_model_config({'name': 'luna_mlm', 'param_init': 'bert'})
  d = 128
  model = luna_jax.build_model(
    {'name': 'luna_mlm', 'param_init': 'bert', **SMALL, 'emb_dim': d, 'qkv_dim': d},
    vocab_size=20,
    num_classes=20,
    max_length=8,
  )
  tokens, lengths = jnp.ones((1, 8), jnp.int32), jnp.array([8])
  params = flat(jax.jit(model.init)(jax.random.PRNGKey(0), tokens, lengths)['params'])
  kernel = params['lm_head/dense/kernel']
  assert kernel.shape == (d, d)
  assert abs(float(kernel.std()) - 0.02) < 0.002
  assert abs(float(kernel.mean())) < 0.002
  np.testing.assert_array_equal(params['lm_head/dense/bias'], 0.0)


@pytest.mark.parametrize('name', ['transformer', 'luna_lm', 'luna_seq2seq', 'transformer_seq2seq'])
def test_pre_ln_is_refused_where_the_layers_do_not_implement_it(name):
  model_config.check_model_config({'name': 'luna_mlm', 'normalize_before': True})
  with pytest.raises(config_utils.ConfigError, match='normalize_before=True: pre-LN is'):
    model_config.check_model_config({'name': name, 'normalize_before': True})


@pytest.mark.parametrize('name', model_config.UNTIED_MODELS)
def test_tied_layers_are_refused_where_no_encoder_ties_them_and_old_runs_say_so(name):
  for tied in ('luna_mlm', 'luna_seq2seq'):  # luna_seq2seq: its encoder's layers.
    model_config.check_model_config({'name': tied, 'shared_layers': True})
    # Their runs did tie the layers: loading one keeps what it trained.
    assert model_config.upgrade_model_config({'name': tied, 'shared_layers': True}) == {
      'name': tied,
      'shared_layers': True,
    }
  with pytest.raises(config_utils.ConfigError, match='shared_layers=True: tied layers are'):
    model_config.check_model_config({'name': name, 'shared_layers': True})
  # A run stored before the refusal trained untied layers: it loads as what it trained.
  stored = model_config.upgrade_model_config({'name': name, 'shared_layers': True})
  assert stored['shared_layers'] is False
  model_config.check_model_config(stored)


def test_luna_recipes_take_adam_eps_1e8_and_bert_init_where_the_authors_did():
  for task in lra.TASKS:
    for variant in variants.CONFIG_VARIANTS:
      config = load(task, variant)
      if variant in base.TRANSFORMER_VARIANTS:  # LRA's Adam eps and init.
        assert (config.optimizer.eps, config.model.param_init) == (1e-9, 'default')
        continue
      assert config.optimizer.eps == 1e-8, (task, variant)  # fairseq's --adam-eps default.
      bert = 'bert' if task in ('listops', 'text') else 'default'
      assert config.model.param_init == bert, (task, variant)
      assert config.model.shared_layers == (task == 'listops'), (task, variant)
  # The measured CPU recipes keep what they were measured with.
  for name, arg in (('quickstart', None), ('listops_cpu', 'luna16')):
    config = load(name, arg)
    assert config.optimizer.eps == 1e-9
    assert (config.model.param_init, config.model.shared_layers) == ('default', False)


#: The fields each official quirk sets; base.get_config() holds our earlier choice of each. (The
#: Transformer's pooling is a task setting too, e.g. mean on Pathfinder: only 'first' is a quirk.)
QUIRK_FIELDS = {
  'luna16': (
    'model.param_init',
    'model.shared_layers',
    'model.classifier_logits_bias',
    'optimizer.eps',
  ),
  'transformer': ('model.classifier_hidden_layers', 'model.padding_mask'),
}


@pytest.mark.parametrize('task', lra.TASKS)
def test_docstring_flags_give_back_the_earlier_recipe(task):
  """The task config's docstring names every flag that undoes its official quirks: applied to the
  recipe, they leave each quirk field at base.get_config()'s value."""
  doc = importlib.import_module(f'configs.{task}').__doc__
  assert 'faithful' in doc, f'configs/{task}.py: its docstring names no faithful recipe'
  flags = re.findall(r'--config\.([\w.]+)=([\w.+-]+)', doc.split('faithful')[1])
  earlier = base.get_config()
  for variant, fields in QUIRK_FIELDS.items():
    config = load(task, variant)
    for key, value in flags:
      section, field = key.split('.')
      value = {'True': True, 'False': False}.get(value, value)
      config[section][field] = type(config[section][field])(value)
    for key in fields:
      section, field = key.split('.')
      assert config[section][field] == earlier[section][field], (task, variant, key)
    assert config.model.pooling != 'first', (task, variant)


@pytest.mark.parametrize('name', ['luna', 'transformer'])
def test_shared_layers_hold_one_layer_applied_num_layers_times(name):
  settings = {'name': name, 'pooling': 'mean', **SMALL, 'num_layers': 3}
  build = lambda shared: luna_jax.build_model(
    {**settings, 'shared_layers': shared}, vocab_size=20, num_classes=3, max_length=10
  )
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 10), 1, 20)
  lengths = jnp.array([10, 6])
  init = lambda shared: jax.jit(build(shared).init)(jax.random.PRNGKey(0), tokens, lengths)
  shared = init(True)['params']
  layers = [k for k in shared['sequence_encoder'] if k.startswith('layer_')]
  assert layers == ['layer_0']
  unshared = init(False)['params']
  one_layer = shared['sequence_encoder']['layer_0']
  copies = {**shared['sequence_encoder'], **{f'layer_{i}': one_layer for i in range(3)}}
  assert jax.tree.structure(copies) == jax.tree.structure(unshared['sequence_encoder'])
  tied = build(True).apply({'params': shared}, tokens, lengths)
  repeated = build(False).apply({'params': {**shared, 'sequence_encoder': copies}}, tokens, lengths)
  np.testing.assert_array_equal(tied, repeated)


@pytest.mark.parametrize(
  'config_name, arg, bias',
  [
    # The authors' Luna LRA head: no bias on the logits (fairseq/models/luna_lra/model.py).
    ('listops', 'luna16', False),
    ('text', 'luna256', False),
    ('image', 'luna16', False),
    ('pathfinder32', 'luna16', False),
    ('retrieval', 'luna16', False),
    # LRA's own heads and RoBERTa's GLUE head have one.
    ('listops', 'transformer', True),
    ('glue', 'sst2', True),
    # The measured small protocols keep the head they were measured with.
    ('listops_cpu', 'luna16', True),
    ('quickstart', 'luna16', True),
  ],
)
def test_logits_bias_follows_each_recipe(config_name, arg, bias):
  config = load(config_name, arg)
  assert config.model.classifier_logits_bias is bias
  model = luna_jax.build_model(
    {**config.model.to_dict(), **SMALL}, vocab_size=20, num_classes=3, max_length=8
  )
  tokens, lengths = jnp.ones((1, 8), jnp.int32), jnp.full((1,), 8)
  params = flat(jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens, lengths)['params'])
  assert ('head/logits/bias' in params) is bias
  assert params['head/logits/kernel'].shape[-1] == 3


def test_official_padding_mask_makes_black_pixel_queries_attend_uniformly_in_the_encoder():
  """In the Transformer with padding_mask='nonzero', the sown attention probabilities of a black
  pixel's query are uniform over all positions (LRA's outer-product mask masks its whole row),
  and a lit pixel's query gives the black pixels nothing."""
  model = luna_jax.build_model(
    {'name': 'transformer', 'pooling': 'mean', 'padding_mask': 'nonzero', **SMALL},
    vocab_size=256,
    num_classes=2,
    max_length=8,
  )
  lengths = jnp.full((2,), 8)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), BLACK_AND_WHITE, lengths)
  _, state = model.apply(variables, BLACK_AND_WHITE, lengths, mutable=['intermediates'])
  (probs,) = jax.tree.leaves(state['intermediates'])  # One layer: [batch, heads, n, n].
  lit = np.asarray(BLACK_AND_WHITE > 0)
  for b in range(2):
    np.testing.assert_allclose(probs[b][:, ~lit[b]], 1 / 8, rtol=1e-6)
    np.testing.assert_array_equal(probs[b][:, lit[b]][:, :, ~lit[b]], 0.0)


@pytest.mark.parametrize('variant', ['luna16', 'transformer'])
def test_the_recipe_adam_eps_reaches_the_optimizer_update(variant):
  """The first Adam step of the recipe's optimizer (constant schedule, no weight decay) is
  -lr g / (|g| + eps) with the config's eps (1e-8 Luna, 1e-9 LRA), visible at |g| = 1e-8."""
  recipe = load('listops', variant).optimizer.to_dict()
  cfg = optim.OptimizerConfig(**{**recipe, 'schedule': 'constant', 'weight_decay': 0.0})
  optimizer = optim.make_optimizer(cfg)
  params = {'w': jnp.zeros(3)}
  grads = {'w': jnp.array([1e-8, -3e-8, 1.0])}
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  g = np.float64(grads['w'])
  expected = -cfg.learning_rate * g / (np.abs(g) + cfg.eps)
  np.testing.assert_allclose(updates['w'], expected, rtol=1e-5)
