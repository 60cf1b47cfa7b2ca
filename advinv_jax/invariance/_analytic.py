"""Analytic invariance of bijective classifiers (Jacobsen et al. 2019).

For an :class:`~advinv_jax.models.InvertibleModel` ``F`` with
``z = F(x) = (z_s, z_n)`` (logits first, nuisance after), the model's
decision depends on ``z_s`` only, so everything in ``z_n`` is invisible to
it:

* :func:`metameric_sample` -- ``F^-1(z_s(A), z_n(B))``, classified as A, made
  of B's nuisance; :func:`metamer_validity` checks every metamer numerically
  (round trip, logit drift, bounds, finiteness): the inverse of a trained
  invertible network evaluated on such an out-of-distribution ``z`` can
  explode (Behrmann et al. 2021), and then the "metamer" is not one;
* :func:`nuisance_interpolation` -- ``z_s(A)`` fixed, ``z_n`` moved from A's
  to B's;
* :func:`norm_classifier_counterexample` -- the adversarial-spheres
  counter-example (Sec. 5): a perfect classifier that is invariant to a
  direction that changes the label.

Usage::

  x_met = metameric_sample(model, params, x_a, x_b)
  v = metamer_validity(model, params, x_met,
                       metamer_latent(model, params, x_a, x_b),
                       bounds=(0.0, 1.0))       # v.valid: bool[B]
  frames = nuisance_interpolation(model, params, x_a, x_b, num_steps=8)
"""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# A metamer is valid when its logits are those requested within this
# absolute tolerance (and its nuisance within it relative to |z_n|).
DEFAULT_METAMER_TOL = 1e-3


def _check_invertible(model, x, name: str) -> None:
  if not getattr(model, "invertible", False):
    raise ValueError(f"{type(model).__name__} is not an InvertibleModel; "
                     f"{name}: invariance analysis needs forward/inverse/"
                     "split/merge (build an invertible model such as "
                     "'firevnet').")
  model.check_input(x)


# ------------------------------------------------------------------ metamers
def metamer_latent(model, params, x_logits_source: Array,
                   x_nuisance_source: Array) -> Array:
  """The requested latent ``z* = merge(z_s(A), z_n(B))`` of the metamers.

  Args:
    model: an InvertibleModel; params: its parameters.
    x_logits_source: ``f32[B, ...]`` images A (their logits are kept).
    x_nuisance_source: ``f32[B, ...]`` images B (their nuisance is kept).

  Returns:
    ``f32[B, d]``.
  """
  _check_invertible(model, x_logits_source, "x_logits_source")
  _check_invertible(model, x_nuisance_source, "x_nuisance_source")
  if x_logits_source.shape != x_nuisance_source.shape:
    raise ValueError(f"x_logits_source {x_logits_source.shape} and "
                     f"x_nuisance_source {x_nuisance_source.shape} must have "
                     "the same shape (pair them up first).")
  za, _ = model.forward(params, x_logits_source)
  zb, _ = model.forward(params, x_nuisance_source)
  return model.merge(model.split(za)[0], model.split(zb)[1])


def metameric_sample(model, params, x_logits_source: Array,
                     x_nuisance_source: Array) -> Array:
  """``F^-1(merge(z_s(A), z_n(B)))``: classified exactly as A, built from B.

  Args:
    model: an InvertibleModel.
    params: its parameters.
    x_logits_source: ``f32[B, H, W, C]`` images A (their logits are kept).
    x_nuisance_source: ``f32[B, H, W, C]`` images B (their nuisance is kept).

  Returns:
    ``f32[B, H, W, C]`` metamers; ``model.logits`` of them equals that of A up
    to the model's inversion error -- which is only small where the inverse
    is well conditioned: check with :func:`metamer_validity`.
  """
  z = metamer_latent(model, params, x_logits_source, x_nuisance_source)
  return model.inverse(params, z)


def out_of_bounds(x: Array, bounds: Optional[Tuple[float, float]]
                  ) -> Tuple[Array, Array]:
  """Per example, the share of entries outside ``bounds`` and the largest
  distance of one outside them (``max(low - x, x - high, 0)``).

  Args:
    x: ``f32[B, ...]``.
    bounds: ``(low, high)``, or None (no bounds: both 0).

  Returns:
    ``(share f32[B], overshoot f32[B])``.
  """
  b = x.shape[0]
  if bounds is None:
    return jnp.zeros((b,), jnp.float32), jnp.zeros((b,), jnp.float32)
  flat = x.reshape((b, -1))
  lo, hi = float(bounds[0]), float(bounds[1])
  share = jnp.mean(((flat < lo) | (flat > hi)).astype(jnp.float32), axis=1)
  over = jnp.max(jnp.maximum(lo - flat, flat - hi), axis=1).clip(0.0)
  return share, over


class MetamerValidity(NamedTuple):
  """Per-metamer numerical checks (all ``[B]``), see :func:`metamer_validity`.

  Attributes:
    z_s_error: ``max_j |z_s(F(x))_j - z*_s,j|`` (round trip of the logits).
    z_n_error: ``max_j |z_n(F(x))_j - z*_n,j|`` (round trip of the nuisance).
    z_n_scale: ``max(1, max_j |z*_n,j|)``, the scale ``z_n_error`` is judged
      against.
    logit_drift: ``max_k |model.logits(x)_k - z*_s,k|``.
    out_of_bounds: share of the metamer's entries outside ``bounds``.
    overshoot: largest distance of an entry outside ``bounds`` (0 inside).
    finite: the metamer and its round trip are finite.
    valid: ``finite & logit_drift <= tol & z_s_error <= tol &
      z_n_error <= tol * z_n_scale``.
  """
  z_s_error: Array
  z_n_error: Array
  z_n_scale: Array
  logit_drift: Array
  out_of_bounds: Array
  overshoot: Array
  finite: Array
  valid: Array


def metamer_validity(model, params, x_metamer: Array, z_requested: Array, *,
                     bounds: Optional[Tuple[float, float]] = (0.0, 1.0),
                     tol: float = DEFAULT_METAMER_TOL) -> MetamerValidity:
  """Checks that ``x = F^-1(z*)`` is a metamer of ``z*`` in fact.

  With ``z = F(x)``, measures per example the round trip of the logits and of
  the nuisance (``z_s`` and ``z_n`` separately), the drift of the model's
  logits from the requested ones, the share of entries outside ``bounds``
  and finiteness. A metamer whose inverse exploded (an out-of-distribution
  ``z*``, Behrmann et al. 2021) fails the round trip: its float32 value has
  lost the requested ``z*``.

  Args:
    model: an InvertibleModel; params: its parameters.
    x_metamer: ``f32[B, ...]``, ``model.inverse(params, z_requested)``.
    z_requested: ``f32[B, d]`` (e.g. :func:`metamer_latent`).
    bounds: ``(low, high)`` of valid inputs, or None (no bounds: 0 out).
    tol: absolute tolerance on logits; the nuisance's is ``tol`` times
      ``max(1, max |z*_n|)``.

  Returns:
    A :class:`MetamerValidity` of ``[B]`` arrays.
  """
  _check_invertible(model, x_metamer, "x_metamer")
  b = x_metamer.shape[0]
  if z_requested.shape != (b, model.latent_dim):
    raise ValueError(f"z_requested has shape {z_requested.shape}; expected "
                     f"({b}, {model.latent_dim}) = [B, latent_dim], the z "
                     "x_metamer was inverted from.")
  if not tol > 0:
    raise ValueError(f"tol={tol} must be > 0.")
  if bounds is not None and not bounds[0] < bounds[1]:
    raise ValueError(f"bounds={bounds} must be (low, high) with low < high.")
  z, _ = model.forward(params, x_metamer)
  zs, zn = model.split(z)
  zs_req, zn_req = model.split(z_requested)

  def amax(a):
    return jnp.max(jnp.abs(a).reshape((b, -1)), axis=1, initial=0.0)

  zs_err, zn_err = amax(zs - zs_req), amax(zn - zn_req)
  zn_scale = jnp.maximum(1.0, amax(zn_req))
  drift = amax(model.logits(params, x_metamer) - zs_req)
  flat = x_metamer.reshape((b, -1))
  oob, over = out_of_bounds(x_metamer, bounds)
  finite = (jnp.all(jnp.isfinite(flat), axis=1)
            & jnp.all(jnp.isfinite(z), axis=1))
  valid = (finite & (drift <= tol) & (zs_err <= tol)
           & (zn_err <= tol * zn_scale))
  return MetamerValidity(zs_err, zn_err, zn_scale, drift, oob, over, finite,
                         valid)


def summarize_validity(v: MetamerValidity) -> Dict[str, Any]:
  """Host summary of a :class:`MetamerValidity`: the share of valid
  metamers and the worst / median of each measure (non-finite -> None)."""

  def f(a):
    a = float(a)
    return a if np.isfinite(a) else None

  arr = {k: np.asarray(a, np.float64) for k, a in v._asdict().items()}
  out = {"num": int(arr["valid"].size),
         "valid_share": f(arr["valid"].mean()) if arr["valid"].size else 0.0,
         "finite_share": f(arr["finite"].mean()) if arr["finite"].size else 0.0}
  for k in ("logit_drift", "z_s_error", "z_n_error"):
    out[f"{k}_max"] = f(arr[k].max(initial=0.0))
    out[f"{k}_median"] = f(np.median(arr[k])) if arr[k].size else None
  out["out_of_bounds_share"] = f(arr["out_of_bounds"].mean()
                                 ) if arr["out_of_bounds"].size else 0.0
  out["overshoot_max"] = f(arr["overshoot"].max(initial=0.0))
  return out


def nuisance_interpolation(model, params, x_a: Array, x_b: Array,
                           num_steps: int) -> Array:
  """Holds ``z_s(A)`` fixed and moves ``z_n`` linearly from A's to B's.

  Args:
    model: an InvertibleModel; params: its parameters.
    x_a, x_b: ``f32[B, H, W, C]``.
    num_steps: number of points ``t = 0, ..., 1`` (static, >= 2).

  Returns:
    ``f32[num_steps, B, H, W, C]``; step 0 reconstructs A, the last step is
    the metamer of (A, B). Every step has A's logits.
  """
  _check_invertible(model, x_a, "x_a")
  if x_a.shape != x_b.shape:
    raise ValueError(f"x_a {x_a.shape} and x_b {x_b.shape} must have the same "
                     "shape.")
  if int(num_steps) != num_steps or num_steps < 2:
    raise ValueError(f"num_steps={num_steps} must be an integer >= 2.")
  za, _ = model.forward(params, x_a)
  zb, _ = model.forward(params, x_b)
  z_s, zn_a = model.split(za)
  _, zn_b = model.split(zb)
  t = jnp.linspace(0.0, 1.0, num_steps, dtype=za.dtype)[:, None, None]
  zn = (1.0 - t) * zn_a[None] + t * zn_b[None]                # [T, B, d-C]
  zs = jnp.broadcast_to(z_s[None], (num_steps,) + z_s.shape)
  b = x_a.shape[0]
  z = model.merge(zs.reshape((num_steps * b, -1)),
                  zn.reshape((num_steps * b, -1)))
  return model.inverse(params, z).reshape((num_steps,) + x_a.shape)


# ------------------------------------------------------- spheres (Sec. 5)
def norm_classifier_counterexample(x: Array, y: Array,
                                   r_out: float = 10.0) -> Dict[str, Array]:
  """The adversarial-spheres invariance counter-example (Jacobsen et al.
  2019, Sec. 5): a classifier that is perfect on the data yet invariant to a
  label-changing direction.

  Points lie on two concentric spheres in ``R^d`` (label 0 inner, 1 outer
  with radius ``r_out``). The classifier ``f(x) = [||x_{1:d-1}|| >= t]``
  ignores ``x_d``; ``t`` is the midpoint between the classes' largest /
  smallest ``||x_{1:d-1}||`` (it separates the data perfectly when the
  spheres are far apart). An inner point moved onto the outer sphere by
  changing ``x_d`` alone (``x_d = sqrt(r_out^2 - ||x_{1:d-1}||^2)``,
  possible whenever ``||x_{1:d-1}|| <= r_out``) keeps the decision 0: it is
  now an outer point the classifier cannot see.

  Args:
    x: ``f32[N, ...]`` points (flattened to ``[N, d]``); y: ``int[N]`` in
      ``{0, 1}``, both classes present.
    r_out: radius of the outer sphere.

  Returns:
    dict of f32 scalars: ``threshold`` t, ``clean_accuracy`` of f on
    ``(x, y)``, ``attack_success`` (share of inner points that land on the
    outer sphere, ``rtol`` 1e-4, and keep decision 0).
  """
  flat = jnp.reshape(jnp.asarray(x, jnp.float32), (x.shape[0], -1))
  y = jnp.asarray(y)
  if y.shape != (flat.shape[0],):
    raise ValueError(f"y must have shape ({flat.shape[0]},), got {y.shape}.")
  inner = y == 0
  head = jnp.linalg.norm(flat[:, :-1], axis=1)
  t = 0.5 * (jnp.max(jnp.where(inner, head, -jnp.inf))
             + jnp.min(jnp.where(inner, jnp.inf, head)))
  clean = jnp.mean((head >= t).astype(jnp.int32) == y)
  moved = flat.at[:, -1].set(jnp.sqrt(jnp.maximum(r_out**2 - head**2, 0.0)))
  on_outer = jnp.abs(jnp.linalg.norm(moved, axis=1) - r_out) <= 1e-4 * r_out
  still_inner = jnp.linalg.norm(moved[:, :-1], axis=1) < t
  success = jnp.sum(inner & on_outer & still_inner) / jnp.maximum(
      jnp.sum(inner), 1)
  return {"threshold": t, "clean_accuracy": clean, "attack_success": success}
