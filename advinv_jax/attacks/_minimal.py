"""Minimal-perturbation attack: DeepFool (l2 and linf) with a line search."""
from __future__ import annotations

from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from advinv_jax.attacks import _common as C

Array = jax.Array


def deepfool(logits_fn: C.LogitsFn, x: Array, y: Array, *, norm: str = "l2",
             steps: int = 50, overshoot: float = 0.02, candidates: int = 9,
             refine_steps: int = 12,
             bounds: Optional[Tuple[float, float]] = (0.0, 1.0)
             ) -> C.AttackResult:
  """DeepFool (Moosavi-Dezfooli et al. 2016), multi-class, l2 or linf.

  At each step the classifier is linearised around the current point; for
  every candidate class ``k`` (the ``candidates`` classes with the highest
  clean logits other than ``y``) the distance to the linearised boundary
  ``z_k = z_y`` is ``|f_k| / ||grad f_k||_*`` (``*``: the dual norm, l1 for
  linf, l2 for l2), and the step goes to the nearest one. The accumulated
  perturbation is scaled by ``1 + overshoot`` (as in Foolbox). Examples stop
  moving once adversarial. Afterwards a bisection over the scale ``t`` of
  ``x + t * (x_adv - x)`` (``refine_steps`` forwards; our addition) removes
  the overshoot, so on a linear model the returned norm is the exact
  distance to the decision boundary up to ``2**-refine_steps`` relative.

  Args:
    logits_fn: pure ``f32[B, ...] -> f32[B, K]``, per-example.
    x: ``f32[B, ...]`` inputs (any per-example shape) inside ``bounds``.
    y: ``int[B]`` true labels in ``[0, K)``. Already misclassified inputs
      are returned unchanged with norm 0.
    norm: ``'l2'`` or ``'linf'``.
    steps: maximum linearisation steps (each costs ``candidates`` backward
      passes and one forward).
    overshoot: relative overshoot of each step.
    candidates: how many other classes are considered (top by clean logit).
    refine_steps: bisection steps of the final line search (0: off).
    bounds: ``(low, high)`` or None.

  The step loop is a ``lax.while_loop`` that exits as soon as every example
  is adversarial (DeepFool typically needs 2-5 steps), so ``steps`` is only
  a cap.

  Returns:
    :class:`AttackResult`; ``perturbation_norm`` is ``inf`` where no
    adversarial example was found (``success`` False, ``x_adv`` = last
    iterate) and where the example is ``flagged`` (invalid inputs or labels
    under ``jit``: not attacked, ``x_adv = x``).

  Raises:
    ValueError: bad shapes, labels (not integers, or outside ``[0, K)``),
      norm, ``x`` outside ``bounds``, ``candidates < 1``, ``overshoot < 0``,
      ``K < 2``.
  """
  if candidates < 1:
    raise ValueError(f"candidates={candidates} must be >= 1.")
  if overshoot < 0:
    raise ValueError(f"overshoot={overshoot} must be >= 0.")
  p = C.prologue(logits_fn, x, y, norm=norm, bounds=bounds, steps=steps,
                 min_classes=2, name="DeepFool")
  logits_fn, y, bounds, num_classes = (p.logits_fn, p.y, p.bounds,
                                       p.num_classes)
  m = min(int(candidates), num_classes - 1)
  onehot_y = jax.nn.one_hot(y, num_classes, dtype=x.dtype)

  clean_logits, invalid = p.clean, p.invalid
  ranked = jnp.argsort(-jnp.where(onehot_y > 0, -jnp.inf, clean_logits),
                       axis=-1)
  cand = ranked[:, :m]                                          # [B, m]
  # Cotangents selecting f_k = z_{cand_k} - z_y: [m, B, K].
  cot = jax.nn.one_hot(cand.T, num_classes, dtype=x.dtype) - onehot_y[None]

  def clip(xx):
    return xx if bounds is None else jnp.clip(xx, bounds[0], bounds[1])

  def body(carry):
    i, x_cur, r_tot, bad, active = carry
    logits, vjp = jax.vjp(logits_fn, x_cur)
    active = ~C.is_success(logits, y, False)
    grads = jax.vmap(lambda c: vjp(c)[0])(cot)                 # [m, B, ...]
    f = jnp.einsum("mbk,bk->mb", cot, logits)                   # [m, B]
    gn = C.dual_norm(grads.reshape((-1,) + grads.shape[2:]),
                     norm).reshape(grads.shape[:2])
    dist = (jnp.abs(f) + 1e-4) / (gn + 1e-8)                   # [m, B]
    best = jnp.argmin(dist, axis=0)                             # [B]
    d_best = jnp.take_along_axis(dist, best[None], axis=0)[0]
    g_best = jnp.take_along_axis(
        grads, best.reshape((1, -1) + (1,) * (grads.ndim - 2)), axis=0)[0]
    if norm == "l2":
      gnb = jnp.take_along_axis(gn, best[None], axis=0)[0]
      r = g_best * C._bcast(d_best / (gnb + 1e-8), g_best)
    else:
      r = jnp.sign(g_best) * C._bcast(d_best, g_best)
    r_tot = r_tot + C.select(active, r, jnp.zeros_like(r))
    x_new = clip(x + (1.0 + overshoot) * r_tot)
    bad = bad + (C.bad_grad(g_best) & active).astype(jnp.int32)
    return i + 1, C.select(active, x_new, x_cur), r_tot, bad, active

  def cond(carry):
    # ``active`` is from the start of the last step: one extra (no-op) step
    # after the last example turns adversarial, then exit.
    return (carry[0] < steps) & jnp.any(carry[4])

  init = (jnp.int32(0), x, jnp.zeros_like(x),
          jnp.zeros((x.shape[0],), jnp.int32), jnp.ones((x.shape[0],), bool))
  _, x_adv, _, bad, _ = jax.lax.while_loop(cond, body, init)

  clean_wrong = ~C.is_success(clean_logits, y, True)
  success = C.is_success(logits_fn(x_adv), y, False)
  if refine_steps > 0:
    delta = x_adv - x

    def bisect(_, lohi):
      lo, hi = lohi
      mid = 0.5 * (lo + hi)
      adv = C.is_success(logits_fn(x + delta * C._bcast(mid, delta)), y, False)
      return jnp.where(adv, lo, mid), jnp.where(adv, mid, hi)

    lo = jnp.zeros((x.shape[0],), x.dtype)
    hi = jnp.ones((x.shape[0],), x.dtype)
    _, hi = jax.lax.fori_loop(0, refine_steps, bisect, (lo, hi))
    x_ref = x + delta * C._bcast(hi, delta)
    x_adv = C.select(success, x_ref, x_adv)
  x_adv = C.select(clean_wrong, x, x_adv)
  success = success | clean_wrong
  pnorm = jnp.where(success, C.batch_norm(x_adv - x, norm), jnp.inf)
  return C.flag_invalid(C.AttackResult(
      x_adv=x_adv, success=success, perturbation_norm=pnorm,
      bad_grad_steps=bad), x, invalid, minimal=True)
