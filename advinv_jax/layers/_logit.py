"""The logit input layer: an invertible map of the data's box onto R^d
(RealNVP's "logit trick", Dinh et al. 2017, section 4.1)."""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from advinv_jax.layers._base import Layer


def logit_image_bounds(alpha: float):
  """``(lo, hi)``: the image of :class:`LogitTransform`'s inverse, the open
  interval ``(-delta, 1 + delta)`` per pixel with ``delta = alpha / (1 - 2
  alpha)``."""
  delta = alpha / (1.0 - 2.0 * alpha)
  return -delta, 1.0 + delta


def alpha_for_widening(delta: float) -> float:
  """The ``alpha`` whose inverse image widens ``[0, 1]`` by ``delta`` on each
  side: ``alpha = delta / (1 + 2 delta)`` (e.g. ``delta`` = half a grey level:
  1/32 for 17 levels, ``alpha = 1/34``; 1/510 for 8 bits, ``alpha = 1/512``)."""
  if not delta > 0:
    raise ValueError(f"alpha_for_widening: delta={delta} must be > 0.")
  return delta / (1.0 + 2.0 * delta)


@dataclasses.dataclass(frozen=True)
class LogitTransform(Layer):
  """The box ``[0, 1]`` (slightly widened) onto R, per pixel, no parameters.

  Forward, with ``u = alpha + (1 - 2 alpha) x``::

    y = logit(u) = log u - log(1 - u)
    log|det dy/dx| = sum_{h,w,c} [log(1 - 2 alpha) - log u - log(1 - u)]

  Inverse::

    x = (sigmoid(y) - alpha) / (1 - 2 alpha)
    log|det dx/dy| = sum_{h,w,c} [log sigmoid(y) + log sigmoid(-y)
                                  - log(1 - 2 alpha)]

  The forward map is defined on the open interval ``(-delta, 1 + delta)``,
  ``delta = alpha / (1 - 2 alpha)`` (:func:`logit_image_bounds`), which
  contains the box ``[0, 1]``; the inverse maps all of R onto it. So every
  inverse of a flow that starts with this layer (its metamers included) lies
  within ``delta`` of the box by construction, not by clipping. Inputs
  outside that interval have no image (NaN).

  Shapes: ``x, y: f32[B, H, W, C]``; log-dets ``f32[B]``.

  Attributes:
    alpha: in ``(0, 0.5)``; the box edges 0 and 1 map to ``logit(alpha)`` and
      ``-logit(alpha)``. :func:`alpha_for_widening` gives it from the allowed
      widening; RealNVP uses 0.05.
  """

  alpha: float = 0.05

  def __post_init__(self):
    if not 0.0 < self.alpha < 0.5:
      raise ValueError(f"LogitTransform alpha={self.alpha} must lie in "
                       "(0, 0.5); e.g. alpha_for_widening(half a grey "
                       "level).")

  def _log_scale(self):
    return math.log(1.0 - 2.0 * self.alpha)

  def apply(self, params, consts, x):
    del params, consts
    u = self.alpha + (1.0 - 2.0 * self.alpha) * x
    log_u, log_1mu = jnp.log(u), jnp.log1p(-u)
    ld = jnp.sum(self._log_scale() - log_u - log_1mu, axis=(1, 2, 3))
    return log_u - log_1mu, ld

  def apply_inverse(self, params, consts, y):
    del params, consts
    x = (jax.nn.sigmoid(y) - self.alpha) / (1.0 - 2.0 * self.alpha)
    ld = jnp.sum(jax.nn.log_sigmoid(y) + jax.nn.log_sigmoid(-y)
                 - self._log_scale(), axis=(1, 2, 3))
    return x, ld
