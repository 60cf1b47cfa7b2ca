"""AutoAttack (Croce & Hein, ICML 2020): a parameter-free ensemble, worst
case per input, with its sanity checks."""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Dict, List, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax.attacks import _common as C
from advinv_jax.attacks._apgd import apgd, validate_apgd
from advinv_jax.attacks._fab import fab
from advinv_jax.attacks._fmn import fmn
from advinv_jax.attacks._square import (SquareState, square,
                                        square_segment, validate_square)

Array = jax.Array

VERSIONS = ("standard", "plus", "rand", "custom")
MODES = ("host", "masked")
MEMBERS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "fmn", "fmn-t",
           "square")
# AutoAttack's run order per version ('custom': the ``attacks`` given).
VERSION_ATTACKS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
_GRADIENT_FREE = ("square",)
FLAG_NAMES = ("outside_eps_ball", "out_of_bounds", "nonfinite", "randomized",
              "gradient_masking", "zero_gradients", "probability_outputs",
              "few_classes", "invalid_inputs")


@dataclasses.dataclass(frozen=True)
class AutoAttackResult:
  """What :func:`autoattack` returns (a pytree; ``attacks``, ``norm`` and
  ``version`` are static).

  Attributes:
    x_adv: ``f32[B, ...]`` (the shape of ``x``): the adversarial example of
      the first attack that succeeded, else ``x``.
    success: ``bool[B]``: not robust -- misclassified clean, or an
      adversarial example inside the ``eps``-ball and the bounds was found
      (confirmed by a fresh forward); False where ``flagged``.
    attack_index: ``int32[B]``: index into ``attacks`` of the attack that
      succeeded, ``-1`` where none did (robust inputs and clean errors).
    clean_correct: ``bool[B]``: clean prediction equals ``y`` (False where
      ``flagged``).
    robust_accuracy: ``f32[]``: ``mean(clean_correct & ~success)`` over the
      rows not ``flagged`` (flagged rows count neither as robust nor as
      broken; NaN if every row is flagged).
    per_attack_success: ``int32[M]`` (``M = len(attacks)``): inputs each
      attack flipped (each runs only on inputs still robust).
    seconds: ``f32[M]``: wall time per attack (host mode; zeros in masked
      mode).
    flags: ``{name: bool[]}`` AutoAttack's sanity checks, True = the problem
      is present (see :func:`autoattack`).
    robust_accuracy_after: ``f32[M]``: the robust accuracy after each
      member (AutoAttack's log line "robust accuracy after ...").
    passes: ``int32[M, 2]``: per member the model's forward and backward
      passes, counted in examples (a batch of ``n`` rows is ``n`` passes),
      as the member's program computes them: padding rows of host mode and
      rows that already succeeded but share the batch included, the
      clean forwards and the confirming forward included. A Jacobian of
      ``K`` logits (FAB) is ``K`` backwards.
    max_perturbation: ``f32[M]``: after each member, the largest
      ``||x_adv - x||`` (in ``norm``) over the batch (0 where nothing was
      broken yet); the last entry is the final ``x_adv``'s.
    x_adv_range: ``f32[M, 2]``: after each member, ``(min, max)`` of
      ``x_adv``'s entries (the pixel range).
    eps: ``f32[]`` the radius.
    flagged: ``bool[B]``: rows no member attacked because an input of them
      was invalid (:func:`advinv_jax.attacks._common.invalid_examples`: ``x``
      non-finite or outside the bounds, a label outside ``[0, K)``,
      non-finite clean logits); only non-finite clean logits are possible
      in host mode, where everything else raises before the run.
    attacks: tuple of attack names in run order.
    norm: ``'linf'`` or ``'l2'``.
    version: the ``version`` argument (``attacks`` may have replaced its
      members).
  """
  x_adv: Array
  success: Array
  attack_index: Array
  clean_correct: Array
  robust_accuracy: Array
  per_attack_success: Array
  seconds: Array
  flags: Dict[str, Array]
  robust_accuracy_after: Array = None
  passes: Array = None
  max_perturbation: Array = None
  x_adv_range: Array = None
  eps: Array = None
  flagged: Array = None
  attacks: Tuple[str, ...] = ()
  norm: str = ""
  version: str = ""


jax.tree_util.register_dataclass(
    AutoAttackResult,
    data_fields=["x_adv", "success", "attack_index", "clean_correct",
                 "robust_accuracy", "per_attack_success", "seconds", "flags",
                 "robust_accuracy_after", "passes", "max_perturbation",
                 "x_adv_range", "eps", "flagged"],
    meta_fields=["attacks", "norm", "version"])


def autoattack_log(result: AutoAttackResult) -> List[str]:
  """AutoAttack's verbose log for a finished run, as lines (host side): the
  header, the clean accuracy, per member the inputs it broke, the robust
  accuracy after it, its time and passes, then the largest perturbation,
  the non-finite entries and the pixel range of ``x_adv``, and the robust
  accuracy. ``autoattack(..., verbose=True)`` prints the same lines while
  it runs."""
  n = int(np.asarray(result.success).shape[0])
  correct = int(np.sum(np.asarray(result.clean_correct)))
  lines = [_header_line(result.version, result.attacks, result.norm,
                        float(result.eps), n), _clean_line(correct, n)]
  left = correct
  per = np.asarray(result.per_attack_success)
  total = 0.0
  for m, name in enumerate(result.attacks):
    total += float(result.seconds[m])
    lines.append(_member_line(
        name, int(per[m]), left, float(result.robust_accuracy_after[m]),
        float(result.seconds[m]), total, np.asarray(result.passes[m])))
    left -= int(per[m])
  lines += _final_lines(result.norm, result.x_adv,
                        float(result.max_perturbation[-1]),
                        float(result.robust_accuracy))
  return lines


def _header_line(version, attacks, norm, eps, n):
  return (f"autoattack {version}: {', '.join(attacks)}; {norm} eps="
          f"{eps:g}; {n} inputs")


def _clean_line(correct, n):
  return f"initial accuracy: {correct / n:.2%} ({correct} of {n})"


def _member_line(name, broken, attacked, after, secs, total, passes):
  return (f"{name}: {broken} of {attacked} inputs broken; robust accuracy "
          f"after {name.upper()}: {after:.2%} ({secs:.1f} s, total "
          f"{total:.1f} s; {int(passes[0])} forwards, {int(passes[1])} "
          "backwards)")


def _final_lines(norm, x_adv, max_pert, robust):
  xa = np.asarray(x_adv)
  return [f"max {norm} perturbation: {max_pert:.5f}, nan in x_adv: "
          f"{int(np.sum(np.isnan(xa)))}, max: {float(np.nanmax(xa)):.5f}, "
          f"min: {float(np.nanmin(xa)):.5f}",
          f"robust accuracy: {robust:.2%}"]


def autoattack_warnings(result: AutoAttackResult) -> list:
  """Human-readable warnings for the flags that fired (host side)."""
  text = {
      "outside_eps_ball": "an attack returned a point outside the eps-ball "
                          "(it was not counted; a bug in that attack)",
      "out_of_bounds": "an attack returned a point outside the input bounds "
                       "(it was not counted)",
      "nonfinite": "non-finite logits or inputs occurred: the model is "
                   "numerically unstable, robust accuracy is unreliable",
      "randomized": "two clean forwards of the model disagree: the model is "
                    "randomised; use version='rand' (EOT) with an explicit "
                    "key",
      "gradient_masking": "the gradient-free Square attack found adversarial "
                          "examples that the gradient attacks missed: a sign "
                          "of gradient masking; robust accuracy from "
                          "gradient attacks alone would be overestimated",
      "zero_gradients": "more than 1% of attacked inputs had all-zero or "
                        "non-finite input gradients (gradient masking or a "
                        "saturated softmax)",
      "probability_outputs": "the logits look like probabilities (rows in "
                             "[0, 1] summing to 1): pass the logits before "
                             "the softmax",
      "few_classes": "fewer than 4 classes: the (targeted) DLR loss falls "
                     "back to the unscaled margin",
      "invalid_inputs": "some rows were invalid (an input non-finite or "
                        "outside the bounds or a label outside [0, K), "
                        "possible only under jit where they cannot be "
                        "checked before the run, or non-finite clean "
                        "logits): no member attacked them and the robust "
                        "accuracy leaves them out (result.flagged); fix "
                        "the inputs",
  }
  return [f"autoattack: {text[k]}." for k in FLAG_NAMES
          if bool(result.flags.get(k, False))]


def autoattack(logits_fn: C.LogitsFn, x: Array, y: Array, *, eps,
               norm: str = "linf", version: str = "standard",
               attacks: Optional[Tuple[str, ...]] = None, steps: int = 100,
               restarts: Optional[int] = None, num_targets: int = 9,
               queries: int = 5000, p_init: float = 0.8,
               fab_steps: int = 100, fmn_steps: int = 100,
               eot_iter: int = 20,
               bounds: Optional[Tuple[float, float]] = (0.0, 1.0),
               mode: str = "host", min_bucket: int = 8,
               loop: Optional[str] = None,
               verbose: Union[bool, Callable[[str], None]] = False,
               rng: Optional[Array] = None) -> AutoAttackResult:
  """AutoAttack: APGD-CE, APGD-T, FAB-T and Square, worst case per input
  (Croce & Hein, ICML 2020), as the authors' code runs it.

  The attacks run in AutoAttack's order, each only on the inputs still
  robust after the previous ones; an input counts as broken at the first
  attack whose output lies in the ``eps``-ball and the bounds and is
  misclassified by a fresh forward. Versions (the authors' settings for
  linf and l2):

  * ``'standard'``: APGD-CE (``steps`` = 100, 1 restart), APGD-T (targeted
    DLR, ``num_targets`` = 9 targets, 1 restart each), FAB-T (:func:`fab`,
    9 targets, ``fab_steps`` = 100, 1 restart each, starting at ``x``) and
    Square (``queries`` = 5000, ``p_init`` = 0.8, 1 restart);
  * ``'plus'``: APGD-CE and APGD-DLR with 5 restarts, FAB (untargeted, 5
    restarts), Square, APGD-T, FAB-T;
  * ``'rand'`` (randomised defences): APGD-CE and APGD-DLR with EOT over
    ``eot_iter`` = 20 draws; ``logits_fn`` is then ``logits_fn(x, key)``;
  * ``'custom'``: the members named in ``attacks`` (required), e.g.
    ``('apgd-ce', 'apgd-t', 'fmn-t', 'square')``. ``attacks`` given with
    another version replaces its list too.

  Members: ``'apgd-ce'``, ``'apgd-dlr'``, ``'apgd-t'`` (:func:`apgd`),
  ``'fab'``, ``'fab-t'`` (:func:`fab`; a point counts when its norm is
  ``<= eps``), ``'fmn'``, ``'fmn-t'`` (:func:`fmn`, Pintor et al. 2021: one
  fwd+bwd per step where FAB-T spends one fwd+bwd and one forward, FAB a
  Jacobian; its point counts when its norm is ``<= eps``; FMN-T is
  ``fmn(target=t)``, see docs/attacks.md for its trade-off) and ``'square'``
  (:func:`square`). A targeted member (``'apgd-t'``, ``'fab-t'``,
  ``'fmn-t'``) runs once per target (the classes with the highest clean
  logits other than ``y``), each run on the inputs still robust; success
  is untargeted (``argmax != y``) for every member.

  Modes (one member loop serves both):

  * ``'host'`` (default; not jittable): a Python loop over whole compiled
    attacks, each run on the still-robust inputs gathered into a batch
    padded (by repeating inputs) to the next size ``{4, 5, 6, 7} * 2^k``
    (at most 25% padding), at least ``min_bucket``, so later attacks cost
    only what is left and each attack compiles once per padded size. A
    member's targets share one size unless the inputs left fit into half
    of it. Square runs in segments (ending at 2, 10, 20, 40, 60, 80 and
    100% of ``queries``); after each, the inputs it broke leave the batch
    and the rest continue from their state (on a smaller padded size once
    it halves the batch), with the same result per input as one run.
  * ``'masked'``: one program (``jax.jit`` it as a whole): every attack runs
    on the whole batch and its results are kept only where the input was
    still robust. Same results as host mode up to the random numbers of the
    APGD members (the padding changes the batch their keys are drawn for;
    FAB-T and FMN draw none, Square draws per input and agrees); costs
    every attack on every input.

  ``flags`` (True = the problem is present): ``outside_eps_ball`` /
  ``out_of_bounds`` (an attack returned a successful point outside the ball
  / box; not counted), ``nonfinite`` (non-finite clean logits, adversarial
  logits or inputs), ``randomized`` (two clean forwards disagree; in masked
  mode under ``jit`` XLA may merge the two calls of a deterministic-looking
  function, so only host mode sees host-side randomness), ``gradient_masking``
  (Square, gradient-free, broke inputs that every gradient attack before it
  missed; AutoAttack's ``check_square_sr``), ``zero_gradients`` (> 1% of
  attacked inputs saw all-zero or non-finite gradients in an APGD run),
  ``probability_outputs`` (the outputs are rows of probabilities;
  AutoAttack's ``check_range``), ``few_classes`` (K < 4, the DLR fallback),
  ``invalid_inputs`` (some rows are ``flagged``: in masked mode under
  ``jit`` an input non-finite or outside the bounds or a label outside
  ``[0, K)``, in both modes non-finite clean logits; no member attacks a
  flagged row, it is neither robust nor broken and the robust accuracy is
  taken over the other rows; concrete inputs and labels are checked before
  anything runs and raise instead).
  :func:`autoattack_warnings` turns them into sentences, and
  :func:`autoattack_log` the per-member numbers into AutoAttack's log.

  Args:
    logits_fn: pure ``f32[B, ...] -> f32[B, K]``, per-example (version
      ``'rand'``: ``(x, key) -> logits``). Host mode compiles each member
      once per function (compared by ``==``), settings and padded size:
      pass ``jax.tree_util.Partial(f, params)`` to reuse the compiled
      members across calls at other eps values and parameter values of the
      same shapes (a closure over ``params`` compiles again for each new
      closure).
    x: ``f32[B, ...]`` clean inputs inside ``bounds`` (any per-example shape).
    y: ``int[B]`` true labels, in ``[0, K)``.
    eps: the ball radius (scalar, >= 0).
    norm: ``'linf'`` or ``'l2'``.
    version: ``'standard'``, ``'plus'``, ``'rand'`` or ``'custom'``.
    attacks: tuple of member names from ``MEMBERS`` (run order); required
      for ``'custom'``.
    steps: APGD iterations (AutoAttack: 100).
    restarts: restarts of ``'apgd-ce'`` / ``'apgd-dlr'`` / ``'fab'``
      (default: 1; ``'plus'``: 5). Targeted members run 1 per target.
    num_targets: targets of ``'apgd-t'`` / ``'fab-t'`` / ``'fmn-t'``
      (capped at K - 1; AutoAttack: 9).
    queries: Square's query budget (AutoAttack: 5000).
    p_init: Square's initial fraction (AutoAttack: 0.8).
    fab_steps: FAB / FAB-T iterations (AutoAttack: 100).
    fmn_steps: FMN iterations.
    eot_iter: EOT draws for version ``'rand'``.
    bounds: ``(low, high)`` box, or None.
    mode: ``'host'`` or ``'masked'``.
    min_bucket: smallest padded batch in host mode.
    loop: APGD / FAB / FMN loop form (default ``'fori'``).
    verbose: host mode: True prints AutoAttack's log member by member
      while it runs (:func:`autoattack_log`'s lines); a callable receives
      each line instead; False (default) is quiet.
    rng: PRNG key (required).

  Returns:
    :class:`AutoAttackResult`.

  Raises:
    ValueError (before any compilation): bad shapes or labels, ``eps < 0``
      or not a scalar, unknown ``norm`` / ``version`` / ``mode`` / attack
      name, ``'custom'`` without ``attacks``, ``steps`` / ``queries`` /
      ``num_targets`` / ``restarts`` / ``fab_steps`` / ``fmn_steps`` /
      ``eot_iter`` < 1, ``verbose`` in masked mode or neither a bool nor
      a callable, a missing ``rng``.
  """
  if version not in VERSIONS:
    raise ValueError(f"version={version!r} is unknown; use one of "
                     f"{VERSIONS}.")
  if mode not in MODES:
    raise ValueError(f"mode={mode!r} is unknown; use one of {MODES}.")
  if attacks is None:
    if version == "custom":
      raise ValueError("version='custom' runs the members named in attacks;"
                       f" pass attacks=(...) with names from {MEMBERS}.")
    attacks = VERSION_ATTACKS[version]
  attacks = tuple(attacks)
  bad = [a for a in attacks if a not in MEMBERS]
  if bad or not attacks:
    raise ValueError(f"attacks={attacks} must be a non-empty tuple of names "
                     f"from {MEMBERS}.")
  if jnp.ndim(eps) != 0:
    raise ValueError(f"eps must be a scalar radius, got shape "
                     f"{jnp.shape(eps)}.")
  if restarts is None:
    restarts = 5 if version == "plus" else 1
  if version == "rand" and any(not a.startswith("apgd") for a in attacks):
    raise ValueError(f"version='rand' runs only APGD members (EOT); got "
                     f"attacks={attacks}.")
  for name, v in (("eot_iter", eot_iter), ("fab_steps", fab_steps),
                  ("fmn_steps", fmn_steps), ("min_bucket", min_bucket)):
    if isinstance(v, bool) or int(v) != v or v < 1:
      raise ValueError(f"{name}={v} must be a positive integer.")
  if not (isinstance(verbose, bool) or callable(verbose)):
    raise ValueError(f"verbose={verbose!r} must be True, False or a "
                     "callable taking each log line.")
  if verbose is not False and mode == "masked":
    raise ValueError("verbose works in mode='host' only (masked mode is one "
                     "program); use autoattack_log(result) afterwards.")
  validate_apgd(loss="ce", steps=steps, restarts=restarts, rho=0.75,
                momentum=0.75, num_targets=num_targets)
  validate_square(queries, p_init)
  if rng is None:
    raise ValueError("rng is None: autoattack's members start at random "
                     "points; pass a key, e.g. rng=jax.random.PRNGKey(0).")
  stochastic = version == "rand"
  if stochastic:
    det_fn = lambda v: logits_fn(v, jax.random.PRNGKey(0))  # noqa: E731
  else:
    det_fn = logits_fn
  num_classes = C.validate_inputs(det_fn, x, y, eps=eps, norm=norm,
                                  bounds=bounds, loop=loop, steps=steps,
                                  restarts=restarts)
  bounds = C.as_bounds(bounds)
  logits_fn = C.float32_logits(logits_fn)     # bf16 / f16 models too
  n_t = max(1, min(int(num_targets), num_classes - 1))
  settings = dict(norm=norm, steps=int(steps), restarts=int(restarts),
                  queries=int(queries), p_init=float(p_init),
                  fab_steps=int(fab_steps), fmn_steps=int(fmn_steps),
                  eot_iter=int(eot_iter), bounds=bounds, loop=loop,
                  stochastic=stochastic)
  k_clean, k_run = jax.random.split(rng)
  if mode == "masked":
    runner = _Masked(logits_fn, x, y, eps, settings, k_clean, k_run, n_t)
  else:
    say = (print if verbose is True else verbose) or None
    if say is not None and say is print:
      say = functools.partial(print, flush=True)
    runner = _Host(logits_fn, x, y, eps, settings, k_clean, k_run, n_t,
                   int(min_bucket), say)
  return _ensemble(runner, attacks, n_t, version, num_classes)


# ------------------------------------------------------------------ members
def _member_runs(name: str, n_t: int) -> int:
  return n_t if name.endswith("-t") else 1


def _run_member(logits_fn, name, x, y, target, eps, key, s):
  """One run of a member on a batch. Returns ``(x_adv, success, bad,
  queries)``: ``success`` is the member's own (before the ball /
  fresh-forward check); ``queries`` Square's per-row forwards, else None."""
  norm, bounds = s["norm"], s["bounds"]
  if name.startswith("apgd"):
    kw = dict(eps=eps, norm=norm, steps=s["steps"], bounds=bounds,
              loop=s["loop"], rng=key,
              eot_iter=s["eot_iter"] if s["stochastic"] else 1)
    if name == "apgd-t":
      res = apgd(logits_fn, x, y, loss="dlr", target=target, **kw)
    else:
      res = apgd(logits_fn, x, y, loss="ce" if name == "apgd-ce" else "dlr",
                 restarts=s["restarts"], **kw)
  elif name.startswith("fab"):
    t = name == "fab-t"
    res = fab(logits_fn, x, y, norm=norm, eps=eps, targeted=t,
              target=target if t else None, steps=s["fab_steps"],
              restarts=1 if t else s["restarts"], bounds=bounds,
              loop=s["loop"], rng=key)
  elif name.startswith("fmn"):
    # FMN-T steers towards the target; success is untargeted, as for
    # APGD-T and FAB-T (fmn's targeted=True would demand argmax == target).
    res = fmn(logits_fn, x, y, norm=norm, steps=s["fmn_steps"],
              target=target if name == "fmn-t" else None, bounds=bounds,
              loop=s["loop"])
    # A minimal perturbation larger than eps is a miss, not a violation.
    res = res._replace(success=res.success & (res.perturbation_norm <= eps))
  else:
    res = square(logits_fn, x, y, eps=eps, norm=norm, queries=s["queries"],
                 p_init=s["p_init"], bounds=bounds, rng=key)
  return res.x_adv, res.success, res.bad_grad_steps, res.queries


def _member_passes(name: str, s, num_classes: int) -> Tuple[int, int]:
  """``(forwards, backwards)`` per batch row of one run of a gradient
  member, the confirming forward of :func:`_check_member` included (Square
  is counted from its queries)."""
  eot = s["eot_iter"] if s["stochastic"] else 1
  if name.startswith("apgd"):
    grads = (1 if name == "apgd-t" else s["restarts"]) * (s["steps"] + 1)
    return 1 + grads * eot + 1, grads * eot        # clean, steps, check
  if name.startswith("fab"):
    r = 1 if name == "fab-t" else s["restarts"]
    back = 1 if name == "fab-t" else num_classes   # a Jacobian per step
    return 1 + 2 * r * s["fab_steps"] + 1, r * s["fab_steps"] * back
  return 1 + s["fmn_steps"] + 2 + 1, s["fmn_steps"]


def _check_member(logits_fn, x, y, x_adv, success, eps, s):
  """``(ok, off_ball, off_box, nonfinite)`` per row: ``ok`` = the member's
  success, confirmed by a fresh forward, inside the ball and the box."""
  norm, bounds = s["norm"], s["bounds"]
  logits = logits_fn(x_adv)
  fresh = C.is_success(logits, y, False)
  dist = C.batch_norm(x_adv - x, norm)
  in_ball = dist <= eps + 1e-6 * jnp.maximum(1.0, eps)
  flat = x_adv.reshape((x.shape[0], -1))
  if bounds is None:
    in_box = jnp.ones(x.shape[:1], bool)
  else:
    in_box = jnp.all((flat >= bounds[0] - 1e-6) & (flat <= bounds[1] + 1e-6),
                     axis=-1)
  finite = (jnp.all(jnp.isfinite(flat), axis=-1) &
            jnp.all(jnp.isfinite(logits), axis=-1))
  claimed = success & fresh
  ok = claimed & in_ball & in_box & finite
  return ok, claimed & ~in_ball, claimed & ~in_box, ~finite


def _clean_checks(logits_fn, x, key, s):
  """Two clean forwards (under two keys for a randomised model)."""
  if s["stochastic"]:
    k1, k2 = jax.random.split(key)
    z1, z2 = logits_fn(x, k1), logits_fn(x, k2)
  else:
    z1, z2 = logits_fn(x), logits_fn(x)
  return z1, z2


def _clean_flags(z1, z2, y):
  correct = jnp.argmax(z1, axis=-1) == y
  randomized = jnp.any(jnp.abs(z1 - z2) > 1e-5 * (1.0 + jnp.abs(z1)))
  nonfinite = ~jnp.all(jnp.isfinite(z1))
  prob = jnp.all((z1 >= 0) & (z1 <= 1)) & jnp.all(
      jnp.abs(jnp.sum(z1, axis=-1) - 1.0) < 1e-4)
  return correct, randomized, nonfinite, prob


def _deterministic(logits_fn, s):
  """The forward used for checks: a fixed key for a randomised model."""
  if s["stochastic"]:
    return lambda v: logits_fn(v, jax.random.PRNGKey(0))
  return logits_fn


def _masking_flags(attacks, per, bad_share):
  grad_before = np.zeros(len(attacks), bool)
  seen = False
  for m, a in enumerate(attacks):
    grad_before[m] = seen
    seen |= a not in _GRADIENT_FREE
  gf = jnp.asarray([a in _GRADIENT_FREE for a in attacks]) & jnp.asarray(
      grad_before)
  return jnp.any(gf & (per > 0)), bad_share > 0.01


# --------------------------------------------------------- the member loop
def _ensemble(runner, attacks, n_t, version, num_classes):
  """AutoAttack's member loop, for both modes. ``runner`` (:class:`_Masked`
  or :class:`_Host`) runs one member on the still-robust inputs and hands
  back full-batch arrays; ``xp`` is its array module (``jnp`` traced,
  ``np`` on the host)."""
  xp, s = runner.xp, runner.s
  correct = runner.correct
  b = correct.shape[0]
  n_valid = jnp.sum(jnp.asarray(~runner.flagged))   # NaN ratios if 0
  robust = correct
  x_adv = runner.x
  index = xp.full((b,), -1, xp.int32)
  per, secs, after, passes, max_pert, ranges = [], [], [], [], [], []
  off_ball = off_box = False
  nonfinite = runner.nonfinite
  bad_cnt = attacked = 0
  total = 0.0
  runner.say(_header_line(version, attacks, s["norm"], float(runner.eps_f),
                          b) if runner.verbose else None)
  runner.say(_clean_line(int(np.sum(correct)), b) if runner.verbose
             else None)
  for m, name in enumerate(attacks):
    t0 = time.perf_counter()
    flipped, fwd, bwd = 0, 0, 0
    left = xp.sum(robust)
    runner.begin(robust)
    for t in range(_member_runs(name, n_t)):
      out = runner.run(m, name, t, robust)
      if out is None:                     # host: nothing left to attack
        break
      xa, ok, ob, obx, nf, bad, rows, queries = out
      take = robust & ok
      x_adv = _select(xp, take, xa, x_adv)
      index = xp.where(take, m, index)
      flipped = flipped + xp.sum(take)
      off_ball = off_ball | xp.any(robust & ob)
      off_box = off_box | xp.any(robust & obx)
      nonfinite = nonfinite | xp.any(robust & nf)
      if name.startswith("apgd"):
        bad_cnt = bad_cnt + xp.sum(robust & (bad > 0))
        attacked = attacked + xp.sum(robust)
      if queries is None:
        f, g = _member_passes(name, s, num_classes)
        fwd, bwd = fwd + rows * f, bwd + rows * g
      else:
        fwd = fwd + queries
      robust = robust & ~take
    per.append(flipped)
    secs.append(time.perf_counter() - t0 if xp is np else 0.0)
    total += secs[-1]
    after.append(jnp.sum(jnp.asarray(robust)) / n_valid)
    passes.append((fwd, bwd))
    max_pert.append(xp.max(_batch_norm(xp, x_adv - runner.x, s["norm"])))
    ranges.append((xp.min(x_adv), xp.max(x_adv)))
    if runner.verbose:
      runner.say(_member_line(name, int(flipped), int(left), float(after[-1]),
                              secs[-1], total, passes[-1]))
  per = jnp.asarray(xp.stack([xp.asarray(p) for p in per]), jnp.int32)
  gm, zg = _masking_flags(attacks, per, bad_cnt / xp.maximum(attacked, 1))
  flags = dict(outside_eps_ball=off_ball, out_of_bounds=off_box,
               nonfinite=nonfinite, randomized=runner.randomized,
               gradient_masking=gm, zero_gradients=zg,
               probability_outputs=runner.prob, invalid_inputs=runner.invalid,
               few_classes=num_classes < 4 and any(
                   a in ("apgd-dlr", "apgd-t") for a in attacks))
  success = ~robust & ~runner.flagged
  ra = jnp.sum(jnp.asarray(correct & ~success)) / n_valid
  if runner.verbose:
    for line in _final_lines(s["norm"], x_adv, float(max_pert[-1]),
                             float(ra)):
      runner.say(line)
  return AutoAttackResult(
      x_adv=jnp.asarray(x_adv), success=jnp.asarray(success),
      attack_index=jnp.asarray(index), clean_correct=jnp.asarray(correct),
      robust_accuracy=ra, per_attack_success=per,
      seconds=jnp.asarray(secs, jnp.float32),
      flags={k: jnp.asarray(flags[k], bool) for k in FLAG_NAMES},
      robust_accuracy_after=jnp.asarray(xp.stack(
          [xp.asarray(a, xp.float32) for a in after])),
      passes=jnp.asarray(xp.stack([xp.stack([xp.asarray(f), xp.asarray(g)])
                                   for f, g in passes]), jnp.int32),
      max_perturbation=jnp.asarray(xp.stack(max_pert), jnp.float32),
      x_adv_range=jnp.asarray(xp.stack([xp.stack(r) for r in ranges]),
                              jnp.float32),
      eps=jnp.asarray(runner.eps_f, jnp.float32),
      flagged=jnp.asarray(runner.flagged), attacks=attacks,
      norm=s["norm"], version=version)


def _select(xp, mask, a, b):
  return xp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)


def _batch_norm(xp, d, norm):
  flat = d.reshape((d.shape[0], -1))
  if norm == "linf":
    return xp.max(xp.abs(flat), axis=-1)
  return xp.sqrt(xp.sum(flat * flat, axis=-1))


# ------------------------------------------------------------------ masked
class _Masked:
  """Masked mode: every member run on the whole batch (one program)."""
  xp = jnp
  verbose = False

  def __init__(self, logits_fn, x, y, eps, s, k_clean, k_run, n_t):
    self.fn, self.x, self.y, self.s, self.k_run = logits_fn, x, y, s, k_run
    self.eps = self.eps_f = jnp.asarray(eps, x.dtype)
    self.det = _deterministic(logits_fn, s)
    z1, z2 = _clean_checks(logits_fn, x, k_clean, s)
    (self.correct, self.randomized, self.nonfinite,
     self.prob) = _clean_flags(z1, z2, y)
    self.flagged = C.invalid_examples(x, z1, s["bounds"], self.eps, y)
    self.correct = self.correct & ~self.flagged
    self.invalid = jnp.any(self.flagged)
    self.targets = C.top_other_classes(z1, y, n_t)

  def say(self, line):
    del line

  def begin(self, robust):
    del robust

  def run(self, m, name, t, robust):
    del robust
    key = jax.random.fold_in(jax.random.fold_in(self.k_run, m), t)
    xa, succ, bad, queries = _run_member(
        self.fn, name, self.x, self.y, self.targets[:, t], self.eps, key,
        self.s)
    ok, ob, obx, nf = _check_member(self.det, self.x, self.y, xa, succ,
                                    self.eps, self.s)
    b = self.x.shape[0]
    if queries is not None:     # every row computes to the last iteration
      queries = b * (jnp.max(queries) + 2)    # + the clean and the check
    return xa, ok, ob, obx, nf, bad, b, queries


# -------------------------------------------------------------------- host
def _bucket(n: int, total: int, min_bucket: int) -> int:
  """The padded batch for ``n`` inputs: the smallest size ``>= n`` of the
  form ``{4, 5, 6, 7} * 2^k`` (quarter octaves: at most 25% padding; 1, 2,
  4 below 5), at least ``min_bucket``, at most ``total``."""
  if n <= 4:
    b = 1 << max(n - 1, 0).bit_length()
  else:
    step = 1 << ((n - 1).bit_length() - 3)
    b = -(-n // step) * step
  b = max(min_bucket, b)
  return min(b, total) if n <= total else n


def _rebucket(n: int, size: int, total: int, min_bucket: int) -> int:
  """The size for the next run of a member on ``n`` inputs padded to
  ``size`` so far: a smaller bucket only once it halves the batch (each
  new size compiles the member again)."""
  b = _bucket(n, total, min_bucket)
  return b if b <= size // 2 else size


# Host-mode Square runs in segments ending at these fractions of its query
# budget; between segments the finished inputs leave the batch.
_SQUARE_SEGMENTS = (0.02, 0.1, 0.2, 0.4, 0.6, 0.8)


def _as_partial(logits_fn):
  """``logits_fn`` as a :class:`jax.tree_util.Partial`: its bound arrays
  (e.g. the parameters of ``Partial(model.logits, params)``) become traced
  arguments and the function part of the cache key, so host mode compiles
  each member once per function, settings and padded size, not per call."""
  if isinstance(logits_fn, jax.tree_util.Partial):
    return logits_fn
  return jax.tree_util.Partial(logits_fn)


@functools.partial(jax.jit, static_argnames=("stochastic",))
def _host_clean(fn, x, key, *, stochastic):
  """One clean forward (under ``key`` for a randomised model)."""
  return fn(x, key) if stochastic else fn(x)


@functools.partial(jax.jit, static_argnames=("name", "s"))
def _host_member(fn, xs, ys, ts, eps, key, *, name, s):
  """One member run on a padded batch plus its checks (host mode)."""
  s = dict(s)
  xa, succ, bad, _ = _run_member(fn, name, xs, ys, ts, eps, key, s)
  ok, ob, obx, nf = _check_member(_deterministic(fn, s), xs, ys, xa, succ,
                                  eps, s)
  return xa, ok, ob, obx, nf, bad


@functools.partial(jax.jit, static_argnames=("s", "num_rows"))
def _host_square_segment(fn, xs, ys, ids, eps, key, state, stop, *, s,
                         num_rows):
  """Square's iterations ``state.step .. stop - 1`` (the start where
  ``state.step == 0``) on a padded batch plus the member checks."""
  s = dict(s)
  st = square_segment(fn, xs, ys, eps=eps, norm=s["norm"],
                      queries=s["queries"], p_init=s["p_init"],
                      bounds=s["bounds"], rng=key, state=state, stop=stop,
                      ids=ids, num_rows=num_rows)
  ok, ob, obx, nf = _check_member(fn, xs, ys, st.x_best, st.loss < 0, eps, s)
  return st, ok, ob, obx, nf


def _host_square(fn, xn, yn, idx, size, eps, key, s_key, b_total,
                 min_bucket):
  """Square on the rows ``idx`` of the batch in segments
  (``_SQUARE_SEGMENTS``): after each, the rows that succeeded are final and
  leave; the rest continue from their state, re-padded to a smaller bucket
  once it halves the batch. Each row draws the random numbers of its row in
  the full batch (``ids``), so the result per row equals one
  :func:`square` run on the whole batch (host = masked mode).

  Returns ``(rows, x_adv, ok, off_ball, off_box, nonfinite, forwards)``:
  the rows in the order of the last batch, their final points and checks
  (``ok``: the confirmed successes), the flags over all segments and the
  rows the model evaluated (padding included)."""
  q = dict(s_key)["queries"]
  ends = sorted({min(max(int(round(f * q)), 1), q - 1)
                 for f in _SQUARE_SEGMENTS} | {q - 1})
  live = idx
  pidx = np.resize(live, size)
  st = SquareState(step=np.int32(0), x_best=xn[pidx],
                   loss=np.zeros((size,), xn.dtype),
                   queries=np.zeros((size,), np.int32))
  done_x, done_rows = [], []
  off_ball = off_box = nonfinite = False
  forwards = 0
  for stop in ends:
    step0 = int(st.step)
    st, ok, ob, obx, nf = _host_square_segment(
        fn, xn[pidx], yn[pidx], pidx.astype(np.int32), eps, key, st,
        np.int32(stop), s=s_key, num_rows=b_total)
    # The iterations run, the start (first segment) and the check.
    forwards += size * (int(st.step) - step0 + (step0 == 0) + 1)
    n = live.size
    loss = np.asarray(st.loss)[:n]
    ok, ob, obx, nf = (np.asarray(v)[:n] for v in (ok, ob, obx, nf))
    off_ball |= bool(ob.any())
    off_box |= bool(obx.any())
    nonfinite |= bool(nf.any())
    fin = loss < 0
    last = stop == ends[-1] or not (~fin).any()
    if last:
      fin = np.ones((n,), bool)
    if fin.any():
      done_rows.append((live[fin], ok[fin]))
      done_x.append(np.asarray(st.x_best)[:n][fin])
    if last:
      break
    rest = np.nonzero(~fin)[0]
    live = live[rest]
    size = _rebucket(live.size, size, b_total, min_bucket)
    pos = np.resize(rest, size)
    pidx = np.resize(live, size)
    st = SquareState(step=st.step, x_best=np.asarray(st.x_best)[pos],
                     loss=np.asarray(st.loss)[pos],
                     queries=np.asarray(st.queries)[pos])
  rows = np.concatenate([r for r, _ in done_rows])
  oks = np.concatenate([o for _, o in done_rows])
  return (rows, np.concatenate(done_x), oks, off_ball, off_box, nonfinite,
          forwards)


class _Host:
  """Host mode: each member compiled once per padded size, run on the
  still-robust inputs only."""
  xp = np

  def __init__(self, logits_fn, x, y, eps, s, k_clean, k_run, n_t,
               min_bucket, say):
    self.fn = _as_partial(logits_fn)
    self.s, self.k_run, self.min_bucket = s, k_run, min_bucket
    self.s_key = tuple(sorted(s.items()))
    self.verbose, self._say = say is not None, say
    # Two separate executions (under two keys for a randomised model).
    z1, z2 = (_host_clean(self.fn, x, k, stochastic=s["stochastic"])
              for k in jax.random.split(k_clean))
    (self.correct, self.randomized, self.nonfinite, self.prob) = (
        np.asarray(v) for v in _clean_flags(z1, z2, y))
    self.nonfinite = bool(self.nonfinite)
    # Concrete inputs were validated: only non-finite clean logits remain.
    self.flagged = np.asarray(C.invalid_examples(x, z1, s["bounds"], eps, y))
    self.correct = self.correct & ~self.flagged
    self.invalid = bool(self.flagged.any())
    self.targets = np.asarray(C.top_other_classes(z1, y, n_t))
    self.x, self.yn = np.asarray(x), np.asarray(y)
    self.eps = jnp.asarray(eps, x.dtype)
    self.eps_f = float(eps)
    self.size = 0

  def say(self, line):
    if line is not None:
      self._say(line)

  def begin(self, robust):
    self.size = _bucket(int(robust.sum()), self.x.shape[0], self.min_bucket)

  def run(self, m, name, t, robust):
    idx = np.nonzero(robust)[0]
    if idx.size == 0:
      return None
    b_total = self.x.shape[0]
    self.size = _rebucket(idx.size, self.size, b_total, self.min_bucket)
    key = jax.random.fold_in(jax.random.fold_in(self.k_run, m), t)
    full = np.zeros((b_total,), bool)
    xa = self.x.copy()
    if name == "square" and not self.s["stochastic"]:
      rows, pts, ok, ob, obx, nf, forwards = _host_square(
          self.fn, self.x, self.yn, idx, self.size, self.eps, key,
          self.s_key, b_total, self.min_bucket)
      xa[rows] = pts
      okf = full.copy()
      okf[rows] = ok
      return (xa, okf, full | ob, full | obx, full | nf, None, self.size,
              forwards)
    pidx = np.resize(idx, self.size)                 # cyclic padding
    out = _host_member(self.fn, self.x[pidx], self.yn[pidx],
                       self.targets[pidx, t], self.eps, key, name=name,
                       s=self.s_key)
    pts, ok, ob, obx, nf, bad = (np.asarray(v)[:idx.size] for v in out)
    xa[idx] = pts
    res = []
    for v in (ok, ob, obx, nf):
      f = full.copy()
      f[idx] = v
      res.append(f)
    badf = np.zeros((b_total,), np.int64)
    badf[idx] = bad
    return (xa, *res, badf, self.size, None)
