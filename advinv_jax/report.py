"""Robustness report: sensitivity (PGD, AutoAttack, minimal perturbations)
and invariance (metamers, checked).

``robustness_report`` evaluates a trained model on a batch of test images and
writes into ``workdir`` (every file atomically: a temporary file, then
``os.replace``; a failure leaves no partial file):

* ``report.json`` -- every number, ``warnings`` first;
* ``report.html`` (self-contained, figures embedded as base64 PNG) and
  ``report.md`` (figures as the PNG files beside it) -- what a person opens;
* PNG figures: robust accuracy vs eps, minimal perturbations, AutoAttack's
  per-attack success counts, and for invertible models the metamer grid and
  the nuisance interpolation.

Sections: clean accuracy; AutoAttack robust accuracy (the headline) at
``autoattack_{linf,l2}_eps`` on the first ``autoattack_num_examples`` inputs,
with the attack that broke each input and AutoAttack's sanity flags; the PGD
sweep over ``linf_eps`` / ``l2_eps`` (the fast curve; every adversarial
example is checked to lie in its ball and in the bounds); DeepFool (and FMN)
minimal perturbations; gradient-masking warnings; for invertible models
metamers ``F^-1(z_s(A), z_n(B))`` with their validity
(:func:`advinv_jax.invariance.metamer_validity`; the report warns when the
valid share is below ``metamer_min_valid``), a nuisance interpolation strip
and a post-hoc classifier on ``z_n`` against its chance level. Settings:
the config's ``report`` fields; ``report.full=True`` switches to the
paper-grade ``advinv_jax.config.REPORT_FULL``. See docs/report.md.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
import warnings as _warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax import attacks as A
from advinv_jax import invariance as I
from advinv_jax._files import write_atomic
from advinv_jax.config import REPORT_FULL, default_config
from advinv_jax.losses import add_binary_bias

# Defaults for report fields a config may lack: the schema's, plus the
# input bounds (which come from the dataset, not the config).
_DEFAULTS = dict(default_config().report.to_dict(), bounds=(0.0, 1.0))


def report_settings(report_config) -> Dict[str, Any]:
  """The report's resolved settings: the schema's defaults, then the fields
  of ``report_config`` (a ConfigDict, dict or None), then -- with
  ``full=True`` -- ``REPORT_FULL`` and AutoAttack at every eps of
  ``linf_eps`` / ``l2_eps``."""
  out = dict(_DEFAULTS)
  if report_config is not None:
    items = (report_config.items() if hasattr(report_config, "items") else
             vars(report_config).items())
    out.update({k: v for k, v in items if v is not None})
  if out["full"]:
    out.update(REPORT_FULL)
    out["autoattack_linf_eps"] = tuple(out["linf_eps"])
    out["autoattack_l2_eps"] = tuple(out["l2_eps"])
  return out


def _finite_or_none(v):
  v = float(v)
  return v if np.isfinite(v) else None


def _pair_indices(labels: np.ndarray, m: int) -> Tuple[np.ndarray, np.ndarray]:
  """``m`` pairs (A, B) with different labels where possible."""
  n = len(labels)
  a = np.arange(min(m, n))
  b = []
  for i in a:
    others = np.nonzero(labels != labels[i])[0]
    others = others[others > i] if np.any(others > i) else others
    b.append(int(others[0]) if len(others) else (i + 1) % n)
  return a, np.asarray(b)


@dataclasses.dataclass(frozen=True)
class _Attack:
  """An attack with fixed keyword settings, equal (and hashing equal) when
  its function and settings are: a static argument of the report's jitted
  functions, so that reports on the same model architecture and input shape
  (train and test splits, several seeds) reuse one compiled program."""
  fn: Callable
  kwargs: Tuple[Tuple[str, Any], ...]

  def partial(self):
    return functools.partial(self.fn, **dict(self.kwargs))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _jit_eps_sweep(model, attack, eps_values, params, x, y, key):
  return A.eps_sweep(attack.partial(), functools.partial(model.logits, params),
                     x, y, eps_values, rng=key, full=True)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _jit_minimal(model, attack, params, x, y):
  return attack.partial()(functools.partial(model.logits, params), x, y)


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


def _pgd_section(model, params, x, y, correct, eps_values, norm, cfg, key,
                 bounds, loop):
  steps = int(cfg["pgd_steps"])
  attack = _Attack(A.pgd, (
      ("norm", norm), ("steps", steps),
      ("restarts", int(cfg["pgd_restarts"])),
      ("loss", str(cfg["pgd_loss"])), ("bounds", bounds),
      ("loop", loop)))
  eps_values = tuple(float(e) for e in eps_values)

  t = time.perf_counter()
  res = jax.block_until_ready(
      _jit_eps_sweep(model, attack, eps_values, params, x, y, key))
  for k, e in enumerate(eps_values):
    A.check_adversarial(x, res.x_adv[k], e, norm, bounds)
  warns = A.monotonicity_warnings(eps_values, res.success, name=f"pgd-{norm}")
  warns += A.gradient_warnings(np.asarray(res.bad_grad_steps).max(0),
                               name=f"pgd-{norm}")
  return {
      "eps": list(eps_values),
      "steps": steps,
      "restarts": int(cfg["pgd_restarts"]),
      "robust_accuracy": [float(v) for v in
                          A.robust_accuracy_curve(res.success, correct)],
      "attack_success_ratio": [float(v) for v in
                               A.attack_success_ratio(res.success, correct)],
      "attack_success_ratio_all": [
          float(v) for v in A.attack_success_ratio(res.success, correct,
                                                   "all")],
      "seconds": time.perf_counter() - t,
  }, warns, np.asarray(res.success)


def _minimal_section(model, params, x, y, correct, norm, attack, name,
                     bounds):
  """Minimal perturbations of ``attack`` (deepfool / fmn partial) on the
  correctly classified inputs: their median and each norm (None: none
  found)."""

  t = time.perf_counter()
  res = jax.block_until_ready(_jit_minimal(model, attack, params, x, y))
  A.check_adversarial(x, res.x_adv, float("inf"), norm, bounds)
  c = np.asarray(correct)
  nrm = np.asarray(res.perturbation_norm)[c]
  found = np.isfinite(nrm)
  warns = A.gradient_warnings(np.asarray(res.bad_grad_steps)[c],
                              name=f"{name}-{norm}")
  return {
      "median_norm": _finite_or_none(np.median(nrm)) if nrm.size else None,
      "mean_norm_found": (_finite_or_none(nrm[found].mean())
                          if found.any() else None),
      "success_rate": float(found.mean()) if nrm.size else 0.0,
      "num_correct": int(c.sum()),
      "norms": [_finite_or_none(v) for v in nrm],
      "seconds": time.perf_counter() - t,
  }, warns


def _autoattack_section(model, params, x, y, norm, eps_values, cfg, key,
                        bounds, loop, pgd_eps, pgd_success):
  """AutoAttack at each eps on ``x`` (the first autoattack_num_examples)."""
  # A Partial of a hashable function: the parameters are traced, so
  # AutoAttack's compiled members are reused across eps values and across
  # reports on equal models (train and test splits, seeds).
  logits_fn = jax.tree_util.Partial(_ModelLogits(model), params)
  settings = dict(version=str(cfg["autoattack_version"]),
                  steps=int(cfg["autoattack_steps"]),
                  num_targets=int(cfg["autoattack_num_targets"]),
                  queries=int(cfg["autoattack_queries"]),
                  fmn_steps=int(cfg["autoattack_fmn_steps"]))
  out = {"eps": [], "robust_accuracy": [], "per_attack_success": [],
         "attack_seconds": [], "flags": [], "pgd_robust_accuracy": [],
         "num_examples": int(x.shape[0]), "settings": settings}
  warns = []
  t = time.perf_counter()
  for k, eps in enumerate(eps_values):
    res = A.autoattack(logits_fn, x, y, eps=float(eps), norm=norm,
                       bounds=bounds, loop=loop,
                       rng=jax.random.fold_in(key, k), **settings)
    A.check_adversarial(x, res.x_adv, float(eps), norm, bounds)
    out["attacks"] = list(res.attacks)
    out["clean_accuracy"] = float(jnp.mean(res.clean_correct))
    out["eps"].append(float(eps))
    out["robust_accuracy"].append(float(res.robust_accuracy))
    out["per_attack_success"].append(
        [int(v) for v in np.asarray(res.per_attack_success)])
    out["attack_seconds"].append(
        [float(v) for v in np.asarray(res.seconds)])
    out["flags"].append({f: bool(v) for f, v in res.flags.items()})
    reduced = any(settings[k] < REPORT_FULL[f"autoattack_{k}"]
                  for k in ("steps", "num_targets", "queries", "fmn_steps"))
    for w in A.autoattack_warnings(res):
      if reduced and "gradient masking" in w:
        w += (" With the report's reduced AutoAttack settings (APGD "
              f"{settings['steps']} steps, {settings['num_targets']} "
              "targets) weak gradient attacks alone can explain it: rerun "
              "with report.full=True before concluding masking.")
      warns.append(f"{w} ({norm} eps={eps:g})")
    # PGD on the same inputs at the same eps, when the sweep has that eps.
    pgd_ra = None
    if float(eps) in pgd_eps:
      j = pgd_eps.index(float(eps))
      ok = np.asarray(res.clean_correct) & ~pgd_success[j][:x.shape[0]]
      pgd_ra = float(ok.mean())
      if out["robust_accuracy"][-1] > pgd_ra + 1e-9:
        warns.append(f"autoattack-{norm} eps={eps}: robust accuracy "
                     f"{out['robust_accuracy'][-1]:.4f} is above PGD's "
                     f"{pgd_ra:.4f} on the same inputs: the ensemble is "
                     "weaker than one of its members should be (too few "
                     "AutoAttack steps?).")
    out["pgd_robust_accuracy"].append(pgd_ra)
  out["seconds"] = time.perf_counter() - t
  return out, warns


def _invariance_section(model, params, x, y, cfg, rng, bounds, nuisance_data):
  out = {}
  yn = np.asarray(y)
  tol = float(cfg["metamer_tol"])
  # Validity over a metamer for every report image; the grid shows the
  # first num_metamers of them.
  ia, ib = _pair_indices(yn, len(yn))
  met, v = _jit_metamers(model, bounds, tol, params, x[ia], x[ib])
  summary = I.summarize_validity(v)
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
  fixed = int(getattr(model, "zero_channels", 0))
  share = summary["valid_share"] or 0.0
  if share < float(cfg["metamer_min_valid"]):
    if fixed:
      cause = (f"The model's {fixed} fixed input channels (model.firevnet."
               "zero_channels) make it map images onto a part of the latent "
               "space only: merge(z_s(A), z_n(B)) has no exact preimage "
               "image, and the metamers shown (the image channels of the "
               "flow's preimage) are not classified as A")
      fix = ""
    else:
      cause = ("The model's inverse is unstable off the data (exploding "
               "inverse)")
      fix = "Use additive coupling or a bounded affine scale "
    warns.append(
        f"METAMERS INVALID: only {100 * share:.1f}% of {summary['num']} "
        f"metamers are valid (logits and nuisance round-trip within "
        f"{tol:g}; need >= {100 * float(cfg['metamer_min_valid']):.0f}%); "
        f"largest logit drift {summary['logit_drift_max']}. {cause}: the "
        f"invariance results below do not hold. {fix}(docs/report.md).")
  oob = summary["out_of_bounds_share"] or 0.0
  if oob > float(cfg["metamer_max_out_of_bounds"]):
    warns.append(f"metamers: {100 * oob:.1f}% of metamer pixels lie outside "
                 f"the input bounds {bounds} (largest overshoot "
                 f"{summary['overshoot_max']}): they are not images of the "
                 "data domain.")
  return out, warns, images


@dataclasses.dataclass(frozen=True)
class _ModelLogits:
  """``model.logits`` as a function equal (and hashing equal) for equal
  models, unlike a bound method (equal only for the same object)."""
  model: Any

  def __call__(self, params, x):
    return self.model.logits(params, x)


class _BiasedLogits:
  """A model view whose logits carry a differential-training bias on class 1
  (everything else delegates to the wrapped model)."""

  def __init__(self, model, bias: float):
    self._model = model
    self._bias = float(bias)

  def __getattr__(self, name):
    return getattr(self._model, name)

  def __hash__(self):
    return hash((self._model, self._bias))

  def __eq__(self, other):
    return (isinstance(other, _BiasedLogits) and other._model == self._model
            and other._bias == self._bias)

  def logits(self, params, x):
    return add_binary_bias(self._model.logits(params, x), self._bias)


def _headline(report) -> Dict[str, Any]:
  """AutoAttack's robust accuracy at its first linf (else l2) eps; PGD's at
  its first eps when AutoAttack did not run."""
  for norm in ("linf", "l2"):
    aa = report.get("autoattack", {}).get(norm)
    if aa and aa["eps"]:
      return {"source": "autoattack", "norm": norm, "eps": aa["eps"][0],
              "robust_accuracy": aa["robust_accuracy"][0],
              "num_examples": aa["num_examples"],
              "clean_accuracy": aa["clean_accuracy"],
              "settings": aa["settings"],
              "pgd_robust_accuracy": aa["pgd_robust_accuracy"][0]}
  for norm in ("linf", "l2"):
    sec = report["pgd"].get(norm)
    if sec and sec["eps"]:
      return {"source": "pgd", "norm": norm, "eps": sec["eps"][0],
              "robust_accuracy": sec["robust_accuracy"][0],
              "num_examples": report["num_examples"],
              "clean_accuracy": report["clean_accuracy"],
              "settings": {"steps": sec["steps"],
                           "restarts": sec["restarts"]}}
  return {"source": None}


def robustness_report(model, params, images, labels, report_config,
                      workdir: str, rng, nuisance_data=None, *,
                      bias=None, bounds=None) -> Dict[str, Any]:
  """Computes the robustness report and writes it into ``workdir``.

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

  Returns:
    The report dict (also written as ``workdir/report.json``): keys
    ``warnings, headline, num_examples, clean_accuracy, invertible, bias,
    settings, pgd: {linf, l2}, autoattack: {linf, l2}, deepfool: {l2, linf},
    files, seconds``, ``fmn: {l2, linf}`` when ``fmn_steps > 0`` and for
    invertible models ``invariance`` (with ``metamer_validity``).
  """
  cfg = report_settings(report_config)
  n = int(cfg["num_examples"])
  images = jnp.asarray(images)[:n] if n > 0 else jnp.asarray(images)
  labels = jnp.asarray(labels)[:images.shape[0]].astype(jnp.int32)
  model.check_input(images)
  if bounds is None:
    bounds = cfg["bounds"]
  bounds = None if bounds is None else (float(bounds[0]), float(bounds[1]))
  raw_model = model
  if bias is not None:
    if model.num_classes != 2:
      raise ValueError(f"bias is only meaningful for a binary model (2 "
                       f"logits), got num_classes={model.num_classes}.")
    model = _BiasedLogits(model, float(bias))
  # '' = the platform default (A.default_loop()). The config default is
  # 'fori': at report sizes compilation dominates, and an unrolled PGD-20
  # over a fiRevNet compiles ~4x longer (38 s vs 10 s) for a ~15% faster run.
  loop = str(cfg["attack_loop"]) or None
  ln = np.asarray(labels)
  if ln.shape != (images.shape[0],) or ln.min() < 0 or (
      ln.max() >= model.num_classes):
    raise ValueError(f"labels must be int[{images.shape[0]}] in [0, "
                     f"{model.num_classes}), got shape {ln.shape} and range "
                     f"[{ln.min()}, {ln.max()}].")
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()

  clean = _jit_logits(model, params, images)
  correct = jnp.argmax(clean, -1) == labels
  report: Dict[str, Any] = {
      "warnings": [],
      "headline": None,
      "num_examples": int(images.shape[0]),
      "clean_accuracy": float(jnp.mean(correct)),
      "invertible": bool(getattr(model, "invertible", False)),
      "bias": None if bias is None else float(bias),
      "settings": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in cfg.items()},
      "pgd": {}, "autoattack": {}, "deepfool": {},
  }
  warns: List[str] = []
  k_pgd, k_nc, k_aa = jax.random.split(rng, 3)
  pgd_success = {}
  for norm in ("linf", "l2"):
    sec, w, succ = _pgd_section(
        model, params, images, labels, correct, cfg[f"{norm}_eps"], norm, cfg,
        jax.random.fold_in(k_pgd, len(norm)), bounds, loop)
    report["pgd"][norm] = sec
    pgd_success[norm] = succ
    warns += w
  n_aa = min(int(cfg["autoattack_num_examples"]), images.shape[0])
  for norm in ("linf", "l2"):
    eps_values = tuple(float(e) for e in cfg[f"autoattack_{norm}_eps"])
    if not eps_values or n_aa == 0:
      continue
    sec, w = _autoattack_section(
        model, params, images[:n_aa], labels[:n_aa], norm, eps_values, cfg,
        jax.random.fold_in(k_aa, len(norm)), bounds, loop,
        report["pgd"][norm]["eps"], pgd_success[norm])
    report["autoattack"][norm] = sec
    warns += w
  minimal = {"deepfool": lambda norm: _Attack(A.deepfool, (
      ("norm", norm), ("steps", int(cfg["deepfool_steps"])),
      ("candidates", int(cfg["deepfool_candidates"])),
      ("bounds", bounds)))}
  fmn_steps = int(cfg["fmn_steps"])
  if fmn_steps > 0:
    minimal["fmn"] = lambda norm: _Attack(A.fmn, (
        ("norm", norm), ("steps", fmn_steps), ("bounds", bounds),
        ("loop", loop)))
    report["fmn"] = {}
  for name, make in minimal.items():
    for norm in ("l2", "linf"):
      sec, w = _minimal_section(model, params, images, labels, correct,
                                norm, make(norm), name, bounds)
      report[name][norm] = sec
      warns += w
  images_out = {}
  if report["invertible"]:
    report["invariance"], w, images_out = _invariance_section(
        raw_model, params, images, labels, cfg, k_nc, bounds, nuisance_data)
    warns = w + warns           # metamer validity first: it voids a section
  report["warnings"] = warns
  report["headline"] = _headline(report)
  for w in warns:
    _warnings.warn(w, RuntimeWarning, stacklevel=2)
  report["seconds"] = time.perf_counter() - t0
  write_report(report, workdir, images_out, bounds)
  return report


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
