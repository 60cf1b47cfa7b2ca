"""Additive and affine coupling layers with the authors' fiRevNet subnet."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from advinv_jax.layers._actnorm import actnorm_init, actnorm_relu
from advinv_jax.layers._base import Layer, replicated_cotangent_share
from advinv_jax.layers._compute import Compute
from advinv_jax.layers._conv import conv1x1, conv3x3, subnet_operand_dtypes


def dropout(x, rate: float, rng=None):
  """Inverted dropout: ``x * mask / (1 - rate)``, ``mask ~ Bernoulli(1 - rate)``
  per entry; the identity when ``rng`` is None or ``rate == 0``
  (``torch.nn.Dropout`` in train / eval mode)."""
  if rng is None or not rate:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def _he(rng, shape, fan_in):
  return jax.random.normal(rng, shape, jnp.float32) * jnp.sqrt(2.0 / fan_in)


@dataclasses.dataclass(frozen=True)
class SubnetSettings:
  """What a coupling's subnet is built from (one object, passed once).

  Attributes:
    width: hidden channels.
    min_std: ActNorm init floor of its ActNorms (:func:`actnorm_init`).
    actnorm_eps: its ActNorms' ``exp(s) + eps`` form (see :class:`ActNorm`;
      the authors': 1e-3).
    dropout: rate after the second ReLU, active only with a key (train
      mode); without one the subnet is deterministic (eval mode).
    compute: how it runs (:class:`Compute`: the 3x3 conv form, the compute
      dtype, the 1x1 conv as a matmul).
  """
  width: int = 32
  min_std: float = 1e-2
  actnorm_eps: float = 0.0
  dropout: float = 0.0
  compute: Compute = Compute()

  def __post_init__(self):
    if self.width < 1:
      raise ValueError(f"coupling width={self.width} must be >= 1.")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout={self.dropout} must be in [0, 1).")


@dataclasses.dataclass(frozen=True)
class Subnet:
  """conv3x3 -> ActNorm -> ReLU -> conv1x1 -> ActNorm -> ReLU -> ZeroConv3x3.

  The convolutions feeding an ActNorm have no bias (ActNorm's shift is the
  bias). The last conv is zero-initialised, has a bias, and its output is
  multiplied by ``exp(3 * logs)`` (``logs`` learned, init 0), as in the
  authors' code (Glow's ``Conv2dZeros``). ``settings.dropout`` (0.1 in the
  authors' code, layers.py ``NN``: after the second ReLU) acts only when a
  key is given (train mode, :meth:`Coupling.apply_train`); without one the
  subnet is deterministic, so the coupling's inverse is exact (eval mode).

  ``settings.compute.dtype``: ``'float32'``; ``'bfloat16'`` (mixed
  precision: the three convolutions take bfloat16 operands, see
  :func:`conv3x3`, the 1x1 conv through :func:`matmul_lowp`; parameters,
  ActNorm, bias and scale stay float32); ``'bfloat16_1x1'`` (only the 1x1
  conv). The output is float32 and a deterministic function of ``(p, x)``,
  so a coupling on it stays exactly invertible (its inverse recomputes the
  same output) and its log-determinant is float32; only the values (and
  gradients) carry bfloat16 rounding.
  """

  out_channels: int
  settings: SubnetSettings = SubnetSettings()

  def _convs(self):
    cp = self.settings.compute
    d3, d1 = subnet_operand_dtypes(cp.dtype)
    return (lambda x, w: conv3x3(x, w, cp.conv3x3_impl, operand_dtype=d3),
            lambda x, w: conv1x1(x, w, cp.conv1x1_as_matmul, d1))

  def init(self, rng, x):
    s, c = self.settings, x.shape[-1]
    k1, k2 = jax.random.split(rng)
    c3, c1 = self._convs()
    p = {"w1": _he(k1, (3, 3, c, s.width), 9 * c)}
    h = c3(x, p["w1"])
    p["a1"] = actnorm_init(h, s.min_std)
    h = actnorm_relu(p["a1"], h, s.actnorm_eps)
    p["w2"] = _he(k2, (s.width, s.width), s.width)
    h = c1(h, p["w2"])
    p["a2"] = actnorm_init(h, s.min_std)
    p["w3"] = jnp.zeros((3, 3, s.width, self.out_channels), jnp.float32)
    p["b3"] = jnp.zeros((self.out_channels,), jnp.float32)
    p["logs3"] = jnp.zeros((self.out_channels,), jnp.float32)
    return p

  def __call__(self, p, x, rng=None):
    """``rng``: a key turns dropout on (train mode); ``None``: eval mode."""
    e = self.settings.actnorm_eps
    c3, c1 = self._convs()
    h = actnorm_relu(p["a1"], c3(x, p["w1"]), e)
    h = actnorm_relu(p["a2"], c1(h, p["w2"]), e)
    h = dropout(h, self.settings.dropout, rng)
    out = c3(h, p["w3"]) + p["b3"]
    return out * jnp.exp(3.0 * p["logs3"])


COUPLINGS = ("additive", "affine")
AFFINE_SCALES = ("sigmoid", "exp_tanh")


@dataclasses.dataclass(frozen=True)
class Coupling(Layer):
  """Additive or affine coupling on a channel split.

  ``x = [x_a, x_b]`` with ``x_a = x[..., :C//2]`` (passed through unchanged)
  and ``x_b = x[..., C//2:]``; ``h = subnet(x_a)``.

  * additive: ``y_b = x_b + h``; logdet 0.
  * affine: ``shift = h[..., 0::2]``, ``scale = g(h[..., 1::2])``,
    ``y_b = (x_b + shift) * scale``; logdet = ``sum log scale``. ``g`` is
    ``affine_scale``: ``'sigmoid'`` (the authors' code,
    ``g(u) = floor + (1 - floor) * sigmoid(u + 2)``, in ``[floor, 1)``; the
    ``scale_floor`` term is our addition that bounds the scale away from 0 so
    the inverse ``x_b = y_b / scale - shift`` stays finite) or ``'exp_tanh'``
    (``g(u) = exp(tanh(u))``, in ``[1/e, e]``; our option).

  Attributes:
    subnet: the subnet's settings (:class:`SubnetSettings`: width, ActNorm
      floor and eps, dropout, and how it runs, :class:`Compute`). Its
      dropout acts only in :meth:`apply_train` (with a key); ``apply`` /
      ``apply_inverse`` are eval mode, an exact bijection. The coupling
      arithmetic and the logdet stay float32 whatever its compute dtype.
    coupling: one of ``COUPLINGS``: ``'additive'`` or ``'affine'``.
    affine_scale: one of ``AFFINE_SCALES``: ``'sigmoid'`` or
      ``'exp_tanh'``.
    scale_floor: lower bound of the sigmoid scale (default 1e-3).
  """

  subnet: SubnetSettings = SubnetSettings()
  coupling: str = "additive"
  affine_scale: str = "sigmoid"
  scale_floor: float = 1e-3

  def __post_init__(self):
    if self.coupling not in COUPLINGS:
      raise ValueError(f"coupling={self.coupling!r}; choose one of "
                       f"{COUPLINGS}.")
    if self.affine_scale not in AFFINE_SCALES:
      raise ValueError(f"affine_scale={self.affine_scale!r}; choose one of "
                       f"{AFFINE_SCALES}.")
    if not 0.0 < self.scale_floor < 1.0:
      raise ValueError(f"scale_floor={self.scale_floor} must be in (0, 1).")

  def check_shape(self, shape):
    super().check_shape(shape)
    if shape[-1] < 2:
      raise ValueError(f"Coupling needs >= 2 channels to split, got shape "
                       f"{tuple(shape)}; downsample (squeeze/psi) first.")

  def _subnet(self, c):
    ca = c // 2
    cb = c - ca
    out = cb if self.coupling == "additive" else 2 * cb
    return ca, Subnet(out, self.subnet)

  def init(self, rng, x):
    self.check_shape(tuple(x.shape))
    ca, net = self._subnet(x.shape[-1])
    return {"net": net.init(rng, x[..., :ca])}

  # elementwise part: (x_b, h) -> (y_b, logdet)
  def _scale(self, u):
    if self.affine_scale == "sigmoid":
      f = self.scale_floor
      return f + (1.0 - f) * jax.nn.sigmoid(u + 2.0)
    return jnp.exp(jnp.tanh(u))

  def _log_scale(self, u):
    if self.affine_scale == "sigmoid":
      return jnp.log(self._scale(u))
    return jnp.tanh(u)

  def _elem_fwd(self, xb, h):
    if self.coupling == "additive":
      return xb + h, jnp.zeros((xb.shape[0],), jnp.float32)
    shift, u = h[..., 0::2], h[..., 1::2]
    yb = (xb + shift) * self._scale(u)
    return yb, jnp.sum(self._log_scale(u), axis=(1, 2, 3))

  def _elem_inv(self, yb, h):
    if self.coupling == "additive":
      return yb - h, jnp.zeros((yb.shape[0],), jnp.float32)
    shift, u = h[..., 0::2], h[..., 1::2]
    xb = yb / self._scale(u) - shift
    return xb, -jnp.sum(self._log_scale(u), axis=(1, 2, 3))

  def apply(self, params, consts, x):
    del consts
    ca, net = self._subnet(x.shape[-1])
    xa, xb = x[..., :ca], x[..., ca:]
    yb, ld = self._elem_fwd(xb, net(params["net"], xa))
    return jnp.concatenate([xa, yb], axis=-1), ld

  def apply_train(self, params, consts, x, rng):
    """:meth:`apply` with the subnet's dropout on (key ``rng``); not
    invertible by :meth:`apply_inverse` unless ``dropout == 0``."""
    del consts
    ca, net = self._subnet(x.shape[-1])
    xa, xb = x[..., :ca], x[..., ca:]
    yb, ld = self._elem_fwd(xb, net(params["net"], xa, rng))
    return jnp.concatenate([xa, yb], axis=-1), ld

  def apply_inverse(self, params, consts, y):
    del consts
    ca, net = self._subnet(y.shape[-1])
    ya, yb = y[..., :ca], y[..., ca:]
    xb, ld = self._elem_inv(yb, net(params["net"], ya))
    return jnp.concatenate([ya, xb], axis=-1), ld

  def reverse_vjp(self, params, consts, y, gy, gld):
    """One subnet forward + one subnet backward (x_a = y_a is not recomputed)."""
    del consts
    ca, net = self._subnet(y.shape[-1])
    ya, yb = y[..., :ca], y[..., ca:]
    h, pull_net = jax.vjp(net, params["net"], ya)
    xb, _ = self._elem_inv(yb, h)
    out_e, pull_e = jax.vjp(self._elem_fwd, xb, h)
    gxb, gh = pull_e(replicated_cotangent_share((gy[..., ca:], gld), out_e))
    gp, gxa = pull_net(gh)
    x = jnp.concatenate([ya, xb], axis=-1)
    gx = jnp.concatenate([gy[..., :ca] + gxa, gxb], axis=-1)
    return x, {"net": gp}, gx
