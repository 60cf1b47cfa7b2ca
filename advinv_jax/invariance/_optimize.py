"""Invariance of any differentiable model, by optimisation.

No inverse is needed: the model's invariances are found by searching the
input space for images the model cannot tell apart.

* :func:`match_features` / :func:`model_metamer` -- model metamers (Feather
  et al. 2023): optimise ``x``, started from another image or from noise
  (:func:`noise_like`), so that the model's logits or chosen features
  (:func:`model_features`) match a target's; the feature adversaries of
  Sabour et al. 2016 are the same search held inside a ball around the start.
* :func:`invariance_attack` -- given A (class a) and B (class b != a), an
  ``x`` near B whose logits equal A's (Jacobsen et al. 2019; Tramer et al.
  2020); it succeeds when the oracle (:mod:`._oracle`) still reads ``x`` as
  b. :func:`invariance_rate` measures the share of pairs where it succeeds
  at each distance, the invariance side of AutoAttack's robust accuracy.

The search (one choice for all): projected Adam. Per step, Adam on
``L(x) = 1/2 sum_i ||f(x_i) - t_i||_2^2`` with a cosine-decayed learning
rate (``lr`` to 0 over ``steps``), then projection onto the eps-ball around
the start (if any) and clipping into ``bounds``: every iterate is a valid
image, so nothing is clipped afterwards. Adam's per-entry scaling makes the
search insensitive to the features' scale; ``optimizer='gd'`` (plain
projected gradient descent) keeps ``x - x_init`` in the span of the
features' input gradients, so on a linear map it reaches the closed-form
metamer nearest the start. The best iterate per example (lowest match
error) is returned.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from advinv_jax import _checks

Array = jax.Array
FeaturesFn = Callable[[Array], Array]

# A metamer's match error (relative l2 of the features) must be at most
# this for it to count as converged / matched.
DEFAULT_MATCH_TOL = 1e-2
OPTIMIZERS = ("adam", "gd")
NORMS = ("l2", "linf")
# Feature names of invertible models (their latent z and its parts).
INVERTIBLE_FEATURES = ("logits", "z", "z_s", "z_n")


# ------------------------------------------------------------- features
def _flax_intermediates(model, params, x):
  base = getattr(model, "base", model)
  _, state = base.module.apply({"params": params}, x,
                               capture_intermediates=True,
                               mutable=["intermediates"])
  out = {}

  def walk(tree, prefix):
    for k, v in tree.items():
      if k == "__call__":
        if prefix:
          out[prefix] = v[0]
      else:
        walk(v, f"{prefix}/{k}" if prefix else k)

  walk(state["intermediates"], "")
  return out


def feature_layers(model, params) -> Tuple[str, ...]:
  """The layer names :func:`model_features` accepts for ``model``:
  ``logits`` and, for invertible models, ``z``, ``z_s``, ``z_n``; for flax
  classifiers (cnn, mlp) also each submodule's output (``Conv_0``,
  ``Dense_0``, ...; nested ones joined by ``/``)."""
  if getattr(model, "invertible", False):
    return INVERTIBLE_FEATURES
  base = getattr(model, "base", model)
  if getattr(base, "module", None) is None:
    return ("logits",)
  x = jax.ShapeDtypeStruct((1,) + tuple(model.input_shape), jnp.float32)
  names = jax.eval_shape(lambda p, xx: _flax_intermediates(model, p, xx),
                         params, x)
  return ("logits",) + tuple(sorted(names))


def model_features(model, params, layers: Sequence[str]) -> FeaturesFn:
  """``features_fn(x: f32[B, ...]) -> f32[B, D]``: the chosen layers'
  outputs, each flattened, concatenated in the order given.

  Args:
    model: an advinv_jax Model (invertible or a flax classifier).
    params: its parameters.
    layers: names from :func:`feature_layers` (e.g. ``("logits",)``,
      ``("z",)``, ``("Conv_1", "logits")``).

  Raises:
    ValueError: an unknown layer name (the message lists the known ones).
  """
  layers = tuple(layers)
  known = feature_layers(model, params)
  bad = [n for n in layers if n not in known]
  if not layers or bad:
    raise ValueError(f"layers={layers} names unknown layers {bad}; "
                     f"{type(model).__name__} has {list(known)}.")

  def features_fn(x):
    b = x.shape[0]
    got = {}
    if "logits" in layers:
      got["logits"] = model.logits(params, x)
    rest = [n for n in layers if n != "logits"]
    if rest and getattr(model, "invertible", False):
      z, _ = model.forward(params, x)
      z_s, z_n = model.split(z)
      got.update(z=z, z_s=z_s, z_n=z_n)
    elif rest:
      got.update(_flax_intermediates(model, params, x))
    return jnp.concatenate([got[n].reshape((b, -1)) for n in layers], axis=1)

  return features_fn


def noise_like(rng: Array, x: Array,
               bounds: Optional[Tuple[float, float]] = (0.0, 1.0)) -> Array:
  """Starts for metamers from noise: uniform in ``bounds`` (standard normal
  when ``bounds`` is None), shape and dtype of ``x``."""
  if bounds is None:
    return jax.random.normal(rng, x.shape, x.dtype)
  return jax.random.uniform(rng, x.shape, x.dtype, float(bounds[0]),
                            float(bounds[1]))


# --------------------------------------------------------------- search
class MetamerSearch(NamedTuple):
  """Result of :func:`match_features` / :func:`model_metamer`.

  Attributes:
    x: ``f32[B, ...]`` the metamers (best iterate per example).
    match_error: ``f32[B]``, ``||f(x) - t||_2 / max(||t||_2, 1e-12)``.
    initial_match_error: ``f32[B]``, the same at ``x_init``.
    converged: ``bool[B]``, ``match_error <= tol``.
  """
  x: Array
  match_error: Array
  initial_match_error: Array
  converged: Array


def _rel_error(f: Array, t: Array) -> Array:
  return (jnp.linalg.norm(f - t, axis=1)
          / jnp.maximum(jnp.linalg.norm(t, axis=1), 1e-12))


def _project(x0: Array, x: Array, eps, norm: str, bounds) -> Array:
  """Onto the ``eps``-ball around ``x0`` (``inf``: no ball), then into
  ``bounds`` (clipping after the ball keeps ``x`` inside it when ``x0`` is
  inside the box)."""
  if eps is not None:
    d = x - x0
    if norm == "linf":
      d = jnp.clip(d, -eps, eps)
    else:
      n = jnp.linalg.norm(d.reshape((d.shape[0], -1)), axis=1)
      s = jnp.minimum(1.0, eps * (1.0 - 1e-7) / jnp.maximum(n, 1e-12))
      d = d * s.reshape((-1,) + (1,) * (d.ndim - 1))
    x = x0 + d
  if bounds is not None:
    x = jnp.clip(x, bounds[0], bounds[1])
  return x


def _validate(features_fn, target_features, x_init, *, steps, lr, bounds,
              tol, eps, norm, optimizer, target_name="target_features"):
  """Python checks of a search's arguments, before any compilation."""
  shape = tuple(getattr(x_init, "shape", ()))
  if len(shape) < 2 or shape[0] == 0:
    raise ValueError(f"x_init must be a batch f32[B, ...] with B > 0, got "
                     f"shape {shape}.")
  _checks.check_floating(x_init, "x_init")
  if isinstance(steps, bool) or int(steps) != steps or steps < 1:
    raise ValueError(f"steps={steps} must be a positive integer.")
  if not (math.isfinite(float(lr)) and lr > 0):
    raise ValueError(f"lr={lr} must be finite and > 0.")
  if not tol > 0:
    raise ValueError(f"tol={tol} must be > 0 (a relative match error).")
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"optimizer={optimizer!r} is unknown; use one of "
                     f"{OPTIMIZERS}.")
  if norm not in NORMS:
    raise ValueError(f"norm={norm!r} is unknown; use one of {NORMS}.")
  if eps is not None and _checks.is_concrete(eps) and not float(eps) >= 0:
    raise ValueError(f"eps={eps} must be >= 0 (inf or None: no ball).")
  if bounds is not None and (len(tuple(bounds)) != 2
                             or not float(bounds[0]) < float(bounds[1])):
    raise ValueError(f"bounds={bounds} must be (low, high) with low < high, "
                     "or None for unbounded inputs.")
  if bounds is not None and _checks.is_concrete(x_init):
    xv = np.asarray(x_init)
    if not np.all(np.isfinite(xv)) or xv.min() < float(bounds[0]) - 1e-6 or (
        xv.max() > float(bounds[1]) + 1e-6):
      raise ValueError(f"x_init lies in [{np.nanmin(xv):.4g}, "
                       f"{np.nanmax(xv):.4g}], not inside bounds={bounds}; "
                       "start from an image in the box (noise_like), or "
                       "pass bounds=None.")
  try:
    out = jax.eval_shape(features_fn,
                         jax.ShapeDtypeStruct(shape, x_init.dtype))
  except (TypeError, ValueError) as e:
    raise ValueError(f"features_fn cannot take x_init of shape {shape} "
                     f"({type(e).__name__}: {str(e).splitlines()[0]}); pass "
                     "inputs of the shape the model takes.") from None
  if len(out.shape) != 2 or out.shape[0] != shape[0]:
    raise ValueError(f"features_fn must map f32{list(shape)} to features "
                     f"f32[B={shape[0]}, D], got shape {out.shape}; flatten "
                     "them (model_features does).")
  tshape = tuple(getattr(target_features, "shape", ()))
  if tshape != tuple(out.shape):
    raise ValueError(f"{target_name} has shape {tshape}; features_fn gives "
                     f"{tuple(out.shape)} for x_init: pass one target per "
                     "start, of the same layers.")


def match_features(features_fn: FeaturesFn, target_features: Array,
                   x_init: Array, *, steps: int = 500, lr: float = 0.03,
                   bounds: Optional[Tuple[float, float]] = (0.0, 1.0),
                   tol: float = DEFAULT_MATCH_TOL, eps=None,
                   norm: str = "l2", optimizer: str = "adam"
                   ) -> MetamerSearch:
  """Finds ``x`` with ``features_fn(x) = target_features``, from ``x_init``.

  Minimises ``L(x) = 1/2 sum_i ||f(x_i) - t_i||_2^2`` by projected Adam (or
  gradient descent, ``optimizer='gd'``) with learning rate
  ``lr * (1 + cos(pi k / steps)) / 2`` at step ``k``, each iterate projected
  onto ``{x : ||x - x_init|| <= eps}`` (when ``eps`` is given) and into
  ``bounds``. Examples are independent (``f`` must treat them so).

  Args:
    features_fn: ``f32[B, ...] -> f32[B, D]`` (a ``logits_fn``, or
      :func:`model_features`).
    target_features: ``f32[B, D]`` the features to reach.
    x_init: ``f32[B, ...]`` the starts, inside ``bounds``.
    steps: number of steps (static).
    lr: initial learning rate (Adam: about the per-step change of a pixel).
    bounds: ``(low, high)`` of valid inputs, or None (unbounded).
    tol: ``converged`` means a relative match error ``<= tol``.
    eps: radius of the ball around ``x_init`` the search stays in (None or
      ``inf``: no ball); may be traced.
    norm: the ball's norm, ``'l2'`` or ``'linf'``.
    optimizer: ``'adam'`` or ``'gd'``.

  Returns:
    A :class:`MetamerSearch`.
  """
  _validate(features_fn, target_features, x_init, steps=steps, lr=lr,
            bounds=bounds, tol=tol, eps=eps, norm=norm, optimizer=optimizer)
  steps = int(steps)
  bounds = None if bounds is None else (float(bounds[0]), float(bounds[1]))
  t = jax.lax.stop_gradient(jnp.asarray(target_features))
  schedule = optax.cosine_decay_schedule(float(lr), steps)
  opt = (optax.adam(schedule) if optimizer == "adam"
         else optax.sgd(schedule))
  x0 = jnp.asarray(x_init)

  def errors(x):
    f = features_fn(x)
    return 0.5 * jnp.sum(jnp.square(f - t)), _rel_error(f, t)

  grad_fn = jax.value_and_grad(errors, has_aux=True)

  def better(err, best_err, x, best_x):
    keep = err < best_err
    return (jnp.where(keep, err, best_err),
            jnp.where(keep.reshape((-1,) + (1,) * (x.ndim - 1)), x, best_x))

  def body(_, carry):
    x, state, best_err, best_x = carry
    (_, err), g = grad_fn(x)
    best_err, best_x = better(err, best_err, x, best_x)
    upd, state = opt.update(g, state, x)
    x = _project(x0, optax.apply_updates(x, upd), eps, norm, bounds)
    return x, state, best_err, best_x

  init_err = _rel_error(features_fn(x0), t)
  inf = jnp.full_like(init_err, jnp.inf)
  x, _, best_err, best_x = jax.lax.fori_loop(
      0, steps, body, (x0, opt.init(x0), inf, x0))
  best_err, best_x = better(_rel_error(features_fn(x), t), best_err, x,
                            best_x)
  return MetamerSearch(best_x, best_err, init_err, best_err <= tol)


def model_metamer(features_fn: FeaturesFn, x_target: Array, x_init: Array,
                  **kwargs) -> MetamerSearch:
  """Model metamers (Feather et al. 2023): ``x`` from ``x_init`` (another
  image, or :func:`noise_like`) whose features equal ``x_target``'s.

  :func:`match_features` with ``target_features = features_fn(x_target)``;
  ``x_target: f32[B, ...]`` has ``x_init``'s shape; keyword arguments as
  there."""
  if tuple(getattr(x_target, "shape", ())) != tuple(
      getattr(x_init, "shape", ())):
    raise ValueError(f"x_target {getattr(x_target, 'shape', None)} and "
                     f"x_init {getattr(x_init, 'shape', None)} must have the "
                     "same shape (one start per target).")
  _checks.check_floating(x_target, "x_target")
  return match_features(features_fn, features_fn(x_target), x_init, **kwargs)


class InvarianceAttackResult(NamedTuple):
  """Result of :func:`invariance_attack` (all ``[B]`` but ``x``).

  Attributes:
    x: ``f32[B, ...]`` the invariance examples (near B, logits of A).
    match_error: relative l2 error of ``x``'s logits to A's.
    matched: ``match_error <= tol``.
    prediction: ``int32``, the model's class of ``x``.
    same_class_as_logits_source: ``prediction`` equals the model's class
      of A.
    distance: ``||x - B||`` in the attack's norm.
  """
  x: Array
  match_error: Array
  matched: Array
  prediction: Array
  same_class_as_logits_source: Array
  distance: Array


def invariance_attack(logits_fn: Callable[[Array], Array],
                      x_logits_source: Array, x_nuisance_source: Array, *,
                      eps=None, norm: str = "l2", steps: int = 500,
                      lr: float = 0.03,
                      bounds: Optional[Tuple[float, float]] = (0.0, 1.0),
                      tol: float = DEFAULT_MATCH_TOL,
                      optimizer: str = "adam") -> InvarianceAttackResult:
  """An ``x`` within ``eps`` of B whose logits equal A's.

  :func:`match_features` of ``logits_fn`` to ``logits_fn(A)``, started at B
  and held in the ``eps``-ball around it. The model then cannot tell ``x``
  from A; whether ``x`` still looks like B is the oracle's call
  (:func:`invariance_rate`). At small ``eps`` a success is also a targeted
  sensitivity example; the larger ``eps`` grows, the more only an
  independent judge can tell an invariance failure from a real change of
  class.

  Args:
    logits_fn: ``f32[B, ...] -> f32[B, K]``, examples independent.
    x_logits_source: ``f32[B, ...]`` A; x_nuisance_source: B, same shape,
      inside ``bounds``.
    eps: the ball's radius around B (None or ``inf``: anywhere in the box);
      may be traced.
    norm, steps, lr, bounds, tol, optimizer: as in :func:`match_features`.

  Returns:
    An :class:`InvarianceAttackResult`.
  """
  res = model_metamer(logits_fn, x_logits_source, x_nuisance_source,
                      eps=eps, norm=norm, steps=steps, lr=lr, bounds=bounds,
                      tol=tol, optimizer=optimizer)
  pred = jnp.argmax(logits_fn(res.x), -1).astype(jnp.int32)
  pred_a = jnp.argmax(logits_fn(x_logits_source), -1).astype(jnp.int32)
  d = (res.x - x_nuisance_source).reshape((res.x.shape[0], -1))
  dist = (jnp.linalg.norm(d, axis=1) if norm == "l2"
          else jnp.max(jnp.abs(d), axis=1))
  return InvarianceAttackResult(res.x, res.match_error, res.converged, pred,
                                pred == pred_a, dist)


def invariance_rate(logits_fn: Callable[[Array], Array],
                    oracle_logits_fn: Callable[[Array], Array],
                    x_logits_source: Array, x_nuisance_source: Array,
                    y_nuisance_source: Array, eps_values: Sequence[float], *,
                    norm: str = "l2", steps: int = 500, lr: float = 0.03,
                    bounds: Optional[Tuple[float, float]] = (0.0, 1.0),
                    tol: float = DEFAULT_MATCH_TOL,
                    optimizer: str = "adam") -> Dict[str, list]:
  """The share of pairs (A, B) whose invariance attack succeeds, per eps.

  A success at ``eps``: :func:`invariance_attack` within ``eps`` of B
  matched A's logits (relative error ``<= tol``) and the oracle still reads
  ``x`` as B's class ``y_nuisance_source``. One compiled program serves
  every eps (``inf``: anywhere in the box).

  Args:
    logits_fn: the model under test; oracle_logits_fn: the judge (never
      differentiated).
    x_logits_source, x_nuisance_source: ``f32[B, ...]`` A and B;
      y_nuisance_source: ``int[B]`` B's classes (choose pairs whose
      classes differ).
    eps_values: radii (floats, ``inf`` allowed).
    norm, steps, lr, bounds, tol, optimizer: as in :func:`invariance_attack`.

  Returns:
    ``{"eps", "invariance_rate", "matched", "same_class_as_logits_source",
    "oracle_reads_nuisance_source", "median_distance"}``, lists over eps
    (host floats); plus ``"x"``, the examples at the last eps.
  """
  eps_values = tuple(float(e) for e in eps_values)
  if not eps_values or any(not e >= 0 for e in eps_values):
    raise ValueError(f"eps_values={eps_values} must be a non-empty list of "
                     "radii >= 0 (inf: anywhere in the box).")
  if tuple(getattr(x_logits_source, "shape", ())) != tuple(
      getattr(x_nuisance_source, "shape", ())):
    raise ValueError(f"x_logits_source {getattr(x_logits_source, 'shape', None)}"
                     f" and x_nuisance_source "
                     f"{getattr(x_nuisance_source, 'shape', None)} must have "
                     "the same shape.")
  if tuple(getattr(y_nuisance_source, "shape", ())) != tuple(
      x_nuisance_source.shape[:1]):
    raise ValueError(f"y_nuisance_source must be int[{x_nuisance_source.shape[0]}]"
                     f", got shape {getattr(y_nuisance_source, 'shape', None)}.")
  kw = dict(norm=norm, steps=int(steps), lr=float(lr), bounds=bounds,
            tol=float(tol), optimizer=optimizer)
  _validate(logits_fn, jax.eval_shape(logits_fn, x_logits_source),
            x_nuisance_source, eps=eps_values[0], **kw)

  @jax.jit
  def run(xa, xb, yb, e):
    r = invariance_attack(logits_fn, xa, xb, eps=e, **kw)
    reads_b = jnp.argmax(oracle_logits_fn(r.x), -1) == yb
    return r, reads_b

  out = {k: [] for k in ("eps", "invariance_rate", "matched",
                         "same_class_as_logits_source",
                         "oracle_reads_nuisance_source", "median_distance")}
  for e in eps_values:
    r, reads_b = run(x_logits_source, x_nuisance_source,
                     jnp.asarray(y_nuisance_source), jnp.float32(e))
    out["eps"].append(e)
    out["invariance_rate"].append(float(jnp.mean(r.matched & reads_b)))
    out["matched"].append(float(jnp.mean(r.matched)))
    out["same_class_as_logits_source"].append(
        float(jnp.mean(r.same_class_as_logits_source)))
    out["oracle_reads_nuisance_source"].append(float(jnp.mean(reads_b)))
    out["median_distance"].append(float(jnp.median(r.distance)))
  out["x"] = r.x
  return out
