"""Fast Adaptive Boundary attack (FAB, Croce & Hein, ICML 2020): FAB-T and
FAB, linf, l2 and l1, with the box-constrained projections."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax.attacks import _common as C

Array = jax.Array

FAB_NORMS = ("linf", "l2", "l1")
# Logit difference put on the true class so that it is never the closest
# boundary (untargeted FAB).
_EXCLUDED = 1e10


def validate_fab(*, norm, eps, targeted, n_target_classes, steps, restarts,
                 alpha_max, eta, beta, rng) -> None:
  """FAB's own arguments (shapes, labels and bounds: the shared checks)."""
  if norm not in FAB_NORMS:
    raise ValueError(f"norm={norm!r} is unknown for fab; use one of "
                     f"{FAB_NORMS}.")
  if not isinstance(targeted, (bool, np.bool_)):
    raise ValueError(f"targeted={targeted!r} must be True (FAB-T) or False "
                     "(FAB).")
  if (isinstance(n_target_classes, bool) or
      int(n_target_classes) != n_target_classes or n_target_classes < 1):
    raise ValueError(f"n_target_classes={n_target_classes} must be a "
                     "positive integer (AutoAttack: 9).")
  for name, v in (("steps", steps), ("restarts", restarts)):
    if isinstance(v, bool) or int(v) != v or v < 1:
      raise ValueError(f"{name}={v} must be a positive integer (FAB: 100 "
                       "steps, 1 restart).")
  if not (math.isfinite(alpha_max) and 0.0 <= alpha_max <= 1.0):
    raise ValueError(f"alpha_max={alpha_max} must lie in [0, 1] (FAB: 0.1).")
  if not (math.isfinite(eta) and eta >= 1.0):
    raise ValueError(f"eta={eta} must be finite and >= 1 (the overshoot; "
                     "FAB: 1.05).")
  if not (math.isfinite(beta) and 0.0 < beta < 1.0):
    raise ValueError(f"beta={beta} must lie in (0, 1) (the backward step; "
                     "FAB: 0.9).")
  if restarts > 1 and eps is None:
    raise ValueError(f"restarts={restarts} needs eps: the random restarts "
                     "start on the sphere of radius eps / 2; pass eps or "
                     "restarts=1.")
  if restarts > 1 and rng is None:
    raise ValueError(f"restarts={restarts} needs rng for the random starts; "
                     "pass a key, e.g. rng=jax.random.PRNGKey(0).")


def fab(logits_fn: C.LogitsFn, x: Array, y: Array, *, norm: str, eps=None,
        targeted: bool = True, n_target_classes: int = 9,
        target: Optional[Array] = None, steps: int = 100, restarts: int = 1,
        alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
        bounds: Optional[Tuple[float, float]] = (0.0, 1.0),
        loop: Optional[str] = None,
        rng: Optional[Array] = None) -> C.AttackResult:
  """Fast Adaptive Boundary attack (Croce & Hein, ICML 2020): FAB-T / FAB.

  A minimal-perturbation attack. At the iterate ``x_k`` it linearises the
  boundary between the true class ``y`` and a class ``j``: with ``f_j(v) =
  z_j(v) - z_y(v)`` the hyperplane ``pi_j = {v : f_j(x_k) + grad f_j(x_k).(v
  - x_k) = 0}``. FAB-T takes ``j`` = the target ``t``; FAB the class whose
  hyperplane is closest, ``argmin_j |f_j(x_k)| / ||grad f_j(x_k)||_*``
  (``*``: the dual norm, l1 for linf, l2 for l2, linf for l1). Then, with
  ``P(p)`` the smallest perturbation (in the norm) that moves ``p`` onto
  ``pi_j`` while ``p + P(p)`` stays in the box (``bounds``)::

    d_1 = P(x_k),  d_2 = P(x_0),  alpha = clip(||d_1|| / (||d_1|| +
    ||d_2||), 0, alpha_max)
    x_{k+1} = clip_box((1 - alpha) (x_k + eta d_1) + alpha (x_0 + eta d_2))

  a step towards the boundary that is biased towards the clean input
  ``x_0`` (``alpha``) and overshoots it (``eta``). Where ``x_{k+1}`` is
  adversarial (``argmax != y``, also for FAB-T, as in AutoAttack) it is
  kept if its norm is the smallest so far, and the iterate steps back,
  ``x_{k+1} <- x_0 + beta (x_{k+1} - x_0)``. ``x_{k+1}`` is checked by one
  forward, as in the authors' code.

  The box-constrained projection ``P(p)`` onto ``{v : w.v = b}`` has a
  closed form (the paper's Section 3.1). With ``c = w.p - b`` (signs flipped
  so that ``c >= 0``) and ``r_i`` the room of coordinate ``i`` in the
  direction ``-sign(w_i)`` (``p_i - low`` for ``w_i > 0``, ``high - p_i``
  for ``w_i < 0``), ``d_i = -sign(w_i) s_i min(mu, q_i)`` with ``mu >= 0``
  the smallest root of ``H(mu) = sum_i v_i min(mu, q_i) = c``: linf ``v_i =
  |w_i|, q_i = r_i, s_i = 1`` (a common step ``mu``, each coordinate capped
  by its room); l2 ``v_i = w_i^2, q_i = r_i / |w_i|, s_i = |w_i|`` (the KKT
  point ``d = -mu w`` clipped to the box). ``H`` is piecewise linear and
  nondecreasing: sorting the ``q_i`` finds the piece that holds the root.
  l1: the coordinates in decreasing ``|w_i|`` are moved to their room in
  turn until ``w.d = -c`` (the last one partly). Where the box does not
  reach the hyperplane (``H(inf) < c``), every coordinate moves to its
  face: the box point closest to the hyperplane. Without bounds the
  projections are the unconstrained ones, ``d = -c sign(w) / ||w||_1``
  (linf), ``-c w / ||w||_2^2`` (l2), ``-c e_m / w_m`` at ``m = argmax
  |w_i|`` (l1).

  Restarts (``restarts > 1``): restart ``r > 0`` starts at ``clip_box(x_0
  + (eps / 2) u / ||u||)`` (``u`` uniform in the cube for linf, Gaussian for
  l2 and l1) instead of ``x_0``. Targets (FAB-T): the ``n_target_classes``
  classes with the highest clean logits other than ``y`` (AutoAttack's
  choice). Restarts and targets run as one batch of ``restarts * T * B``
  rows in one rolled loop, each row with its own state; per example the
  result is the smallest adversarial point over its rows. With ``eps`` a
  row is done once it holds an adversarial point of norm ``<= eps``: from
  then on its state stops changing (the rows' loop runs ``steps``
  iterations regardless).

  Cost per row: ``steps`` x (1 forward + 1 backward, FAB: ``K`` backwards
  for the Jacobian) + ``steps`` forwards (the check) + 1 forward (the clean
  logits).

  Args:
    logits_fn: pure ``f32[B, ...] -> f32[B, K]``, per-example, ``K >= 2``.
    x: ``f32[B, ...]`` clean inputs inside ``bounds`` (any per-example shape).
    y: ``int[B]`` true labels.
    norm: ``'linf'``, ``'l2'`` or ``'l1'``.
    eps: optional radius (scalar or ``f32[B]``, >= 0). With it, ``success``
      means an adversarial point of norm ``<= eps`` was found (AutoAttack's
      use) and it is the radius of the random restarts (``eps / 2``).
      Without it, ``success`` means any adversarial point was found.
    targeted: FAB-T (True: one boundary per target class) or FAB (False:
      the closest boundary of all classes at every step).
    n_target_classes: targets of FAB-T (capped at ``K - 1``; AutoAttack: 9).
    target: optional ``int[B]`` explicit target per example (one target;
      ``targeted`` and ``n_target_classes`` are then unused).
    steps: iterations per row (AutoAttack: 100).
    restarts: starts per target (the first at ``x``; AutoAttack's FAB-T: 1).
    alpha_max: the largest bias towards ``x_0`` (paper: 0.1).
    eta: the overshoot (paper: 1.05).
    beta: the backward step after success (paper: 0.9).
    bounds: ``(low, high)`` box, or None for unbounded inputs.
    loop: ``'fori'`` (default), ``'unrolled'`` or ``'scan'``.
    rng: PRNG key; needed only for ``restarts > 1``.

  Returns:
    :class:`AttackResult`: ``x_adv f32[B, ...]`` (the smallest adversarial
    point found; ``x`` where none was), ``success bool[B]``,
    ``perturbation_norm f32[B]`` (``||x_adv - x||`` in ``norm``, ``inf``
    where no adversarial point was found; it may exceed ``eps``, with
    ``success`` False), ``bad_grad_steps int32[B]`` (summed over rows) and
    ``flagged bool[B]`` (invalid inputs under ``jit``; not attacked).
    Inputs misclassified clean are returned unchanged with norm 0.

  Raises:
    ValueError (before anything is compiled): bad shapes, labels, bounds,
      ``eps``, norm or loop; ``n_target_classes`` / ``steps`` /
      ``restarts`` < 1; ``alpha_max`` outside [0, 1], ``eta`` < 1, ``beta``
      outside (0, 1); ``restarts > 1`` without ``eps`` or ``rng``; a
      ``target`` of the wrong shape.
  """
  validate_fab(norm=norm, eps=eps, targeted=targeted,
               n_target_classes=n_target_classes, steps=steps,
               restarts=restarts, alpha_max=alpha_max, eta=eta, beta=beta,
               rng=rng)
  if target is not None and (
      tuple(jnp.shape(target)) != (x.shape[0],) or
      not jnp.issubdtype(jnp.asarray(target).dtype, jnp.integer)):
    raise ValueError(f"target must be int[B]=({x.shape[0]},) class ids, got "
                     f"shape {tuple(jnp.shape(target))}.")
  p = C.prologue(logits_fn, x, y, eps=eps, bounds=bounds, loop=loop,
                 target=target, min_classes=2, name="fab")
  logits_fn, num_classes, clean, invalid = (p.logits_fn, p.num_classes,
                                            p.clean, p.invalid)
  y, eps, target, bounds, loop = p.y, p.eps, p.target, p.bounds, p.loop
  b = x.shape[0]
  dt = x.dtype

  # Rows ordered [restart, target, example].
  if target is not None:
    tgt, n_t = jnp.asarray(target, jnp.int32), 1
  elif targeted:
    n_t = min(int(n_target_classes), num_classes - 1)
    tgt = C.top_other_classes(clean, y, n_t).T.reshape(-1)     # [T*B]
  else:
    tgt, n_t = None, 1
  reps = int(restarts) * n_t
  if tgt is not None and restarts > 1:
    tgt = jnp.tile(tgt, restarts)
  x0, y0, eps_r = C.tile_rows(reps, x, y,
                              jnp.zeros((), dt) if eps is None else eps)
  starts = x0
  if restarts > 1:
    rows = n_t * b
    u = _random_direction(rng, x0[rows:], norm)
    rest = x0[rows:] + u * C.eps_like(0.5 * eps_r[rows:] if eps_r.ndim
                                      else 0.5 * eps_r, u)
    starts = jnp.concatenate([x0[:rows], _clip(rest, bounds)])
  x_best, norm_best, bad = _fab_rows(
      logits_fn, x0, y0, tgt, starts, None if eps is None else eps_r,
      norm=norm, steps=int(steps), alpha_max=float(alpha_max),
      eta=float(eta), beta=float(beta), bounds=bounds, loop=loop)
  found = jnp.isfinite(norm_best)
  if reps > 1:
    x_best, found, bad = C.best_of_rows(x_best, found, -norm_best, bad,
                                        reps, b)
  clean_adv = jnp.argmax(clean, -1) != y
  x_adv = C.select(found & ~clean_adv, x_best, x)
  pnorm = jnp.where(found | clean_adv, C.batch_norm(x_adv - x, norm),
                    jnp.inf)
  success = found | clean_adv
  if eps is not None:
    success &= pnorm <= eps
  return C.flag_invalid(C.AttackResult(
      x_adv=x_adv, success=success, perturbation_norm=pnorm,
      bad_grad_steps=bad), x, invalid, minimal=True)


def _clip(v: Array, bounds) -> Array:
  return v if bounds is None else jnp.clip(v, bounds[0], bounds[1])


def _random_direction(key: Array, like: Array, norm: str) -> Array:
  """``u / ||u||`` per example: ``u`` uniform in the cube (linf) or
  Gaussian (l2, l1)."""
  if norm == "linf":
    u = jax.random.uniform(key, like.shape, like.dtype, -1.0, 1.0)
  else:
    u = jax.random.normal(key, like.shape, like.dtype)
  return u / C._bcast(jnp.maximum(C.batch_norm(u, norm), 1e-12), u)


def _norm(d: Array, norm: str) -> Array:
  """Norm over the last axis of ``d: [..., D]``."""
  if norm == "linf":
    return jnp.max(jnp.abs(d), -1)
  if norm == "l2":
    return jnp.sqrt(jnp.sum(d * d, -1))
  return jnp.sum(jnp.abs(d), -1)


_DUAL = {"linf": "l1", "l2": "l2", "l1": "linf"}


def _dual(g: Array, norm: str) -> Array:
  """Dual norm over the last axis of ``g: [..., D]``."""
  return _norm(g, _DUAL[norm])


def project_hyperplane(p: Array, w: Array, c: Array, norm: str,
                       bounds) -> Array:
  """The box-constrained projection of FAB, ``d: f32[N, D]``.

  Args:
    p: ``f32[N, D]`` points inside ``bounds``.
    w: ``f32[N, D]`` hyperplane normals.
    c: ``f32[N]`` ``w.p - b``: the signed offset of ``p`` from the
      hyperplane ``{v : w.v = b}``.
    norm: ``'linf'``, ``'l2'`` or ``'l1'``.
    bounds: ``(low, high)`` or None.

  Returns:
    The smallest ``d`` (in ``norm``) with ``w.(p + d) = b`` and ``p + d``
    in the box; where the box does not reach the hyperplane, ``d`` moves
    every coordinate with ``w_i != 0`` to the face that lowers ``|w.v -
    b|`` (the box point closest to the hyperplane). See :func:`fab`.
  """
  flip = jnp.where(c < 0, -1.0, 1.0).astype(w.dtype)
  w = w * flip[:, None]
  c = c * flip
  sgn = jnp.sign(w)
  aw = jnp.abs(w)
  if bounds is None:
    if norm == "linf":
      return -sgn * (c / jnp.maximum(jnp.sum(aw, -1), 1e-30))[:, None]
    if norm == "l2":
      return -w * (c / jnp.maximum(jnp.sum(w * w, -1), 1e-30))[:, None]
    m = jnp.argmax(aw, -1)
    wm = jnp.take_along_axis(w, m[:, None], -1)[:, 0]
    return (jax.nn.one_hot(m, w.shape[-1], dtype=w.dtype) *
            (-c / jnp.where(wm == 0, 1.0, wm))[:, None])
  room = jnp.where(w > 0, p - bounds[0], bounds[1] - p)
  room = jnp.where(w == 0, 0.0, jnp.maximum(room, 0.0))
  if norm == "l1":
    order = jnp.argsort(-aw, axis=-1)
    ws = jnp.take_along_axis(aw, order, -1)
    rs = jnp.take_along_axis(room, order, -1)
    reach = jnp.cumsum(ws * rs, -1)
    before = reach - ws * rs                     # reduction before i
    amount = jnp.clip((c[:, None] - before) / jnp.where(ws > 0, ws, 1.0),
                      0.0, rs)
    amount = jnp.where(ws > 0, amount, 0.0)
    inv = jnp.argsort(order, axis=-1)
    return -sgn * jnp.take_along_axis(amount, inv, -1)
  if norm == "linf":
    v, q, s = aw, room, jnp.ones_like(w)
  else:
    big = aw > 1e-8
    v = jnp.where(big, w * w, 0.0)
    q = jnp.where(big, room / jnp.where(big, aw, 1.0), 0.0)
    s = aw
  order = jnp.argsort(q, axis=-1)
  qs = jnp.take_along_axis(q, order, -1)
  vs = jnp.take_along_axis(v, order, -1)
  below = jnp.cumsum(vs * qs, -1) - vs * qs      # A_k = sum_{i<k} v q
  above = jnp.flip(jnp.cumsum(jnp.flip(vs, -1), -1), -1)   # sum_{i>=k} v
  h = below + qs * above                         # H(q_(k)), nondecreasing
  k = jnp.sum(h < c[:, None], -1)                # the piece holding the root
  reachable = k < w.shape[-1]
  kk = jnp.minimum(k, w.shape[-1] - 1)[:, None]
  a_k = jnp.take_along_axis(below, kk, -1)[:, 0]
  v_k = jnp.take_along_axis(above, kk, -1)[:, 0]
  mu = jnp.where(v_k > 0, (c - a_k) / jnp.where(v_k > 0, v_k, 1.0), 0.0)
  mu = jnp.where(reachable, jnp.maximum(mu, 0.0), jnp.inf)
  return -sgn * s * jnp.minimum(mu[:, None], q)


def _fab_rows(logits_fn, x0, y0, tgt, starts, eps, *, norm, steps,
              alpha_max, eta, beta, bounds, loop):
  """FAB on each row. Returns ``(x_best, norm_best, bad)``: the smallest
  adversarial point per row and its norm (``inf``: none found)."""
  n = x0.shape[0]
  dt = x0.dtype
  shape = x0.shape
  flat0 = x0.reshape((n, -1))
  rows = jnp.arange(n)

  fn = logits_fn

  if tgt is not None:
    def diff(v):
      z = fn(v)
      f = z[rows, tgt] - z[rows, y0]
      return jnp.sum(f), f

    def boundary(v):
      g, f = jax.grad(diff, has_aux=True)(v)
      return f, g.reshape((n, -1))
  else:
    def boundary(v):
      z, vjp = jax.vjp(fn, v)
      k = z.shape[-1]
      jac = jax.vmap(lambda e: vjp(jnp.broadcast_to(e, z.shape))[0])(
          jnp.eye(k, dtype=dt))                            # [K, N, ...]
      jac = jnp.moveaxis(jac.reshape((k, n, -1)), 0, 1)    # [N, K, D]
      f = z - z[rows, y0][:, None]
      g = jac - jac[rows, y0][:, None]
      onehot = jax.nn.one_hot(y0, k, dtype=bool)
      dist = jnp.abs(f) / (_dual(g, norm) + 1e-12)
      j = jnp.argmin(jnp.where(onehot, _EXCLUDED, dist), -1)
      return f[rows, j], g[rows, j]

  def body(_, s):
    x1, best, best_norm, bad = s["x"], s["best"], s["best_norm"], s["bad"]
    f, w = boundary(x1.reshape(shape))
    w = jax.lax.optimization_barrier(w)
    bad = bad + C.bad_grad(w).astype(jnp.int32)
    # The hyperplane w.v = w.x1 - f; offsets of x1 and x0 from it.
    d1 = project_hyperplane(x1, w, f, norm, bounds)
    d2 = project_hyperplane(flat0, w, f + jnp.sum(w * (flat0 - x1), -1),
                            norm, bounds)
    a1 = jnp.maximum(_norm(d1, norm), 1e-8)
    a2 = jnp.maximum(_norm(d2, norm), 1e-8)
    alpha = jnp.clip(a1 / (a1 + a2), 0.0, alpha_max)[:, None]
    x_new = _clip((1.0 - alpha) * (x1 + eta * d1) +
                  alpha * (flat0 + eta * d2), bounds)
    adv = jnp.argmax(fn(x_new.reshape(shape)), -1) != y0
    dist = _norm(x_new - flat0, norm)
    better = adv & (dist < best_norm)
    best = jnp.where(better[:, None], x_new, best)
    best_norm = jnp.where(better, dist, best_norm)
    x_new = jnp.where(adv[:, None], flat0 + beta * (x_new - flat0), x_new)
    keep = s["done"]
    done = keep if eps is None else keep | (best_norm <= eps)
    return dict(x=jnp.where(keep[:, None], x1, x_new),
                best=jnp.where(keep[:, None], s["best"], best),
                best_norm=jnp.where(keep, s["best_norm"], best_norm),
                bad=jnp.where(keep, s["bad"], bad), done=done)

  init = dict(x=starts.reshape((n, -1)), best=flat0,
              best_norm=jnp.full((n,), jnp.inf, dt),
              bad=jnp.zeros((n,), jnp.int32), done=jnp.zeros((n,), bool))
  s = C.run_loop(body, init, steps, loop)
  return s["best"].reshape(shape), s["best_norm"], s["bad"]
