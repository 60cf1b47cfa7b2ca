"""Projected gradient descent (Madry et al.) and FGSM / FGM, linf and l2."""
from __future__ import annotations

from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from advinv_jax.attacks import _common as C

Array = jax.Array


def pgd(logits_fn: C.LogitsFn, x: Array, y: Array, *, eps, norm: str = "linf",
        steps: int = 10, rel_step_size: Optional[float] = None,
        step_size=None, restarts: int = 1, random_start: bool = True,
        loss: str = "ce", targeted: bool = False,
        bounds: Optional[Tuple[float, float]] = (0.0, 1.0),
        loop: Optional[str] = None,
        rng: Optional[Array] = None) -> C.AttackResult:
  """Projected gradient ascent on a loss inside an ``eps``-ball.

  Pure and jittable (wrap the call in ``jax.jit`` with ``logits_fn`` closed
  over; ``eps`` may be traced, e.g. under ``vmap`` in :func:`eps_sweep`).
  Each step is ``x <- Proj_{ball, bounds}(x + alpha * dir(grad))`` with
  ``dir = sign`` (linf) or ``grad / ||grad||_2`` (l2). Every iterate is
  scored with the logits its gradient step computes anyway, and per example
  the best iterate over all steps and restarts is kept: a successful one
  first, then the highest loss. Cost: ``restarts * (steps fwd+bwd + 1 fwd)``.

  Args:
    logits_fn: pure ``f32[B, H, W, C] -> f32[B, K]``, per-example.
    x: ``f32[B, H, W, C]`` clean inputs inside ``bounds``.
    y: ``int[B]`` true labels (untargeted) or target labels (targeted).
    eps: ball radius, a scalar or per-example ``f32[B]`` (>= 0).
    norm: ``'linf'`` or ``'l2'``.
    steps: gradient steps per restart.
    rel_step_size: step size relative to ``eps``; default ``2.5 / steps``
      (Madry et al.'s rule; our choice of default).
    step_size: absolute step size; overrides ``rel_step_size``.
    restarts: independent runs from different random starts; per example
      the best is kept.
    random_start: start uniformly in the ball (else at ``x``).
    loss: ``'ce'`` (cross-entropy) or ``'margin'`` (CW / DLR numerator
      ``max_{j!=y} z_j - z_y``).
    targeted: make the prediction equal ``y`` instead of different from it.
    bounds: ``(low, high)`` box for inputs, or None for unbounded.
    loop: ``'fori'``, ``'unrolled'`` or ``'scan'``; None picks
      :func:`default_loop` for the backend.
    rng: PRNG key, required when ``random_start`` is True.

  Returns:
    :class:`AttackResult` with ``x_adv f32[B,H,W,C]``, ``success bool[B]``,
    ``perturbation_norm f32[B]`` (in ``norm``), ``bad_grad_steps int32[B]``.

  Raises:
    ValueError: bad shapes, labels, ``eps < 0``, unknown norm/loss/loop.
  """
  C.validate_inputs(logits_fn, x, y, eps=eps, norm=norm, bounds=bounds,
                    loss=loss, loop=loop, steps=steps, restarts=restarts)
  if random_start and rng is None:
    raise ValueError("rng is None but random_start=True: pass a key, e.g. "
                     "rng=jax.random.PRNGKey(0), or set random_start=False.")
  loop = loop or C.default_loop()
  bounds = C.as_bounds(bounds)
  eps = jnp.asarray(eps, x.dtype)
  if step_size is None:
    rel = 2.5 / steps if rel_step_size is None else rel_step_size
    alpha = C.eps_like(eps * rel, x)
  else:
    alpha = C.eps_like(jnp.asarray(step_size, x.dtype), x)

  def objective(xx):
    logits = logits_fn(xx)
    obj = C.attack_objective(logits, y, loss, targeted)
    return jnp.sum(obj), (obj, logits)

  grad_fn = jax.grad(objective, has_aux=True)

  def update_best(best, xx, obj, logits):
    bx, bsucc, bobj = best
    succ = C.is_success(logits, y, targeted)
    better = (succ & ~bsucc) | ((succ == bsucc) & (obj > bobj))
    return (C.select(better, xx, bx), jnp.where(better, succ, bsucc),
            jnp.where(better, obj, bobj))

  def one_run(key, best, bad):
    if random_start:
      x_cur = C.project(x, C.random_start(key, x, eps, norm), eps, norm, bounds)
    else:
      x_cur = x

    def body(_, carry):
      x_cur, best, bad = carry
      g, (obj, logits) = grad_fn(x_cur)
      best = update_best(best, x_cur, obj, logits)
      bad = bad + C.bad_grad(g).astype(jnp.int32)
      x_new = C.project(x, x_cur + alpha * C.steepest_step(g, norm), eps,
                        norm, bounds)
      return x_new, best, bad

    x_cur, best, bad = C.run_loop(body, (x_cur, best, bad), steps, loop)
    _, (obj, logits) = objective(x_cur)
    return update_best(best, x_cur, obj, logits), bad

  b = x.shape[0]
  best = (x, jnp.zeros((b,), bool), jnp.full((b,), -jnp.inf, x.dtype))
  bad = jnp.zeros((b,), jnp.int32)
  key = rng if rng is not None else jax.random.PRNGKey(0)
  if restarts == 1:
    best, bad = one_run(key, best, bad)
  elif loop == "unrolled":
    for r in range(restarts):
      best, bad = one_run(jax.random.fold_in(key, r), best, bad)
  else:
    def restart_body(r, carry):
      return one_run(jax.random.fold_in(key, r), *carry)
    best, bad = jax.lax.fori_loop(0, restarts, restart_body, (best, bad))
  x_adv, success, _ = best
  return C.AttackResult(x_adv=x_adv, success=success,
                        perturbation_norm=C.batch_norm(x_adv - x, norm),
                        bad_grad_steps=bad)


def fgsm(logits_fn: C.LogitsFn, x: Array, y: Array, *, eps,
         norm: str = "linf", loss: str = "ce", targeted: bool = False,
         bounds: Optional[Tuple[float, float]] = (0.0, 1.0)) -> C.AttackResult:
  """Fast gradient sign method (linf) / fast gradient method (l2).

  One step of size ``eps`` from ``x`` along ``sign(grad)`` (linf) or
  ``grad / ||grad||_2`` (l2), clipped to ``bounds``. The clean point counts
  too: an already misclassified input is returned unchanged. Arguments as
  in :func:`pgd`.
  """
  return pgd(logits_fn, x, y, eps=eps, norm=norm, steps=1, rel_step_size=1.0,
             restarts=1, random_start=False, loss=loss, targeted=targeted,
             bounds=bounds, loop="fori")
