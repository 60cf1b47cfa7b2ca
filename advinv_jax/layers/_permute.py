"""Channel permutations: reverse, fixed shuffle, LU-parameterised 1x1 conv."""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from advinv_jax.layers._base import Layer, zeros_logdet


@dataclasses.dataclass(frozen=True)
class Reverse(Layer):
  """Reverses the channel order: ``y[..., k] = x[..., C - 1 - k]``; logdet 0."""

  def apply(self, params, consts, x):
    del params, consts
    return x[..., ::-1], zeros_logdet(x)

  def apply_inverse(self, params, consts, y):
    del params, consts
    return y[..., ::-1], zeros_logdet(y)


@functools.lru_cache(maxsize=None)
def _shuffle(seed: int, c: int):
  perm = np.random.RandomState(seed).permutation(c).astype(np.int32)
  return perm, np.argsort(perm).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Shuffle(Layer):
  """Fixed random channel permutation ``y[..., k] = x[..., perm[k]]``.

  ``perm = numpy.random.RandomState(seed).permutation(C)`` (not a parameter:
  it is rebuilt from the static ``seed``). logdet 0.
  """

  seed: int = 0

  def template(self):
    return dataclasses.replace(self, seed=0)

  def consts(self, shape):
    perm, inv = _shuffle(int(self.seed), int(shape[-1]))
    return {"perm": perm, "inv": inv}

  def apply(self, params, consts, x):
    del params
    return jnp.take(x, consts["perm"], axis=-1), zeros_logdet(x)

  def apply_inverse(self, params, consts, y):
    del params
    return jnp.take(y, consts["inv"], axis=-1), zeros_logdet(y)


@functools.lru_cache(maxsize=None)
def _lu(seed: int, c: int):
  rs = np.random.RandomState(seed)
  q, _ = np.linalg.qr(rs.randn(c, c))
  p, l, u = scipy.linalg.lu(q)
  d = np.diag(u)
  return (np.argmax(p, axis=1).astype(np.int32), l, u,
          np.sign(d).astype(np.float32), np.log(np.abs(d)))


@dataclasses.dataclass(frozen=True)
class InvConv1x1(Layer):
  """Glow's invertible 1x1 conv, LU-parameterised.

  ``W = P L (U + diag(sign * exp(log_s)))`` with ``L`` unit lower-triangular,
  ``U`` strictly upper-triangular; ``y[..., o] = sum_c W[o, c] x[..., c]``;
  ``logdet = H * W * sum(log_s)``. ``P`` and ``sign`` are fixed (not trained):
  they come, with the initial ``L, U, log_s``, from the LU decomposition of a
  random orthogonal matrix drawn with ``numpy.random.RandomState(seed)``
  (our choice: the static ``seed`` replaces Glow's non-trainable variables).

  Params: ``{"l": f32[C, C], "u": f32[C, C], "log_s": f32[C]}`` (only the
  strict lower / upper triangles of ``l`` / ``u`` are used).
  """

  seed: int = 0

  def template(self):
    return dataclasses.replace(self, seed=0)

  def consts(self, shape):
    perm, _, _, sign, _ = _lu(int(self.seed), int(shape[-1]))
    return {"perm": perm, "sign": sign}

  def init(self, rng, x):
    del rng
    self.check_shape(tuple(x.shape))
    _, l, u, _, log_s = _lu(int(self.seed), int(x.shape[-1]))
    return {"l": jnp.asarray(np.tril(l, -1), jnp.float32),
            "u": jnp.asarray(np.triu(u, 1), jnp.float32),
            "log_s": jnp.asarray(log_s, jnp.float32)}

  @staticmethod
  def _factors(params, consts):
    c = params["log_s"].shape[0]
    eye = jnp.eye(c, dtype=jnp.float32)
    lower = jnp.tril(params["l"], -1) + eye
    upper = jnp.triu(params["u"], 1) + jnp.diag(
        consts["sign"] * jnp.exp(params["log_s"]))
    return lower, upper

  def apply(self, params, consts, x):
    lower, upper = self._factors(params, consts)
    w = jnp.take(lower @ upper, consts["perm"], axis=0)
    y = jnp.einsum("bhwc,oc->bhwo", x, w)
    ld = x.shape[1] * x.shape[2] * jnp.sum(params["log_s"])
    return y, jnp.full((x.shape[0],), ld, jnp.float32)

  def apply_inverse(self, params, consts, y):
    lower, upper = self._factors(params, consts)
    c = lower.shape[0]
    # W^-1 = U^-1 L^-1 P^T; P^T = eye[perm]^T.
    pt = jnp.eye(c, dtype=jnp.float32)[consts["perm"]].T
    linv_pt = jax.scipy.linalg.solve_triangular(lower, pt, lower=True,
                                                unit_diagonal=True)
    winv = jax.scipy.linalg.solve_triangular(upper, linv_pt, lower=False)
    x = jnp.einsum("bhwc,oc->bhwo", y, winv)
    ld = -y.shape[1] * y.shape[2] * jnp.sum(params["log_s"])
    return x, jnp.full((y.shape[0],), ld, jnp.float32)
