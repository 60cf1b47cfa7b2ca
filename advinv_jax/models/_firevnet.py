"""Fully invertible RevNets (fiRevNet): the authors' MNIST layout and an
i-RevNet / fiRevNet48-style ImageNet layout with a DCT readout.

Both are one :class:`FiRevNet`: a fixed input map, then stages of
``[downsample] -> steps -> [split half of the channels off]``, each step being
``ActNorm -> permutation -> coupling``; optionally a 2-D DCT of the final map.
The input map (``input_transform``) is the affine ``x -> 2x - 1`` (its logdet
``H W C log 2`` is included) or ``'logit'``, RealNVP's
:class:`~advinv_jax.layers.LogitTransform` ``x -> logit(alpha + (1 - 2
alpha) x)``, which maps the box onto R: every inverse, metamers included,
then lies within ``alpha / (1 - 2 alpha)`` of ``[0, 1]`` by construction.

Latent layout (``z: f32[B, d]``, ``d = H W C``), in this order:

1. ``z_s`` (the ``num_classes`` logits), read from a FIXED location of the
   final tensor ``f: [B, h, w, c]``:

   * readout ``'center'`` (``firevnet``): the first ``num_classes`` channels
     at the centre position ``(h // 2, w // 2)`` (the authors read channels
     0..9 at (2, 2) of their 4x4 map) when ``c >= num_classes``; otherwise
     (a small final tensor) the first ``num_classes`` entries of ``f``
     flattened row-major over ``(h, w, c)``.
   * readout ``'dct'`` (``firevnet_imagenet``): ``f`` is the orthonormal DCT
     of the last feature map; the logits are the first ``num_classes``
     entries of ``f`` flattened row-major over ``(k, l, c)``, i.e. the DC
     (k = l = 0, "invertible global average pooling") coefficients of
     channels ``0..num_classes-1`` when ``c >= num_classes``.

2. ``z_n``: the remaining entries of ``f`` (row-major over ``(h, w, c)``, the
   logit entries removed), then the split-off halves of levels 1, 2, ...
   (each flattened row-major over ``(h, w, c)``). Splits keep the first half
   of the channels and factor out the second half (``h[..., c//2:]``).

Options of the authors' code (train.py, invertible_layers.py, layers.py):

* ``split_prior='conditional'``: each split-off half ``z2`` gets a Gaussian
  prior whose mean and log-scale come from a zero-initialised conv3x3 of the
  kept half ``z1`` (Glow's ``Split``): ``h = (conv(z1) + b) * exp(3 logs)``,
  ``mean = h[..., 0::2]``, ``log_scale = h[..., 1::2]``; the final tensor gets
  a fixed N(0, 1), logit entries included (:meth:`FiRevNet.flow_train`'s
  ``log_prior``). With ``'none'`` the model's ``log_prior`` is N(0, 1) on all
  of ``z``. The prior does not change the map ``x -> z``.
* ``logit_bn``: ``BatchNorm1d(10)`` on the logits. Train mode
  (:meth:`FiRevNet.forward_train`) normalises by the batch statistics (over
  all devices) and returns new running statistics; eval mode
  (:meth:`FiRevNet.forward`) is the per-logit affine map with the running
  statistics, part of the bijection (its log-det is included), so metamers
  and inverses stay exact.
* ``dropout`` in every coupling subnet: only in train mode (a key given to
  :meth:`FiRevNet.forward_train`); ``forward`` / ``inverse`` are eval mode.
* ``zero_channels = n``: the authors' MNIST input ``torch.cat((zeros, zeros,
  x))`` (train.py ~L47) as a fixed input layer. The model takes the image
  ``[B, H, W, C]`` and puts ``n`` channels before its channels: in train
  mode (and for the data-dependent init) ``U(0, zero_channel_noise)``, the
  dequantisation noise those zeros carry in the authors' training; in eval
  mode the constant ``zero_channel_fill``. The flow runs on ``[H, W, C +
  n]`` (``latent_dim = H W (C + n)``) and :meth:`FiRevNet.inverse` returns
  the image channels of the flow's preimage. Attacks on ``logits`` perturb
  the image only, as in the authors' code, where the zeros are concatenated
  out of an attacker's reach. The test-time trap
  (docs/papers.md#the-input-layout-trap): the authors
  evaluate with exact zeros (fill 0) where training saw noise, which the
  first ActNorm amplifies ~443x; a fill inside the noise's support (its
  mean, ``zero_channel_noise / 2``) keeps test inputs on the training
  distribution.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax.layers import (DCT2D, ActNorm, Chain, Compute, Coupling,
                               FixedAffine, Layer, LogitTransform, Psi,
                               Reverse, SubnetSettings, conv3x3, count_params)
from advinv_jax.models._base import InvertibleModel, register_model
from advinv_jax.models._firevnet_settings import (DOWNSAMPLES, INIT_SQUEEZES,
                                                  PERMUTATIONS,
                                                  imagenet_layout)

_PAD_TAG = 1_000_003   # fold_in tag of the fixed channels' noise key


@dataclasses.dataclass(frozen=True)
class Stage:
  """``[down] -> steps -> [split]`` (static settings)."""

  down: Optional[Layer]
  steps: Chain
  split: bool


@dataclasses.dataclass(frozen=True)
class FiRevNet(InvertibleModel):
  """A bijective classifier ``x -> z`` (see the module docstring for z).

  Attributes:
    stages: the stages, in order.
    readout: ``'center'`` or ``'dct'``.
    pre: the fixed input map (``x -> 2x - 1``, or a
      :class:`~advinv_jax.layers.LogitTransform`).
  """

  stages: Tuple[Stage, ...] = ()
  readout: str = "center"
  pre: Layer = FixedAffine(2.0, -1.0)
  split_prior: str = "none"
  logit_bn: bool = False
  bn_momentum: float = 0.9
  bn_eps: float = 1e-5
  dropout: float = 0.0
  compute: Compute = Compute()
  zero_channels: int = 0
  zero_channel_noise: float = 0.0
  zero_channel_fill: float = 0.0

  @property
  def flow_shape(self) -> Tuple[int, int, int]:
    """``(H, W, C + zero_channels)``: what the flow maps (the image with the
    fixed channels before its own)."""
    h, w, c = self.input_shape
    return (h, w, c + self.zero_channels)

  @property
  def latent_dim(self) -> int:
    return int(np.prod(self.flow_shape))

  def pad(self, x, rng=None):
    """``x: f32[B, H, W, C]`` -> ``f32[B, H, W, C + zero_channels]``: the
    fixed channels first, ``U(0, zero_channel_noise)`` drawn with ``rng``
    (train mode) or the constant ``zero_channel_fill`` (``rng=None``: eval
    mode). The identity when ``zero_channels == 0``."""
    n = self.zero_channels
    if n == 0:
      return x
    shape = x.shape[:-1] + (n,)
    if rng is None or self.zero_channel_noise == 0:
      fixed = jnp.full(shape, self.zero_channel_fill, x.dtype)
    else:
      fixed = self.zero_channel_noise * jax.random.uniform(rng, shape, x.dtype)
    return jnp.concatenate([fixed, x], axis=-1)

  # ---------------------------------------------------------------- plan
  @functools.cached_property
  def _plan(self):
    """Static shapes (per example, batch 1): split shapes, final shape, the
    logit / rest index order into the flattened final tensor."""
    shape = (1,) + tuple(self.flow_shape)
    splits = []
    for st in self.stages:
      if st.down is not None:
        shape = st.down.output_shape(shape)
      shape = st.steps.output_shape(shape)
      if st.split:
        c = shape[-1]
        if c < 2:
          raise ValueError(f"cannot split a tensor of shape {shape} in half.")
        splits.append(shape[:-1] + (c - c // 2,))
        shape = shape[:-1] + (c // 2,)
    _, h, w, c = shape
    n = h * w * c
    k = self.num_classes
    if k > n:
      raise ValueError(
          f"num_classes={k} exceeds the {n} entries of the final tensor "
          f"[{h}, {w}, {c}] for the flow's input {self.flow_shape}; use "
          "fewer levels/stages (or a larger input).")
    if self.readout == "center" and c >= k:
      start = ((h // 2) * w + (w // 2)) * c
    else:
      start = 0
    order = np.concatenate([np.arange(start, start + k), np.arange(0, start),
                            np.arange(start + k, n)]).astype(np.int32)
    return {"splits": splits, "final": shape, "order": order,
            "inv_order": np.argsort(order).astype(np.int32),
            "contiguous": start == 0}

  def validate(self):
    """Raises ValueError for shapes this network cannot take (no tracing)."""
    self._plan  # pylint: disable=pointless-statement

  # ---------------------------------------------------------------- params
  def init(self, rng, x):
    """Data-dependent init (every ActNorm from the batch ``x``, its fixed
    channels as in training: :meth:`pad` in train mode)."""
    self.check_input(x)
    h, _ = self.pre.forward({}, self.pad(x, jax.random.fold_in(rng, _PAD_TAG)))
    params = {}
    for i, st in enumerate(self.stages):
      rng, sub = jax.random.split(rng)
      if st.down is not None:
        h, _ = st.down.forward({}, h)
      params[f"stage_{i}"] = p = st.steps.init(sub, h)
      h, _ = st.steps.forward(p, h)
      if st.split:
        c = h.shape[-1]
        if self.split_prior == "conditional":
          params[f"split_{i}"] = _zero_conv_init(c // 2, 2 * (c - c // 2))
        h = h[..., :c // 2]
    if self.logit_bn:
      k = self.num_classes
      params["logit_bn"] = {"scale": jnp.ones((k,)), "bias": jnp.zeros((k,)),
                            "mean": jnp.zeros((k,)), "var": jnp.ones((k,))}
    return params

  def param_count(self) -> int:
    """Number of scalars in ``params`` (computed abstractly, nothing is run;
    with ``logit_bn`` this includes its 2 x num_classes running
    statistics)."""
    x = jax.ShapeDtypeStruct((2,) + tuple(self.input_shape), jnp.float32)
    return count_params(jax.eval_shape(self.init, jax.random.PRNGKey(0), x))

  @property
  def final_dim(self) -> int:
    """Entries of the final tensor: ``z[:, :final_dim]`` (logits first)."""
    return int(np.prod(self._plan["final"][1:]))

  # ---------------------------------------------------------------- maps
  def _flow(self, params, x, rng=None, pad_rng=None):
    """``x`` -> ``(z, logdet, log_prior)`` before any logit BatchNorm.

    ``rng``: train mode (dropout on, plain unrolled loop); ``None``: eval.
    ``pad_rng``: the fixed channels' train-mode noise (:meth:`pad`).
    ``log_prior: f32[B]`` is the model's own prior density of ``z`` (see
    the module docstring), in nats.
    """
    self.check_input(x)
    x = self.pad(x, pad_rng)
    plan = self._plan
    b = x.shape[0]
    h, ld = self.pre.forward({}, x)
    outs, lp = [], jnp.zeros((b,), jnp.float32)
    for i, st in enumerate(self.stages):
      if st.down is not None:
        h, _ = st.down.forward({}, h)
      if rng is None:
        h, l = st.steps.forward(params[f"stage_{i}"], h)
      else:
        h, l = st.steps.apply_train(params[f"stage_{i}"],
                                    st.steps.consts(tuple(h.shape)), h,
                                    jax.random.fold_in(rng, i))
      ld = ld + l
      if st.split:
        c = h.shape[-1] // 2
        z1, z2 = h[..., :c], h[..., c:]
        if self.split_prior == "conditional":
          lp = lp + split_prior_logp(params[f"split_{i}"], z1, z2,
                                     self.compute.conv3x3_impl)
        else:
          lp = lp + std_normal_logp(z2.reshape(b, -1))
        outs.append(z2.reshape(b, -1))
        h = z1
    if self.readout == "dct":
      h, _ = DCT2D().forward({}, h)
    f = h.reshape(b, -1)
    lp = lp + std_normal_logp(f)
    if not plan["contiguous"]:
      f = jnp.take(f, plan["order"], axis=1)
    return jnp.concatenate([f] + outs, axis=1), ld, lp

  def forward(self, params, x):
    """``x: f32[B, H, W, C]`` -> ``(z: f32[B, d], logdet: f32[B])`` (eval
    mode: no dropout; the logit BatchNorm, if any, with running stats)."""
    z, ld, _ = self._flow(params, x)
    if self.logit_bn:
      k = self.num_classes
      zs, l = bn_eval(params["logit_bn"], z[:, :k], self.bn_eps)
      z, ld = jnp.concatenate([zs, z[:, k:]], axis=1), ld + l
    return z, ld

  def flow_train(self, params, x, rng=None):
    """Train-mode flow, per example: ``{"z", "logdet", "log_prior"}`` with
    ``z`` BEFORE the logit BatchNorm (what the likelihood scores, as the
    authors' objective)."""
    r_pad = None if rng is None else jax.random.fold_in(rng, _PAD_TAG)
    z, ld, lp = self._flow(params, x, rng if self.dropout else None, r_pad)
    return {"z": z, "logdet": ld, "log_prior": lp}

  def readout_train(self, params, out, axis_name=None):
    """Adds ``logits`` (train-mode BatchNorm over the whole batch on all
    devices of ``axis_name``, or the raw ``z_s``) and ``updates`` (new
    running statistics: ``{"logit_bn": {"mean", "var"}}``, else ``{}``)."""
    zs = out["z"][:, :self.num_classes]
    if not self.logit_bn:
      return dict(out, logits=zs, updates={})
    logits, stats = bn_train(params["logit_bn"], zs, self.bn_momentum,
                             self.bn_eps, axis_name)
    return dict(out, logits=logits, updates={"logit_bn": stats})

  def forward_train(self, params, x, rng=None, axis_name=None):
    """:meth:`flow_train` then :meth:`readout_train`."""
    return self.readout_train(params, self.flow_train(params, x, rng),
                              axis_name)

  def inverse_with_logdet(self, params, z):
    """``z: f32[B, d]`` -> ``(x, log|det dx/dz|: f32[B])`` (with
    ``zero_channels``: the image channels of the preimage and the flow's
    log-det on ``[H, W, C + zero_channels]``)."""
    plan = self._plan
    self._check_z(z)
    b = z.shape[0]
    bn_ld = jnp.zeros((b,), jnp.float32)
    if self.logit_bn:
      k = self.num_classes
      zs, bn_ld = bn_eval_inverse(params["logit_bn"], z[:, :k], self.bn_eps)
      z = jnp.concatenate([zs, z[:, k:]], axis=1)
    final = plan["final"]
    nf = int(np.prod(final))
    f = z[:, :nf]
    if not plan["contiguous"]:
      f = jnp.take(f, plan["inv_order"], axis=1)
    h = f.reshape((b,) + tuple(final[1:]))
    if self.readout == "dct":
      h, _ = DCT2D().inverse_with_logdet({}, h)
    offs = [nf]
    for s in plan["splits"]:
      offs.append(offs[-1] + int(np.prod(s)))
    split_parts = [z[:, offs[j]:offs[j + 1]].reshape((b,) + s[1:])
                   for j, s in enumerate(plan["splits"])]
    ld = jnp.zeros((b,), jnp.float32)
    for i in reversed(range(len(self.stages))):
      st = self.stages[i]
      if st.split:
        h = jnp.concatenate([h, split_parts.pop()], axis=-1)
      h, l = st.steps.inverse_with_logdet(params[f"stage_{i}"], h)
      ld = ld + l
      if st.down is not None:
        h = st.down.inverse({}, h)
    x, l = self.pre.inverse_with_logdet({}, h)
    return x[..., self.zero_channels:], ld + l + bn_ld

  def inverse(self, params, z):
    """``z: f32[B, d]`` -> ``x: f32[B, H, W, C]`` (exact inverse; with
    ``zero_channels``: the image channels of the flow's preimage, exact for
    the ``z`` of an input, whose fixed channels come back as the fill)."""
    return self.inverse_with_logdet(params, z)[0]

  def _check_z(self, z):
    shape = tuple(getattr(z, "shape", ()))
    if len(shape) != 2 or shape[1] != self.latent_dim or shape[0] == 0:
      raise ValueError(f"{type(self).__name__}.inverse expects z of shape "
                       f"[B, {self.latent_dim}], got {shape}; pass "
                       "model.forward's z (or model.merge(z_s, z_n)).")


# ------------------------------------------------------------ priors, BatchNorm
_LOG_2PI = float(np.log(2.0 * np.pi))


def std_normal_logp(v):
  """``v: f32[B, n]`` -> ``sum_k log N(v_k; 0, 1)``: ``f32[B]``."""
  return -0.5 * jnp.sum(jnp.square(v) + _LOG_2PI, axis=-1)


def _zero_conv_init(c_in, c_out):
  return {"w": jnp.zeros((3, 3, c_in, c_out), jnp.float32),
          "b": jnp.zeros((c_out,), jnp.float32),
          "logs": jnp.zeros((c_out,), jnp.float32)}


def split_prior_logp(p, z1, z2, conv3x3_impl="xla"):
  """Glow's conditional prior of a split-off half (invertible_layers.py
  ``Split.split2d_prior``).

  ``h = (conv3x3(z1, w) + b) * exp(3 logs)``; ``mean = h[..., 0::2]``,
  ``log_scale = h[..., 1::2]``;
  ``log p(z2 | z1) = sum -0.5 log(2 pi) - log_scale
  - 0.5 (z2 - mean)^2 exp(-2 log_scale)`` over ``(H, W, C)``.

  Args:
    p: ``{"w": f32[3, 3, C1, 2 C2], "b": f32[2 C2], "logs": f32[2 C2]}``
      (zero-initialised: the prior starts as N(0, 1)).
    z1: ``f32[B, H, W, C1]``, the kept half.
    z2: ``f32[B, H, W, C2]``, the split-off half.

  Returns:
    ``f32[B]`` log-densities in nats.
  """
  h = (conv3x3(z1, p["w"], conv3x3_impl) + p["b"]) * jnp.exp(3.0 * p["logs"])
  mean, logs = h[..., 0::2], h[..., 1::2]
  t = -0.5 * _LOG_2PI - logs - 0.5 * jnp.square(z2 - mean) * jnp.exp(-2 * logs)
  return jnp.sum(t, axis=(1, 2, 3))


def _bn_map(p, eps):
  """Eval-mode BatchNorm as ``y = a x + c`` per entry."""
  a = p["scale"] * jax.lax.rsqrt(p["var"] + eps)
  return a, p["bias"] - a * p["mean"]


def bn_eval(p, x, eps=1e-5):
  """``BatchNorm1d`` in eval mode on ``x: f32[B, K]``:
  ``y = (x - mean) / sqrt(var + eps) * scale + bias`` with the running
  ``mean``/``var``; returns ``(y, logdet: f32[B])``, ``logdet =
  sum_k log|scale_k / sqrt(var_k + eps)|``."""
  a, c = _bn_map(p, eps)
  ld = jnp.sum(jnp.log(jnp.abs(a)))
  return x * a + c, jnp.full((x.shape[0],), ld, jnp.float32)


def bn_eval_inverse(p, y, eps=1e-5):
  """Inverse of :func:`bn_eval`: ``(x, log|det dx/dy|)``."""
  a, c = _bn_map(p, eps)
  ld = -jnp.sum(jnp.log(jnp.abs(a)))
  return (y - c) / a, jnp.full((y.shape[0],), ld, jnp.float32)


def bn_train(p, x, momentum=0.9, eps=1e-5, axis_name=None):
  """``BatchNorm1d`` in train mode on ``x: f32[b, K]`` (this device's share).

  ``mu``/``var`` are the mean and biased variance over the GLOBAL batch
  (``lax.pmean`` over ``axis_name``: equal shards, so the same as one
  device on the whole batch); ``y = (x - mu) / sqrt(var + eps) * scale +
  bias``. New running statistics (PyTorch's convention, ``momentum`` = the
  weight of the batch; the authors' ``BatchNorm1d(10, momentum=0.9)``,
  train.py ~L63): ``mean' = (1 - m) mean + m mu``, ``var' = (1 - m) var +
  m var n / (n - 1)`` with ``n`` the global batch size.

  Returns:
    ``(y: f32[b, K], {"mean": f32[K], "var": f32[K]})`` (stop-gradient).
  """
  def pmean(v):
    return v if axis_name is None else jax.lax.pmean(v, axis_name)
  n = x.shape[0] * (1 if axis_name is None else jax.lax.axis_size(axis_name))
  mu = pmean(jnp.mean(x, axis=0))
  var = pmean(jnp.mean(jnp.square(x - mu), axis=0))
  y = (x - mu) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]
  m = momentum
  unbiased = var * n / max(n - 1, 1)
  stats = {"mean": (1 - m) * p["mean"] + m * mu,
           "var": (1 - m) * p["var"] + m * unbiased}
  return y, jax.lax.stop_gradient(stats)


# -------------------------------------------------------------------- builders
@dataclasses.dataclass(frozen=True)
class _Steps:
  """What every flow step of both layouts is built from: the step fields
  of ``config.model.firevnet`` and the subnet's settings (with how it all
  runs, ``config.model.compute`` resolved, :class:`Compute`)."""
  coupling: str
  affine_scale: str
  scale_floor: float
  permutation: str
  seed: int                # firevnet.perm_seed
  subnet: SubnetSettings   # its width: the layout's

  @classmethod
  def from_config(cls, cfg) -> "_Steps":
    fr = cfg.firevnet
    subnet = SubnetSettings(
        width=int(fr.width), min_std=float(fr.actnorm_std_floor),
        actnorm_eps=float(fr.actnorm_eps), dropout=float(fr.dropout),
        compute=Compute.from_config(cfg.compute))
    return cls(coupling=fr.coupling, affine_scale=fr.affine_scale,
               scale_floor=float(fr.scale_floor), permutation=fr.permutation,
               seed=int(fr.perm_seed), subnet=subnet)

  def chain(self, n: int, width: int, first_index: int) -> Chain:
    """``n`` steps ActNorm -> permutation -> coupling (subnet ``width``);
    ``first_index``: the first step's index in the network (its
    permutation's seed)."""
    subnet = dataclasses.replace(self.subnet, width=width)
    perm = PERMUTATIONS[self.permutation]
    steps = tuple(
        Chain((ActNorm(subnet.min_std, subnet.actnorm_eps),
               perm() if perm is Reverse else
               perm(seed=self.seed * 100003 + first_index + j),
               Coupling(subnet, self.coupling, self.affine_scale,
                        self.scale_floor)))
        for j in range(n))
    cp = subnet.compute
    # 'scan' also stores each level's step params stacked (one array per
    # parameter kind: a much smaller optimizer program, see Chain.stacked).
    return Chain(steps, reversible=cp.reversible,
                 reversible_loop=cp.reversible_loop,
                 stacked=cp.reversible_loop == "scan",
                 batch_chunk=cp.scan_batch_chunk)


def _firevnet(cfg, input_shape, num_classes, stages, readout, compute):
  """The :class:`FiRevNet` of ``stages`` with the options of
  ``config.model.firevnet`` (the input map and the authors'-code options,
  module docstring), shapes checked."""
  fr = cfg.firevnet
  pre = (LogitTransform(float(fr.input_alpha))
         if fr.input_transform == "logit" else FixedAffine(2.0, -1.0))
  model = FiRevNet(
      tuple(input_shape), num_classes, stages=tuple(stages), readout=readout,
      pre=pre,
      split_prior=fr.split_prior, logit_bn=bool(fr.logit_bn),
      bn_momentum=float(fr.logit_bn_momentum), dropout=float(fr.dropout),
      compute=compute, zero_channels=int(fr.zero_channels),
      zero_channel_noise=float(fr.zero_channel_noise),
      zero_channel_fill=float(fr.zero_channel_fill))
  model.validate()
  return model


@register_model("firevnet")
def build_firevnet(cfg, input_shape, num_classes):
  """The authors' MNIST fiRevNet.

  ``levels`` x [downsample -> ``depth`` steps -> split half off (all but the
  last level)]; step = ActNorm -> permutation -> coupling (subnet width
  ``width``). Reads ``config.model.firevnet`` (layout, steps, readout: the
  authors'-code options split_prior, logit_bn, dropout, actnorm_eps are in
  the module docstring) and ``config.model.compute`` (how it runs: the same
  function for every value); each field's default and meaning is in
  ``_firevnet_settings.py``.

  Raises:
    ValueError: H or W not divisible by ``2**levels``, or more classes than
      entries of the final tensor.
  """
  fr = cfg.firevnet
  levels, depth = int(fr.levels), int(fr.depth)
  down = DOWNSAMPLES[fr.downsample]
  s = _Steps.from_config(cfg)
  h, w, _ = input_shape
  f = 2 ** levels
  if h % f or w % f:
    raise ValueError(
        f"input_shape {tuple(input_shape)}: H and W must be divisible by "
        f"2**levels = {f} (levels={levels}); pad the images "
        f"(config.data.pad_to) or lower config.model.firevnet.levels.")
  stages = [Stage(down(), s.chain(depth, s.subnet.width, i * depth),
                  i < levels - 1) for i in range(levels)]
  return _firevnet(cfg, input_shape, num_classes, stages, "center",
                   s.subnet.compute)


@register_model("firevnet_imagenet", sections=("firevnet", "firevnet_imagenet"))
def build_firevnet_imagenet(cfg, input_shape, num_classes):
  """i-RevNet / fiRevNet48-style layout with a DCT readout.

  ``init_squeeze`` (1: none, 2: one psi, 4: two psis), then stages ``s`` of
  [psi if ``strides[s] == 2``] -> ``blocks[s]`` steps; no splits; the final
  map goes through an orthonormal 2-D DCT and the logits are its low-pass
  (DC) coefficients. ``channels`` are i-RevNet's nChannels (half the channels
  of a stage's tensor); as in i-RevNet's bottleneck, the coupling subnet of
  stage ``s`` has width ``max(1, channels[s] // 4)``. ``strides``: 1 or 2
  per stage (empty: all 2). Full config
  (configs/firevnet48_imagenet.py): blocks (6, 16, 72, 6), channels
  (24, 96, 384, 1536), strides 2, init_squeeze 2: 224x224x3 -> 7x7x3072.
  Reads ``config.model.firevnet_imagenet`` (the layout, checked with its
  settings) and the step settings of ``config.model.firevnet`` (all but its
  levels, depth, width, downsample; the config sets coupling 'additive' and
  permutation 'reverse', i-RevNet's swap) and ``config.model.compute``.
  """
  blocks, channels, strides, init_ds = imagenet_layout(cfg.firevnet_imagenet)
  s = _Steps.from_config(cfg)
  f = init_ds * int(np.prod(strides))
  h, w, _ = input_shape
  if h % f or w % f:
    raise ValueError(
        f"input_shape {tuple(input_shape)}: H and W must be divisible by "
        f"init_squeeze * prod(strides) = {f}; resize/pad the images or "
        "change config.model.firevnet_imagenet.blocks / init_squeeze.")
  stages = [Stage(Psi(), Chain(()), False)] * INIT_SQUEEZES[init_ds]
  first = 0
  for b, st, ch in zip(blocks, strides, channels):
    stages.append(Stage(Psi() if st == 2 else None,
                        s.chain(b, max(1, ch // 4), first), False))
    first += b
  return _firevnet(cfg, input_shape, num_classes, stages, "dct",
                   s.subnet.compute)
