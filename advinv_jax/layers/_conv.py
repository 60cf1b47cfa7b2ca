"""Convolution kernels of the coupling subnets and their gradients.

3x3 'SAME' convolutions in several exact forms (XLA's, im2col, output-shift,
XLA forward with matrix-form gradients), the stride-2 variants, the 1x1
convolution as a matmul, and ``matmul_lowp`` (bfloat16 operands, float32
accumulation, custom VJP). All are pure functions of ``(x, w)`` on NHWC
float32 activations and HWIO kernels.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from advinv_jax import platform
from advinv_jax.layers._base import match_cotangent_axes

_DN = ("NHWC", "HWIO", "NHWC")


CONV3X3_IMPLS = ("auto", "xla", "im2col", "outshift", "xla_gemm_grad")


def default_conv3x3_impl() -> str:
  """The platform default :func:`conv3x3` impl of the default backend
  (``advinv_jax.platform``: ``'xla_gemm_grad'`` on CPU, where it was
  measured fastest, ``'xla'`` on GPU/TPU)."""
  return platform.defaults().conv3x3_impl


def resolve_conv3x3_impl(impl: str) -> str:
  """``''`` -> :func:`default_conv3x3_impl`; else ``impl`` (validated)."""
  if impl == "":
    return default_conv3x3_impl()
  if impl not in CONV3X3_IMPLS:
    raise ValueError(f"config.model.compute.conv3x3_impl={impl!r}; choose "
                     f"one of {list(CONV3X3_IMPLS)} or '' (platform "
                     "default).")
  return impl


def _shift(x, dy, dx):
  """``x`` zero-padded by 1 (already) and cropped at offset ``(dy, dx)``."""
  h, w = x.shape[1] - 2, x.shape[2] - 2
  return x[:, dy:dy + h, dx:dx + w]


def conv3x3(x, w, impl: str = "xla", stride: int = 1,
            operand_dtype: str = "float32"):
  """3x3 'SAME' (zero-padded) convolution, ``w: f32[3, 3, Cin, Cout]``.

  ``operand_dtype='bfloat16'``: ``x`` and ``w`` are rounded to bfloat16, the
  convolution (and its gradients) runs on bfloat16 arrays (accumulating in
  float32 on GPU/TPU) and the result is returned as ``x.dtype``; any
  ``impl``, forward-mode autodiff too with ``'xla'``.

  ``x: f32[B, H, W, Cin]`` -> ``f32[B, ceil(H/stride), ceil(W/stride),
  Cout]``, padded like ``lax.conv_general_dilated(..., "SAME")``.

  ``impl`` (all exact up to float rounding), for ``stride=1``:

  * ``'xla'``: ``lax.conv_general_dilated``.
  * ``'im2col'``: the 9 shifted copies of ``x`` are concatenated on the
    channel axis and multiplied by ``w`` as a ``[9 Cin, Cout]`` matrix.
  * ``'outshift'``: ``x`` is multiplied by ``w`` as a ``[Cin, 9 Cout]``
    matrix and the 9 output groups are shifted and summed.
  * ``'auto'``: ``im2col`` if ``Cin < Cout`` else ``outshift``.
  * ``'xla_gemm_grad'``: forward by XLA's convolution, gradients by matrix
    products (XLA CPU computes the filter gradient 2-3x slower than the
    forward, and the input gradient of a thin-input conv slowly): ``Cin <
    Cout``: ``dx`` = 9 shifted slices of ``g @ w^T``, ``dw = im2col(x)^T g``
    (a convolution when ``Cin < 4``); otherwise ``dx`` as a convolution and
    ``dw = x^T`` times 9 shifted copies of ``g``. **Reverse mode only** (a
    ``custom_vjp``): ``jax.jvp`` / ``jax.jacfwd`` need ``'xla'``. With
    ``stride=2``: XLA forward, gradients of the space-to-depth form (also a
    ``custom_vjp``). All gradient convolutions are written in the form XLA
    CPU runs fast inside loops too (:func:`_conv_input_grad`).

  For ``stride=2`` the other impls but ``'xla'`` use the space-to-depth form:
  ``x`` is rearranged to ``[B, H/2, W/2, 4 Cin]`` and convolved (stride 1,
  XLA) with the equivalent ``2x2x4Cin`` kernel, so the input gradient is a
  stride-1 convolution instead of XLA's slow input-dilated one (odd ``H`` or
  ``W`` fall back to ``'xla'``).

  Measured on 2 CPU cores: in isolation (batch 128, 16x16) the matmul
  forms' forward+backward were 2-3x faster than ``'xla'`` for the subnet's
  thin-to-wide (6 -> 128) and wide-to-thin (128 -> 6) convs, but inside the
  whole fiRevNet training step ``'auto'`` was 15-35% *slower* than ``'xla'``;
  ``'xla_gemm_grad'`` (XLA forward, matmul gradients) is faster in the whole
  step and is the CPU default (:func:`default_conv3x3_impl`).
  """
  if impl not in CONV3X3_IMPLS:
    raise ValueError(f"conv3x3 impl={impl!r}; choose one of {CONV3X3_IMPLS}.")
  if stride not in (1, 2):
    raise ValueError(f"conv3x3 stride={stride}; only 1 and 2 are supported.")
  if _check_matmul_dtype(operand_dtype) != "float32":
    return _conv3x3(x.astype(operand_dtype), w.astype(operand_dtype), impl,
                    stride).astype(x.dtype)
  return _conv3x3(x, w, impl, stride)


def _conv3x3(x, w, impl, stride):
  cin, cout = w.shape[2], w.shape[3]
  if stride == 2:
    h, wd = x.shape[1], x.shape[2]
    if impl == "xla" or h % 2 or wd % 2:
      return _xla_conv3x3(x, w, stride)
    if impl == "xla_gemm_grad":
      return _conv3x3_stride2_fast_grad(x, w)
    return _conv3x3_stride2_s2d(x, w)
  if impl == "auto":
    impl = "im2col" if cin < cout else "outshift"
  if impl == "xla":
    return _xla_conv3x3(x, w)
  if impl == "xla_gemm_grad":
    return _conv3x3_gemm_grad(x, w)
  if impl == "im2col":
    return _im2col3x3(x) @ w.reshape(9 * cin, cout)
  return _outshift3x3(x, w)


def _xla_conv3x3(x, w, stride: int = 1):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME",
                                      dimension_numbers=_DN)


def _im2col3x3(x):
  """``f32[B, H, W, 9 C]``: the 9 zero-padded shifts of ``x``, (i, j) order."""
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.concatenate(
      [_shift(xp, i, j) for i in range(3) for j in range(3)], axis=-1)


def _outshift3x3(x, w):
  """``conv3x3`` as ``x @ w`` (``Cin -> 9 Cout``) and 9 shifted adds."""
  cin, cout = w.shape[2], w.shape[3]
  u = jnp.einsum("bhwc,ck->bhwk", x,
                 w.transpose(2, 0, 1, 3).reshape(cin, 9 * cout))
  up = jnp.pad(u, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = None
  for k in range(9):
    part = _shift(up, k // 3, k % 3)[..., k * cout:(k + 1) * cout]
    out = part if out is None else out + part
  return out


@jax.custom_vjp
def _conv3x3_gemm_grad(x, w):
  """Stride-1 3x3 'SAME' conv (XLA) whose gradients are matrix products.

  A ``custom_vjp`` (reverse mode only): measured against a ``custom_jvp``
  that writes the tangent in matmul forms (so that JAX derives the same
  products by transposition), this was 14-21% faster in the authors'
  fiRevNet gradient (batch 32 / 128; a throwaway interleaved timing, see
  benchmarks/README.md), the ``custom_jvp`` no faster than XLA.
  """
  return _xla_conv3x3(x, w)


def _gemm_grad_fwd(x, w):
  return _xla_conv3x3(x, w), (x, w)


def _shifted_back(t, h, wd):
  """The 9 copies ``t[n - (i, j) + 1]`` (zero outside) in (i, j) order: the
  adjoints of the shifts in :func:`_im2col3x3`."""
  tp = jnp.pad(t, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return [tp[:, 2 - i:2 - i + h, 2 - j:2 - j + wd] for i in range(3)
          for j in range(3)]


_SAME3 = ((1, 1), (1, 1))


def _conv_input_grad(g, w, padding=_SAME3):
  """The input gradient of the stride-1 conv ``conv(x, w, padding)`` (NHWC,
  HWIO) applied to ``g``: a conv of ``g`` with the flipped, in/out-swapped
  kernel, written as an ordinary (NHWC, HWIO) convolution.

  JAX's own transpose rule emits a convolution with swapped kernel dimension
  labels. XLA CPU rewrites that into this form in straight-line code but not
  inside a ``while`` loop (``lax.scan`` / ``fori_loop``), where it falls back
  to a generic kernel ~10x slower (measured: 16 scanned coupling subnets,
  gradient 4.9 s vs 0.59 s in this form; tests/test_layers.py checks the
  compiled loop for non-canonical convolutions).
  """
  kh, kw = w.shape[:2]
  pad = ((kh - 1 - padding[0][0], kh - 1 - padding[0][1]),
         (kw - 1 - padding[1][0], kw - 1 - padding[1][1]))
  return jax.lax.conv_general_dilated(
      g, jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2)), (1, 1), pad,
      dimension_numbers=_DN)


def _conv_filter_grad(x, g, padding=_SAME3):
  """The filter gradient of the stride-1 conv ``conv(x, w, padding)``
  applied to ``g`` (``f32[kh, kw, Cin, Cout]``): the correlation of ``x``
  with ``g`` over batch and space, written as an ordinary convolution with
  batch and channel axes swapped (``x`` as ``[Cin, H, W, B]``, ``g`` as a
  ``[H', W', B, Cout]`` kernel), the form XLA CPU's fast convolution takes
  inside loops too (see :func:`_conv_input_grad`)."""
  dw = jax.lax.conv_general_dilated(
      jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)), (1, 1),
      padding, dimension_numbers=_DN)                  # [Cin, kh, kw, Cout]
  return jnp.transpose(dw, (1, 2, 0, 3))


def _gemm_grad_bwd(res, g):
  x, w = res
  cin, cout = w.shape[2], w.shape[3]
  h, wd = x.shape[1], x.shape[2]
  if cin < cout:
    # dx[n] = sum_ij g[n - (i, j) + 1] w_ij^T: one [Cout, 9 Cin] product of
    # g, then 9 shifted adds (XLA's transposed conv is slow for thin Cin).
    u = g @ w.transpose(3, 0, 1, 2).reshape(cout, 9 * cin)
    dx = sum(p[..., k * cin:(k + 1) * cin]
             for k, p in enumerate(_shifted_back(u, h, wd)))
    if cin < 4:   # a 9 Cin-row product is too thin to pay; XLA's dw wins
      dw = _conv_filter_grad(x, g)
    else:
      # dw[i, j] = sum_n x_pad[n + (i, j)]^T g[n]: im2col(x)^T g.
      dw = (_im2col3x3(x).reshape(-1, 9 * cin).T @ g.reshape(-1, cout))
      dw = dw.reshape(3, 3, cin, cout)
  else:
    dx = _conv_input_grad(g, w)
    # dw[i, j] = sum_n x[n]^T g[n - (i, j) + 1]: x^T times 9 shifts of g.
    cols = jnp.concatenate(_shifted_back(g, h, wd), axis=-1)
    dw = (x.reshape(-1, cin).T @ cols.reshape(-1, 9 * cout)).reshape(
        cin, 3, 3, cout).transpose(1, 2, 0, 3)
  return (match_cotangent_axes(dx.astype(x.dtype), x),
          match_cotangent_axes(dw.astype(w.dtype), w))


_conv3x3_gemm_grad.defvjp(_gemm_grad_fwd, _gemm_grad_bwd)


@jax.custom_vjp
def _conv3x3_stride2_fast_grad(x, w):
  """Stride-2 'SAME' 3x3 conv: XLA forward, gradients of the space-to-depth
  form as stride-1 convolutions in the form XLA CPU runs fast, also inside
  loops (:func:`_conv_input_grad`). Reverse mode only."""
  return _xla_conv3x3(x, w, 2)


def _s2_fwd(x, w):
  return _xla_conv3x3(x, w, 2), (x, w)


def _s2_bwd(res, g):
  x, w = res
  blocks, blocks_vjp = jax.vjp(_s2d_blocks, x)
  k, k_vjp = jax.vjp(_s2d_kernel, w)
  valid = ((0, 0), (0, 0))
  dx = blocks_vjp(_conv_input_grad(g, k, valid))[0]
  dw = k_vjp(_conv_filter_grad(blocks, g, valid))[0]
  return (match_cotangent_axes(dx.astype(x.dtype), x),
          match_cotangent_axes(dw.astype(w.dtype), w))


_conv3x3_stride2_fast_grad.defvjp(_s2_fwd, _s2_bwd)


def _s2d_blocks(x):
  """``x: [B, H, W, C]`` (even H, W) -> its 2x2 blocks ``[B, H/2 + 1,
  W/2 + 1, 4 C]``, zero-padded by one block at the bottom and right."""
  b, h, wd, c = x.shape
  blocks = x.reshape(b, h // 2, 2, wd // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  blocks = blocks.reshape(b, h // 2, wd // 2, 4 * c)
  return jnp.pad(blocks, ((0, 0), (0, 1), (0, 1), (0, 0)))


def _s2d_kernel(w):
  """The ``[2, 2, 4 Cin, Cout]`` block kernel of a 3x3 stride-2 kernel."""
  c = w.shape[2]
  k = jnp.pad(w, ((0, 1), (0, 1), (0, 0), (0, 0)))           # [4, 4, c, o]
  k = k.reshape(2, 2, 2, 2, c, -1).transpose(0, 2, 1, 3, 4, 5)
  return k.reshape(2, 2, 4 * c, -1)


def _conv3x3_stride2_s2d(x, w):
  """Stride-2 'SAME' 3x3 conv on even H, W as a 2x2 conv on 2x2 blocks.

  SAME pads (0, 1) here, so output ``o`` reads rows ``2o, 2o+1, 2o+2``: all
  of block ``o`` and the first row of block ``o+1``. Padding ``w`` to 4x4
  with zeros and regrouping gives the block kernel.
  """
  return jax.lax.conv_general_dilated(_s2d_blocks(x), _s2d_kernel(w), (1, 1),
                                      "VALID", dimension_numbers=_DN)


# Operand dtypes of one convolution / matmul.
MATMUL_DTYPES = ("float32", "bfloat16")

# Compute dtypes of a coupling subnet (``Subnet.compute_dtype``,
# ``config.model.compute.dtype``): which of its products take bfloat16
# operands -- none, all (3x3 and 1x1 convs) or only the 1x1 conv.
COMPUTE_DTYPES = ("float32", "bfloat16", "bfloat16_1x1")


def _check_matmul_dtype(matmul_dtype: str) -> str:
  if matmul_dtype not in MATMUL_DTYPES:
    raise ValueError(f"matmul_dtype={matmul_dtype!r}; choose one of "
                     f"{MATMUL_DTYPES}.")
  return matmul_dtype


def check_compute_dtype(compute_dtype: str) -> str:
  if compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype={compute_dtype!r} "
                     "(config.model.compute.dtype); choose one of "
                     f"{list(COMPUTE_DTYPES)}, or '' in the config for the "
                     "platform default.")
  return compute_dtype


def resolve_compute_dtype(compute_dtype: str) -> str:
  """``''`` -> the default backend's (``advinv_jax.platform``); else
  ``compute_dtype`` (validated)."""
  if compute_dtype == "":
    return platform.defaults().compute_dtype
  return check_compute_dtype(compute_dtype)


def subnet_operand_dtypes(compute_dtype: str):
  """``(3x3 conv, 1x1 conv)`` operand dtypes of a subnet's compute dtype."""
  check_compute_dtype(compute_dtype)
  return ("bfloat16" if compute_dtype == "bfloat16" else "float32",
          "float32" if compute_dtype == "float32" else "bfloat16")


def conv1x1(x, w, as_matmul: bool, matmul_dtype: str = "float32"):
  """1x1 convolution, ``x: f32[B, H, W, Cin]``, ``w: f32[Cin, Cout]`` ->
  ``f32[B, H, W, Cout]``; an einsum when ``as_matmul`` (about 2x faster
  forward+backward on XLA CPU).

  ``matmul_dtype='bfloat16'``: the product and both its gradients take
  bfloat16 operands and accumulate in float32 (:func:`matmul_lowp`; a
  matmul whatever ``as_matmul`` says). Reverse mode only.
  """
  if _check_matmul_dtype(matmul_dtype) != "float32":
    return matmul_lowp(x, w, matmul_dtype)
  if as_matmul:
    return jnp.einsum("bhwc,co->bhwo", x, w)
  return jax.lax.conv_general_dilated(x, w[None, None], (1, 1), "VALID",
                                      dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def matmul_lowp(x, w, dtype: str = "bfloat16"):
  """``x @ w`` over the last axis of ``x: f32[..., K]``, ``w: f32[K, N]``,
  with ``dtype`` operands and float32 accumulation: ``f32[..., N]`` (the
  gradients are float32 too).

  The backward pass casts the incoming cotangent to ``dtype`` too, so all
  three products (``y``, ``dx = g w^T``, ``dw = x^T g``) run as
  ``dtype`` x ``dtype`` -> float32 matmuls (on a CPU with bfloat16 matrix
  instructions, 3-6x the float32 rate: benchmarks/README.md), and the
  saved residuals are ``dtype`` (half the memory of float32). A
  ``custom_vjp``: reverse mode only (``jax.jvp`` raises).

  The result is a deterministic function of ``(x, w)``, so a coupling
  whose subnet uses it stays exactly invertible (the inverse recomputes
  the same subnet output); only the gradients carry ``dtype`` rounding
  (relative error ~1e-2 for bfloat16).
  """
  return _lowp_fwd(x, w, dtype)[0]


def _lowp_fwd(x, w, dtype):
  xl, wl = x.astype(dtype), w.astype(dtype)
  y = jnp.einsum("...k,kn->...n", xl, wl, preferred_element_type=jnp.float32)
  return y, (xl, wl)


def _lowp_bwd(dtype, res, g):
  xl, wl = res
  gl = g.astype(dtype)
  dx = jnp.einsum("...n,kn->...k", gl, wl, preferred_element_type=jnp.float32)
  dw = jnp.einsum("mk,mn->kn", xl.reshape(-1, wl.shape[0]),
                  gl.reshape(-1, wl.shape[1]),
                  preferred_element_type=jnp.float32)
  return (match_cotangent_axes(dx, xl), match_cotangent_axes(dw, wl))


matmul_lowp.defvjp(_lowp_fwd, _lowp_bwd)
