"""Nar et al.'s low-rank linear study: margins of CE vs differential training.

Binary linear classifiers ``x -> sign(w^T x + b)`` on linearly separable data
that lies on a ``k``-dimensional affine subspace of ``R^d``. Labels are ints
in ``{0, 1}`` throughout (class 1 is the positive class, sign ``+1``).

* :func:`make_lowrank_data` draws such data from a key.
* :func:`train_linear` runs full-batch gradient descent (jitted ``lax.scan``)
  on the logistic (= two-class cross-entropy) loss with a trained bias, or on
  the differential-training loss with the midpoint bias set afterwards.
* :func:`hard_margin_svm` solves the hard-margin SVM exactly (host-side numpy,
  float64): the min-norm point of the Minkowski difference of the two convex
  hulls by accelerated projected gradient with a duality-gap stop, then an
  active-set polish on the support vectors (accepted only when certified).
* :func:`geometric_margin` is ``min_i y_i (w^T x_i + b) / ||w||``.
* The 2-D toy: ``x+ = (1+s, h)``, ``x- = (-1+s, h)``; the SVM margin is 1 and
  CE with a bias converges to the margin ratio ``1/sqrt(1 + s^2 h^2 /
  (1+h^2)^2)`` (:func:`toy_2d_ce_margin_ratio`).

Why CE loses margin on low-rank data: the gradient of any loss of ``w^T x + b``
lies in ``span{x_i}`` (augmented by the bias), so the weight component
orthogonal to the data's span keeps its initial value (large init => small
margin), and the trained bias couples into the offset direction of an affine
subspace. Differences ``x_i - x_j`` remove the offset, which is why
differential training with the midpoint bias recovers the SVM.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax.losses import differential_loss_from_batch

Array = jax.Array

__all__ = [
    "LinearFit",
    "LowRankData",
    "geometric_margin",
    "hard_margin_svm",
    "make_lowrank_data",
    "toy_2d_ce_direction",
    "toy_2d_ce_margin_ratio",
    "toy_2d_data",
    "train_linear",
]


class LowRankData(NamedTuple):
  """Output of :func:`make_lowrank_data`.

  Attributes:
    x: ``float32[n, d]`` points ``offset + basis @ a``.
    y: ``int32[n]`` labels in ``{0, 1}`` (balanced, alternating).
    basis: ``float32[d, k]`` orthonormal basis of the subspace's directions.
    offset: ``float32[d]`` offset vector, orthogonal to ``basis``.
  """
  x: Array
  y: Array
  basis: Array
  offset: Array


class LinearFit(NamedTuple):
  """Output of :func:`train_linear`.

  Attributes:
    w: ``float32[d]`` weights.
    b: ``float32[]`` bias (trained for CE; midpoint for differential).
    losses: ``float32[steps]`` loss before each step.
  """
  w: Array
  b: Array
  losses: Array


def _check_int(value, name, low):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
      value < low):
    raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")


def make_lowrank_data(key: Array, n: int, d: int, k: int, *,
                      offset: float = 1.0, shift: float = 0.0,
                      margin_gap: float = 1.0, spread: float = 1.0,
                      dtype=jnp.float32) -> LowRankData:
  """Linearly separable data on a ``k``-dim affine subspace of ``R^d``.

  Subspace coordinates ``a in R^k``: ``a_1 = shift + (2y - 1) (margin_gap / 2
  + spread |xi|)``, ``a_2..a_k ~ N(0, spread^2)``; points ``x = c + U a`` with
  ``U`` a random orthonormal ``[d, k]`` basis and ``c`` of norm ``offset``
  orthogonal to it. The classes are separated by the hyperplane ``a_1 =
  shift`` with a gap of at least ``margin_gap``, so the SVM margin is at least
  ``margin_gap / 2``. ``shift`` and ``offset`` play the roles of ``s`` and
  ``h`` of the 2-D toy: with both non-zero, CE's trained bias costs margin.

  Args:
    key: PRNG key.
    n: number of points (>= 2); labels alternate 0, 1, 0, ...
    d: ambient dimension.
    k: subspace dimension, ``1 <= k <= d`` (``k < d`` when ``offset != 0``).
    offset: norm of the offset vector ``c``.
    shift: position of the class boundary along ``a_1``.
    margin_gap: gap between the classes along ``a_1`` (> 0).
    spread: scale of the within-class spread.
    dtype: float dtype of ``x``.

  Returns:
    A :class:`LowRankData`.

  Raises:
    ValueError: bad sizes or ``margin_gap <= 0``.
  """
  _check_int(n, "n", 2)
  _check_int(d, "d", 1)
  _check_int(k, "k", 1)
  if k > d:
    raise ValueError(f"subspace dimension k={k} exceeds the ambient d={d}.")
  if k == d and offset != 0:
    raise ValueError(f"k == d={d} leaves no direction for a non-zero offset; "
                     "use k < d or offset=0.")
  if not margin_gap > 0:
    raise ValueError(f"margin_gap must be > 0, got {margin_gap}.")
  k_basis, k_first, k_rest = jax.random.split(key, 3)
  cols = min(k + 1, d)
  q, _ = jnp.linalg.qr(jax.random.normal(k_basis, (d, cols), jnp.float32))
  basis = q[:, :k]
  direction = q[:, k] if k < d else jnp.zeros((d,), jnp.float32)
  c = offset * direction
  y = jnp.arange(n, dtype=jnp.int32) % 2
  sign = 2.0 * y - 1.0
  xi = jnp.abs(jax.random.normal(k_first, (n,), jnp.float32))
  a1 = shift + sign * (0.5 * margin_gap + spread * xi)
  rest = spread * jax.random.normal(k_rest, (n, k - 1), jnp.float32)
  a = jnp.concatenate([a1[:, None], rest], axis=1)
  x = c[None, :] + a @ basis.T
  return LowRankData(x.astype(dtype), y, basis.astype(dtype), c.astype(dtype))


def _check_xy(x, y):
  xs = tuple(x.shape if hasattr(x, "shape") else np.shape(x))
  ys = tuple(y.shape if hasattr(y, "shape") else np.shape(y))
  if len(xs) != 2 or xs[0] == 0:
    raise ValueError(f"x must have shape [n, d] with n >= 1, got {xs}.")
  if ys != (xs[0],):
    raise ValueError(f"y must have shape [n]=({xs[0]},) to match x {xs}, got "
                     f"{ys}.")
  ydtype = y.dtype if hasattr(y, "dtype") else np.asarray(y).dtype
  if not (jnp.issubdtype(ydtype, jnp.integer) or ydtype == jnp.bool_):
    raise ValueError(f"y must hold int labels in {{0, 1}}, got dtype {ydtype}"
                     "; convert with y.astype(jnp.int32).")
  return xs


def geometric_margin(w: Array, b: Array, x: Array, y: Array) -> Array:
  """``min_i (2 y_i - 1) (w^T x_i + b) / ||w||`` (negative if misclassified).

  Args:
    w: ``float[d]``.
    b: scalar bias.
    x: ``float[n, d]``.
    y: ``int[n]`` labels in ``{0, 1}``.

  Returns:
    Scalar, the signed distance of the closest point to the hyperplane.
  """
  xs = _check_xy(x, y)
  if tuple(jnp.shape(w)) != (xs[1],):
    raise ValueError(f"w must have shape [d]=({xs[1]},), got {jnp.shape(w)}.")
  sign = 2.0 * jnp.asarray(y, jnp.float32) - 1.0
  scores = jnp.asarray(x) @ jnp.asarray(w) + b
  return jnp.min(sign * scores) / jnp.linalg.norm(w)


@functools.partial(jax.jit,
                   static_argnames=("loss", "steps", "fit_bias", "normalized"))
def _train_linear(x, y, w0, lr, *, loss, steps, fit_bias, normalized):
  sign = 2.0 * y.astype(x.dtype) - 1.0

  if loss == "ce":
    def objective(params):
      w, b = params
      return jnp.mean(jax.nn.softplus(-sign * (x @ w + b)))
  else:
    def objective(params):
      return differential_loss_from_batch(x @ params[0], y)[0]

  train_bias = fit_bias and loss == "ce"

  def step(params, _):
    value, (gw, gb) = jax.value_and_grad(objective)(params)
    if not train_bias:
      gb = jnp.zeros_like(gb)
    rate = lr / jnp.maximum(value, 1e-30) if normalized else lr
    w, b = params
    return (w - rate * gw, b - rate * gb), value

  params0 = (w0, jnp.zeros((), x.dtype))
  (w, b), losses = jax.lax.scan(step, params0, None, length=steps)
  if loss == "differential" and fit_bias:
    s = x @ w
    lo_pos = jnp.min(jnp.where(y == 1, s, jnp.inf))
    hi_neg = jnp.max(jnp.where(y == 0, s, -jnp.inf))
    b = -0.5 * (lo_pos + hi_neg)
  return w, b, losses


def train_linear(x: Array, y: Array, loss: str = "ce", *,
                 key: Optional[Array] = None, init_scale: float = 0.0,
                 steps: int = 1000, lr: float = 1.0, fit_bias: bool = True,
                 normalized: bool = False) -> LinearFit:
  """Full-batch gradient descent for a linear classifier ``sign(w^T x + b)``.

  Losses: ``"ce"``: ``mean_i softplus(-(2y_i - 1)(w^T x_i + b))`` (two-class
  cross-entropy), with ``b`` trained when ``fit_bias``; ``"differential"``:
  the pairwise loss of :func:`advinv_jax.losses.differential_loss` on
  ``s = w^T x`` (a bias cancels), with ``b`` set afterwards to the midpoint
  bias when ``fit_bias`` (else 0).

  Args:
    x: ``float32[n, d]``.
    y: ``int[n]`` labels in ``{0, 1}``, both classes present.
    loss: ``"ce"`` or ``"differential"``.
    key: PRNG key for the initial ``w`` (needed when ``init_scale > 0``).
    init_scale: ``w0 = init_scale * N(0, I_d) / sqrt(d)`` (so ``||w0|| ~
      init_scale``); 0 starts at ``w = 0``. ``b0 = 0``.
    steps: number of GD steps (static; one compilation per value).
    lr: step size.
    fit_bias: see above.
    normalized: if True, step ``lr * grad / loss`` (normalised GD; converges
      in direction much faster on separable data). Our option.

  Returns:
    A :class:`LinearFit` ``(w, b, losses)``.

  Raises:
    ValueError: bad shapes, unknown loss, a single class, or
      ``init_scale > 0`` without a key.
  """
  xs = _check_xy(x, y)
  if loss not in ("ce", "differential"):
    raise ValueError(f"loss must be 'ce' or 'differential', got {loss!r}.")
  _check_int(steps, "steps", 1)
  if init_scale < 0:
    raise ValueError(f"init_scale must be >= 0, got {init_scale}.")
  if init_scale > 0 and key is None:
    raise ValueError("init_scale > 0 needs a PRNG key: pass key=...")
  y_np = np.asarray(y)
  if not (np.any(y_np == 1) and np.any(y_np == 0)):
    raise ValueError("y must contain both classes 0 and 1.")
  x = jnp.asarray(x, jnp.float32)
  d = xs[1]
  if init_scale > 0:
    w0 = init_scale * jax.random.normal(key, (d,), jnp.float32) / math.sqrt(d)
  else:
    w0 = jnp.zeros((d,), jnp.float32)
  w, b, losses = _train_linear(x, jnp.asarray(y, jnp.int32), w0,
                               jnp.float32(lr), loss=loss, steps=int(steps),
                               fit_bias=bool(fit_bias),
                               normalized=bool(normalized))
  return LinearFit(w, b, losses)


def _project_simplex(v: np.ndarray) -> np.ndarray:
  """Euclidean projection of ``v`` onto the probability simplex."""
  u = np.sort(v)[::-1]
  css = np.cumsum(u) - 1.0
  idx = np.arange(1, v.size + 1)
  rho = np.nonzero(u - css / idx > 0)[0][-1]
  theta = css[rho] / (rho + 1.0)
  return np.maximum(v - theta, 0.0)


def _canonical(direction, xc, sign):
  """Best bias and margin for a fixed direction; canonical (w, b)."""
  s = xc @ direction
  lo = np.min(s[sign > 0])
  hi = np.max(s[sign < 0])
  half = 0.5 * (lo - hi)
  norm = np.linalg.norm(direction)
  if half <= 0 or norm == 0:
    return None, None, -np.inf
  w = direction / half
  b = -0.5 * (lo + hi) / half
  return w, b, half / norm


def _polish(u, xc, sign, certify, slack=1e-6):
  """Solves the SVM KKT equations on the points tight for direction ``u``.

  A point is taken as tight when its functional margin is below
  ``1 + slack`` for the canonical hyperplane of ``u``.

  Returns canonical ``(w, b, margin)`` or None. With ``certify`` the result is
  returned only when it satisfies the KKT conditions of the hard-margin SVM
  (primal feasible, non-negative multipliers, equations solved), i.e. it is
  the exact optimum up to round-off.
  """
  w, b, _ = _canonical(u, xc, sign)
  if w is None:
    return None
  functional = sign * (xc @ w + b)
  tight = np.nonzero(functional <= 1.0 + slack)[0]
  xs_t, ys_t = xc[tight], sign[tight]
  m = tight.size
  kkt = np.zeros((m + 1, m + 1))
  kkt[:m, :m] = (ys_t[:, None] * ys_t[None, :]) * (xs_t @ xs_t.T)
  kkt[:m, m] = ys_t
  kkt[m, :m] = ys_t
  rhs = np.concatenate([np.ones(m), [0.0]])
  sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
  mult, bias = sol[:m], sol[m]
  w_pol = xs_t.T @ (mult * ys_t)
  if certify:
    scale = max(1.0, float(np.max(np.abs(mult))))
    if np.min(mult) < -1e-9 * scale:
      return None
    if np.max(np.abs(kkt @ sol - rhs)) > 1e-9:
      return None
    if np.min(sign * (xc @ w_pol + bias)) < 1.0 - 1e-9:
      return None
  return _canonical(w_pol, xc, sign)


def hard_margin_svm(x, y, *, max_iter: int = 50_000, tol: float = 1e-13
                    ) -> Tuple[np.ndarray, float, float]:
  """Exact hard-margin SVM ``min ||w||^2 s.t. (2y_i-1)(w^T x_i + b) >= 1``.

  Host-side numpy in float64 (not jittable). Solves the dual nearest-point
  problem ``min ||P^T alpha - N^T beta||`` over the two simplices (the
  min-norm point ``u`` of the Minkowski difference of the convex hulls) with
  FISTA + projection + adaptive restart until the Frank-Wolfe duality gap is
  below ``tol * ||u||^2``. Once the gap is below ``1e-2 ||u||^2`` it
  re-solves the KKT equations on the tight points and stops as soon as that
  solution is certified (feasible, multipliers >= 0): it is then exact to
  round-off. Otherwise the polished solution is kept only if its margin is at
  least the first-order one. The margin is ``||u*|| / 2``.

  Args:
    x: ``float[n, d]`` points.
    y: ``int[n]`` labels in ``{0, 1}``, both classes present.
    max_iter: iteration cap of the first-order phase.
    tol: relative duality-gap target.

  Returns:
    ``(w, b, margin)``: ``w`` float64 ``[d]`` and float ``b`` in canonical
    form (``min_i (2y_i-1)(w^T x_i + b) = 1``), ``margin = 1/||w||``.

  Raises:
    ValueError: bad shapes/labels, or the classes are not linearly separable.
  """
  _check_xy(x, y)
  x = np.asarray(x, np.float64)
  y = np.asarray(y)
  if not np.all((y == 0) | (y == 1)) or y.min() == y.max():
    raise ValueError("y must hold labels in {0, 1} with both classes present.")
  mu = x.mean(axis=0)
  xc = x - mu
  sign = np.where(y == 1, 1.0, -1.0)
  pos = np.nonzero(y == 1)[0]
  neg = np.nonzero(y == 0)[0]
  z = np.concatenate([xc[pos], -xc[neg]])          # u = z^T lam
  n_pos = pos.size
  lipschitz = np.linalg.norm(z, 2) ** 2
  if lipschitz == 0:
    raise ValueError("all points coincide: the classes are not separable.")

  def project(v):
    return np.concatenate([_project_simplex(v[:n_pos]),
                           _project_simplex(v[n_pos:])])

  def objective(lam):
    u = z.T @ lam
    return 0.5 * float(u @ u)

  lam = np.concatenate([np.full(n_pos, 1.0 / n_pos),
                        np.full(neg.size, 1.0 / neg.size)])
  mom, t, f_old = lam.copy(), 1.0, objective(lam)
  certified = None
  for it in range(max_iter):
    grad = z @ (z.T @ mom)
    new = project(mom - grad / lipschitz)
    f_new = objective(new)
    if f_new > f_old:                      # adaptive restart
      mom, t = lam.copy(), 1.0
      continue
    t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
    mom = new + ((t - 1.0) / t_next) * (new - lam)
    lam, t, f_old = new, t_next, f_new
    if it % 25 == 0:
      u = z.T @ lam
      g = z @ u
      uu = float(u @ u)
      if uu <= 1e-24 * lipschitz:
        break
      gap = uu - (g[:n_pos].min() + g[n_pos:].min())
      if gap <= tol * uu:
        break
      if gap <= 1e-2 * uu:
        for slack in (1e-6, 1e-4, 1e-3, 1e-2):
          certified = _polish(u, xc, sign, certify=True, slack=slack)
          if certified is not None:
            break
        if certified is not None:
          break
  u = z.T @ lam
  if float(u @ u) <= 1e-24 * lipschitz:
    raise ValueError("the convex hulls of the two classes intersect: the data "
                     "is not linearly separable.")
  w, b, margin = _canonical(u, xc, sign)
  if w is None:
    raise ValueError("no separating hyperplane found: the data is not "
                     "linearly separable.")
  if certified is None:
    polished = _polish(u, xc, sign, certify=False)
    if polished is not None and polished[2] >= margin:
      certified = polished
  if certified is not None:
    w, b, margin = certified
  b = float(b - w @ mu)
  return w, b, float(margin)


def toy_2d_data(s: float, h: float) -> Tuple[Array, Array]:
  """The 2-D toy of Nar et al.: ``x+ = (1+s, h)`` (label 1), ``x- = (-1+s, h)``.

  Returns:
    ``(x float32[2, 2], y int32[2])``. The SVM is ``w = (1, 0), b = -s``,
    margin 1.
  """
  x = jnp.array([[1.0 + s, h], [-1.0 + s, h]], jnp.float32)
  return x, jnp.array([1, 0], jnp.int32)


def toy_2d_ce_direction(s: float, h: float) -> Tuple[np.ndarray, float]:
  """Limit of CE+bias GD on the toy (canonical scale).

  ``w = (1, -s h / (1 + h^2))``, ``b = -s / (1 + h^2)``.

  This is the max-margin solution in the bias-augmented space ``(x, 1)``,
  scaled so that both points have functional margin 1.
  """
  c = s * h / (1.0 + h * h)
  return np.array([1.0, -c]), -s / (1.0 + h * h)


def toy_2d_ce_margin_ratio(s: float, h: float) -> float:
  """``1 / sqrt(1 + s^2 h^2 / (1 + h^2)^2)``: CE's margin over the SVM's."""
  return 1.0 / math.sqrt(1.0 + (s * h / (1.0 + h * h)) ** 2)
