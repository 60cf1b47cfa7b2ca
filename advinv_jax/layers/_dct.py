"""Orthonormal 2-D DCT-II over the spatial axes, and a fixed affine map."""
from __future__ import annotations

import dataclasses
import functools
import math

import jax.numpy as jnp
import numpy as np

from advinv_jax.layers._base import Layer, zeros_logdet


@functools.lru_cache(maxsize=None)
def dct_matrix(n: int) -> np.ndarray:
  """Orthonormal DCT-II matrix ``D[k, m] = a_k cos(pi (2m + 1) k / (2n))``,
  ``a_0 = sqrt(1/n)``, ``a_k = sqrt(2/n)``; ``D @ D.T = I``."""
  k = np.arange(n)[:, None]
  m = np.arange(n)[None, :]
  d = np.cos(np.pi * (2 * m + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
  d[0] /= np.sqrt(2.0)
  return d.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class DCT2D(Layer):
  """Orthonormal 2-D DCT-II over (H, W), separately for each channel.

  ``y[b, k, l, c] = sum_{h,w} D_H[k, h] D_W[l, w] x[b, h, w, c]``; the
  coefficient ``y[:, 0, 0, c] = sqrt(H W) * mean_{h,w} x[:, h, w, c]`` is the
  (scaled) global average pool, the low-pass end of the spectrum. Orthonormal,
  so logdet 0 and the inverse is the transpose.
  """

  def apply(self, params, consts, x):
    del params, consts
    dh, dw = dct_matrix(x.shape[1]), dct_matrix(x.shape[2])
    y = jnp.einsum("kh,bhwc,lw->bklc", dh, x, dw)
    return y, zeros_logdet(x)

  def apply_inverse(self, params, consts, y):
    del params, consts
    dh, dw = dct_matrix(y.shape[1]), dct_matrix(y.shape[2])
    x = jnp.einsum("kh,bklc,lw->bhwc", dh, y, dw)
    return x, zeros_logdet(y)


@dataclasses.dataclass(frozen=True)
class FixedAffine(Layer):
  """``y = scale * x + shift`` (fixed scalars); ``logdet = H W C log|scale|``.

  The fiRevNet uses ``scale=2, shift=-1`` to map ``[0, 1]`` images to
  ``[-1, 1]``.
  """

  scale: float = 2.0
  shift: float = -1.0

  def __post_init__(self):
    if self.scale == 0:
      raise ValueError("FixedAffine scale must be non-zero.")

  def _ld(self, x):
    n = x.shape[1] * x.shape[2] * x.shape[3]
    return jnp.full((x.shape[0],), n * math.log(abs(self.scale)), jnp.float32)

  def apply(self, params, consts, x):
    del params, consts
    return x * self.scale + self.shift, self._ld(x)

  def apply_inverse(self, params, consts, y):
    del params, consts
    return (y - self.shift) / self.scale, -self._ld(y)
