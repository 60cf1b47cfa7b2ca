"""PyTorch port of advinv_jax's fiRevNet (benchmarks only).

Used by ``benchmarks/attacks.py`` to run torchattacks on exactly our network,
and by ``benchmarks/_torch_train_step.py`` (the PyTorch iCE training step)::

  net = make_torch_firevnet(model, params)     # torch.nn.Module, eval mode
  logits = net(x_nchw)                         # f32[B, C, H, W] -> f32[B, K]
  z, logdet = net.forward_full(x_nchw)         # f32[B, d], f32[B]
  full = make_torch_firevnet(model, params, full=True)
  z, logdet = full(x_nchw)                     # the same as forward_full

``model`` is a fiRevNet built by ``advinv_jax.models.build_model`` (config
names ``'firevnet'`` and ``'firevnet_imagenet'``); ``params`` its parameter
pytree (trained, perturbed or freshly initialised). The module computes
``model.logits(params, x)`` with ``x = x_nchw.transpose(0, 2, 3, 1)``.

How the NHWC layout of the JAX model maps to NCHW: every channel operation
(ActNorm, reverse / shuffle / LU 1x1 conv, the coupling's channel split and
its ``0::2`` / ``1::2`` shift / scale split, the level split) acts on the
channel axis only, so it is the same index operation on axis 1 instead of
axis -1. Spatial reorderings are rewritten for NCHW with the same output
channel order (squeeze: ``4 c + 2 di + dj``; psi: ``(2 di + dj) C + c``).
``forward`` computes only the logits: the split-off halves are dropped, and
the logits are read from the final tensor flattened row-major over
``(h, w, c)`` (NHWC order) at the model's fixed readout positions.
``forward_full`` computes ``model.forward(params, x)``: ``z`` in the same
order (the final tensor's logit entries, its other entries, then the
split-off halves of levels 1, 2, ..., each flattened row-major over
``(h, w, c)``) and the per-example ``logdet``, each layer contributing what
its JAX ``apply`` does: FixedAffine ``H W C log|scale|``, ActNorm
``H W sum(s)``, InvConv1x1 ``H W sum(log_s)``, affine coupling
``sum log scale`` (``exp_tanh``: ``sum tanh(u)``), every other layer 0.

Supported: every layer the two builders emit — FixedAffine, Squeeze, Psi,
ActNorm, Reverse, Shuffle, InvConv1x1 (``permutation='conv1x1'``), additive
and affine Coupling (``affine_scale`` 'sigmoid' and 'exp_tanh'), the 'center'
and 'dct' readouts. ``conv1x1_as_matmul``, ``conv3x3_impl``, ``reversible``
and ``reversible_loop`` change how the JAX model computes, not what: the port
ignores them. Any other layer raises a ValueError.

Parameters are copied (float32) into ``torch.nn.Parameter``s with
``requires_grad=False`` (pass ``trainable=True`` to change that); the
attacks only need input gradients, the training step trains them.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from advinv_jax.layers import (ActNorm, Chain, Coupling,
                               FixedAffine, InvConv1x1, Psi, Reverse, Shuffle,
                               Squeeze, dct_matrix)

__all__ = ["TorchFiRevNet", "check_full_forward", "check_port",
           "logits_diff", "make_torch_firevnet"]


def _t(a):
  return torch.tensor(np.array(a, dtype=np.float32))


def _nhwc_flat(x):
  """``f32[B, C, H, W]`` -> ``f32[B, H W C]``, row-major over ``(h, w, c)``."""
  return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)


class _NoLogdet:
  """Mixin of the volume-preserving layers: ``forward_ld`` adds 0."""

  def forward_ld(self, x):
    return self(x), 0.0


class _Module(torch.nn.Module):
  """Base: parameters from numpy arrays, (non-)trainable."""

  def __init__(self, trainable):
    super().__init__()
    self._trainable = trainable

  def _param(self, name, a):
    self.register_parameter(
        name, torch.nn.Parameter(_t(a), requires_grad=self._trainable))


class _Affine(torch.nn.Module):
  """``x * scale + shift`` (FixedAffine); logdet ``C H W log|scale|``."""

  def __init__(self, scale, shift):
    super().__init__()
    self.scale, self.shift = float(scale), float(shift)

  def forward(self, x):
    return x * self.scale + self.shift

  def forward_ld(self, x):
    n = x.shape[1] * x.shape[2] * x.shape[3]
    return self(x), n * math.log(abs(self.scale))


class _Squeeze(_NoLogdet, torch.nn.Module):
  """Glow squeeze: ``y[b, 4c + 2di + dj, i, j] = x[b, c, 2i + di, 2j + dj]``."""

  def forward(self, x):
    b, c, h, w = x.shape
    y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return y.reshape(b, 4 * c, h // 2, w // 2)


class _Psi(_NoLogdet, torch.nn.Module):
  """i-RevNet psi:
  ``y[b, (2di + dj) C + c, i, j] = x[b, c, 2i + di, 2j + dj]``."""

  def forward(self, x):
    b, c, h, w = x.shape
    y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(b, 4 * c, h // 2, w // 2)


class _ActNorm(_Module):
  """``(x + b) * exp(s)`` per channel; logdet ``H W sum(s)``."""

  def __init__(self, p, trainable):
    super().__init__(trainable)
    self._param("b", p["b"])
    self._param("s", p["s"])

  def forward(self, x):
    return (x + self.b[:, None, None]) * torch.exp(self.s)[:, None, None]

  def forward_ld(self, x):
    return self(x), x.shape[2] * x.shape[3] * torch.sum(self.s)


class _Reverse(_NoLogdet, torch.nn.Module):

  def forward(self, x):
    return torch.flip(x, (1,))


class _Gather(_NoLogdet, torch.nn.Module):
  """``y[:, k] = x[:, perm[k]]`` (Shuffle)."""

  def __init__(self, perm):
    super().__init__()
    self.register_buffer("perm", torch.tensor(np.asarray(perm, np.int64)))

  def forward(self, x):
    return torch.index_select(x, 1, self.perm)


class _InvConv1x1(_Module):
  """``y[:, o] = sum_c W[o, c] x[:, c]``, ``W = (L U)[perm]`` as in JAX."""

  def __init__(self, p, consts, trainable):
    super().__init__(trainable)
    self._param("l", p["l"])
    self._param("u", p["u"])
    self._param("log_s", p["log_s"])
    self.register_buffer("perm",
                         torch.tensor(np.asarray(consts["perm"], np.int64)))
    self.register_buffer("sign", _t(consts["sign"]))

  def forward(self, x):
    c = self.log_s.shape[0]
    eye = torch.eye(c, dtype=x.dtype, device=x.device)
    lower = torch.tril(self.l, -1) + eye
    upper = torch.triu(self.u, 1) + torch.diag(
        self.sign * torch.exp(self.log_s))
    w = torch.index_select(lower @ upper, 0, self.perm)
    return F.conv2d(x, w[:, :, None, None])

  def forward_ld(self, x):
    return self(x), x.shape[2] * x.shape[3] * torch.sum(self.log_s)


class _Subnet(_Module):
  """conv3x3 -> ActNorm -> ReLU -> conv1x1 -> ActNorm -> ReLU -> ZeroConv3x3."""

  def __init__(self, p, trainable):
    super().__init__(trainable)
    hwio = lambda k: np.asarray(k).transpose(3, 2, 0, 1)   # HWIO -> OIHW
    self._param("w1", hwio(p["w1"]))
    self.a1 = _ActNorm(p["a1"], trainable)
    self._param("w2", np.asarray(p["w2"]).T[:, :, None, None])   # [in, out]
    self.a2 = _ActNorm(p["a2"], trainable)
    self._param("w3", hwio(p["w3"]))
    self._param("b3", p["b3"])
    self._param("logs3", p["logs3"])

  def forward(self, x):
    h = F.relu(self.a1(F.conv2d(x, self.w1, padding=1)))
    h = F.relu(self.a2(F.conv2d(h, self.w2)))
    out = F.conv2d(h, self.w3, self.b3, padding=1)
    return out * torch.exp(3.0 * self.logs3)[:, None, None]


class _Coupling(_Module):
  """Additive / affine coupling; ``x_a = x[:, :C//2]`` passes through."""

  def __init__(self, layer, p, channels, trainable):
    super().__init__(trainable)
    self.ca = channels // 2
    self.coupling = layer.coupling
    self.affine_scale = layer.affine_scale
    self.scale_floor = float(layer.scale_floor)
    self.net = _Subnet(p["net"], trainable)

  def _scale(self, u):
    if self.affine_scale == "sigmoid":
      f = self.scale_floor
      return f + (1.0 - f) * torch.sigmoid(u + 2.0)
    return torch.exp(torch.tanh(u))

  def forward(self, x):
    xa, xb = x[:, :self.ca], x[:, self.ca:]
    h = self.net(xa)
    if self.coupling == "additive":
      yb = xb + h
    else:
      yb = (xb + h[:, 0::2]) * self._scale(h[:, 1::2])
    return torch.cat([xa, yb], dim=1)

  def forward_ld(self, x):
    """``(y, logdet)``: additive 0, affine ``sum log scale`` per example."""
    xa, xb = x[:, :self.ca], x[:, self.ca:]
    h = self.net(xa)
    if self.coupling == "additive":
      return torch.cat([xa, xb + h], dim=1), 0.0
    u = h[:, 1::2]
    if self.affine_scale == "sigmoid":
      scale = self._scale(u)
      log_scale = torch.log(scale)
    else:                                       # exp_tanh: log scale = tanh u
      log_scale = torch.tanh(u)
      scale = torch.exp(log_scale)
    yb = (xb + h[:, 0::2]) * scale
    return torch.cat([xa, yb], dim=1), torch.sum(log_scale, dim=(1, 2, 3))


class _KeepHalf(torch.nn.Module):
  """The level split: keeps ``x[:, :C//2]`` (the rest is factored out;
  ``TorchFiRevNet.forward_full`` collects it into ``z``)."""

  def forward(self, x):
    return x[:, :x.shape[1] // 2]


class _DCT2D(_NoLogdet, torch.nn.Module):
  """Orthonormal 2-D DCT-II over (H, W) per channel."""

  def __init__(self, h, w):
    super().__init__()
    self.register_buffer("dh", _t(dct_matrix(h)))
    self.register_buffer("dw", _t(dct_matrix(w)))

  def forward(self, x):
    return torch.einsum("kh,bchw,lw->bckl", self.dh, x, self.dw)


def _unsupported(layer, where):
  return ValueError(
      f"make_torch_firevnet: no PyTorch port of layer {layer!r} ({where}); "
      "supported: FixedAffine, Squeeze, Psi, ActNorm, Reverse, Shuffle, "
      "InvConv1x1, Coupling (additive/affine) and Chains of them. Port the "
      "layer in benchmarks/_torch_firevnet.py or use a supported config.")


def _convert(layer, p, shape, trainable, where):
  """Torch modules for ``layer`` with params ``p`` on NHWC ``shape``.

  Returns ``(modules, output_shape)``.
  """
  c = shape[-1]
  if isinstance(layer, Chain):
    p = layer.unstack_params(p)
    mods = []
    for i, sub in enumerate(layer.layers):
      m, shape = _convert(sub, p[f"{i:03d}"], shape, trainable,
                          f"{where}/{i:03d}")
      mods += m
    return mods, shape
  out = layer.output_shape(shape)
  if isinstance(layer, FixedAffine):
    return [_Affine(layer.scale, layer.shift)], out
  if isinstance(layer, Squeeze):
    return [_Squeeze()], out
  if isinstance(layer, Psi):
    return [_Psi()], out
  if isinstance(layer, ActNorm):
    return [_ActNorm(p, trainable)], out
  if isinstance(layer, Reverse):
    return [_Reverse()], out
  if isinstance(layer, Shuffle):
    return [_Gather(layer.consts(shape)["perm"])], out
  if isinstance(layer, InvConv1x1):
    return [_InvConv1x1(p, layer.consts(shape), trainable)], out
  if isinstance(layer, Coupling):
    if layer.coupling not in ("additive", "affine") or (
        layer.affine_scale not in ("sigmoid", "exp_tanh")):
      raise _unsupported(layer, where)
    return [_Coupling(layer, p, c, trainable)], out
  raise _unsupported(layer, where)


class TorchFiRevNet(torch.nn.Module):
  """The fiRevNet in PyTorch.

  ``forward``: the logits, ``f32[B, C, H, W] -> f32[B, K]`` (with
  ``full=True``: what ``forward_full`` returns). ``forward_full``: our
  ``model.forward``, ``(z: f32[B, d], logdet: f32[B])``. Build it with
  :func:`make_torch_firevnet`.
  """

  def __init__(self, body, input_shape, readout_index, order=None,
               full=False):
    super().__init__()
    self.body = torch.nn.Sequential(*body)
    self.input_shape = tuple(input_shape)                    # (H, W, C)
    self.full = bool(full)
    self.register_buffer("readout_index",
                         torch.tensor(np.asarray(readout_index, np.int64)))
    # z's order of the flattened final tensor (None: already in order).
    self.register_buffer("order", None if order is None else
                         torch.tensor(np.asarray(order, np.int64)))

  def _check(self, x):
    h, w, c = self.input_shape
    if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
      raise ValueError(f"TorchFiRevNet expects NCHW images [B, {c}, {h}, {w}]"
                       f", got {tuple(x.shape)}; transpose NHWC batches with "
                       "x.permute(0, 3, 1, 2).")

  def forward(self, x):
    if self.full:
      return self.forward_full(x)
    self._check(x)
    f = self.body(x)
    f = f.permute(0, 2, 3, 1).reshape(f.shape[0], -1)        # NHWC row-major
    return torch.index_select(f, 1, self.readout_index)

  def forward_full(self, x):
    """``x: f32[B, C, H, W]`` -> ``(z: f32[B, d], logdet: f32[B])``, equal to
    our ``model.forward(params, x.permute(0, 2, 3, 1))``."""
    self._check(x)
    ld = x.new_zeros(x.shape[0])
    outs = []
    for m in self.body:
      if isinstance(m, _KeepHalf):
        c = x.shape[1] // 2
        outs.append(_nhwc_flat(x[:, c:]))
        x = x[:, :c]
      else:
        x, l = m.forward_ld(x)
        ld = ld + l
    f = _nhwc_flat(x)
    if self.order is not None:
      f = torch.index_select(f, 1, self.order)
    return torch.cat([f] + outs, dim=1), ld


def make_torch_firevnet(model, params, trainable=False, full=False):
  """A ``torch.nn.Module`` (eval mode) computing ``model.logits(params, .)``.

  Args:
    model: a fiRevNet from ``advinv_jax.models.build_model`` (``'firevnet'``
      or ``'firevnet_imagenet'``; a ``BatchChunkedModel`` is unwrapped: it
      computes the same function).
    params: its parameter pytree (JAX or numpy arrays); copied as float32.
    trainable: whether the copied parameters require gradients.
    full: the module's ``forward`` returns ``model.forward(params, .)``,
      ``(z, logdet)``, instead of the logits (``forward_full`` does either
      way).

  Returns:
    A module mapping ``f32[B, C, H, W]`` (NCHW) to ``f32[B, num_classes]``
    (``full``: to ``(f32[B, d], f32[B])``).

  Raises:
    ValueError: ``model`` is not a fiRevNet, or holds a layer with no port.
  """
  model = getattr(model, "base", None) or model     # BatchChunkedModel
  stages = getattr(model, "stages", None)
  readout = getattr(model, "readout", None)
  if stages is None or readout not in ("center", "dct"):
    raise ValueError(
        f"make_torch_firevnet needs a fiRevNet ('firevnet' or "
        f"'firevnet_imagenet' from build_model) with readout 'center' or "
        f"'dct', got {type(model).__name__} (readout={readout!r}).")
  if getattr(model, "zero_channels", 0) or getattr(model, "logit_bn", False):
    raise ValueError("make_torch_firevnet has no port of the fixed input "
                     "channels (zero_channels) or the logit BatchNorm; port "
                     "a model without them.")
  shape = (1,) + tuple(model.input_shape)
  body, shape = _convert(model.pre, {}, shape, trainable, "pre")
  for i, st in enumerate(stages):
    if st.down is not None:
      m, shape = _convert(st.down, {}, shape, trainable, f"stage_{i}/down")
      body += m
    m, shape = _convert(st.steps, params[f"stage_{i}"], shape, trainable,
                        f"stage_{i}")
    body += m
    if st.split:
      body.append(_KeepHalf())
      shape = shape[:-1] + (shape[-1] // 2,)
  _, h, w, c = shape
  if readout == "dct":
    body.append(_DCT2D(h, w))
  k = model.num_classes
  # The logits' positions in the final tensor flattened over (h, w, c), as in
  # FiRevNet._plan: channels 0..k-1 at the centre for 'center' when c >= k,
  # else the first k entries.
  start = ((h // 2) * w + (w // 2)) * c if readout == "center" and c >= k else 0
  # z's order of the flattened final tensor (logits first), as in forward.
  plan = model._plan  # pylint: disable=protected-access
  order = None if plan["contiguous"] else plan["order"]
  net = TorchFiRevNet(body, model.input_shape, np.arange(start, start + k),
                      order=order, full=full)
  return net.eval()


def logits_diff(torch_logits, jax_logits):
  """``{"max_abs_diff", "max_abs_logit", "rel_diff"}`` (Python floats):
  max |torch - jax| over the logits, max |jax logit|, and their ratio."""
  t = np.asarray(torch_logits, np.float64)
  j = np.asarray(jax_logits, np.float64)
  diff = float(np.max(np.abs(t - j)))
  top = float(np.max(np.abs(j)))
  return {"max_abs_diff": diff, "max_abs_logit": top,
          "rel_diff": diff / top if top > 0 else diff}


def check_port(model, params, x, net=None):
  """Compares the port's logits with ``model.logits`` on NHWC ``x``.

  Args:
    model, params: as for :func:`make_torch_firevnet`.
    x: ``f32[B, H, W, C]`` images.
    net: the port (default: built here).

  Returns:
    :func:`logits_diff`'s dict.
  """
  ours = np.asarray(model.logits(params, x))
  if net is None:
    net = make_torch_firevnet(model, params)
  with torch.no_grad():
    theirs = net(torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy()))
  return logits_diff(theirs.numpy(), ours)


def _rel(theirs, ours):
  t = np.asarray(theirs, np.float64)
  j = np.asarray(ours, np.float64)
  diff = float(np.max(np.abs(t - j)))
  top = float(np.max(np.abs(j)))
  return diff / top if top > 0 else diff


def check_full_forward(model, params, x, net=None):
  """Compares the port's ``(z, logdet)`` with ``model.forward`` on NHWC ``x``.

  Args:
    model, params: as for :func:`make_torch_firevnet`.
    x: ``f32[B, H, W, C]`` images.
    net: the port (default: built here).

  Returns:
    ``{"z_rel", "logdet_rel", "max_abs_z", "max_abs_logdet"}`` (Python
    floats): max |torch - jax| / max |jax| of ``z`` and of ``logdet``, and
    the two maxima.
  """
  import jax  # pylint: disable=import-outside-toplevel
  z, ld = jax.jit(model.forward)(params, x)
  z, ld = np.asarray(z), np.asarray(ld)
  if net is None:
    net = make_torch_firevnet(model, params)
  with torch.no_grad():
    zt, ldt = net.forward_full(
        torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy()))
  if zt.shape != z.shape or ldt.shape != ld.shape:
    raise AssertionError(f"shapes differ: torch z {tuple(zt.shape)}, logdet "
                         f"{tuple(ldt.shape)}; jax {z.shape}, {ld.shape}")
  return {"z_rel": _rel(zt.numpy(), z), "logdet_rel": _rel(ldt.numpy(), ld),
          "max_abs_z": float(np.max(np.abs(z))),
          "max_abs_logdet": float(np.max(np.abs(ld)))}


def perturb_params(params, key, scale):
  """``params`` plus ``N(0, scale^2)`` noise on every leaf (JAX arrays): a
  freshly initialised coupling is the identity, so checks perturb it."""
  import jax  # pylint: disable=import-outside-toplevel
  leaves, tdef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree_util.tree_unflatten(tdef, [
      a + scale * jax.random.normal(k, a.shape, a.dtype)
      for a, k in zip(leaves, keys)])


def _main():
  """Checks the port on the benchmark and the authors' configurations."""
  import jax
  from advinv_jax.models import build_model

  # (name, config, input shape, perturbation scale): a fresh coupling is the
  # identity, so the parameters are perturbed too; 0.1 would blow the 48
  # width-128 steps of the authors' network up to logits ~1e28.
  cases = [
      ("benchmark (levels 3, depth 4, width 32, affine, shuffle)",
       dict(levels=3, depth=4, width=32), (32, 32, 1), 0.1),
      ("authors (levels 3, depth 16, width 128, additive, reverse)",
       dict(levels=3, depth=16, width=128, coupling="additive",
            permutation="reverse"), (32, 32, 1), 0.02),
  ]
  for name, kw, shape, scale in cases:
    cfg = {"name": "firevnet", "firevnet": kw}
    model = build_model(cfg, shape, 10)
    x = jax.random.uniform(jax.random.PRNGKey(1), (8,) + shape)
    params = model.init(jax.random.PRNGKey(0), x)
    for tag, p in (("fresh", params),
                   (f"perturbed {scale}",
                    perturb_params(params, jax.random.PRNGKey(2), scale))):
      d = check_port(model, p, x)
      print(f"{name} [{tag}]: max |logit| {d['max_abs_logit']:.3g}, max "
            f"|torch - jax| = {d['max_abs_diff']:.2e} (relative "
            f"{d['rel_diff']:.2e})", flush=True)
      f = check_full_forward(model, p, x)
      print(f"  full forward: z relative {f['z_rel']:.2e} (max |z| "
            f"{f['max_abs_z']:.3g}), logdet relative {f['logdet_rel']:.2e} "
            f"(max |logdet| {f['max_abs_logdet']:.3g})", flush=True)


if __name__ == "__main__":
  _main()
