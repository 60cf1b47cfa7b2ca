"""Robustness report: sensitivity (PGD, DeepFool) and invariance (metamers).

``robustness_report`` evaluates a trained model on a batch of test images and
writes ``report.json`` (plus PNGs for invertible models) into ``workdir``:

* clean accuracy;
* PGD robust accuracy and attack-success ratio vs eps, for linf and l2
  (one jitted sweep per norm; every adversarial example is checked to lie in
  its ball and in the bounds);
* DeepFool minimal perturbations (l2, linf): median / mean over the
  correctly classified inputs;
* gradient-masking warnings (zero / NaN gradients, success not monotone in
  eps);
* invertible models: a metamer grid (rows: logits source A, nuisance source
  B, metamer F^-1(z_s(A), z_n(B))), a nuisance interpolation strip and the
  test accuracy of a post-hoc classifier on ``z_n`` (Jacobsen et al.).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
import warnings as _warnings
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax import attacks as A
from advinv_jax.config import default_config
from advinv_jax.losses import add_binary_bias

# Defaults for report fields a config may lack: the schema's, plus the
# input bounds (which come from the dataset, not the config).
_DEFAULTS = dict(default_config().report.to_dict(), bounds=(0.0, 1.0))


def _cfg(report_config, name):
  if report_config is None:
    return _DEFAULTS[name]
  v = report_config.get(name, None) if hasattr(report_config, "get") else (
      getattr(report_config, name, None))
  return _DEFAULTS[name] if v is None else v


def _finite_or_none(v):
  v = float(v)
  return v if np.isfinite(v) else None


def _to_image(x, bounds):
  """``[H, W, C]`` -> something ``imshow`` takes (grey or RGB in [0, 1])."""
  x = np.asarray(x, np.float64)
  lo, hi = (0.0, 1.0) if bounds is None else bounds
  x = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
  if x.shape[-1] == 1 or x.shape[-1] not in (3,):
    return x[..., 0], "gray"
  return x, None


def _save_grid(path, rows: Sequence[np.ndarray], row_labels: Sequence[str],
               bounds, title: str, col_labels: Optional[Sequence[str]] = None):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  nr, nc = len(rows), len(rows[0])
  fig, axes = plt.subplots(nr, nc, figsize=(1.1 * nc + 1.0, 1.1 * nr + 0.5),
                           squeeze=False)
  for i, row in enumerate(rows):
    for j in range(nc):
      ax = axes[i, j]
      img, cmap = _to_image(row[j], bounds)
      ax.imshow(img, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if j == 0:
        ax.set_ylabel(row_labels[i], fontsize=7)
      if i == 0 and col_labels is not None:
        ax.set_title(col_labels[j], fontsize=7)
  fig.suptitle(title, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


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


_jit_metamers = jax.jit(A.metameric_sample, static_argnums=0)
_jit_interpolation = jax.jit(A.nuisance_interpolation, static_argnums=(0, 4))


def _pgd_section(model, params, x, y, correct, eps_values, norm, cfg, key,
                 bounds, loop):
  steps = int(_cfg(cfg, "pgd_steps"))
  attack = _Attack(A.pgd, (
      ("norm", norm), ("steps", steps),
      ("restarts", int(_cfg(cfg, "pgd_restarts"))),
      ("loss", str(_cfg(cfg, "pgd_loss"))), ("bounds", bounds),
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
      "robust_accuracy": [float(v) for v in
                          A.robust_accuracy_curve(res.success, correct)],
      "attack_success_ratio": [float(v) for v in
                               A.attack_success_ratio(res.success, correct)],
      "attack_success_ratio_all": [
          float(v) for v in A.attack_success_ratio(res.success, correct,
                                                   "all")],
      "seconds": time.perf_counter() - t,
  }, warns


def _minimal_section(model, params, x, y, correct, norm, attack, name,
                     bounds):
  """Median minimal perturbation of ``attack`` (deepfool / fmn partial)."""

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
      "seconds": time.perf_counter() - t,
  }, warns


def _invariance_section(model, params, x, y, cfg, workdir, rng, bounds,
                        nuisance_data):
  out = {}
  yn = np.asarray(y)
  m = int(_cfg(cfg, "num_metamers"))
  ia, ib = _pair_indices(yn, m)
  xa, xb = x[ia], x[ib]
  met = _jit_metamers(model, params, xa, xb)
  la, lm = model.logits(params, xa), model.logits(params, met)
  out["metamer_logit_max_abs_diff"] = float(jnp.max(jnp.abs(la - lm)))
  pa, pm = np.argmax(la, -1), np.argmax(lm, -1)
  out["metamer_same_prediction_as_logits_source"] = float(np.mean(pa == pm))
  out["metamer_predicts_nuisance_source_label"] = float(
      np.mean(pm == yn[ib]))
  out["metamer_out_of_bounds"] = (
      float(np.mean((np.asarray(met) < bounds[0]) |
                    (np.asarray(met) > bounds[1]))) if bounds else 0.0)
  path = os.path.join(workdir, "metamers.png")
  _save_grid(path, [np.asarray(xa), np.asarray(xb), np.asarray(met)],
             ["logits src (A)", "nuisance src (B)", "metamer"], bounds,
             "Metamers F^-1(z_s(A), z_n(B)): classified as A",
             col_labels=[f"{int(pa[i])}|{int(yn[ib][i])}->{int(pm[i])}"
                         for i in range(len(ia))])
  out["metamer_png"] = path

  npairs = min(int(_cfg(cfg, "interpolation_pairs")), len(ia))
  steps = int(_cfg(cfg, "interpolation_steps"))
  frames = _jit_interpolation(
      model, params, xa[:npairs], xb[:npairs], steps)       # [T, P, ...]
  frames = np.asarray(frames)
  path = os.path.join(workdir, "nuisance_interpolation.png")
  _save_grid(path, [frames[:, p] for p in range(npairs)],
             [f"pair {p}" for p in range(npairs)], bounds,
             "z_s(A) fixed, z_n interpolated A -> B",
             col_labels=[f"t={t:.2f}" for t in np.linspace(0, 1, steps)])
  out["interpolation_png"] = path

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
  tr, te, _ = A.train_nuisance_classifier(
      zn_tr, y_tr, zn_te, y_te,
      hidden=tuple(_cfg(cfg, "nuisance_classifier_hidden")),
      steps=int(_cfg(cfg, "nuisance_classifier_steps")),
      lr=float(_cfg(cfg, "nuisance_classifier_lr")),
      batch_size=int(_cfg(cfg, "nuisance_classifier_batch_size")), rng=rng,
      num_classes=model.num_classes)
  counts = np.bincount(y_te, minlength=model.num_classes)
  out["nuisance_classifier"] = {
      "train_accuracy": float(tr), "test_accuracy": float(te),
      "majority_class_accuracy": float(counts.max() / counts.sum()),
      "num_train": int(len(y_tr)), "num_test": int(len(y_te)),
      "seconds": time.perf_counter() - t}
  return out


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
    report_config: ``config.report`` (fields: num_examples, linf_eps, l2_eps,
      pgd_steps, pgd_restarts, pgd_loss, attack_loop, deepfool_steps,
      deepfool_candidates, fmn_steps (> 0: also FMN), num_metamers, interpolation_steps,
      interpolation_pairs, nuisance_classifier_{steps,hidden,lr,batch_size};
      missing fields take the defaults of advinv_jax/config.py).
    workdir: output folder (created).
    rng: PRNG key (PGD random starts, the nuisance classifier).
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
    ``num_examples, clean_accuracy, pgd: {linf, l2}, deepfool: {l2, linf},
    warnings, invertible, seconds``, ``fmn: {l2, linf}`` when
    ``fmn_steps > 0`` and for invertible models ``invariance``.
  """
  n = int(_cfg(report_config, "num_examples"))
  images = jnp.asarray(images)[:n] if n > 0 else jnp.asarray(images)
  labels = jnp.asarray(labels)[:images.shape[0]].astype(jnp.int32)
  model.check_input(images)
  if bounds is None:
    bounds = _cfg(report_config, "bounds")
  bounds = None if bounds is None else (float(bounds[0]), float(bounds[1]))
  if bias is not None:
    if model.num_classes != 2:
      raise ValueError(f"bias is only meaningful for a binary model (2 "
                       f"logits), got num_classes={model.num_classes}.")
    model = _BiasedLogits(model, float(bias))
  # '' = the platform default (A.default_loop()). The config default is
  # 'fori': at report sizes compilation dominates, and an unrolled PGD-20
  # over a fiRevNet compiles ~4x longer (38 s vs 10 s) for a ~15% faster run.
  loop = str(_cfg(report_config, "attack_loop")) or None
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
      "num_examples": int(images.shape[0]),
      "clean_accuracy": float(jnp.mean(correct)),
      "invertible": bool(getattr(model, "invertible", False)),
      "bias": None if bias is None else float(bias),
      "pgd": {}, "deepfool": {}, "warnings": [],
  }
  k_pgd, k_nc = jax.random.split(rng)
  for norm, key in (("linf", "linf_eps"), ("l2", "l2_eps")):
    sec, warns = _pgd_section(model, params, images, labels, correct,
                              _cfg(report_config, key), norm, report_config,
                              jax.random.fold_in(k_pgd, len(norm)), bounds,
                              loop)
    report["pgd"][norm] = sec
    report["warnings"] += warns
  minimal = {"deepfool": lambda norm: _Attack(A.deepfool, (
      ("norm", norm), ("steps", int(_cfg(report_config, "deepfool_steps"))),
      ("candidates", int(_cfg(report_config, "deepfool_candidates"))),
      ("bounds", bounds)))}
  fmn_steps = int(_cfg(report_config, "fmn_steps"))
  if fmn_steps > 0:
    minimal["fmn"] = lambda norm: _Attack(A.fmn, (
        ("norm", norm), ("steps", fmn_steps), ("bounds", bounds),
        ("loop", loop)))
    report["fmn"] = {}
  for name, make in minimal.items():
    for norm in ("l2", "linf"):
      sec, warns = _minimal_section(model, params, images, labels, correct,
                                    norm, make(norm), name, bounds)
      report[name][norm] = sec
      report["warnings"] += warns
  if report["invertible"]:
    report["invariance"] = _invariance_section(
        model, params, images, labels, report_config, workdir, k_nc, bounds,
        nuisance_data)
  for w in report["warnings"]:
    _warnings.warn(w, RuntimeWarning, stacklevel=2)
  report["seconds"] = time.perf_counter() - t0
  with open(os.path.join(workdir, "report.json"), "w") as f:
    json.dump(report, f, indent=1, allow_nan=False)
  return report
