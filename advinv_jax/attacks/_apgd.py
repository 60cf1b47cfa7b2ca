"""Auto-PGD (Croce & Hein, ICML 2020): APGD-CE, APGD-DLR and APGD-T."""
from __future__ import annotations

from typing import List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax.attacks import _common as C

Array = jax.Array

APGD_LOSSES = ("ce", "dlr")


def checkpoints(steps: int) -> List[Tuple[int, int]]:
  """APGD's checkpoints ``[(iteration, window length)]`` for ``steps``.

  The paper's ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} -
  0.03, 0.06)``, checkpoint ``w_j = ceil(p_j * steps)``, in the integer form
  of the authors' code: the first window is ``max(int(0.22 steps), 1)``
  iterations long, each next one ``max(int(0.03 steps), 1)`` shorter, never
  shorter than ``max(int(0.06 steps), 1)``. ``iteration`` is 0-based: the
  check runs after that iteration's update.
  """
  k = max(int(0.22 * steps), 1)
  k_min = max(int(0.06 * steps), 1)
  decr = max(int(0.03 * steps), 1)
  out, count = [], 0
  for i in range(steps):
    count += 1
    if count == k:
      out.append((i, k))
      k = max(k - decr, k_min)
      count = 0
  return out


def validate_apgd(*, loss: str, steps, restarts, rho, momentum,
                  num_targets) -> None:
  if loss not in APGD_LOSSES:
    raise ValueError(f"loss={loss!r} is unknown for apgd; use one of "
                     f"{APGD_LOSSES}.")
  if not 0.0 < float(rho) < 1.0:
    raise ValueError(f"rho={rho} must lie in (0, 1) (paper: 0.75).")
  if not 0.0 < float(momentum) <= 1.0:
    raise ValueError(f"momentum={momentum} must lie in (0, 1] (paper: 0.75;"
                     " 1 = no momentum).")
  if int(num_targets) != num_targets or num_targets < 1:
    raise ValueError(f"num_targets={num_targets} must be a positive integer "
                     "(AutoAttack: 9).")
  del steps, restarts   # checked by validate_inputs


def apgd(logits_fn: C.LogitsFn, x: Array, y: Array, *, eps,
         norm: str = "linf", loss: str = "ce", targeted: bool = False,
         num_targets: int = 9, target: Optional[Array] = None,
         steps: int = 100, restarts: int = 1, rho: float = 0.75,
         momentum: float = 0.75, eot_iter: int = 1,
         bounds: Optional[Tuple[float, float]] = (0.0, 1.0),
         loop: Optional[str] = None,
         rng: Optional[Array] = None) -> C.AttackResult:
  """Auto-PGD (Croce & Hein 2020, Algorithm 1), linf or l2.

  Step-size-free PGD with momentum. With ``P`` the projection onto the
  ``eps``-ball and the box, ``dir`` = ``sign`` (linf) or ``g / ||g||_2``
  (l2), and ``alpha = momentum`` (1 at the first step)::

    z_{k+1} = P(x_k + eta_k dir(grad f(x_k)))
    x_{k+1} = P(x_k + alpha (z_{k+1} - x_k) + (1 - alpha)(x_k - x_{k-1}))

  ``eta_0 = 2 eps``. At each checkpoint (:func:`checkpoints`) an example
  halves its ``eta`` and restarts from its best point ``x_max`` (highest
  loss so far) when (1) the loss rose in at most ``rho`` of the steps since
  the last checkpoint, or (2) ``eta`` was not halved at the last checkpoint
  and the best loss did not improve since. All state is per example inside
  one ``lax`` loop. The start is ``x + eps * t / ||t||`` (the ball's surface,
  ``t`` uniform in the cube for linf, Gaussian for l2), clipped to the box,
  as in the authors' code.

  Losses (maximised): ``'ce'`` the cross-entropy of ``y`` (targeted: minus
  the cross-entropy of the target); ``'dlr'`` the difference-of-logits ratio
  (:func:`advinv_jax.attacks._common.dlr_loss`; targeted: the targeted DLR).
  APGD-CE = ``loss='ce'``; APGD-DLR = ``loss='dlr'``; APGD-T (AutoAttack) =
  ``loss='dlr', targeted=True, num_targets=9``.

  Success is untargeted in every mode, as in AutoAttack: an iterate counts
  when ``argmax != y``; a targeted run only steers towards its target.
  Restarts and targets run as one batch of ``restarts * T * B`` rows (one
  compiled loop; memory grows with it); per example the result is a
  successful row if any (its last adversarial iterate), else the row with
  the highest loss (its best point). Cost per row: ``steps + 1`` fwd+bwd.

  Args:
    logits_fn: pure ``f32[B, ...] -> f32[B, K]``, per-example.
    x: ``f32[B, ...]`` clean inputs inside ``bounds`` (any per-example shape).
    y: ``int[B]`` true labels, in ``[0, K)``.
    eps: ball radius, a scalar or per-example ``f32[B]`` (>= 0).
    norm: ``'linf'`` or ``'l2'``.
    loss: ``'ce'`` or ``'dlr'``.
    targeted: APGD-T: run once against each of the ``num_targets`` classes
      with the highest clean logits other than ``y`` (capped at ``K - 1``).
    num_targets: targets per example when ``targeted``.
    target: optional ``int[B]`` explicit target classes (implies a targeted
      loss with one target per example; ``targeted``/``num_targets`` are then
      unused).
    steps: iterations per restart (paper: 100).
    restarts: independent random starts.
    rho: the checkpoint's oscillation threshold (paper: 0.75).
    momentum: ``alpha`` above (paper: 0.75).
    eot_iter: expectation over transformation for randomised models
      (AutoAttack's ``version='rand'``: 20). With ``eot_iter > 1``,
      ``logits_fn`` is called as ``logits_fn(x, key)`` (a model that draws
      its randomness from ``key``) and each step's gradient is the mean of
      ``eot_iter`` gradients under fresh keys (loss the mean, success from
      the last draw).
    bounds: ``(low, high)`` box for inputs, or None.
    loop: ``'fori'`` (default), ``'unrolled'`` or ``'scan'``.
    rng: PRNG key for the random starts (required).

  Returns:
    :class:`AttackResult` with ``x_adv f32[B, ...]``, ``success bool[B]``
    (``argmax != y`` at ``x_adv``, found during the run), ``perturbation_norm
    f32[B]``, ``bad_grad_steps int32[B]`` (summed over rows) and ``flagged
    bool[B]`` (invalid inputs under ``jit``: non-finite, outside the bounds,
    a label or ``target`` outside ``[0, K)``, a bad per-example eps; not
    attacked, never successful).

  Raises:
    ValueError: bad shapes, labels (not integers, or outside ``[0, K)``),
      ``eps < 0``, unknown norm / loss / loop,
      ``steps`` / ``restarts`` / ``num_targets`` < 1, ``rho`` or
      ``momentum`` outside their range, a missing ``rng``.
  """
  validate_apgd(loss=loss, steps=steps, restarts=restarts, rho=rho,
                momentum=momentum, num_targets=num_targets)
  if int(eot_iter) != eot_iter or eot_iter < 1:
    raise ValueError(f"eot_iter={eot_iter} must be a positive integer (1 for"
                     " a deterministic logits_fn).")
  if rng is None:
    raise ValueError("rng is None: apgd starts at random points; pass a "
                     "key, e.g. rng=jax.random.PRNGKey(0).")
  if target is not None and tuple(jnp.shape(target)) != (x.shape[0],):
    raise ValueError(f"target must be int[B]=({x.shape[0]},) class ids, got "
                     f"shape {tuple(jnp.shape(target))}.")
  # Traced inputs that slipped past the eager checks (non-finite, outside
  # the bounds, a label outside [0, K), a bad per-example eps) are not
  # attacked but flagged.
  p = C.prologue(logits_fn, x, y, eps=eps, norm=norm, bounds=bounds,
                 loop=loop, steps=steps, restarts=restarts, target=target,
                 keyed=eot_iter > 1)
  logits_fn, y, eps, bounds, loop = p.logits_fn, p.y, p.eps, p.bounds, p.loop
  invalid = p.invalid

  # Rows ordered [restart, target, example].
  if target is not None:
    tgt, n_t = p.target, 1
  elif targeted:
    n_t = min(int(num_targets), p.num_classes - 1)
    k_clean, rng = jax.random.split(rng)
    clean = logits_fn(x, k_clean) if eot_iter > 1 else p.clean
    cand = C.top_other_classes(clean, y, n_t)                 # [B, T]
    tgt = cand.T.reshape(-1)                                   # [T*B]
  else:
    tgt, n_t = None, 1
  reps = restarts * n_t
  if tgt is not None and restarts > 1:
    tgt = jnp.tile(tgt, restarts)
  x0, y0, eps_r = C.tile_rows(reps, x, y, eps)
  x_adv, success, obj, bad = _apgd_rows(
      logits_fn, x0, y0, tgt, eps_r, norm=norm, loss=loss, steps=int(steps),
      rho=float(rho), momentum=float(momentum), eot_iter=int(eot_iter),
      bounds=bounds, loop=loop, rng=rng)
  return C.best_restart_result(x, x_adv, success, obj, bad, reps, norm,
                               invalid)


def _surface_start(key: Array, x0: Array, eps, norm: str) -> Array:
  """``x0 + eps * t / ||t||``: the start of the authors' code."""
  if norm == "linf":
    t = jax.random.uniform(key, x0.shape, x0.dtype, -1.0, 1.0)
  else:
    t = jax.random.normal(key, x0.shape, x0.dtype)
  n = jnp.maximum(C.batch_norm(t, norm), 1e-12)
  return x0 + t * C.eps_like(eps, t) / C._bcast(n, t)


def _apgd_rows(logits_fn, x0, y0, tgt, eps, *, norm, loss, steps, rho,
               momentum, eot_iter, bounds, loop, rng):
  """One APGD run per row. Returns ``(x_adv, success, best_loss, bad)``."""
  n = x0.shape[0]
  dt = x0.dtype
  rng, k_eot = jax.random.split(rng)

  def objective(xx, key):
    logits = logits_fn(xx, key) if eot_iter > 1 else logits_fn(xx)
    if loss == "dlr":
      obj = C.dlr_loss(logits, y0, tgt)
    elif tgt is not None:
      obj = -C.attack_objective(logits, tgt, "ce", False)
    else:
      obj = C.attack_objective(logits, y0, "ce", False)
    return jnp.sum(obj), (obj, logits)

  one_grad = jax.grad(objective, has_aux=True)

  def grad_at(key):
    if eot_iter == 1:
      return lambda xx: one_grad(xx, None)

    def grad_fn(xx):
      def draw(acc, k):
        g, (obj, logits) = one_grad(xx, k)
        return (acc[0] + g, acc[1] + obj), logits
      keys = jax.random.split(key, eot_iter)
      (g, obj), logits = jax.lax.scan(
          draw, (jnp.zeros_like(xx), jnp.zeros((n,), dt)), keys)
      return g / eot_iter, (obj / eot_iter, logits[-1])
    return grad_fn

  def proj(xx):
    return C.project(x0, xx, eps, norm, bounds)

  ck = checkpoints(steps)
  ck_flag = np.zeros(steps, bool)
  ck_len = np.ones(steps, np.float32)
  for i, k in ck:
    ck_flag[i], ck_len[i] = True, k
  ck_flag, ck_len = jnp.asarray(ck_flag), jnp.asarray(ck_len, dt)

  x_cur = proj(_surface_start(rng, x0, eps, norm))
  bad = jnp.zeros((n,), jnp.int32)
  g, (obj, logits), bad = C.checked_grad(grad_at(k_eot), x_cur, bad)
  found = C.is_success(logits, y0, False)
  eta = jnp.broadcast_to(2.0 * eps, (n,)).astype(dt)
  init = dict(x=x_cur, x_prev=x_cur, g=g, loss=obj, eta=eta,
              x_best=x_cur, g_best=g, loss_best=obj,
              x_found=x_cur, found=found, incr=jnp.zeros((n,), dt),
              loss_best_ck=obj, reduced_ck=jnp.zeros((n,), bool), bad=bad)

  def body(i, s):
    a = jnp.where(i == 0, 1.0, momentum).astype(dt)
    x_k = s["x"]
    z = proj(x_k + C._bcast(s["eta"], x_k) * C.steepest_step(s["g"], norm))
    x_new = proj(x_k + a * (z - x_k) + (1.0 - a) * (x_k - s["x_prev"]))
    g, (obj, logits), bad = C.checked_grad(
        grad_at(jax.random.fold_in(k_eot, i + 1)), x_new, s["bad"])
    adv = C.is_success(logits, y0, False)
    x_found = C.select(adv, x_new, s["x_found"])
    better = obj > s["loss_best"]
    x_best = C.select(better, x_new, s["x_best"])
    g_best = C.select(better, g, s["g_best"])
    loss_best = jnp.where(better, obj, s["loss_best"])
    incr = s["incr"] + (obj > s["loss"]).astype(dt)
    # Checkpoint: halve eta and restart from x_best where the loss
    # oscillated (condition 1) or stalled after an unreduced step (2).
    osc = incr <= ck_len[i] * rho
    stall = ~s["reduced_ck"] & (s["loss_best_ck"] >= loss_best)
    reduce = ck_flag[i] & (osc | stall)
    return dict(
        x=C.select(reduce, x_best, x_new), x_prev=x_k,
        g=C.select(reduce, g_best, g), loss=obj,
        eta=jnp.where(reduce, 0.5 * s["eta"], s["eta"]),
        x_best=x_best, g_best=g_best, loss_best=loss_best,
        x_found=x_found, found=s["found"] | adv,
        incr=jnp.where(ck_flag[i], 0.0, incr).astype(dt),
        loss_best_ck=jnp.where(ck_flag[i], loss_best, s["loss_best_ck"]),
        reduced_ck=jnp.where(ck_flag[i], reduce, s["reduced_ck"]), bad=bad)

  s = C.run_loop(body, init, steps, loop)
  x_adv = C.select(s["found"], s["x_found"], s["x_best"])
  score = jnp.where(s["found"], jnp.inf, s["loss_best"])
  return x_adv, s["found"], score, s["bad"]

