"""Budget sweeps, robustness curves, self-checks, the verified runner, sharding."""
from __future__ import annotations

import inspect
import warnings as _warnings
from typing import Callable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from advinv_jax.attacks import _common as C

Array = jax.Array


def _takes_rng(attack: Callable) -> bool:
  try:
    return "rng" in inspect.signature(attack).parameters
  except (TypeError, ValueError):
    return True


def _check_eps_values(eps_values) -> np.ndarray:
  e = np.asarray(eps_values, dtype=np.float64)
  if e.ndim != 1 or e.size == 0:
    raise ValueError(f"eps_values must be a non-empty 1-D sequence of radii, "
                     f"got shape {e.shape}.")
  if not np.all(np.isfinite(e)) or np.any(e < 0):
    raise ValueError(f"eps_values={e.tolist()} must be finite and >= 0.")
  return e


def eps_sweep(attack: Callable, logits_fn: C.LogitsFn, x: Array, y: Array,
              eps_values: Sequence[float], *, rng: Optional[Array] = None,
              method: str = "vmap", full: bool = False):
  """Runs ``attack`` at every budget in one jitted call.

  Args:
    attack: ``attack(logits_fn, x, y, eps=..., [rng=...]) -> AttackResult``,
      e.g. ``functools.partial(pgd, norm='l2', steps=20)``.
    logits_fn: pure ``f32[B, ...] -> f32[B, K]``.
    x: ``f32[N, ...]`` inputs; y: ``int[N]`` labels.
    eps_values: K budgets (>= 0). The same ``rng`` is used for every budget
      (common random numbers, so success is comparable across budgets).
    rng: PRNG key passed to the attack (if it takes one).
    method: ``'vmap'`` (one batch of K*N examples; fastest) or ``'map'``
      (``lax.map`` over budgets; K times less memory).
    full: return the whole :class:`AttackResult` with a leading ``K`` axis
      (``x_adv f32[K, N, ...]``, ...) instead of only the success mask.

  Returns:
    ``bool[K, N]``: success of the attack per budget and example (or the
    stacked result when ``full``). Rows the attack flags (traced invalid
    inputs or labels, when ``eps_sweep`` runs inside an outer ``jit``;
    non-finite clean logits) are never successful; ``full`` returns
    ``flagged bool[K, N]``.
  """
  e = _check_eps_values(eps_values)
  if method not in ("vmap", "map"):
    raise ValueError(f"method={method!r} must be 'vmap' or 'map'.")
  C.validate_inputs(logits_fn, x, y, bounds=_setting(attack, "bounds",
                                                    (0.0, 1.0)))
  takes_rng = _takes_rng(attack)
  if takes_rng and rng is None:
    rng = jax.random.PRNGKey(0)

  @jax.jit
  def run(x, y, eps, key):
    def one(ei):
      kw = {"rng": key} if takes_rng else {}
      res = attack(logits_fn, x, y, eps=ei, **kw)
      return res if full else res.success
    if method == "vmap":
      return jax.vmap(one)(eps)
    return jax.lax.map(one, eps)

  return run(x, y, jnp.asarray(e, x.dtype), rng)


def robust_accuracy_curve(success: Array, clean_correct: Array) -> Array:
  """Robust accuracy per budget, ``f32[K]``.

  An example counts as robust at budget ``k`` when it is classified
  correctly without attack and the attack failed: ``mean(clean_correct &
  ~success[k])``.

  Args:
    success: ``bool[K, N]`` from :func:`eps_sweep`.
    clean_correct: ``bool[N]`` clean prediction equals the label.
  """
  success = jnp.asarray(success, bool)
  return jnp.mean(jnp.asarray(clean_correct, bool)[None] & ~success, axis=-1)


def attack_success_ratio(success: Array, clean_correct: Array,
                         among: str = "correct") -> Array:
  """Share of inputs for which an adversarial example is found, ``f32[K]``.

  ``among='correct'`` (default): among the initially correctly classified
  inputs, the share the attack flips within the budget (0 when none are
  correct). ``among='all'``: Nar et al.'s metric, the share of all inputs
  for which an adversarial example exists within the budget; a misclassified
  input counts as found (with perturbation 0).
  """
  success = jnp.asarray(success, bool)
  correct = jnp.asarray(clean_correct, bool)[None]
  if among == "correct":
    n = jnp.sum(correct)
    return jnp.where(n > 0, jnp.sum(success & correct, axis=-1) /
                     jnp.maximum(n, 1), 0.0)
  if among == "all":
    return jnp.mean(success | ~correct, axis=-1)
  raise ValueError(f"among={among!r} must be 'correct' or 'all'.")


def check_adversarial(x, x_adv, eps, norm: str,
                      bounds: Optional[Tuple[float, float]] = (0.0, 1.0),
                      atol: float = 1e-6) -> None:
  """Asserts every ``x_adv`` lies in the ``eps``-ball around ``x`` and in bounds.

  Non-jitted (numpy, float64). ``eps=inf`` checks only the bounds. The ball
  tolerance is ``atol * max(1, eps)`` (float32 rounding of a norm is
  relative).

  Raises:
    AssertionError: naming how many examples violate and by how much.
    ValueError: unknown norm or shape mismatch.
  """
  if norm not in C.NORMS:
    raise ValueError(f"norm={norm!r} is unknown; use one of {C.NORMS}.")
  x = np.asarray(x, np.float64)
  xa = np.asarray(x_adv, np.float64)
  if x.shape != xa.shape:
    raise ValueError(f"x_adv shape {xa.shape} differs from x shape {x.shape}.")
  if not np.all(np.isfinite(xa)):
    raise AssertionError(f"x_adv has {np.sum(~np.isfinite(xa))} non-finite "
                         "entries.")
  d = (xa - x).reshape(x.shape[0], -1)
  n = (np.max(np.abs(d), axis=1) if norm == "linf"
       else np.sqrt(np.sum(d * d, axis=1)))
  if np.isfinite(eps):
    tol = atol * max(1.0, float(eps))
    bad = n > float(eps) + tol
    if np.any(bad):
      raise AssertionError(
          f"{int(bad.sum())}/{len(n)} adversarial examples leave the {norm} "
          f"ball of radius {eps}: max norm {n.max():.8g} (tolerance {tol:g}).")
  if bounds is not None:
    lo, hi = float(bounds[0]), float(bounds[1])
    viol = np.maximum(lo - xa, xa - hi).max()
    if viol > atol:
      raise AssertionError(f"x_adv leaves the bounds {bounds} by {viol:.3g} "
                           f"(tolerance {atol:g}).")


def gradient_warnings(bad_grad_steps, max_share: float = 0.01,
                      name: str = "attack") -> List[str]:
  """Warning strings when the share of inputs that ever saw an all-zero or
  non-finite input gradient exceeds ``max_share`` (gradient masking or a
  saturated softmax; try ``loss='margin'``)."""
  bad = np.asarray(bad_grad_steps) > 0
  share = float(bad.mean()) if bad.size else 0.0
  if share > max_share:
    return [f"{name}: {share:.1%} of inputs had an all-zero or non-finite "
            "input gradient during the attack (gradient masking, or a "
            "saturated softmax: try loss='margin'); robust accuracy may be "
            "overestimated."]
  return []


def monotonicity_warnings(eps_values, success, name: str = "attack"
                          ) -> List[str]:
  """Warning strings when success is not monotone in eps.

  A stronger budget must not lose an example that a weaker one flipped
  (the attack is then unreliable, a sign of gradient masking or too few
  steps). ``success: bool[K, N]`` in the order of ``eps_values``.
  """
  e = np.asarray(eps_values, np.float64)
  s = np.asarray(success, bool)[np.argsort(e, kind="stable")]
  # An example succeeded at a smaller budget but fails at a larger one.
  lost = np.zeros(s.shape[1], bool)
  for k in range(1, s.shape[0]):
    lost |= np.any(s[:k], axis=0) & ~s[k]
  if lost.any():
    return [f"{name}: success is not monotone in eps for {int(lost.sum())}/"
            f"{s.shape[1]} inputs (found at a smaller budget, missed at a "
            "larger one): a sign of gradient masking or too few steps / "
            "restarts."]
  return []


def run_attack(attack: Callable, logits_fn: C.LogitsFn, x: Array, y: Array, *,
               eps=float("inf"), rng: Optional[Array] = None,
               verify: bool = True, emit_warnings: bool = True,
               **settings) -> Tuple[C.AttackResult, List[str]]:
  """Validated, jitted, self-checked run of one attack (not jittable itself).

  Validates the arguments before compiling, runs
  ``jax.jit(attack)(logits_fn, x, y, eps=eps, rng=rng, **settings)``, then
  (``verify``) asserts with :func:`check_adversarial` that every
  ``x_adv`` is inside the ``eps``-ball (in ``settings['norm']``) and the
  bounds, and collects gradient-masking warnings (also emitted through
  Python ``warnings`` when ``emit_warnings``).

  Args:
    attack: :func:`pgd`, :func:`fgsm`, :func:`deepfool` or compatible.
    eps: the budget; leave ``inf`` for minimal-perturbation attacks (which
      take no ``eps``).
    rng: PRNG key for attacks that take one; None means
      ``jax.random.PRNGKey(0)`` (this convenience path only; the attacks
      themselves require an explicit key).
    verify: run :func:`check_adversarial` on the result.
    emit_warnings: also raise the warnings through Python ``warnings``.
    **settings: static settings of the attack (``norm``, ``steps``, ...).

  Returns:
    ``(result, warnings)``: the :class:`AttackResult` and a list of strings.
  """
  norm = settings.get("norm", _setting(attack, "norm", "linf"))
  bounds = settings.get("bounds", _setting(attack, "bounds", (0.0, 1.0)))
  takes_eps = "eps" in _params(attack)
  C.validate_inputs(logits_fn, x, y, eps=eps if takes_eps else None,
                    norm=norm, bounds=bounds, loss=settings.get("loss"),
                    loop=settings.get("loop"))
  kw = dict(settings)
  if _takes_rng(attack):
    kw["rng"] = jax.random.PRNGKey(0) if rng is None else rng

  @jax.jit
  def run(x, y, eps, kw_arrays):
    extra = {"eps": eps} if takes_eps else {}
    return attack(logits_fn, x, y, **extra, **kw_static, **kw_arrays)

  kw_arrays = {k: v for k, v in kw.items() if k == "rng"}
  kw_static = {k: v for k, v in kw.items() if k != "rng"}
  result = run(x, y, jnp.asarray(eps if takes_eps else 0.0, x.dtype),
               kw_arrays)
  warns = gradient_warnings(result.bad_grad_steps, name=_name(attack))
  if result.flagged is not None and bool(np.any(result.flagged)):
    warns.append(f"{_name(attack)}: {int(np.sum(result.flagged))} inputs "
                 "were not attacked (non-finite clean logits, or an input, "
                 "label or eps the eager checks could not see): they count "
                 "as failures, see result.flagged.")
  if verify:
    check_adversarial(x, result.x_adv, eps if takes_eps else float("inf"),
                      norm, bounds)
  if emit_warnings:
    for w in warns:
      _warnings.warn(w, RuntimeWarning, stacklevel=2)
  return result, warns


def _setting(attack, name: str, default):
  """The value ``attack`` uses for keyword ``name``: a ``functools.partial``
  keyword, else the signature's default, else ``default``."""
  kw = getattr(attack, "keywords", None) or {}
  if name in kw:
    return kw[name]
  p = _params(attack)
  if name in p and p[name].default is not inspect.Parameter.empty:
    return p[name].default
  return default


def _params(attack):
  try:
    return inspect.signature(attack).parameters
  except (TypeError, ValueError):
    return {}


def _name(attack) -> str:
  f = getattr(attack, "func", attack)
  return getattr(f, "__name__", "attack")


def shard_batch_attack(attack_fn: Callable, mesh: Mesh,
                       axis_name: Optional[str] = None) -> Callable:
  """Data-parallel version of a batched attack over a device mesh.

  Attacks are per-example, so sharding the batch axis is exact: the result
  equals the single-device one (random starts too, with JAX's default
  partitionable threefry PRNG).

  Args:
    attack_fn: ``attack_fn(x, y, *rest) -> pytree`` (e.g. a closure over
      ``pgd`` and the model); ``rest`` (keys, eps) is replicated.
    mesh: a ``jax.sharding.Mesh``.
    axis_name: the mesh axis for the batch (default: the first).

  Returns:
    ``fn(x, y, *rest)`` that places ``x``/``y`` batch-sharded
    (``NamedSharding(mesh, P(axis))``) and runs the jitted attack; outputs
    come back batch-sharded.

  Raises:
    ValueError: (at call time) the batch is not divisible by the axis size.
  """
  axis = axis_name or mesh.axis_names[0]
  if axis not in mesh.axis_names:
    raise ValueError(f"axis_name={axis!r} is not an axis of the mesh "
                     f"{mesh.axis_names}.")
  batch = NamedSharding(mesh, PartitionSpec(axis))
  repl = NamedSharding(mesh, PartitionSpec())
  jitted = jax.jit(attack_fn)
  n = mesh.shape[axis]

  def wrapped(x, y, *rest):
    if x.shape[0] % n:
      raise ValueError(f"batch size {x.shape[0]} is not divisible by the "
                       f"{n} devices of mesh axis {axis!r}; pad or trim the "
                       "batch.")
    x = jax.device_put(x, batch)
    y = jax.device_put(y, batch)
    rest = jax.device_put(rest, repl)
    return jitted(x, y, *rest)

  return wrapped
