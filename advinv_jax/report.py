"""Robustness report: sensitivity (PGD, AutoAttack, minimal perturbations)
and invariance (metamers, checked), for any JAX classifier.

Two entries write the same report into ``workdir`` (every file atomically:
a temporary file, then ``os.replace``; a failure leaves no partial file):

* :func:`logits_report` takes any pure ``logits_fn`` (a Flax NNX or Linen,
  Equinox, Haiku or plain-function model), the inputs, labels, bounds and
  settings;
* :func:`robustness_report` takes an advinv_jax ``Model`` and its
  ``params``; for an invertible model it adds the invariance part.

Files: ``report.json`` (every number, ``warnings`` first, then the
reproducibility ``card``), ``report.html`` (self-contained, figures as
base64 PNG) and ``report.md`` (figures as the PNG files beside it), the PNG
figures.

Sections: the reproducibility card (model, config, loss, checkpoint step,
data, split and input indices, seeds, bounds and eps units, every attack's
settings, versions, device, sha256 fingerprints of parameters and inputs);
clean accuracy; AutoAttack robust accuracy (the headline) in both norms at
``autoattack_{linf,l2}_eps`` on the first ``autoattack_num_examples``
inputs, with its log (robust accuracy after each member, time, largest
perturbation, pixel range, flags); the PGD sweep over ``linf_eps`` /
``l2_eps`` (the fast curve; every adversarial example is checked to lie in
its ball and in the bounds); DeepFool (and FMN) minimal perturbations;
consistency and gradient-masking warnings; for invertible models metamers
and the nuisance classifier (:mod:`advinv_jax.invariance`); for any model
with an oracle (given, or trained from the training images) the oracle's
reading of the metamers, model metamers by optimisation and the invariance
rate beside AutoAttack's (``invariance_search``). Every accuracy
carries its Wilson 95% interval (:func:`wilson_interval`). Settings: the
config's ``report`` fields (:func:`report_settings`); ``report.full=True``
switches to the paper-grade ``advinv_jax.config.REPORT_FULL``. See
docs/report.md.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import subprocess
import sys
import time
import warnings as _warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax import attacks as A
from advinv_jax import _report_invariance as IR
from advinv_jax import invariance as I
from advinv_jax import platform as P
from advinv_jax.runs import write_atomic
from advinv_jax.config import REPORT_FULL, default_config
from advinv_jax.layers import LogitTransform
from advinv_jax.losses import with_bias

# Defaults for report fields a config may lack: the schema's, plus the
# input bounds (which come from the dataset, not the config).
_DEFAULTS = dict(default_config().report.to_dict(), bounds=(0.0, 1.0))

# The two-sided 95% normal quantile, Phi^-1(0.975).
Z95 = 1.959963984540054

# What a caller may say about where the report's model and inputs come from
# (the reproducibility card; everything else the report measures itself).
PROVENANCE_KEYS = ("model", "model_config", "loss", "checkpoint_step",
                   "dataset", "split", "split_size", "indices", "seed",
                   "config")


# ------------------------------------------------------------- statistics
def wilson_interval(successes: int, n: int, z: float = Z95
                    ) -> Tuple[float, float]:
  """Wilson score interval of a binomial proportion (Wilson 1927).

  With ``p = successes / n``::

    center = (p + z^2 / (2n)) / (1 + z^2 / n)
    half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))

  and the interval ``[center - half, center + half]`` (inside [0, 1], with
  sensible coverage at p near 0 or 1 and small n, unlike the normal
  approximation). ``z = Z95`` gives the 95% interval.

  Args:
    successes: int count in ``[0, n]``.
    n: int number of trials ``>= 0`` (``n = 0``: ``(0, 1)``, nothing known).
    z: the normal quantile (> 0).

  Returns:
    ``(low, high)`` floats.

  Raises:
    ValueError: ``n < 0``, ``successes`` outside ``[0, n]`` or not an
      integer, ``z <= 0``.
  """
  if int(n) != n or n < 0:
    raise ValueError(f"n={n!r} must be a non-negative integer count.")
  if int(successes) != successes or not 0 <= successes <= n:
    raise ValueError(f"successes={successes!r} must be an integer in "
                     f"[0, n={n}].")
  if not z > 0:
    raise ValueError(f"z={z!r} must be > 0 (1.96 for 95%).")
  if n == 0:
    return 0.0, 1.0
  p, z2 = successes / n, z * z
  d = 1.0 + z2 / n
  center = (p + z2 / (2 * n)) / d
  half = z / d * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
  lo = 0.0 if successes == 0 else max(0.0, center - half)
  hi = 1.0 if successes == n else min(1.0, center + half)
  return lo, hi


def _ci(accuracy: Optional[float], n: int) -> Optional[List[float]]:
  """Wilson 95% interval of an accuracy measured on ``n`` inputs."""
  if accuracy is None:
    return None
  return list(wilson_interval(int(round(accuracy * n)), int(n)))


# --------------------------------------------------------------- settings
def report_settings(report_config) -> Dict[str, Any]:
  """The report's resolved settings: the schema's defaults, then the fields
  of ``report_config`` (a ConfigDict, dict or None), then -- with
  ``full=True`` -- ``REPORT_FULL`` and AutoAttack at every eps of
  ``linf_eps`` / ``l2_eps``.

  Raises:
    ValueError: a field the report does not know (with the closest name),
      or a value out of range (see :func:`validate_settings`).
  """
  out = dict(_DEFAULTS)
  if report_config is not None:
    items = (report_config.items() if hasattr(report_config, "items") else
             vars(report_config).items())
    given = {k: v for k, v in items if v is not None}
    unknown = sorted(set(given) - set(_DEFAULTS))
    if unknown:
      close = difflib.get_close_matches(unknown[0], list(_DEFAULTS), n=1)
      raise ValueError(
          f"report settings: unknown field {unknown[0]!r}"
          + (f"; did you mean {close[0]!r}?" if close else
             f"; the fields are {sorted(_DEFAULTS)}."))
    out.update(given)
  if out["full"]:
    out.update(REPORT_FULL)
    out["autoattack_linf_eps"] = tuple(out["linf_eps"])
    out["autoattack_l2_eps"] = tuple(out["l2_eps"])
  validate_settings(out)
  return out


def validate_settings(cfg: Dict[str, Any]) -> None:
  """Checks resolved report settings (:func:`report_settings`) in Python,
  before anything compiles; raises ONE ``ValueError`` naming the field and
  the fix. The value types here (what the config schema checks for a
  ConfigDict); the ranges and choices by the rule set of ``config.report``
  (``attacks.validate_report``, for a report that runs now)."""
  def bad(k, why):
    raise ValueError(f"report setting {k}={cfg[k]!r} {why}.")

  for k, ref in _DEFAULTS.items():
    v = cfg[k]
    if isinstance(ref, bool):
      if not isinstance(v, (bool, np.bool_)):
        bad(k, "must be True or False")
    elif isinstance(ref, (int, float)):
      kind = (int, np.integer) if isinstance(ref, int) else (int, float,
                                                             np.number)
      if isinstance(v, bool) or not isinstance(v, kind):
        bad(k, "must be " + ("an integer" if isinstance(ref, int) else
                             "a number"))
    elif isinstance(ref, tuple) and k.endswith("_eps"):
      if isinstance(v, (str, bytes)) or not hasattr(v, "__len__"):
        bad(k, "must be a tuple of radii, e.g. (0.05,) (empty: skip the "
            "norm)")
      if not all(isinstance(e, (int, float, np.floating, np.integer))
                 and np.isfinite(e) for e in v):
        bad(k, "must hold finite radii in the units of the inputs")
  A.validate_report({k: v for k, v in cfg.items() if k != "bounds"},
                    direct=True)
  _check_bounds(cfg["bounds"], "bounds")


def _check_bounds(bounds, name="bounds"):
  if bounds is None:
    return None
  try:
    lo, hi = (float(b) for b in bounds)
  except (TypeError, ValueError):
    raise ValueError(f"{name}={bounds!r} must be (low, high) floats or "
                     "None.") from None
  if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
    raise ValueError(f"{name}={bounds!r} must be finite with low < high, "
                     "e.g. (0.0, 1.0).")
  return lo, hi


@dataclasses.dataclass(frozen=True)
class PGDSettings:
  """The PGD of the report's eps sweep: frozen and hashable, so that it is a
  static argument of the jitted sweep (equal settings reuse one program).

  ``x <- Proj(x + alpha * dir(grad))`` with ``alpha = rel_step_size * eps``
  (:func:`advinv_jax.attacks.pgd`'s default rule), from a uniform random
  start in the ball, best iterate over ``restarts`` kept.
  """
  norm: str
  steps: int
  restarts: int = 1
  loss: str = "ce"
  bounds: Optional[Tuple[float, float]] = (0.0, 1.0)
  loop: Optional[str] = None

  @property
  def rel_step_size(self) -> float:
    """The step size over eps: ``2.5 / steps`` (linf), ``max(2.5 / steps,
    0.25)`` (l2)."""
    r = 2.5 / self.steps
    return r if self.norm == "linf" else max(r, 0.25)

  def __call__(self, logits_fn, x, y, eps, rng) -> A.AttackResult:
    return A.pgd(logits_fn, x, y, eps=eps, norm=self.norm, steps=self.steps,
                 restarts=self.restarts, loss=self.loss,
                 rel_step_size=self.rel_step_size, bounds=self.bounds,
                 loop=self.loop, rng=rng)


@dataclasses.dataclass(frozen=True)
class MinimalSettings:
  """A minimal-perturbation attack of the report (``'deepfool'`` or
  ``'fmn'``): frozen and hashable, a static argument of the jitted run."""
  attack: str
  norm: str
  steps: int
  candidates: int = 9
  bounds: Optional[Tuple[float, float]] = (0.0, 1.0)
  loop: Optional[str] = None

  def __call__(self, logits_fn, x, y) -> A.AttackResult:
    if self.attack == "deepfool":
      return A.deepfool(logits_fn, x, y, norm=self.norm, steps=self.steps,
                        candidates=self.candidates, bounds=self.bounds)
    return A.fmn(logits_fn, x, y, norm=self.norm, steps=self.steps,
                 bounds=self.bounds, loop=self.loop)


# ----------------------------------------------------------- provenance
def fingerprint(tree) -> Optional[str]:
  """sha256 (hex) of a pytree of arrays: every leaf's path, dtype, shape
  and little-endian bytes, in tree order. Equal values give equal
  fingerprints on any machine; None for an empty tree."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  if not leaves:
    return None
  h = hashlib.sha256()
  for path, leaf in leaves:
    a = np.asarray(leaf)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|"
             .encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def _git_commit() -> Optional[str]:
  """The advinv_jax checkout's commit (``+dirty`` with tracked changes), or
  None where advinv_jax is not a git checkout of its own (an installed
  copy, even inside another repository)."""
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    run = functools.partial(subprocess.run, cwd=here, capture_output=True,
                            text=True, timeout=10, check=True)
    top = run(["git", "rev-parse", "--show-toplevel"]).stdout.strip()
    if os.path.realpath(top) != os.path.realpath(os.path.dirname(here)):
      return None
    commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]
                ).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ("+dirty" if dirty else "") if commit else None


def environment() -> Dict[str, Any]:
  """Versions and hardware the report ran with: advinv_jax (version, git
  commit), python, jax, jaxlib, XLA (jaxlib's extension version and the
  backend's platform version), the default backend, device kind and
  count, and the host CPU's model."""
  def version(pkg):
    try:
      return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
      return None

  try:
    from jax._src import lib as _lib   # pylint: disable=g-import-not-at-top
    xla = f"jaxlib extension {_lib.jaxlib_extension_version}"
  except (ImportError, AttributeError):
    xla = None
  dev = jax.devices()
  try:
    from jax.extend import backend as _backend
    backend = _backend.get_backend()
    platform_version = str(backend.platform_version).replace("\n", " ")
  except (ImportError, AttributeError, RuntimeError):
    platform_version = None
  return {"advinv_jax": version("advinv_jax"), "git_commit": _git_commit(),
          "python": sys.version.split()[0], "jax": jax.__version__,
          "jaxlib": version("jaxlib"), "xla": xla,
          "backend": jax.default_backend(),
          "platform_version": platform_version,
          "device_kind": dev[0].device_kind, "device_count": len(dev),
          "process_count": jax.process_count(), "host_cpu": P.cpu_model()}


def _index_ranges(indices) -> str:
  """``[0, 1, 2, 5, 7, 8]`` -> ``'0-2,5,7-8'``."""
  idx = [int(i) for i in np.asarray(indices).ravel()]
  out, start = [], None
  for k, i in enumerate(idx):
    if start is None:
      start = i
    if k + 1 == len(idx) or idx[k + 1] != i + 1:
      out.append(str(start) if start == i else f"{start}-{i}")
      start = None
  return ",".join(out)


def provenance_from_config(config, *, checkpoint_step=None, split="test",
                           indices=None, split_size=None) -> Dict[str, Any]:
  """The card's provenance for a model trained from an advinv_jax config:
  the model's name and settings, the loss, the dataset, the seed and the
  whole config; ``checkpoint_step``, ``split``, ``indices`` (of the split's
  inputs the report uses) and ``split_size`` from the caller."""
  c = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  model = c.get("model", {})
  name = model.get("name")
  loss = c.get("loss", {})
  out = {"model": name,
         "model_config": {k: v for k, v in model.items()
                          if not isinstance(v, dict) or k in (name,
                                                              "compute")},
         "loss": loss.get("name"), "dataset": c.get("data", {}).get("name"),
         "seed": c.get("seed"), "config": c, "split": split}
  if checkpoint_step is not None:
    out["checkpoint_step"] = int(checkpoint_step)
  if indices is not None:
    out["indices"] = [int(i) for i in np.asarray(indices).ravel()]
  if split_size is not None:
    out["split_size"] = int(split_size)
  return out


def _check_provenance(provenance) -> Dict[str, Any]:
  if provenance is None:
    return {}
  if not isinstance(provenance, dict):
    raise ValueError(f"provenance must be a dict with keys from "
                     f"{PROVENANCE_KEYS}, got {type(provenance).__name__}.")
  unknown = sorted(set(provenance) - set(PROVENANCE_KEYS))
  if unknown:
    raise ValueError(f"provenance has unknown key(s) {unknown}; use "
                     f"{PROVENANCE_KEYS}.")
  try:
    return json.loads(json.dumps(provenance, default=_json_default))
  except (TypeError, ValueError) as e:
    raise ValueError(f"provenance must be JSON-serialisable (numbers, "
                     f"strings, lists, dicts): {e}") from None


def _json_default(v):
  if isinstance(v, (np.integer, np.floating, np.bool_)):
    return v.item()
  if isinstance(v, (np.ndarray, jax.Array, tuple)):
    return np.asarray(v).tolist()
  raise TypeError(f"{type(v).__name__} is not JSON-serialisable")


def _eps_units(bounds, linf_eps=()) -> str:
  if bounds is None:
    return "eps in the units of the inputs (unbounded inputs)"
  lo, hi = bounds
  s = (f"eps in the units of the inputs, whose box is [{lo:g}, {hi:g}] "
       f"(width {hi - lo:g})")
  if linf_eps:
    s += "; in 8-bit steps of the box: " + ", ".join(
        f"linf {e:g} = {255 * e / (hi - lo):.3g}/255" for e in linf_eps)
  return s


def _card(cfg, bounds, rng, provenance, fn, images, labels, bias, attacks
          ) -> Dict[str, Any]:
  """The reproducibility card (JSON)."""
  p = dict(provenance)
  idx = p.pop("indices", None)
  n = int(images.shape[0])
  inputs = {"num": n, "of": p.pop("split_size", None),
            "indices": (_index_ranges(idx) if idx is not None else None)}
  if idx is not None and len(idx) != n:
    inputs["indices_note"] = (f"the first {n} of the {len(idx)} indices "
                              "given")
  params = fn.args[0] if fn.args else None   # Partial(f, params) or (f)
  return {
      "model": p.get("model"), "model_config": p.get("model_config"),
      "loss": p.get("loss"), "differential_bias": bias,
      "checkpoint_step": p.get("checkpoint_step"),
      "dataset": p.get("dataset"), "split": p.get("split"),
      "inputs": inputs,
      "seeds": {"training": p.get("seed"),
                "report_key": [int(v) for v in np.asarray(
                    jax.random.key_data(rng)).ravel()]},
      "bounds": None if bounds is None else list(bounds),
      "eps_units": _eps_units(bounds, sorted(
          set(cfg["linf_eps"]) | set(cfg["autoattack_linf_eps"]))),
      "attacks": attacks,
      "software": environment(),
      "fingerprints": {
          "params_sha256": fingerprint(params),
          "params_note": (None if jax.tree_util.tree_leaves(params) else
                          "logits_fn holds no arrays: pass params= (or a "
                          "jax.tree_util.Partial) to fingerprint them"),
          "inputs_sha256": fingerprint({"images": images,
                                        "labels": labels})},
      "config": p.get("config"),
  }


# ---------------------------------------------------------------- progress
def print_progress(message: str) -> None:
  """The report's progress printer: ``report: <message>`` on stderr."""
  print(f"report: {message}", file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
  del message


def _progress_fn(progress) -> Callable[[str], None]:
  if progress is None or progress is False:
    return _quiet
  if progress is True:
    return print_progress
  if not callable(progress):
    raise ValueError(f"progress={progress!r} must be None / False (quiet), "
                     "True (print to stderr) or a callable taking one "
                     "string, e.g. advinv_jax.report.print_progress.")
  return progress


def _finite_or_none(v):
  v = float(v)
  return v if np.isfinite(v) else None






# --------------------------------------------------------- jitted attacks
# ``fn`` is a jax.tree_util.Partial: its arrays (the parameters) are traced
# arguments and its function is part of the cache key, so every report on
# the same architecture, settings and input shape reuses one program.
@functools.partial(jax.jit, static_argnums=(0, 1))
def _jit_eps_sweep(attack, eps_values, fn, x, y, key):
  eps = jnp.asarray(eps_values, x.dtype)
  return jax.vmap(lambda e: attack(fn, x, y, e, key))(eps)


@functools.partial(jax.jit, static_argnums=0)
def _jit_minimal(attack, fn, x, y):
  return attack(fn, x, y)


@jax.jit
def _jit_apply(fn, x):
  return fn(x)


def _apply(fn, x, chunk=512):
  x = jnp.asarray(x)
  return np.concatenate([np.asarray(_jit_apply(fn, x[i:i + chunk]))
                         for i in range(0, x.shape[0], chunk)])


def _pgd_section(fn, x, y, correct, eps_values, attack, key):
  """The PGD sweep of one norm: ``(section, warnings, success bool[K, N])``."""
  t = time.perf_counter()
  res = jax.block_until_ready(
      _jit_eps_sweep(attack, eps_values, fn, x, y, key))
  for k, e in enumerate(eps_values):
    A.check_adversarial(x, res.x_adv[k], e, attack.norm, attack.bounds)
  name = f"pgd-{attack.norm}"
  warns = A.monotonicity_warnings(eps_values, res.success, name=name)
  warns += A.gradient_warnings(np.asarray(res.bad_grad_steps).max(0),
                               name=name)
  n = int(x.shape[0])
  ra = [float(v) for v in A.robust_accuracy_curve(res.success, correct)]
  return {
      "eps": list(eps_values),
      "steps": attack.steps,
      "restarts": attack.restarts,
      "rel_step_size": attack.rel_step_size,
      "robust_accuracy": ra,
      "robust_accuracy_ci": [_ci(v, n) for v in ra],
      "attack_success_ratio": [float(v) for v in
                               A.attack_success_ratio(res.success, correct)],
      "attack_success_ratio_all": [
          float(v) for v in A.attack_success_ratio(res.success, correct,
                                                   "all")],
      "seconds": time.perf_counter() - t,
  }, warns, np.asarray(res.success)


def _minimal_section(fn, x, y, correct, attack):
  """Minimal perturbations on the correctly classified inputs:
  ``(section, warnings, norm per input f64[N])`` (inf: not found or not
  correctly classified).

  ``median_norm`` is the median over all correctly classified inputs with a
  not-found input counted as an infinite perturbation (None when more than
  half were not found); ``median_norm_found`` and ``mean_norm_found`` are
  over the found ones, ``success_rate`` is the found share."""
  t = time.perf_counter()
  res = jax.block_until_ready(_jit_minimal(attack, fn, x, y))
  A.check_adversarial(x, res.x_adv, float("inf"), attack.norm, attack.bounds)
  c = np.asarray(correct)
  full = np.where(c, np.asarray(res.perturbation_norm, np.float64), np.inf)
  nrm = full[c]
  found = np.isfinite(nrm)
  warns = A.gradient_warnings(np.asarray(res.bad_grad_steps)[c],
                              name=f"{attack.attack}-{attack.norm}")
  return {
      "median_norm": _finite_or_none(np.median(nrm)) if nrm.size else None,
      "median_norm_found": (_finite_or_none(np.median(nrm[found]))
                            if found.any() else None),
      "mean_norm_found": (_finite_or_none(nrm[found].mean())
                          if found.any() else None),
      "success_rate": float(found.mean()) if nrm.size else 0.0,
      "num_found": int(found.sum()),
      "num_correct": int(c.sum()),
      "norms": [_finite_or_none(v) for v in nrm],
      "seconds": time.perf_counter() - t,
  }, warns, full


def _autoattack_settings(cfg) -> Dict[str, Any]:
  return dict(version=str(cfg["autoattack_version"]),
              steps=int(cfg["autoattack_steps"]),
              num_targets=int(cfg["autoattack_num_targets"]),
              queries=int(cfg["autoattack_queries"]),
              fab_steps=int(cfg["autoattack_fab_steps"]),
              fmn_steps=int(cfg["autoattack_fmn_steps"]))


def _autoattack_log(res) -> Dict[str, Any]:
  """AutoAttack's log of one run (:class:`advinv_jax.attacks.AutoAttackResult`'s
  per-member fields): per member the inputs it broke, the robust accuracy
  after it (with its interval), its time and its forward / backward passes;
  the largest perturbation of the returned points (in the run's norm), the
  pixel range of the inputs' adversarial examples, the flags that fired."""
  n = int(np.asarray(res.success).shape[0])
  members = []
  for m, name in enumerate(res.attacks):
    after = float(res.robust_accuracy_after[m])
    fwd, bwd = (int(v) for v in np.asarray(res.passes[m]))
    members.append({
        "attack": name, "broken": int(res.per_attack_success[m]),
        "robust_accuracy_after": after,
        "robust_accuracy_after_ci": _ci(after, n),
        "seconds": float(res.seconds[m]),
        "forward_passes": fwd, "backward_passes": bwd})
  return {
      "clean_accuracy": float(np.mean(np.asarray(res.clean_correct))),
      "members": members,
      "largest_perturbation": float(res.max_perturbation[-1]),
      "adversarial_range": [float(v) for v in np.asarray(
          res.x_adv_range[-1])],
      "flags_fired": [f for f, v in res.flags.items() if bool(v)],
  }


def _autoattack_section(fn, x, y, norm, eps_values, cfg, key, bounds, loop,
                        pgd, progress):
  """AutoAttack at each eps on ``x`` (the first autoattack_num_examples):
  ``(section, warnings, {eps: success bool[n]})``. ``pgd``: the same
  norm's PGD section and success ``bool[K, N]`` (or None)."""
  settings = _autoattack_settings(cfg)
  n = int(x.shape[0])
  out = {"eps": [], "robust_accuracy": [], "robust_accuracy_ci": [],
         "per_attack_success": [], "attack_seconds": [], "flags": [],
         "pgd_robust_accuracy": [], "log": [], "num_examples": n,
         "settings": settings}
  warns, success = [], {}
  t = time.perf_counter()
  for k, eps in enumerate(eps_values):
    verbose = (False if progress is _quiet else
               lambda line: progress(f"  {line}"))
    res = A.autoattack(fn, x, y, eps=float(eps), norm=norm, bounds=bounds,
                       loop=loop, rng=jax.random.fold_in(key, k),
                       verbose=verbose, **settings)
    A.check_adversarial(x, res.x_adv, float(eps), norm, bounds)
    ra = float(res.robust_accuracy)
    log = _autoattack_log(res)
    log["input_range"] = [float(jnp.min(x)), float(jnp.max(x))]
    out["attacks"] = list(res.attacks)
    out["clean_accuracy"] = float(jnp.mean(res.clean_correct))
    out["clean_accuracy_ci"] = _ci(out["clean_accuracy"], n)
    out["eps"].append(float(eps))
    out["robust_accuracy"].append(ra)
    out["robust_accuracy_ci"].append(_ci(ra, n))
    out["per_attack_success"].append(
        [int(v) for v in np.asarray(res.per_attack_success)])
    out["attack_seconds"].append(
        [float(v) for v in np.asarray(res.seconds)])
    out["flags"].append({f: bool(v) for f, v in res.flags.items()})
    out["log"].append(log)
    success[float(eps)] = np.asarray(res.success)
    reduced = any(settings[k] < REPORT_FULL[f"autoattack_{k}"]
                  for k in ("steps", "num_targets", "queries", "fab_steps"))
    for w in A.autoattack_warnings(res):
      if reduced and "gradient masking" in w:
        w += (" With the report's reduced AutoAttack settings (APGD "
              f"{settings['steps']} steps, {settings['num_targets']} "
              "targets) weak gradient attacks alone can explain it: rerun "
              "with report.full=True before concluding masking.")
      warns.append(f"{w} ({norm} eps={eps:g})")
    # PGD on the same inputs at the same eps, when the sweep has that eps.
    pgd_ra = None
    if pgd is not None and float(eps) in pgd[0]["eps"]:
      j = pgd[0]["eps"].index(float(eps))
      ok = np.asarray(res.clean_correct) & ~pgd[1][j][:n]
      pgd_ra = float(ok.mean())
      if ra > pgd_ra + 1e-9:
        warns.append(f"autoattack-{norm} eps={eps:g}: robust accuracy "
                     f"{ra:.4f} is above PGD's {pgd_ra:.4f} on the same "
                     "inputs: the ensemble is weaker than one of its members "
                     "should be (too few AutoAttack steps?).")
    out["pgd_robust_accuracy"].append(pgd_ra)
  out["seconds"] = time.perf_counter() - t
  return out, warns, success


def consistency_warnings(minimal: Dict[Tuple[str, str], np.ndarray],
                         robust: Dict[Tuple[str, str, float], np.ndarray]
                         ) -> List[str]:
  """Warnings where an eps-bounded attack is weaker than a minimal one.

  Args:
    minimal: ``{(attack, norm): f64[N]}`` minimal perturbation norm per
      input (inf: not found or not attacked).
    robust: ``{(attack, norm, eps): bool[n]}`` inputs (the first ``n``) the
      eps-bounded attack left robust (correct and not broken).

  Returns:
    One sentence per (eps-bounded attack, eps, minimal attack) where the
    minimal attack found a perturbation ``<= eps`` on inputs the other left
    robust, with their count: that attack's robust accuracy is then too
    high by at least ``count / n``.
  """
  out = []
  for (name, norm, eps), rob in robust.items():
    n = rob.size
    for (mname, mnorm), nrm in minimal.items():
      if mnorm != norm:
        continue
      hit = rob & (nrm[:n] <= eps)
      if hit.any():
        c = int(hit.sum())
        out.append(
            f"consistency: {mname} found an {norm} perturbation <= eps="
            f"{eps:g} on {c} of the {int(rob.sum())} inputs that {name} left "
            f"robust: {name} is the weaker attack here and its robust "
            f"accuracy at this eps is too high by at least {100 * c / n:.1f} "
            "points (more steps or restarts, or report.full=True).")
  return out


def _nuisance_model_accuracy(fn, x, y, nuisance_data):
  """The classifier's own accuracy on the nuisance classifier's test images
  (the same selection as the invariance section): ``(accuracy, n)``."""
  if nuisance_data is not None and isinstance(nuisance_data[0], dict):
    xt, yt = nuisance_data[1]["image"], nuisance_data[1]["label"]
  elif nuisance_data is not None:
    xt, yt = x, y
  else:
    h = int(x.shape[0]) // 2
    xt, yt = x[h:], y[h:]
  yt = np.asarray(yt)
  if yt.size == 0:
    return None, 0
  pred = np.argmax(_apply(fn, xt), -1)
  return float(np.mean(pred == yt)), int(yt.size)


def _headline(report) -> Dict[str, Any]:
  """AutoAttack's robust accuracy at its first linf (else l2) eps; PGD's at
  its first eps when AutoAttack did not run."""
  for source, sections in (("autoattack", report.get("autoattack", {})),
                           ("pgd", report["pgd"])):
    for norm in ("linf", "l2"):
      sec = sections.get(norm)
      if not (sec and sec["eps"]):
        continue
      aa = source == "autoattack"
      top = sec if aa else report
      return {"source": source, "norm": norm, "eps": sec["eps"][0],
              "robust_accuracy": sec["robust_accuracy"][0],
              "robust_accuracy_ci": sec["robust_accuracy_ci"][0],
              "num_examples": top["num_examples"],
              "clean_accuracy": top["clean_accuracy"],
              "clean_accuracy_ci": top["clean_accuracy_ci"],
              "settings": sec["settings"] if aa else {
                  "steps": sec["steps"], "restarts": sec["restarts"]},
              "pgd_robust_accuracy": (sec["pgd_robust_accuracy"][0] if aa
                                      else None)}
  return {"source": None}


def _check_data(fn, images, labels, bounds):
  """Validates inputs and labels against ``fn``'s output shape (traced
  abstractly, nothing compiled); returns the number of classes."""
  x = images
  if x.ndim < 2 or x.shape[0] < 1 or not jnp.issubdtype(x.dtype,
                                                         jnp.floating):
    raise ValueError(f"images must be a float array [N, ...] with N >= 1, "
                     f"got shape {x.shape} and dtype {x.dtype}.")
  xn = np.asarray(x)
  if not np.all(np.isfinite(xn)):
    raise ValueError(f"images has {int(np.sum(~np.isfinite(xn)))} "
                     "non-finite entries.")
  if bounds is not None and (xn.min() < bounds[0] or xn.max() > bounds[1]):
    raise ValueError(f"images lie in [{xn.min():g}, {xn.max():g}], outside "
                     f"bounds={bounds}: pass the inputs' own box as bounds.")
  try:
    out = jax.eval_shape(fn, jax.ShapeDtypeStruct(x.shape, x.dtype))
  except Exception as e:  # pylint: disable=broad-except
    first = str(e).splitlines()[0] if str(e) else ""
    raise ValueError(f"logits_fn failed on images of shape {x.shape} "
                     f"({type(e).__name__}: {first}); it must map "
                     "f32[N, ...] to f32[N, K].") from e
  if (not hasattr(out, "shape") or len(out.shape) != 2
      or out.shape[0] != x.shape[0] or out.shape[1] < 2):
    raise ValueError(f"logits_fn must return logits f32[N={x.shape[0]}, K>=2]"
                     f", got {getattr(out, 'shape', type(out).__name__)}.")
  k = int(out.shape[1])
  ln = np.asarray(labels)
  if (ln.shape != (x.shape[0],) or not np.issubdtype(ln.dtype, np.integer)
      or ln.min() < 0 or ln.max() >= k):
    raise ValueError(f"labels must be int[{x.shape[0]}] in [0, {k}), got "
                     f"shape {ln.shape}, dtype {ln.dtype} and range "
                     f"[{ln.min() if ln.size else ''}, "
                     f"{ln.max() if ln.size else ''}].")
  return k


def logits_report(logits_fn: Callable, images, labels, workdir: str, rng, *,
                  params=None, settings=None, bounds=(0.0, 1.0),
                  provenance: Optional[Dict[str, Any]] = None,
                  progress=None, oracle=None) -> Dict[str, Any]:
  """The robustness report of any JAX classifier, written into ``workdir``.

  The sensitivity part of :func:`robustness_report` (AutoAttack in both
  norms, the PGD sweep, DeepFool / FMN minimal perturbations, the
  consistency warnings, the reproducibility card) for a Flax NNX or Linen,
  Equinox, Haiku or plain-function model::

    graphdef, state = nnx.split(model)
    fn = lambda state, x: nnx.merge(graphdef, state)(x)
    logits_report(fn, x, y, "out", key, params=state, bounds=(0., 1.))

  Args:
    logits_fn: pure, per-example ``f32[N, ...] -> f32[N, K]`` (``K >= 2``),
      or with ``params`` given ``logits_fn(params, x)``.
    images: ``f32[N, ...]`` inputs inside ``bounds``; the first
      ``settings['num_examples']`` are used (0: all).
    labels: ``int[N]`` in ``[0, K)``.
    workdir: output folder (created).
    rng: PRNG key (PGD random starts, AutoAttack).
    params: optional pytree passed to ``logits_fn`` as its first argument:
      traced (a second report with other parameter values of the same
      shapes compiles nothing new) and fingerprinted on the card.
    settings: report settings (dict or ConfigDict; the names and defaults of
      ``config.report``, :func:`report_settings`).
    bounds: ``(low, high)`` box of the inputs (attacks stay inside it), or
      None (unbounded).
    provenance: what the card says about the model and the inputs, keys
      from ``PROVENANCE_KEYS`` (e.g. ``{"model": "nnx MLP 64-64", "dataset":
      "digits", "split": "test", "indices": [...], "seed": 0}``).
    progress: None / False (quiet), True (each section and AutoAttack member
      on stderr) or a callable taking one line.
    oracle: an :class:`advinv_jax.invariance.Oracle`
      (:func:`advinv_jax.invariance.train_oracle`, of another architecture
      than the model); given, the report adds ``invariance_search``: model
      metamers (A's logits from B, in the box) judged by it, and the
      invariance rate beside AutoAttack's robust accuracy (its sizes:
      ``settings`` ``invariance_pairs`` (0: off, the report says so),
      ``invariance_steps``, ``invariance_lr``).

  Returns:
    The report dict (also ``workdir/report.json``), see
    :func:`robustness_report`.

  Raises:
    ValueError (before anything compiles): a settings field unknown or out
      of range, bad ``bounds``, inputs outside them or non-finite, labels
      not ``int[N]`` in ``[0, K)``, a ``logits_fn`` whose output is not
      ``[N, K]``, ``provenance`` with unknown keys, a bad ``progress``.
  """
  if not callable(logits_fn):
    raise ValueError(f"logits_fn must be callable (x -> logits, or (params, "
                     f"x) -> logits with params=), got "
                     f"{type(logits_fn).__name__}.")
  fn = (jax.tree_util.Partial(logits_fn) if params is None
        else jax.tree_util.Partial(logits_fn, params))
  return _report(fn, images, labels, report_settings(settings), workdir, rng,
                 bounds=_check_bounds(bounds), provenance=provenance,
                 progress=progress, oracle=oracle)


# ---------------------------------------------- invariance (advinv_jax models)
@functools.partial(jax.jit, static_argnums=0)
def _jit_logits(model, params, x):
  return model.logits(params, x)


@functools.partial(jax.jit, static_argnums=0)
def _jit_nuisance(model, params, x):
  return model.split(model.forward(params, x)[0])[1]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _jit_metamers(model, bounds, tol, params, xa, xb):
  z = I.metamer_latent(model, params, xa, xb)
  met = model.inverse(params, z)
  return met, I.metamer_validity(model, params, met, z, bounds=bounds,
                                 tol=tol)


_jit_interpolation = jax.jit(I.nuisance_interpolation, static_argnums=(0, 4))



def _invariance_section(model, params, x, y, cfg, rng, bounds, nuisance_data,
                        oracle=None):
  out = {}
  yn = np.asarray(y)
  tol = float(cfg["metamer_tol"])
  # Validity over a metamer for every report image; the grid shows the
  # first num_metamers of them.
  ia, ib = IR.pair_indices(yn, len(yn))
  met, v = _jit_metamers(model, bounds, tol, params, x[ia], x[ib])
  summary = I.summarize_validity(v)
  # What the metamers look like to the oracle (None without one).
  out["oracle_judgement"] = IR.judge(oracle, met, x[ia], x[ib], yn[ia],
                                     yn[ib], bounds)
  m = min(int(cfg["num_metamers"]), len(ia))
  valid = np.asarray(v.valid)
  la, lm = (np.asarray(_jit_logits(model, params, t)) for t in (x[ia], met))
  out["metamer_validity"] = dict(summary, tol=tol)
  out["metamer_logit_max_abs_diff"] = _finite_or_none(np.max(np.abs(la - lm)))
  pa, pm = np.argmax(la, -1), np.argmax(lm, -1)
  out["metamer_same_prediction_as_logits_source"] = float(np.mean(pa == pm))
  out["metamer_predicts_nuisance_source_label"] = float(
      np.mean(pm == yn[ib]))
  out["metamer_out_of_bounds"] = summary["out_of_bounds_share"]
  out["grid"] = {
      "logits_source_label": [int(yn[i]) for i in ia[:m]],
      "nuisance_source_label": [int(yn[i]) for i in ib[:m]],
      "metamer_prediction": [int(p) for p in pm[:m]],
      "valid": [bool(b) for b in valid[:m]],
      "logit_drift": [_finite_or_none(d) for d in np.asarray(
          v.logit_drift)[:m]]}
  images = {"metamers": (np.asarray(x[ia[:m]]), np.asarray(x[ib[:m]]),
                         np.asarray(met[:m]))}

  npairs = min(int(cfg["interpolation_pairs"]), m)
  steps = int(cfg["interpolation_steps"])
  frames = _jit_interpolation(
      model, params, x[ia[:npairs]], x[ib[:npairs]], steps)   # [T, P, ...]
  images["interpolation"] = np.asarray(frames)
  out["interpolation"] = {"pairs": npairs, "steps": steps,
                          "valid": [bool(b) for b in valid[:npairs]]}

  # Post-hoc nuisance classifier: a lower bound on I(y; z_n).
  def enc(p, xx, chunk=512):
    xx = jnp.asarray(xx)
    return jnp.concatenate([_jit_nuisance(model, p, xx[i:i + chunk])
                            for i in range(0, xx.shape[0], chunk)])

  if nuisance_data is not None and isinstance(nuisance_data[0], dict):
    tr_d, te_d = nuisance_data
    zn_tr, zn_te = enc(params, tr_d["image"]), enc(params, te_d["image"])
    y_tr, y_te = np.asarray(tr_d["label"]), np.asarray(te_d["label"])
  elif nuisance_data is not None:
    x_tr, y_tr = nuisance_data
    zn_tr, zn_te = enc(params, x_tr), enc(params, x)
    y_tr, y_te = np.asarray(y_tr), yn
  else:
    h = len(yn) // 2
    zn = enc(params, x)
    zn_tr, zn_te, y_tr, y_te = zn[:h], zn[h:], yn[:h], yn[h:]
  t = time.perf_counter()
  tr, te, _ = I.train_nuisance_classifier(
      zn_tr, y_tr, zn_te, y_te,
      hidden=tuple(cfg["nuisance_classifier_hidden"]),
      steps=int(cfg["nuisance_classifier_steps"]),
      lr=float(cfg["nuisance_classifier_lr"]),
      batch_size=int(cfg["nuisance_classifier_batch_size"]), rng=rng,
      num_classes=model.num_classes)
  counts = np.bincount(y_te, minlength=model.num_classes)
  out["nuisance_classifier"] = {
      "train_accuracy": float(tr), "test_accuracy": float(te),
      "majority_class_accuracy": float(counts.max() / counts.sum()),
      "num_train": int(len(y_tr)), "num_test": int(len(y_te)),
      "seconds": time.perf_counter() - t}

  warns = []
  share = summary["valid_share"] or 0.0
  if share < float(cfg["metamer_min_valid"]):
    cause, fix = _invalid_metamer_cause(model)
    warns.append(
        f"METAMERS INVALID: only {100 * share:.1f}% of {summary['num']} "
        f"metamers are valid (logits and nuisance round-trip within "
        f"{tol:g}; need >= {100 * float(cfg['metamer_min_valid']):.0f}%); "
        f"largest logit drift {summary['logit_drift_max']}. {cause}: the "
        f"invariance results below do not hold. {fix}(docs/report.md).")
  warns += _box_warning(summary, cfg, bounds)
  return out, warns, images




def _invalid_metamer_cause(model):
  """``(cause, fix)`` of the METAMERS INVALID warning for ``model``."""
  fixed = int(getattr(model, "zero_channels", 0))
  if isinstance(getattr(getattr(model, "base", model), "pre", None),
                LogitTransform):
    return ("The model's logit input layer (model.firevnet.input_transform="
            "'logit') pins the pixels its flow sends beyond the box at the "
            "box's widened edge, where float32 no longer inverts them", "")
  if fixed:
    return (f"The model's {fixed} fixed input channels (model.firevnet."
            "zero_channels) make it map images onto a part of the latent "
            "space only: merge(z_s(A), z_n(B)) has no exact preimage "
            "image, and the metamers shown (the image channels of the "
            "flow's preimage) are not classified as A", "")
  return ("The model's inverse is unstable off the data (exploding "
          "inverse)", "Use additive coupling or a bounded affine scale ")


def _box_warning(summary, cfg, bounds):
  """The metamers' box check (``report.metamer_max_out_of_bounds``,
  ``report.metamer_max_overshoot``): one warning with the share of pixels
  inside the bounds and the largest overshoot, each beside its goal, or
  none."""
  oob = summary["out_of_bounds_share"] or 0.0
  over = summary["overshoot_max"]
  max_oob = float(cfg["metamer_max_out_of_bounds"])
  max_over = float(cfg["metamer_max_overshoot"])
  if oob <= max_oob and over is not None and over <= max_over:
    return []
  over_s = "non-finite" if over is None else f"{over:.3g}"
  return [f"metamers outside the box: {100 * (1 - oob):.1f}% of metamer "
          f"pixels lie inside the input bounds {bounds} (need >= "
          f"{100 * (1 - max_oob):.0f}%), largest overshoot {over_s} (need <= "
          f"{max_over:g}): they are not images of the data domain."]


def robustness_report(model, params, images, labels, report_config,
                      workdir: str, rng, nuisance_data=None, *,
                      bias=None, bounds=None, provenance=None,
                      progress=None) -> Dict[str, Any]:
  """Computes the robustness report of an advinv_jax model and writes it into
  ``workdir``.

  Args:
    model: an advinv_jax Model (InvertibleModel for the invariance part).
    params: its parameters.
    images: ``f32[N, H, W, C]`` test images in ``report_config.bounds``
      (default ``[0, 1]``); the first ``num_examples`` are used.
    labels: ``int[N]``.
    report_config: ``config.report`` (fields and their defaults:
      advinv_jax/config.py; missing fields take the defaults, ``full=True``
      the paper-grade ``REPORT_FULL``; see :func:`report_settings`).
    workdir: output folder (created).
    rng: PRNG key (PGD random starts, AutoAttack, the nuisance classifier).
    nuisance_data: data for the post-hoc nuisance classifier, either
      ``(train, test)`` with each a dict ``{"image": f32[M,H,W,C], "label":
      int[M]}`` (train on one, test on the other), or ``(x_train, y_train)``
      arrays (tested on ``images``); default: the first half of ``images``
      for training, the second half for test.
    bias: optional scalar ``b`` of a differentially trained binary model
      (Nar et al.): the classifier is ``sign(z_1 - z_0 + b)``, so the
      attacked logits are ``logits + [0, b]``. Needs 2 classes.
    bounds: ``(low, high)`` of the images; overrides
      ``report_config.bounds`` (default ``(0, 1)``).
    provenance: the card's model and data provenance (keys
      ``PROVENANCE_KEYS``; :func:`provenance_from_config` builds it from a
      config); the model's class name when not given.
    progress: None / False (quiet), True (stderr) or a callable taking one
      line: each section as it starts, AutoAttack member by member.

  Returns:
    The report dict (also written as ``workdir/report.json``): keys
    ``warnings, card, headline, num_examples, clean_accuracy (+ _ci),
    invertible, bias, settings, pgd: {linf, l2}, autoattack: {linf, l2}
    (each with its ``log``), deepfool: {l2, linf}, files, seconds``,
    ``fmn: {l2, linf}`` when ``fmn_steps > 0`` and for invertible models
    ``invariance`` (with ``metamer_validity``). Every accuracy ``a`` has its
    Wilson 95% interval as ``a_ci = [low, high]``.
  """
  cfg = report_settings(report_config)
  model.check_input(jnp.asarray(images))
  # hashable (losses.BiasedLogits): the model and the bias key jit's cache
  fn = jax.tree_util.Partial(with_bias(model, bias), params)
  bounds = _check_bounds(cfg["bounds"] if bounds is None else bounds)
  if provenance is None:
    provenance = {"model": type(model).__name__}
  invertible = bool(getattr(model, "invertible", False))
  return _report(fn, images, labels, cfg, workdir, rng, bounds=bounds,
                 provenance=provenance, progress=progress,
                 invertible=(model, params) if invertible else None,
                 nuisance_data=nuisance_data, bias=bias, model=model)


def _report(fn, images, labels, cfg, workdir, rng, *, bounds, provenance,
            progress, invertible=None, nuisance_data=None, bias=None,
            model=None, oracle=None):
  """Runs the sections and writes the report (see :func:`logits_report`)."""
  progress = _progress_fn(progress)
  provenance = _check_provenance(provenance)
  n = int(cfg["num_examples"])
  images = jnp.asarray(images)[:n] if n > 0 else jnp.asarray(images)
  labels = jnp.asarray(labels)[:images.shape[0]]
  if invertible is not None:
    invertible[0].check_input(images)
  _check_data(fn, images, labels, bounds)
  labels = labels.astype(jnp.int32)
  num = int(images.shape[0])
  loop, pgd_attacks, minimal_attacks, n_aa, aa_eps = _attack_settings(
      cfg, bounds, num)
  attacks_card = _attacks_card(cfg, pgd_attacks, minimal_attacks, n_aa,
                               aa_eps, num)
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()

  progress(f"clean accuracy on {num} inputs")
  correct = jnp.asarray(np.argmax(_apply(fn, images), -1)) == labels
  clean = float(jnp.mean(correct))
  report: Dict[str, Any] = {
      "warnings": [],
      "card": _card(cfg, bounds, rng, provenance, fn, images, labels,
                    None if bias is None else float(bias), attacks_card),
      "headline": None,
      "num_examples": num,
      "clean_accuracy": clean,
      "clean_accuracy_ci": _ci(clean, num),
      "invertible": invertible is not None,
      "bias": None if bias is None else float(bias),
      "settings": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in cfg.items()},
      "pgd": {}, "autoattack": {}, "deepfool": {},
  }
  warns: List[str] = []
  k_pgd, k_nc, k_aa = jax.random.split(rng, 3)
  report["pgd"], pgd_success, robust, w = _pgd_sections(
      fn, images, labels, correct, cfg, pgd_attacks, k_pgd, progress)
  warns += w
  for norm in ("linf", "l2"):
    if not aa_eps[norm] or n_aa == 0:
      continue
    pgd = ((report["pgd"][norm], pgd_success[norm])
           if norm in report["pgd"] else None)
    sec, w, succ = _autoattack_section(
        fn, images[:n_aa], labels[:n_aa], norm, aa_eps[norm], cfg,
        jax.random.fold_in(k_aa, len(norm)), bounds, loop, pgd, progress)
    report["autoattack"][norm] = sec
    for e, s in succ.items():
      robust[(f"AutoAttack {sec['settings']['version']}", norm, e)] = (
          np.asarray(correct)[:n_aa] & ~s)
    warns += w
  minimal = {}
  for (name, norm), attack in minimal_attacks.items():
    progress(f"{name} minimal perturbations {norm}")
    sec, w, minimal[(name, norm)] = _minimal_section(fn, images, labels,
                                                     correct, attack)
    report.setdefault(name, {})[norm] = sec
    warns += w
  warns += consistency_warnings(minimal, robust)
  images_out = {}
  why = "no oracle was given to the report"
  if oracle is None and nuisance_data is not None:
    progress("invariance: the oracle (trained once, cached in the workdir)")
    oracle, why = IR.oracle_for(model, nuisance_data, workdir,
                                int(np.max(np.asarray(labels))) + 1
                                if model is None else model.num_classes, cfg)
  if invertible is not None:
    progress("invariance: metamers, interpolation, nuisance classifier")
    model, params = invertible
    report["invariance"], w, images_out = _invariance_section(
        model, params, images, labels, cfg, k_nc, bounds, nuisance_data,
        oracle)
    nc = report["invariance"]["nuisance_classifier"]
    nc["test_accuracy_ci"] = _ci(nc["test_accuracy"], nc["num_test"])
    nc["train_accuracy_ci"] = _ci(nc["train_accuracy"], nc["num_train"])
    acc, m = _nuisance_model_accuracy(fn, images, labels, nuisance_data)
    nc["model_accuracy"], nc["model_accuracy_ci"] = acc, _ci(acc, m)
    warns = w + warns           # metamer validity first: it voids a section
  if oracle is not None and cfg["invariance_pairs"] > 0:
    progress("invariance by optimisation: model metamers, invariance vs "
             "sensitivity")
    report["invariance_search"], w, found = IR.search_section(
        fn, images, labels, cfg, bounds, oracle, why, report["autoattack"])
    images_out.update(found)
    warns += w
  elif oracle is not None or nuisance_data is not None:   # switched off
    report["invariance_search"] = IR.off_section(cfg, oracle, why)
  report["warnings"] = warns
  report["headline"] = _headline(report)
  for w in warns:
    _warnings.warn(w, RuntimeWarning, stacklevel=3)
  report["seconds"] = time.perf_counter() - t0
  progress(f"writing report.html, report.md, report.json ({len(warns)} "
           f"warning(s)) into {workdir}")
  write_report(report, workdir, images_out, bounds)
  return report


def _attack_settings(cfg, bounds, num):
  """The report's attacks from its settings: ``(loop, pgd_attacks,
  minimal_attacks, n_aa, aa_eps)`` (AutoAttack on the first ``n_aa`` of
  the ``num`` inputs at ``aa_eps[norm]``)."""
  # '' = the platform default (A.default_loop()). The config default is
  # 'fori': at report sizes compilation dominates, and an unrolled PGD-20
  # over a fiRevNet compiles ~4x longer (38 s vs 10 s) for a ~15% faster run.
  loop = str(cfg["attack_loop"]) or None
  pgd_attacks = {norm: PGDSettings(
      norm, int(cfg["pgd_steps"]), int(cfg["pgd_restarts"]),
      str(cfg["pgd_loss"]), bounds, loop) for norm in ("linf", "l2")}
  minimal_attacks = {("deepfool", norm): MinimalSettings(
      "deepfool", norm, int(cfg["deepfool_steps"]),
      int(cfg["deepfool_candidates"]), bounds) for norm in ("l2", "linf")}
  if int(cfg["fmn_steps"]) > 0:
    minimal_attacks.update({("fmn", norm): MinimalSettings(
        "fmn", norm, int(cfg["fmn_steps"]), bounds=bounds, loop=loop)
                            for norm in ("l2", "linf")})
  n_aa = min(int(cfg["autoattack_num_examples"]), num)
  aa_eps = {norm: tuple(float(e) for e in cfg[f"autoattack_{norm}_eps"])
            for norm in ("linf", "l2")}
  return loop, pgd_attacks, minimal_attacks, n_aa, aa_eps


def _pgd_sections(fn, images, labels, correct, cfg, pgd_attacks, key,
                  progress):
  """The PGD sweeps at each norm's eps (a norm without eps is skipped).

  Returns:
    ``(sections, success, robust, warnings)``: ``{norm: section}``,
    ``{norm: bool[E, N]}`` successes, ``{(attack, norm, eps): bool[N]}``
    robust inputs (correct and not broken) and the warnings.
  """
  sections, success, robust, warns = {}, {}, {}, []
  for norm, attack in pgd_attacks.items():
    eps_values = tuple(float(e) for e in cfg[f"{norm}_eps"])
    if not eps_values:
      continue
    progress(f"PGD-{attack.steps} sweep {norm} eps={list(eps_values)}")
    sec, w, succ = _pgd_section(fn, images, labels, correct, eps_values,
                                attack, jax.random.fold_in(key, len(norm)))
    sections[norm] = sec
    success[norm] = succ
    for k, e in enumerate(eps_values):
      robust[(f"PGD-{attack.steps}", norm, e)] = (np.asarray(correct)
                                                  & ~succ[k])
    warns += w
  return sections, success, robust, warns


def _attacks_card(cfg, pgd_attacks, minimal_attacks, n_aa, aa_eps, num):
  """Every attack's settings, as the card shows them."""
  out = {}
  for norm, a in pgd_attacks.items():
    if cfg[f"{norm}_eps"]:
      out[f"pgd_{norm}"] = {
          "eps": [float(e) for e in cfg[f"{norm}_eps"]], "steps": a.steps,
          "restarts": a.restarts, "loss": a.loss,
          "step_size": f"{a.rel_step_size:g} x eps", "random_start": True,
          "loop": a.loop or "platform default", "inputs": num}
  if n_aa and any(aa_eps.values()):
    out["autoattack"] = dict(_autoattack_settings(cfg), inputs=n_aa,
                             linf_eps=list(aa_eps["linf"]),
                             l2_eps=list(aa_eps["l2"]))
  for (name, norm), a in minimal_attacks.items():
    s = {"steps": a.steps, "inputs": num}
    if name == "deepfool":
      s.update(candidates=a.candidates, overshoot=0.02)
    out[f"{name}_{norm}"] = s
  return out


def write_report(report: Dict[str, Any], workdir: str,
                 images: Optional[Dict[str, Any]] = None,
                 bounds=(0.0, 1.0)) -> Dict[str, str]:
  """Writes ``report.json`` first, then the figures, ``report.md`` and
  ``report.html`` into ``workdir``, each atomically; fills
  ``report['files']`` with their paths. A failure while drawing leaves
  ``report.json`` (and the training outputs) in place and raises."""
  from advinv_jax import _report_pages as P
  names = ["report.json", "report.md", "report.html"] + [
      f for f in P.figure_files(report)]
  report["files"] = {f.replace(".", "_"): os.path.join(workdir, f)
                     for f in names}
  if report.get("invariance"):
    report["invariance"]["metamer_png"] = report["files"]["metamers_png"]
    report["invariance"]["interpolation_png"] = report["files"][
        "nuisance_interpolation_png"]
  write_atomic(os.path.join(workdir, "report.json"),
               json.dumps(report, indent=1, allow_nan=False))
  figures = P.draw_figures(report, images or {}, bounds)
  for name, png in figures.items():
    write_atomic(os.path.join(workdir, name), png)
  write_atomic(os.path.join(workdir, "report.md"), P.markdown(report))
  write_atomic(os.path.join(workdir, "report.html"),
               P.html(report, figures))
  return report["files"]
