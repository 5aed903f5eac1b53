"""Float64 NumPy reference implementations written directly from the Luna paper's equations.

Deliberately naive and loop-friendly: eq. (1) attention, eqs. (3)-(5) pack/unpack, eq. (6) Luna
layer, eq. (7) causal Luna attention as a sum over j <= t for every t (O(n^2)), and the decoder
layers of §3.3 (decoder-only), §4.2 (encoder-decoder) and the Transformer-base baseline (Vaswani
et al., 2017). Parameters are the Flax parameter dicts of the modules under test, converted to
float64.
"""

from __future__ import annotations

import math

import numpy as np


def to64(tree):
  """Recursively converts a (nested dict) parameter tree or array to float64 NumPy."""
  if isinstance(tree, dict) or hasattr(tree, 'items'):
    return {k: to64(v) for k, v in tree.items()}
  return np.asarray(tree, dtype=np.float64)


def linear(x: np.ndarray, p: dict) -> np.ndarray:
  """x W (+ b)."""
  y = x @ p['kernel']
  return y + p['bias'] if 'bias' in p else y


def softmax(z: np.ndarray) -> np.ndarray:
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def attention(
  q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int, key_mask: np.ndarray | None = None
) -> np.ndarray:
  """Eq. (1) per head on projected sequences: softmax(Q K^T / sqrt(d_head)) V, heads concatenated.

  Args:
    q: (B, n, d); k: (B, m, d); v: (B, m, d); key_mask: (B, m) bool, or (B, n, m) per query.
  Returns:
    (B, n, d).
  """
  b, n, d = q.shape
  dh = d // heads
  out = np.zeros((b, n, v.shape[-1]))
  for i in range(b):
    for h in range(heads):
      sl = slice(h * dh, (h + 1) * dh)
      logits = q[i, :, sl] @ k[i, :, sl].T / math.sqrt(dh)
      if key_mask is not None:
        allowed = key_mask[i] if key_mask.ndim == 3 else key_mask[i][None, :]
        logits = np.where(allowed, logits, -np.inf)
      out[i, :, sl] = softmax(logits) @ v[i, :, sl]
  return out


def luna_attention(
  params: dict, x, p, c, heads: int, pack_heads: int, tie_kv: bool, context_mask=None, p_mask=None
):
  """Eqs. (3)-(5): Y_P = Attn(P, C) (no output projection), Y_X = out(Attn(X, Y_P))."""
  pk = linear(c, params['pack_kv' if tie_kv else 'pack_key'])
  pv = pk if tie_kv else linear(c, params['pack_value'])
  y_p = attention(linear(p, params['pack_query']), pk, pv, pack_heads, context_mask)
  k = linear(y_p, params['kv' if tie_kv else 'key'])
  v = k if tie_kv else linear(y_p, params['value'])
  y_x = attention(linear(x, params['query']), k, v, heads, p_mask)
  return linear(y_x, params['out']), y_p


def layer_norm(x: np.ndarray, p: dict, eps: float) -> np.ndarray:
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p['scale'] + p['bias']


def gelu(x: np.ndarray) -> np.ndarray:
  """Exact GELU x * Phi(x)."""
  erf = np.vectorize(math.erf)
  return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def relu(x: np.ndarray) -> np.ndarray:
  return np.maximum(x, 0.0)


def feed_forward(params: dict, h: np.ndarray, activation=gelu) -> np.ndarray:
  """fc2(activation(fc1(h)))."""
  return linear(activation(linear(h, params['fc1'])), params['fc2'])


def luna_layer(
  params: dict,
  x,
  p,
  heads,
  pack_heads,
  tie_kv,
  x_mask,
  p_mask,
  normalize_before: bool,
  eps: float = 1e-5,
):
  """Eq. (6) (post-LN) or its pre-LN variant, no dropout."""
  ffn = lambda h: feed_forward(params['ffn'], h)
  if normalize_before:
    xn = layer_norm(x, params['x_norm'], eps)
    pn = layer_norm(p, params['p_norm'], eps)
    y_x, y_p = luna_attention(
      params['attention'], xn, pn, xn, heads, pack_heads, tie_kv, x_mask, p_mask
    )
    x_a = x + y_x
    return x_a + ffn(layer_norm(x_a, params['ffn_norm'], eps)), p + y_p
  y_x, y_p = luna_attention(params['attention'], x, p, x, heads, pack_heads, tie_kv, x_mask, p_mask)
  x_a = layer_norm(y_x + x, params['x_norm'], eps)
  p_a = layer_norm(y_p + p, params['p_norm'], eps)
  return layer_norm(ffn(x_a) + x_a, params['ffn_norm'], eps), p_a


def omega(z: np.ndarray, kind: str, beta: float) -> np.ndarray:
  if kind == 'softplus':
    return np.log1p(np.exp(beta * z)) / beta
  return np.where(z > 0, z, np.exp(z) - 1.0) + 1.0


def causal_f(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
  """Eq. (7): F_t = (1/t) X_t sum_{j<=t} Y_j^T Z_j, computed naively for every t."""
  n = x.shape[0]
  out = np.zeros((n, z.shape[1]))
  for t in range(n):
    acc = sum(np.outer(y[j], z[j]) for j in range(t + 1))
    out[t] = x[t] @ acc / (t + 1)
  return out


def causal_luna_attention(
  params: dict, x, p, heads: int, tie_kv: bool, kind: str, beta: float, p_mask=None
):
  """§3.3: A_pack = omega(PK . PQ^T / sqrt(dh)); A_unpack = softmax(f(Q/sqrt(dh), K, A_pack));
  Y = f(A_unpack, A_pack, V); heads concatenated, then the output projection."""
  b, n, d = x.shape
  dh = d // heads
  pq_all = linear(p, params['pack_query'])
  q_all = linear(x, params['query'])
  pk_all = linear(x, params['pack_key'])
  k_all = linear(x, params['kv' if tie_kv else 'key'])
  v_all = k_all if tie_kv else linear(x, params['value'])
  out = np.zeros((b, n, d))
  for i in range(b):
    for h in range(heads):
      sl = slice(h * dh, (h + 1) * dh)
      a_pack = omega(pk_all[i, :, sl] @ pq_all[i, :, sl].T / math.sqrt(dh), kind, beta)  # (n, l)
      logits = causal_f(q_all[i, :, sl] / math.sqrt(dh), k_all[i, :, sl], a_pack)  # (n, l)
      if p_mask is not None:
        logits = np.where(p_mask[i][None, :], logits, -np.inf)
      a_unpack = softmax(logits)
      out[i, :, sl] = causal_f(a_unpack, a_pack, v_all[i, :, sl])
  return linear(out, params['out'])


def luna_lm_layer(params: dict, x, heads: int, tie_kv: bool, kind: str, beta: float, eps=1e-5):
  """§3.3, the decoder-only layer (post-LN, no dropout): with P the layer's learned table (P must
  carry no information about X), X_A = LN(X + CausalLuna(X, P)), X' = LN(X_A + FFN(X_A))."""
  table = params['projected_embeddings']
  p = np.broadcast_to(table, (x.shape[0], *table.shape))
  y = causal_luna_attention(params['self_attention'], x, p, heads, tie_kv, kind, beta)
  x_a = layer_norm(x + y, params['self_attention_norm'], eps)
  return layer_norm(x_a + feed_forward(params['ffn'], x_a), params['ffn_norm'], eps)


def luna_seq2seq_layer(
  params: dict,
  x,
  p,
  memory,
  memory_mask,
  p_mask,
  heads: int,
  pack_heads: int,
  tie_kv: bool,
  kind: str,
  beta: float,
  eps=1e-5,
):
  """§4.2, the encoder-decoder layer (fairseq-apollo LunaDecoderLayer; post-LN, no dropout):
  X_A = LN(X + CausalLuna(X, P)); (Y_X, Y_P) = Luna(X_A, P, memory) (eqs. 3-5, P packing the
  encoder output); X_B = LN(X_A + Y_X); X' = LN(X_B + FFN(X_B)); the next layer's P = LN(P + Y_P).
  """
  y = causal_luna_attention(params['self_attention'], x, p, heads, tie_kv, kind, beta, p_mask)
  x = layer_norm(x + y, params['self_attention_norm'], eps)
  y_x, y_p = luna_attention(
    params['cross_attention'], x, p, memory, heads, pack_heads, tie_kv, memory_mask, p_mask
  )
  x = layer_norm(x + y_x, params['cross_attention_norm'], eps)
  x = layer_norm(x + feed_forward(params['ffn'], x), params['ffn_norm'], eps)
  return x, layer_norm(p + y_p, params['p_norm'], eps)


def multi_head_attention(params: dict, x, context, heads: int, mask) -> np.ndarray:
  """out(Attn(query(x), key(context), value(context))) with eq. (1) per head."""
  q, k, v = (
    linear(z, params[name]) for z, name in ((x, 'query'), (context, 'key'), (context, 'value'))
  )
  return linear(attention(q, k, v, heads, mask), params['out'])


def transformer_decoder_layer(
  params: dict, x, memory, memory_mask, heads: int, activation=relu, eps=1e-5
):
  """The Transformer-base decoder layer (Vaswani et al., 2017; post-LN, no dropout): causal
  self-attention, attention over the encoder output, FFN, each added to its input and normalised.
  """
  b, n, _ = x.shape
  causal = np.broadcast_to(np.tril(np.ones((n, n), bool)), (b, n, n))
  y = multi_head_attention(params['self_attention'], x, x, heads, causal)
  x = layer_norm(x + y, params['self_attention_norm'], eps)
  y = multi_head_attention(params['cross_attention'], x, memory, heads, memory_mask)
  x = layer_norm(x + y, params['cross_attention_norm'], eps)
  return layer_norm(x + feed_forward(params['ffn'], x, activation), params['ffn_norm'], eps)


def beam_search(
  next_log_probs,
  beam_size: int,
  max_length: int,
  eos_id: int,
  alpha: float,
  cap: int | None,
  min_length: int = 0,
) -> tuple[tuple[int, ...], float]:
  """One example's beam search by fairseq's `SequenceGenerator` rule, in plain Python.

  Each step extends every live hypothesis by every token but padding (only by the EOS once the
  output reaches `cap` tokens; not by the EOS before `min_length` tokens, unless so); of the best
  2 * beam_size extensions by summed log-probability, those among the best beam_size that end
  with `eos_id` are finished (until beam_size are), the best beam_size that do not end stay live.
  The answer is the finished hypothesis with the best summed log-probability / ((5 + length) / 6)
  ** alpha, length counting the EOS; with fewer than beam_size finished by `max_length`, a live
  one penalised at `max_length` may beat it.

  Args:
    next_log_probs: prefix (tuple of ids) -> [vocab] log-probabilities of the next id.

  Returns:
    (the ids of the answer, its summed log-probability).
  """
  penalty = lambda length: ((5.0 + length) / 6.0) ** alpha
  live, finished = [((), 0.0)], []
  for t in range(max_length):
    extensions = []
    for prefix, score in live:
      logp = np.asarray(next_log_probs(prefix), np.float64)
      for token in range(1, len(logp)):
        must_end = cap is not None and t + 1 >= cap
        if token == eos_id and (must_end or t >= min_length) or token != eos_id and not must_end:
          extensions.append((score + logp[token], prefix + (token,)))
    extensions = sorted(extensions, key=lambda e: -e[0])[: 2 * beam_size]
    if len(finished) < beam_size:
      ending = [e for e in extensions[:beam_size] if e[1][-1] == eos_id]
      finished += [(score / penalty(t + 1), score, tokens) for score, tokens in ending]
      finished = sorted(finished, key=lambda f: -f[0])[:beam_size]
    live = [(tokens, score) for score, tokens in extensions if tokens[-1] != eos_id][:beam_size]
  options = list(finished)
  if len(finished) < beam_size:
    options += [(score / penalty(max_length), score, tokens) for tokens, score in live]
  _, score, tokens = max(options, key=lambda o: o[0])
  return tokens, score
