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
        loss: str = "ce", targeted: bool = False, num_targets: int = 0,
        bounds: Optional[Tuple[float, float]] = (0.0, 1.0),
        loop: Optional[str] = None,
        rng: Optional[Array] = None) -> C.AttackResult:
  """Projected gradient ascent on a loss inside an ``eps``-ball.

  Pure and jittable (wrap the call in ``jax.jit`` with ``logits_fn`` closed
  over; ``eps`` may be traced, e.g. under ``vmap`` in :func:`eps_sweep`).
  Each step is ``x <- Proj_{ball, bounds}(x + alpha * dir(grad))`` with
  ``dir = sign`` (linf) or ``grad / ||grad||_2`` (l2). Every iterate is
  scored with the logits its gradient step computes anyway, and per example
  the best iterate over all steps, restarts and targets is kept: a
  successful one first, then the highest objective. Restarts and targets
  are run as one batch of ``restarts * max(1, num_targets) * B`` rows (one
  compiled loop; memory grows with it). Cost per row: ``steps`` fwd+bwd and
  one forward.

  Args:
    logits_fn: pure ``f32[B, ...] -> f32[B, K]``, per-example.
    x: ``f32[B, ...]`` clean inputs inside ``bounds`` (any per-example
      shape: images ``[B, H, W, C]``, vectors ``[B, D]``).
    y: ``int[B]`` true labels (untargeted) or target labels (targeted), in
      ``[0, K)``.
    eps: ball radius, a scalar or per-example ``f32[B]`` (>= 0).
    norm: ``'linf'`` or ``'l2'``.
    steps: gradient steps per restart.
    rel_step_size: step size relative to ``eps``; default ``2.5 / steps``
      for linf (Madry et al.'s rule) and ``max(2.5 / steps, 0.25)`` for l2
      (smaller l2 steps rotate a random start towards the gradient too
      slowly; our choice, checked on linear models).
    step_size: absolute step size; overrides ``rel_step_size``.
    restarts: independent runs from different random starts.
    random_start: start uniformly in the ball (else at ``x``).
    loss: ``'ce'`` (cross-entropy) or ``'margin'`` (CW / DLR numerator
      ``max_{j!=y} z_j - z_y``).
    targeted: make the prediction equal ``y`` instead of different from it.
    num_targets: multi-targeted attack (Gowal et al. 2019; untargeted only):
      if > 0, run against each of the ``num_targets`` other classes with the
      highest clean logits, maximising the pairwise margin ``z_t - z_y``
      (then ``loss`` is unused). Exact on linear models.
    bounds: ``(low, high)`` box for inputs, or None for unbounded.
    loop: ``'fori'``, ``'unrolled'`` or ``'scan'``; None picks
      :func:`default_loop` (``'fori'``: compile time independent of
      ``steps``).
    rng: PRNG key, required when ``random_start`` is True.

  Returns:
    :class:`AttackResult` with ``x_adv f32[B, ...]``, ``success bool[B]``,
    ``perturbation_norm f32[B]`` (in ``norm``), ``bad_grad_steps int32[B]``
    (summed over restarts and targets), ``flagged bool[B]``.

  Raises:
    ValueError: bad shapes, labels (not integers, or outside ``[0, K)``),
      dtype (float32/float64 only), ``eps < 0``, step sizes <= 0, ``x``
      non-finite or outside ``bounds``, unknown norm/loss/loop (values
      checked when concrete; traced invalid examples, labels included, come
      back ``flagged``, never successful).
  """
  if random_start and rng is None:
    raise ValueError("rng is None but random_start=True: pass a key, e.g. "
                     "rng=jax.random.PRNGKey(0), or set random_start=False.")
  if num_targets < 0 or (num_targets and targeted):
    raise ValueError(f"num_targets={num_targets} must be >= 0, and 0 for a "
                     "targeted attack.")
  p = C.prologue(logits_fn, x, y, eps=eps, norm=norm, bounds=bounds,
                 loss=loss, loop=loop, steps=steps, restarts=restarts,
                 step_size=step_size, rel_step_size=rel_step_size)
  logits_fn, y, eps, bounds, loop = p.logits_fn, p.y, p.eps, p.bounds, p.loop
  clean, invalid = p.clean, p.invalid
  n_t = min(int(num_targets), p.num_classes - 1)
  reps = restarts * max(1, n_t)

  # Rows ordered [restart, target, example].
  target = None
  if n_t:
    cand = C.top_other_classes(clean, y, n_t)                 # [B, T]
    target = jnp.tile(cand.T.reshape(-1), restarts)           # [R*T*B]
  x0, y0, eps_r = C.tile_rows(reps, x, y, eps)

  if step_size is None:
    rel = rel_step_size
    if rel is None:
      rel = 2.5 / steps if norm == "linf" else max(2.5 / steps, 0.25)
    alpha = C.eps_like(eps_r * rel, x0)
  else:
    alpha = C.eps_like(jnp.asarray(step_size, x.dtype), x0)

  def objective(xx):
    logits = logits_fn(xx)
    obj = C.attack_objective(logits, y0, loss, targeted, target)
    return jnp.sum(obj), (obj, logits)

  grad_fn = jax.grad(objective, has_aux=True)

  def update_best(best, xx, obj, logits):
    bx, bsucc, bobj = best
    succ = C.is_success(logits, y0, targeted)
    better = (succ & ~bsucc) | ((succ == bsucc) & (obj > bobj))
    return (C.select(better, xx, bx), jnp.where(better, succ, bsucc),
            jnp.where(better, obj, bobj))

  if random_start:
    x_cur = C.project(x0, C.random_start(rng, x0, eps_r, norm), eps_r, norm,
                      bounds)
  else:
    x_cur = x0

  def body(_, carry):
    x_cur, best, bad = carry
    g, (obj, logits), bad = C.checked_grad(grad_fn, x_cur, bad)
    best = update_best(best, x_cur, obj, logits)
    x_new = C.project(x0, x_cur + alpha * C.steepest_step(g, norm), eps_r,
                      norm, bounds)
    return x_new, best, bad

  n = x0.shape[0]
  best = (x0, jnp.zeros((n,), bool), jnp.full((n,), -jnp.inf, x.dtype))
  bad = jnp.zeros((n,), jnp.int32)
  x_cur, best, bad = C.run_loop(body, (x_cur, best, bad), steps, loop)
  _, (obj, logits) = objective(x_cur)
  x_adv, success, obj = update_best(best, x_cur, obj, logits)

  return C.best_restart_result(x, x_adv, success, obj, bad, reps, norm,
                               invalid)


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
