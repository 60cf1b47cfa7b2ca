"""Shared pieces of the attacks: results, validation, losses, norms, loops.

Every attack takes a pure ``logits_fn(x: f32[B, ...]) -> f32[B, K]`` that
treats examples independently (no batch statistics), a batch ``x`` in
``bounds`` of any per-example shape (images ``[B, H, W, C]``, vectors
``[B, D]``, ...) and integer labels ``y: int[B]`` in ``[0, K)``. Every attack
starts with :func:`prologue` (validation, the float32 logits, the clean
forward, the invalid examples).
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax import _checks, platform

Array = jax.Array
LogitsFn = Callable[[Array], Array]

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin")
LOOPS = ("fori", "unrolled", "scan")


class AttackResult(NamedTuple):
  """What every attack returns (a pytree of arrays, so it leaves ``jit``).

  Attributes:
    x_adv: ``f32[B, ...]`` (the shape of ``x``) the adversarial (or best
      found) inputs.
    success: ``bool[B]`` the attack's goal holds at ``x_adv`` (untargeted:
      ``argmax != y``; targeted: ``argmax == y``).
    perturbation_norm: ``f32[B]`` ``||x_adv - x||`` in the attack's norm.
      Minimal-perturbation attacks put ``inf`` where they failed.
    bad_grad_steps: ``int32[B]`` how many steps had an all-zero or non-finite
      input gradient for that example (a sign of gradient masking).
    queries: ``int32[B]`` model queries (forwards) spent per example, for
      the score-based :func:`square`; None for the gradient attacks.
    flagged: ``bool[B]`` the example was not attacked because an input of
      it was invalid (:func:`invalid_examples`: ``x`` non-finite or outside
      the bounds, a label outside ``[0, K)``, non-finite clean logits, a
      non-finite or negative ``eps``; possible only under ``jit``/``vmap``,
      concrete inputs raise instead). Its ``success`` is False, ``x_adv`` is
      ``x``, ``perturbation_norm`` 0 (``inf`` from the minimal-perturbation
      attacks) and ``bad_grad_steps`` 0. None from attacks that do not
      check.
  """
  x_adv: Array
  success: Array
  perturbation_norm: Array
  bad_grad_steps: Array
  queries: Optional[Array] = None
  flagged: Optional[Array] = None


def default_loop() -> str:
  """The attacks' loop form on the default backend (``loop=None``):
  ``advinv_jax.platform.defaults().attack_loop`` (``'fori'``, a rolled
  ``lax.fori_loop``, on every backend: its compile time does not grow with
  ``steps``; the module docstring there gives the measurements)."""
  return platform.defaults().attack_loop


def validate_inputs(logits_fn: Optional[LogitsFn], x, y, *, eps=None,
                    norm: Optional[str] = None, bounds=(0.0, 1.0),
                    loss: Optional[str] = None, loop: Optional[str] = None,
                    steps: Optional[int] = None,
                    restarts: Optional[int] = None, step_size=None,
                    rel_step_size=None) -> int:
  """Checks an attack's arguments in Python, before any compilation.

  Shapes and dtypes are checked always (so non-integer labels are refused
  under ``jit`` too); values (``x`` finite and inside ``bounds``, ``eps``,
  step sizes, label range) only when they are concrete (not tracers inside
  an outer ``jit``/``vmap``); traced values are checked in the program by
  :func:`invalid_examples`.

  Returns:
    The number of classes ``K`` (from ``jax.eval_shape`` of ``logits_fn``),
    or ``-1`` when ``logits_fn`` is None.

  Raises:
    ValueError: naming the argument and the fix.
  """
  shape = tuple(getattr(x, "shape", ()))
  if len(shape) < 2:
    raise ValueError(f"x must be a batch f32[B, ...] of examples (rank >= 2: "
                     f"images [B, H, W, C], vectors [B, D]), got shape "
                     f"{shape}; add a batch axis with x[None] or a feature "
                     "axis with x[:, None].")
  if shape[0] == 0:
    raise ValueError("x is an empty batch (B=0): pass at least one example.")
  if x.dtype not in (jnp.float32, jnp.float64):
    raise ValueError(f"x must be float32 (or float64), got dtype {x.dtype}; "
                     "attacks step and project in full precision: pass "
                     "x.astype(jnp.float32) (logits_fn may still compute in "
                     "lower precision inside).")
  yshape = tuple(getattr(y, "shape", ()))
  if yshape != (shape[0],):
    raise ValueError(f"labels y must have shape [B]=({shape[0]},) matching x, "
                     f"got {yshape}; pass integer class ids, not one-hot.")
  if not jnp.issubdtype(y.dtype, jnp.integer):
    raise ValueError(f"labels y must be integers, got dtype {y.dtype}; pass "
                     "class ids (e.g. y.astype(jnp.int32)), not one-hot.")
  if norm is not None and norm not in NORMS:
    raise ValueError(f"norm={norm!r} is unknown; use one of {NORMS}.")
  if loss is not None and loss not in LOSSES:
    raise ValueError(f"loss={loss!r} is unknown; use one of {LOSSES}.")
  if loop is not None and loop not in LOOPS:
    raise ValueError(f"loop={loop!r} is unknown; use one of {LOOPS} or None "
                     "(the platform default).")
  if steps is not None and (int(steps) != steps or steps < 1):
    raise ValueError(f"steps={steps} must be a positive integer.")
  if restarts is not None and (int(restarts) != restarts or restarts < 1):
    raise ValueError(f"restarts={restarts} must be a positive integer.")
  if eps is not None and jnp.ndim(eps) not in (0, 1) or (
      eps is not None and jnp.ndim(eps) == 1 and jnp.shape(eps) != shape[:1]):
    raise ValueError(f"eps must be a scalar or a per-example vector of shape "
                     f"[B]=({shape[0]},), got shape {jnp.shape(eps)}.")
  if eps is not None and _checks.is_concrete(eps):
    e = np.asarray(eps)
    if e.size and (not np.all(np.isfinite(e)) or np.any(e < 0)):
      raise ValueError(f"eps={eps} must be finite and >= 0; pass the radius "
                       "of the perturbation ball (e.g. 8/255 for linf).")
  if bounds is not None:
    if len(tuple(bounds)) != 2 or not float(bounds[0]) < float(bounds[1]):
      raise ValueError(f"bounds={bounds} must be (low, high) with low < high, "
                       "or None for unbounded inputs.")
  for name, v in (("step_size", step_size), ("rel_step_size", rel_step_size)):
    if v is not None and _checks.is_concrete(v) and not (
        np.all(np.isfinite(np.asarray(v))) and np.all(np.asarray(v) > 0)):
      raise ValueError(f"{name}={v} must be finite and > 0 (or None for the "
                       "default).")
  if _checks.is_concrete(x):
    xv = np.asarray(x)
    if not np.all(np.isfinite(xv)):
      raise ValueError(f"x has {int(np.sum(~np.isfinite(xv)))} non-finite "
                       "entries (NaN/Inf); attack only finite inputs.")
    if bounds is not None and (xv.min() < float(bounds[0]) - _BOUNDS_ATOL or
                               xv.max() > float(bounds[1]) + _BOUNDS_ATOL):
      raise ValueError(f"x lies in [{xv.min():.6g}, {xv.max():.6g}], outside "
                       f"bounds={tuple(bounds)}; pass the data's bounds (or "
                       "None for unbounded inputs), or clip x into them.")
  num_classes = -1
  if logits_fn is not None:
    out = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(shape, x.dtype))
    if len(out.shape) != 2 or out.shape[0] != shape[0]:
      raise ValueError(f"logits_fn must map f32{list(shape)} to logits "
                       f"[B={shape[0]}, K], got shape {out.shape}.")
    num_classes = int(out.shape[1])
    if _checks.is_concrete(y):
      yv = np.asarray(y)
      if yv.min() < 0 or yv.max() >= num_classes:
        raise ValueError(f"labels y must lie in [0, {num_classes}) (the "
                         f"logits' width), got range [{yv.min()}, {yv.max()}];"
                         " check the label encoding / num_classes.")
  return num_classes


_BOUNDS_ATOL = 1e-6


def invalid_examples(x: Array, clean_logits: Array, bounds, eps=None,
                     y: Optional[Array] = None) -> Array:
  """``bool[B]``: examples an attack must not attack (traced check).

  An example is invalid when its input has a NaN/Inf or lies outside
  ``bounds`` (by more than 1e-6), its clean logits ``f32[B, K]`` are not all
  finite, its ``eps`` (scalar or ``[B]``) is non-finite or negative, or its
  label ``y: int[B]`` lies outside ``[0, K)``.
  """
  flat = x.reshape((x.shape[0], -1))
  bad = ~jnp.isfinite(batch_norm(x, "l1"))
  if bounds is not None:
    bad |= (jnp.min(flat, -1) < bounds[0] - _BOUNDS_ATOL) | (
        jnp.max(flat, -1) > bounds[1] + _BOUNDS_ATOL)
  bad |= ~jnp.all(jnp.isfinite(clean_logits), axis=-1)
  if eps is not None:
    e = jnp.broadcast_to(jnp.asarray(eps), (x.shape[0],))
    bad |= ~jnp.isfinite(e) | (e < 0)
  if y is not None:
    bad |= labels_out_of_range(y, clean_logits.shape[-1])
  return bad


def labels_out_of_range(y: Array, num_classes: int) -> Array:
  """``bool[B]``: ``y < 0`` or ``y >= num_classes``."""
  return (y < 0) | (y >= num_classes)


def _float32_call(fn, *args):
  out = fn(*args)
  if jnp.issubdtype(out.dtype, jnp.floating) and jnp.finfo(out.dtype).bits < 32:
    return out.astype(jnp.float32)
  return out


def float32_logits(logits_fn: Callable) -> jax.tree_util.Partial:
  """``logits_fn`` with its output cast to float32 where it is a float of
  fewer bits (bfloat16, float16); float32 and float64 outputs pass through
  untouched (the same program, bitwise). Attacks compare, sort and
  differentiate logits in float32, so a low-precision model's rounding
  affects only its own forward. Arguments pass through (``logits_fn(x)``,
  or ``logits_fn(x, key)`` for a randomised model).

  Returned as a :class:`jax.tree_util.Partial` over
  ``Partial(logits_fn)``: equal functions give equal wrappers, and the
  arrays bound in a ``Partial`` ``logits_fn`` stay pytree leaves (what a
  ``jit`` cache keyed on the function needs). Idempotent.
  """
  if isinstance(logits_fn, jax.tree_util.Partial):
    if logits_fn.func is _float32_call:
      return logits_fn
  else:
    logits_fn = jax.tree_util.Partial(logits_fn)
  return jax.tree_util.Partial(_float32_call, logits_fn)


class Prologue(NamedTuple):
  """What :func:`prologue` hands an attack.

  Attributes:
    logits_fn: the attack's ``logits_fn`` through :func:`float32_logits`.
    num_classes: ``K``, the logits' width.
    clean: ``f32[B, K]`` the clean logits ``logits_fn(x)`` (a randomised
      model's under ``PRNGKey(0)``).
    invalid: ``bool[B]`` :func:`invalid_examples` of ``x``, the clean
      logits, ``eps``, ``y`` (and ``target``): not to be attacked, flagged.
    y: ``int[B]`` the labels, 0 where ``invalid`` (so that no label indexes
      outside the logits; those rows are discarded).
    eps: ``eps`` as ``x.dtype``, 0 where ``invalid`` (:func:`safe_eps`);
      None where the attack takes none.
    target: ``int32[B]`` the explicit targets, 0 where ``invalid``; None
      where none were given.
    bounds: ``(low, high)`` floats, or None.
    loop: the loop form (``loop``, or :func:`default_loop` for None).
  """
  logits_fn: Callable
  num_classes: int
  clean: Array
  invalid: Array
  y: Array
  eps: Optional[Array]
  target: Optional[Array]
  bounds: Optional[Tuple[float, float]]
  loop: str


def prologue(logits_fn: Callable, x: Array, y: Array, *, eps=None,
             norm: Optional[str] = None, bounds=(0.0, 1.0),
             loss: Optional[str] = None, loop: Optional[str] = None,
             steps: Optional[int] = None, restarts: Optional[int] = None,
             step_size=None, rel_step_size=None, target=None,
             keyed: bool = False, min_classes: int = 1,
             name: str = "the attack") -> Prologue:
  """The start every attack shares: checks, float32 logits, clean forward.

  1. :func:`validate_inputs` (in Python, before anything is compiled; the
     arguments as there), and ``K >= min_classes``;
  2. ``logits_fn`` wrapped by :func:`float32_logits`;
  3. the clean logits, once;
  4. the traced check :func:`invalid_examples` with the labels (and
     ``target: int[B]``, checked like ``y``), and ``eps``, ``y``,
     ``target`` made safe on the invalid rows.

  Args:
    keyed: ``logits_fn`` is ``logits_fn(x, key)`` (a randomised model):
      shapes and clean logits are taken under ``PRNGKey(0)``.
    min_classes: the fewest classes the attack needs.
    name: the attack's name for the ``min_classes`` error.
    Others: as :func:`validate_inputs`.

  Raises:
    ValueError: from :func:`validate_inputs`, or ``K < min_classes``.
  """
  fn = float32_logits(logits_fn)
  det = fn
  if keyed:
    det = lambda v: fn(v, jax.random.PRNGKey(0))  # noqa: E731
  num_classes = validate_inputs(det, x, y, eps=eps, norm=norm, bounds=bounds,
                                loss=loss, loop=loop, steps=steps,
                                restarts=restarts, step_size=step_size,
                                rel_step_size=rel_step_size)
  if num_classes < min_classes:
    raise ValueError(f"logits_fn has {num_classes} output(s); {name} needs "
                     f"K >= {min_classes} classes.")
  bounds = as_bounds(bounds)
  clean = det(x)
  invalid = invalid_examples(x, clean, bounds, eps, y)
  if target is not None:
    target = jnp.asarray(target, jnp.int32)
    invalid |= labels_out_of_range(target, num_classes)
    target = jnp.where(invalid, 0, target)
  if eps is not None:
    eps = safe_eps(jnp.asarray(eps, x.dtype), invalid)
  return Prologue(logits_fn=fn, num_classes=num_classes, clean=clean,
                  invalid=invalid, y=jnp.where(invalid, 0, y).astype(y.dtype),
                  eps=eps, target=target, bounds=bounds,
                  loop=loop or default_loop())


def safe_eps(eps, invalid: Array):
  """``eps`` with the invalid examples' entries set to 0 (so that they
  compute nothing non-finite); per-example ``[B]`` if any entry changes."""
  eps = jnp.asarray(eps)
  return jnp.where(invalid, jnp.zeros((), eps.dtype), eps)


def flag_invalid(res: AttackResult, x: Array, invalid: Array,
                 minimal: bool = False) -> AttackResult:
  """``res`` with the invalid examples marked: ``flagged`` True, ``success``
  False, ``x_adv = x``, norm 0 (``inf`` for minimal-perturbation attacks),
  no bad gradient steps and no queries."""
  queries = res.queries
  if queries is not None:
    queries = jnp.where(invalid, 0, queries)
  return res._replace(
      x_adv=select(invalid, x, res.x_adv),
      success=res.success & ~invalid,
      perturbation_norm=jnp.where(invalid, jnp.inf if minimal else 0.0,
                                  res.perturbation_norm),
      bad_grad_steps=jnp.where(invalid, 0, res.bad_grad_steps),
      queries=queries, flagged=invalid)


def margin(logits: Array, y: Array) -> Array:
  """``f32[B]``: ``max_{j != y} z_j - z_y`` (> 0 iff misclassified)."""
  k = logits.shape[-1]
  onehot = jax.nn.one_hot(y, k, dtype=bool)
  other = jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)
  own = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
  return other - own


def attack_objective(logits: Array, y: Array, loss: str, targeted: bool,
                     target: Optional[Array] = None) -> Array:
  """Per-example objective the attack *maximises*, ``f32[B]``.

  ``ce``: cross-entropy of ``y`` (untargeted) or its negative (targeted).
  ``margin`` (Carlini-Wagner / DLR numerator): ``max_{j!=y} z_j - z_y``
  untargeted, ``z_y - max_{j!=y} z_j`` targeted (``y`` is then the target).
  With ``target: int[B]`` (multi-targeted untargeted attack) the objective
  is pairwise: ``z_t - z_y`` (margin) or ``CE(y) - CE(t)`` (ce).
  """
  if target is not None:
    zt = jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]
    zy = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
    return zt - zy   # CE(y) - CE(t) = z_t - z_y as well
  if loss == "ce":
    logp = jax.nn.log_softmax(logits, axis=-1)
    ce = -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]
    return -ce if targeted else ce
  m = margin(logits, y)
  return -m if targeted else m


def dlr_loss(logits: Array, y: Array, target: Optional[Array] = None
             ) -> Array:
  """Difference-of-logits-ratio loss (Croce & Hein 2020), ``f32[B]``, to be
  *maximised*.

  With ``z`` sorted descending as ``z_pi1 >= z_pi2 >= ...``: untargeted
  ``-(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3 + 1e-12)``; targeted at
  ``target: int[B]``: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 +
  1e-12)``. The ratio is invariant to shifting and scaling the logits, so a
  saturated softmax or a scaled model does not shrink it. With fewer than 3
  (untargeted) or 4 (targeted) classes the denominator is undefined and the
  unscaled numerator (the margin) is returned instead.
  """
  k = logits.shape[-1]
  zy = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
  if target is None:
    num = -margin(logits, y)            # z_y - max_{j != y} z_j, negated
    if k < 3:
      return num
    top = jax.lax.top_k(logits, 3)[0]
    return num / (top[:, 0] - top[:, 2] + 1e-12)
  zt = jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]
  num = zt - zy
  if k < 4:
    return num
  top = jax.lax.top_k(logits, 4)[0]
  return num / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def top_other_classes(logits: Array, y: Array, n: int) -> Array:
  """``int32[B, n]``: the ``n`` classes other than ``y`` with the highest
  logits, best first (the targets of multi-targeted attacks)."""
  k = logits.shape[-1]
  other = jnp.where(jax.nn.one_hot(y, k, dtype=bool), -jnp.inf, logits)
  return jax.lax.top_k(other, n)[1].astype(jnp.int32)


def is_success(logits: Array, y: Array, targeted: bool) -> Array:
  pred = jnp.argmax(logits, axis=-1)
  return pred == y if targeted else pred != y


def batch_norm(d: Array, norm: str) -> Array:
  """Per-example norm (``'linf'``, ``'l2'`` or ``'l1'``) of ``d: [B, ...]``
  -> ``f32[B]``."""
  flat = d.reshape((d.shape[0], -1))
  if norm == "linf":
    return jnp.max(jnp.abs(flat), axis=-1)
  if norm == "l1":
    return jnp.sum(jnp.abs(flat), axis=-1)
  return jnp.sqrt(jnp.sum(flat * flat, axis=-1))


def dual_norm(g: Array, norm: str) -> Array:
  """Per-example dual norm of ``g: [B, ...]`` (l2 -> l2, linf -> l1): the
  denominator of a linearised distance to the boundary."""
  return batch_norm(g, "l1" if norm == "linf" else "l2")


def _bcast(v: Array, like: Array) -> Array:
  return v.reshape((-1,) + (1,) * (like.ndim - 1))


def eps_like(eps, like: Array):
  """A scalar or per-example ``[B]`` radius, broadcastable against ``like``."""
  eps = jnp.asarray(eps)
  return eps if eps.ndim == 0 else _bcast(eps, like)


def project(x0: Array, x: Array, eps, norm: str, bounds) -> Array:
  """Projects ``x`` onto the ``eps``-ball around ``x0``, then into bounds.

  Clipping to the box after the ball keeps the point inside the ball (each
  coordinate of ``x - x0`` only shrinks, as ``x0`` lies in the box).
  """
  d = x - x0
  if norm == "linf":
    e = eps_like(eps, d)
    d = jnp.clip(d, -e, e)
  else:
    n = batch_norm(d, "l2")
    # A hair inside the ball so float rounding never leaves it.
    scale = jnp.minimum(1.0, eps * (1.0 - 1e-7) / jnp.maximum(n, 1e-12))
    d = d * _bcast(scale, d)
  x = x0 + d
  if bounds is not None:
    x = jnp.clip(x, bounds[0], bounds[1])
  return x


def random_start(key: Array, x0: Array, eps, norm: str) -> Array:
  """Uniform sample from the ``eps``-ball (linf: the cube; l2: the ball)."""
  if norm == "linf":
    return x0 + (jax.random.uniform(key, x0.shape, x0.dtype, -1.0, 1.0) *
                 eps_like(eps, x0))
  k1, k2 = jax.random.split(key)
  d = jax.random.normal(k1, x0.shape, x0.dtype)
  n = batch_norm(d, "l2")
  dim = math.prod(x0.shape[1:])
  r = jax.random.uniform(k2, (x0.shape[0],), x0.dtype) ** (1.0 / dim)
  return x0 + d * _bcast(r * eps / jnp.maximum(n, 1e-12), d)


def steepest_step(g: Array, norm: str) -> Array:
  """Unit-norm steepest ascent direction for the norm (sign / normalised)."""
  if norm == "linf":
    return jnp.sign(g)
  n = batch_norm(g, "l2")
  return g / _bcast(jnp.maximum(n, 1e-12), g)


def checked_grad(grad_fn: Callable[[Array], Tuple[Array, Any]], x: Array,
                 bad: Array) -> Tuple[Array, Any, Array]:
  """``g, aux = grad_fn(x)`` materialised once, and ``bad`` (``int32[B]``)
  plus one for each example whose ``g`` is all-zero or non-finite.

  The ``optimization_barrier`` makes XLA compute ``g`` once for all its
  consumers (the step, the checks): without it XLA CPU fused the gradient's
  last op into each of them (PGD-40 linf on the benchmark CNN: 4.9 s ->
  4.3 s).
  """
  g, aux = grad_fn(x)
  g = jax.lax.optimization_barrier(g)
  return g, aux, bad + bad_grad(g).astype(jnp.int32)


def bad_grad(g: Array) -> Array:
  """``bool[B]``: gradient all-zero or non-finite for that example.

  One float reduction, ``s = sum |g|`` per example: NaN/Inf anywhere makes
  ``s`` non-finite, and ``s == 0`` iff every entry is zero. (Boolean
  ``all(isfinite)`` / ``all(g == 0)`` reductions gave the same answer but made
  XLA CPU's PGD-linf step on the CNN ~1.4x slower.)
  """
  s = batch_norm(g, "l1")
  return ~jnp.isfinite(s) | (s == 0)


def run_loop(body: Callable[[int, Any], Any], init: Any, n: int,
             loop: str) -> Any:
  """``for i in range(n): carry = body(i, carry)`` in the chosen loop form."""
  if loop == "fori":
    return jax.lax.fori_loop(0, n, body, init)
  if loop == "unrolled":
    return jax.lax.fori_loop(0, n, body, init, unroll=True)
  def scan_body(carry, i):
    return body(i, carry), None
  return jax.lax.scan(scan_body, init, jnp.arange(n))[0]


def select(mask: Array, a: Array, b: Array) -> Array:
  """Per-example ``where(mask[b], a[b], b[b])`` for any trailing shape."""
  return jnp.where(_bcast(mask, a), a, b)


def tile_rows(reps: int, x: Array, y: Array, eps: Array
              ) -> Tuple[Array, Array, Array]:
  """``x``, ``y`` (and a per-example ``eps``) repeated ``reps`` times along
  the batch, rows ordered ``[rep, example]`` as :func:`best_of_rows` reads
  them; a scalar ``eps`` stays scalar. ``reps == 1``: unchanged."""
  if reps == 1:
    return x, y, eps
  return (jnp.tile(x, (reps,) + (1,) * (x.ndim - 1)), jnp.tile(y, reps),
          jnp.tile(eps, reps) if eps.ndim == 1 else eps)


def best_of_rows(x_adv: Array, success: Array, score: Array, bad: Array,
                 reps: int, b: int) -> Tuple[Array, Array, Array]:
  """Per example, the best of ``reps`` rows ordered ``[rep, example]``.

  A successful row first, then the highest ``score``. Inputs have ``reps *
  b`` rows; returns ``(x_adv [b, ...], success bool[b], bad int32[b])`` with
  ``success`` any row's and ``bad`` summed over rows.
  """
  shape = x_adv.shape[1:]
  x_adv = x_adv.reshape((reps, b) + shape)
  success = success.reshape(reps, b)
  score = score.reshape(reps, b)
  any_succ = jnp.any(success, axis=0)
  score = jnp.where(any_succ[None], jnp.where(success, score, -jnp.inf),
                    score)
  idx = jnp.argmax(score, axis=0)                                # [b]
  x_adv = jnp.take_along_axis(
      x_adv, idx.reshape((1, b) + (1,) * len(shape)), axis=0)[0]
  return x_adv, any_succ, jnp.sum(bad.reshape(reps, b), axis=0)


def best_restart_result(x: Array, x_adv: Array, success: Array,
                        score: Array, bad: Array, reps: int, norm: str,
                        invalid: Array) -> "AttackResult":
  """The result of a fixed-budget attack run as ``reps`` rows per example
  (``[rep, example]``, :func:`best_of_rows`): per example the best row,
  its ``norm`` distance to ``x f32[B, ...]``, invalid rows flagged
  (:func:`flag_invalid`)."""
  if reps > 1:
    x_adv, success, bad = best_of_rows(x_adv, success, score, bad, reps,
                                       x.shape[0])
  return flag_invalid(AttackResult(
      x_adv=x_adv, success=success,
      perturbation_norm=batch_norm(x_adv - x, norm), bad_grad_steps=bad),
                      x, invalid)


def as_bounds(bounds) -> Optional[Tuple[float, float]]:
  if bounds is None:
    return None
  return (float(bounds[0]), float(bounds[1]))
