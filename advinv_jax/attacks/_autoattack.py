"""AutoAttack (Croce & Hein, ICML 2020): a parameter-free ensemble, worst
case per input, with its sanity checks."""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax.attacks import _common as C
from advinv_jax.attacks._apgd import apgd, validate_apgd
from advinv_jax.attacks._fmn import fmn
from advinv_jax.attacks._square import (SquareState, square,
                                        square_segment, validate_square)

Array = jax.Array

VERSIONS = ("standard", "plus", "rand")
MODES = ("host", "masked")
MEMBERS = ("apgd-ce", "apgd-dlr", "apgd-t", "fmn", "fmn-t", "square")
# AutoAttack's run order per version (``fab`` -> ``fmn``, see autoattack()).
VERSION_ATTACKS = {
    "standard": ("apgd-ce", "apgd-t", "fmn-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fmn", "square", "apgd-t", "fmn-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
_GRADIENT_FREE = ("square",)
FLAG_NAMES = ("outside_eps_ball", "out_of_bounds", "nonfinite", "randomized",
              "gradient_masking", "zero_gradients", "probability_outputs",
              "few_classes", "invalid_inputs")


@dataclasses.dataclass(frozen=True)
class AutoAttackResult:
  """What :func:`autoattack` returns (a pytree; ``attacks`` is static).

  Attributes:
    x_adv: ``f32[B, ...]`` (the shape of ``x``): the adversarial example of
      the first attack that succeeded, else ``x``.
    success: ``bool[B]``: not robust -- misclassified clean, or an
      adversarial example inside the ``eps``-ball and the bounds was found
      (confirmed by a fresh forward).
    attack_index: ``int32[B]``: index into ``attacks`` of the attack that
      succeeded, ``-1`` where none did (robust inputs and clean errors).
    clean_correct: ``bool[B]``: clean prediction equals ``y``.
    robust_accuracy: ``f32[]``: ``mean(clean_correct & ~success)``.
    per_attack_success: ``int32[len(attacks)]``: inputs each attack flipped
      (each runs only on inputs still robust).
    seconds: ``f32[len(attacks)]``: wall time per attack (host mode; zeros
      in masked mode).
    flags: ``{name: bool[]}`` AutoAttack's sanity checks, True = the problem
      is present (see :func:`autoattack`).
    attacks: tuple of attack names in run order.
  """
  x_adv: Array
  success: Array
  attack_index: Array
  clean_correct: Array
  robust_accuracy: Array
  per_attack_success: Array
  seconds: Array
  flags: Dict[str, Array]
  attacks: Tuple[str, ...] = ()


jax.tree_util.register_dataclass(
    AutoAttackResult,
    data_fields=["x_adv", "success", "attack_index", "clean_correct",
                 "robust_accuracy", "per_attack_success", "seconds", "flags"],
    meta_fields=["attacks"])


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
      "invalid_inputs": "some inputs were non-finite or outside the bounds "
                        "(possible only under jit, where they cannot be "
                        "checked before the run): no member attacked them, "
                        "so where clean-correct they count as robust; fix "
                        "the inputs",
  }
  return [f"autoattack: {text[k]}." for k in FLAG_NAMES
          if bool(result.flags.get(k, False))]


def autoattack(logits_fn: C.LogitsFn, x: Array, y: Array, *, eps,
               norm: str = "linf", version: str = "standard",
               attacks: Optional[Tuple[str, ...]] = None, steps: int = 100,
               restarts: Optional[int] = None, num_targets: int = 9,
               queries: int = 5000, p_init: float = 0.8,
               fmn_steps: int = 100, eot_iter: int = 20,
               bounds: Optional[Tuple[float, float]] = (0.0, 1.0),
               mode: str = "host", min_bucket: int = 8,
               loop: Optional[str] = None,
               rng: Optional[Array] = None) -> AutoAttackResult:
  """AutoAttack: APGD-CE, APGD-T, a minimal-norm attack and Square, worst
  case per input (Croce & Hein 2020).

  The attacks run in AutoAttack's order, each only on the inputs still
  robust after the previous ones; an input counts as broken at the first
  attack whose output lies in the ``eps``-ball and the bounds and is
  misclassified by a fresh forward. Versions (``attacks`` overrides the
  list):

  * ``'standard'``: APGD-CE (``steps``, 1 restart), APGD-T (targeted DLR,
    ``num_targets`` = 9 targets, 1 restart each), FMN-T (9 targets) and
    Square (``queries`` = 5000, ``p_init`` = 0.8);
  * ``'plus'``: APGD-CE and APGD-DLR with 5 restarts, FMN, Square, APGD-T,
    FMN-T;
  * ``'rand'`` (randomised defences): APGD-CE and APGD-DLR with EOT over
    ``eot_iter`` = 20 draws; ``logits_fn`` is then ``logits_fn(x, key)``.

  The minimal-norm member is FMN (:func:`fmn`, Pintor et al. 2021) in place
  of AutoAttack's FAB-T: both find the smallest adversarial perturbation
  from a linearisation of the boundary, FMN with one fwd+bwd per step where
  FAB needs the Jacobian of all targeted logit differences per step, and
  FMN matched or beat FAB in its paper's evaluations. A targeted member
  (``'apgd-t'``, ``'fmn-t'``) runs once per target (the classes with the
  highest clean logits other than ``y``), each run on the inputs still
  robust. FMN's point counts when its norm is ``<= eps``.

  Modes:

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
    FMN has none, Square draws per input and agrees); costs every attack on
    every input.

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
  ``invalid_inputs`` (masked mode under ``jit``: an input was non-finite or
  outside the bounds, so no member attacked it; concrete inputs are checked
  before anything runs and raise instead).
  :func:`autoattack_warnings` turns them into sentences.

  Args:
    logits_fn: pure ``f32[B, ...] -> f32[B, K]``, per-example (version
      ``'rand'``: ``(x, key) -> logits``). Host mode compiles each member
      once per function (compared by ``==``), settings and padded size:
      pass ``jax.tree_util.Partial(f, params)`` to reuse the compiled
      members across calls at other eps values and parameter values of the
      same shapes (a closure over ``params`` compiles again for each new
      closure).
    x: ``f32[B, ...]`` clean inputs inside ``bounds`` (any per-example shape).
    y: ``int[B]`` true labels.
    eps: the ball radius (scalar, >= 0).
    norm: ``'linf'`` or ``'l2'``.
    version: ``'standard'``, ``'plus'`` or ``'rand'``.
    attacks: optional tuple of member names from ``MEMBERS`` (run order).
    steps: APGD iterations (AutoAttack: 100).
    restarts: APGD restarts for ``'apgd-ce'`` / ``'apgd-dlr'`` (default: 1;
      ``'plus'``: 5).
    num_targets: targets of ``'apgd-t'`` / ``'fmn-t'`` (capped at K - 1).
    queries: Square's query budget (AutoAttack: 5000).
    p_init: Square's initial fraction (AutoAttack: 0.8).
    fmn_steps: FMN iterations.
    eot_iter: EOT draws for version ``'rand'``.
    bounds: ``(low, high)`` box, or None.
    mode: ``'host'`` or ``'masked'``.
    min_bucket: smallest padded batch in host mode.
    loop: APGD / FMN loop form (default ``'fori'``).
    rng: PRNG key (required).

  Returns:
    :class:`AutoAttackResult`.

  Raises:
    ValueError (before any compilation): bad shapes or labels, ``eps < 0``
      or not a scalar, unknown ``norm`` / ``version`` / ``mode`` / attack
      name, ``steps`` / ``queries`` / ``num_targets`` / ``restarts`` /
      ``fmn_steps`` / ``eot_iter`` < 1, a missing ``rng``.
  """
  if version not in VERSIONS:
    raise ValueError(f"version={version!r} is unknown; use one of "
                     f"{VERSIONS}.")
  if mode not in MODES:
    raise ValueError(f"mode={mode!r} is unknown; use one of {MODES}.")
  if attacks is None:
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
  stochastic = version == "rand"
  if stochastic and any(not a.startswith("apgd") for a in attacks):
    raise ValueError(f"version='rand' runs only APGD members (EOT); got "
                     f"attacks={attacks}.")
  if int(eot_iter) != eot_iter or eot_iter < 1:
    raise ValueError(f"eot_iter={eot_iter} must be a positive integer.")
  if int(fmn_steps) != fmn_steps or fmn_steps < 1:
    raise ValueError(f"fmn_steps={fmn_steps} must be a positive integer.")
  if int(min_bucket) != min_bucket or min_bucket < 1:
    raise ValueError(f"min_bucket={min_bucket} must be a positive integer.")
  validate_apgd(loss="ce", steps=steps, restarts=restarts, rho=0.75,
                momentum=0.75, num_targets=num_targets)
  validate_square(queries, p_init)
  if rng is None:
    raise ValueError("rng is None: autoattack's members start at random "
                     "points; pass a key, e.g. rng=jax.random.PRNGKey(0).")
  if stochastic:
    det_fn = lambda v: logits_fn(v, jax.random.PRNGKey(0))  # noqa: E731
  else:
    det_fn = logits_fn
  num_classes = C.validate_inputs(det_fn, x, y, eps=eps, norm=norm,
                                  bounds=bounds, loop=loop, steps=steps,
                                  restarts=restarts)
  bounds = C.as_bounds(bounds)
  n_t = max(1, min(int(num_targets), num_classes - 1))
  settings = dict(norm=norm, steps=int(steps), restarts=int(restarts),
                  queries=int(queries), p_init=float(p_init),
                  fmn_steps=int(fmn_steps), eot_iter=int(eot_iter),
                  bounds=bounds, loop=loop, stochastic=stochastic)
  k_clean, k_run = jax.random.split(rng)
  if mode == "masked":
    return _masked(logits_fn, x, y, eps, attacks, n_t, settings, k_clean,
                   k_run)
  return _host(logits_fn, x, y, eps, attacks, n_t, settings, k_clean, k_run,
               int(min_bucket))


# ------------------------------------------------------------------ members
def _member_runs(name: str, n_t: int) -> int:
  return n_t if name.endswith("-t") else 1


def _run_member(logits_fn, name, x, y, target, eps, key, s):
  """One run of a member on a batch. Returns ``(x_adv, success, bad)``:
  ``success`` is the member's own (before the ball / fresh-forward check)."""
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
  elif name.startswith("fmn"):
    t = name == "fmn-t"
    res = fmn(logits_fn, x, target if t else y, norm=norm,
              steps=s["fmn_steps"], targeted=t, bounds=bounds, loop=s["loop"])
    # A minimal perturbation larger than eps is a miss, not a violation.
    res = res._replace(success=res.success & (res.perturbation_norm <= eps))
  else:
    res = square(logits_fn, x, y, eps=eps, norm=norm, queries=s["queries"],
                 p_init=s["p_init"], bounds=bounds, rng=key)
  return res.x_adv, res.success, res.bad_grad_steps


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


def _finish(x_adv, success, index, correct, per, secs, flags, attacks, K):
  flags = dict(flags)
  flags["few_classes"] = jnp.asarray(
      K < 4 and any(a in ("apgd-dlr", "apgd-t") for a in attacks))
  return AutoAttackResult(
      x_adv=x_adv, success=success, attack_index=index, clean_correct=correct,
      robust_accuracy=jnp.mean(correct & ~success),
      per_attack_success=per, seconds=secs,
      flags={k: jnp.asarray(flags[k], bool) for k in FLAG_NAMES},
      attacks=attacks)


def _masking_flags(attacks, per, bad_share):
  grad_before = np.zeros(len(attacks), bool)
  seen = False
  for m, a in enumerate(attacks):
    grad_before[m] = seen
    seen |= a not in _GRADIENT_FREE
  gf = jnp.asarray([a in _GRADIENT_FREE for a in attacks]) & jnp.asarray(
      grad_before)
  return jnp.any(gf & (per > 0)), bad_share > 0.01


# ------------------------------------------------------------------ masked
def _masked(logits_fn, x, y, eps, attacks, n_t, s, k_clean, k_run):
  eps = jnp.asarray(eps, x.dtype)
  det = _deterministic(logits_fn, s)
  z1, z2 = _clean_checks(logits_fn, x, k_clean, s)
  correct, randomized, nonfinite, prob = _clean_flags(z1, z2, y)
  invalid = jnp.any(C.invalid_examples(x, z1, s["bounds"], eps))
  targets = C.top_other_classes(z1, y, n_t)
  robust = correct
  x_adv = x
  index = jnp.full(y.shape, -1, jnp.int32)
  per, off_ball, off_box = [], jnp.bool_(False), jnp.bool_(False)
  bad_cnt, attacked = jnp.int32(0), jnp.int32(0)
  for m, name in enumerate(attacks):
    flipped = jnp.zeros(y.shape, bool)
    for t in range(_member_runs(name, n_t)):
      key = jax.random.fold_in(jax.random.fold_in(k_run, m), t)
      xa, succ, bad = _run_member(logits_fn, name, x, y, targets[:, t], eps,
                                  key, s)
      ok, ob, obx, nf = _check_member(det, x, y, xa, succ, eps, s)
      take = robust & ok
      x_adv = C.select(take, xa, x_adv)
      index = jnp.where(take, m, index)
      flipped = flipped | take
      off_ball = off_ball | jnp.any(robust & ob)
      off_box = off_box | jnp.any(robust & obx)
      nonfinite = nonfinite | jnp.any(robust & nf)
      if name.startswith("apgd"):
        bad_cnt = bad_cnt + jnp.sum(robust & (bad > 0))
        attacked = attacked + jnp.sum(robust)
      robust = robust & ~take
    per.append(jnp.sum(flipped).astype(jnp.int32))
  per = jnp.stack(per)
  gm, zg = _masking_flags(attacks, per, bad_cnt / jnp.maximum(attacked, 1))
  flags = dict(outside_eps_ball=off_ball, out_of_bounds=off_box,
               nonfinite=nonfinite, randomized=randomized,
               gradient_masking=gm, zero_gradients=zg,
               probability_outputs=prob, invalid_inputs=invalid)
  return _finish(x_adv, ~robust, index, correct, per,
                 jnp.zeros((len(attacks),), jnp.float32), flags, attacks,
                 z1.shape[-1])


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


@functools.partial(jax.jit, static_argnames=("s",))
def _host_clean(fn, x, key, s):
  return _clean_checks(fn, x, key, dict(s))


@functools.partial(jax.jit, static_argnames=("name", "s"))
def _host_member(fn, xs, ys, ts, eps, key, *, name, s):
  """One member run on a padded batch plus its checks (host mode)."""
  s = dict(s)
  xa, succ, bad = _run_member(fn, name, xs, ys, ts, eps, key, s)
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

  Returns ``(rows, x_adv, ok, off_ball, off_box, nonfinite)``: the rows in
  the order of the last batch, their final points and checks (``ok``: the
  confirmed successes) and the flags over all segments."""
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
  for stop in ends:
    st, ok, ob, obx, nf = _host_square_segment(
        fn, xn[pidx], yn[pidx], pidx.astype(np.int32), eps, key, st,
        np.int32(stop), s=s_key, num_rows=b_total)
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
  return rows, np.concatenate(done_x), oks, off_ball, off_box, nonfinite


def _host(logits_fn, x, y, eps, attacks, n_t, s, k_clean, k_run, min_bucket):
  fn = _as_partial(logits_fn)
  s_key = tuple(sorted(s.items()))
  z1, z2 = _host_clean(fn, x, k_clean, s=s_key)
  if not s["stochastic"]:
    z2 = _host_clean(fn, x, k_clean, s=s_key)[0]   # a second execution
  correct, randomized, nonfinite, prob = (np.asarray(v) for v in
                                          _clean_flags(z1, z2, y))
  targets = np.asarray(C.top_other_classes(z1, y, n_t))
  xn, yn = np.asarray(x), np.asarray(y)
  eps_a = jnp.asarray(eps, x.dtype)
  robust = correct.copy()
  x_adv = xn.copy()
  index = np.full(yn.shape, -1, np.int32)
  per, secs = [], []
  off_ball = off_box = False
  nonfinite = bool(nonfinite)
  bad_cnt = attacked = 0
  b_total = xn.shape[0]

  for m, name in enumerate(attacks):
    t0 = time.perf_counter()
    flipped = 0
    size = _bucket(int(robust.sum()), b_total, min_bucket)
    for t in range(_member_runs(name, n_t)):
      idx = np.nonzero(robust)[0]
      if idx.size == 0:
        break
      size = _rebucket(idx.size, size, b_total, min_bucket)
      key = jax.random.fold_in(jax.random.fold_in(k_run, m), t)
      if name == "square" and not s["stochastic"]:
        rows, xa, ok, ob, obx, nf = _host_square(
            fn, xn, yn, idx, size, eps_a, key, s_key, b_total, min_bucket)
        off_ball |= ob
        off_box |= obx
        nonfinite |= nf
        hit = rows[ok]
        x_adv[hit] = xa[ok]
        index[hit] = m
        robust[hit] = False
        flipped += hit.size
        continue
      pidx = np.resize(idx, size)                 # cyclic padding
      out = _host_member(fn, xn[pidx], yn[pidx], targets[pidx, t], eps_a,
                         key, name=name, s=s_key)
      xa, ok, ob, obx, nf, bad = (np.asarray(v)[:idx.size] for v in out)
      off_ball |= bool(ob.any())
      off_box |= bool(obx.any())
      nonfinite |= bool(nf.any())
      if name.startswith("apgd"):
        bad_cnt += int((bad > 0).sum())
        attacked += idx.size
      hit = idx[ok]
      x_adv[hit] = xa[ok]
      index[hit] = m
      robust[hit] = False
      flipped += hit.size
    per.append(flipped)
    secs.append(time.perf_counter() - t0)
  per = jnp.asarray(per, jnp.int32)
  gm, zg = _masking_flags(attacks, per, bad_cnt / max(attacked, 1))
  flags = dict(outside_eps_ball=off_ball, out_of_bounds=off_box,
               nonfinite=nonfinite, randomized=randomized,
               gradient_masking=gm, zero_gradients=zg,
               probability_outputs=prob,
               invalid_inputs=False)       # concrete inputs were validated
  return _finish(jnp.asarray(x_adv), jnp.asarray(~robust),
                 jnp.asarray(index), jnp.asarray(correct), per,
                 jnp.asarray(secs, jnp.float32), flags, attacks,
                 z1.shape[-1])
