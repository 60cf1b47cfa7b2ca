"""The robustness report's invariance part that needs no inverse.

For any model (a fiRevNet, a CNN, an MLP, a plain ``logits_fn``):

* an oracle (:func:`advinv_jax.invariance.train_oracle`), trained once on
  the training images the report is given and cached in its folder, of
  another architecture than the model (:func:`oracle_architecture`);
* model metamers by optimisation: for report pairs (A, B) of different
  classes, an x started at B, anywhere in the input box, whose logits match
  A's (:func:`advinv_jax.invariance.invariance_rate` at ``eps = inf``); the
  grid A / B / x and the oracle's reading of x;
* invariance vs sensitivity: the invariance rate (logits of A within eps of
  B, still read as B by the oracle) at AutoAttack's eps, beside AutoAttack's
  robust accuracy there, and in the whole box.

:func:`judge` is the oracle's reading of the analytic metamers
``F^-1(z_s(A), z_n(B))`` of invertible models, shown beside their validity.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple

import jax.numpy as jnp
import numpy as np

from advinv_jax import invariance as I

# The search's and the oracle's sizes are the report's settings
# (config.report: invariance_pairs, invariance_steps, invariance_lr,
# oracle_steps, oracle_num_train, oracle_epochs; advinv_jax/attacks/
# _settings.py); the match tolerance is the search's own default.


def pair_indices(labels: np.ndarray, m: int) -> Tuple[np.ndarray, np.ndarray]:
  """``m`` pairs (A, B) with different labels where possible."""
  n = len(labels)
  a = np.arange(min(m, n))
  b = []
  for i in a:
    others = np.nonzero(labels != labels[i])[0]
    others = others[others > i] if np.any(others > i) else others
    b.append(int(others[0]) if len(others) else (i + 1) % n)
  return a, np.asarray(b)


def oracle_for(model, nuisance_data, cache_dir: str, num_classes: int, cfg
               ) -> Tuple[Optional[I.Oracle], Optional[str]]:
  """The report's oracle, trained on the train images of ``nuisance_data``
  (``(train dict, test dict)`` or ``(x_train, y_train)``) for the report
  settings ``cfg``'s ``oracle_steps`` (at most ``oracle_epochs`` passes over
  its first ``oracle_num_train`` images) and cached in ``cache_dir``;
  ``(None, why)`` without training images or with ``oracle_steps=0``."""
  import jax  # pylint: disable=g-import-not-at-top
  if nuisance_data is None:
    return None, ("no training images were given to the report "
                  "(nuisance_data), so no oracle judges the metamers")
  if cfg["oracle_steps"] == 0:
    return None, ("the oracle is off (report.oracle_steps=0), so no oracle "
                  "judges the metamers")
  if isinstance(nuisance_data[0], dict):
    x_tr, y_tr = nuisance_data[0]["image"], nuisance_data[0]["label"]
    test = nuisance_data[1]
    x_te, y_te = test["image"], test["label"]
  else:
    (x_tr, y_tr), x_te, y_te = nuisance_data, None, None
  n = int(cfg["oracle_num_train"])
  x_tr, y_tr = np.asarray(x_tr)[:n], np.asarray(y_tr)[:n]
  # At most oracle_epochs passes over small training sets.
  steps = min(int(cfg["oracle_steps"]), -(-int(cfg["oracle_epochs"])
                                           * len(y_tr) // I.ORACLE_BATCH_SIZE))
  orc = I.train_oracle(x_tr, y_tr, cache_dir=cache_dir,
                       rng=jax.random.PRNGKey(0),
                       architecture=I.oracle_architecture(model),
                       num_classes=num_classes, x_test=x_te, y_test=y_te,
                       steps=steps)
  return orc, None


def oracle_summary(orc: Optional[I.Oracle], why: Optional[str]
                   ) -> Dict[str, Any]:
  if orc is None:
    return {"available": False, "why": why}
  return {"available": True, "architecture": orc.architecture,
          "test_accuracy": orc.test_accuracy, "loaded": orc.loaded,
          "file": orc.path}


def judge(orc: Optional[I.Oracle], x_met, xa, xb, ya, yb, bounds
          ) -> Optional[Dict[str, Any]]:
  """The oracle's summary of metamers ``x_met`` of pairs (A, B), or None
  without an oracle."""
  if orc is None:
    return None
  return I.summarize_judgement(I.judge_metamers(
      orc.logits, jnp.asarray(x_met), jnp.asarray(xa), jnp.asarray(xb),
      jnp.asarray(ya, jnp.int32), jnp.asarray(yb, jnp.int32), bounds=bounds))


def off_section(cfg, orc: Optional[I.Oracle], why: Optional[str]
                ) -> Dict[str, Any]:
  """The search's section when it is switched off: the oracle and the line
  the report states (``off``)."""
  off = ("The invariance search is off (report.invariance_pairs=0)."
         if cfg["invariance_pairs"] == 0 else
         f"No invariance search: {why}.")
  return {"oracle": oracle_summary(orc, why), "off": off}


def search_section(fn, x, y, cfg, bounds, orc: Optional[I.Oracle],
                   why: Optional[str], autoattack: Dict[str, Any]
                   ) -> Tuple[Dict[str, Any], List[str], Dict[str, Any]]:
  """Model metamers by optimisation and the invariance-vs-sensitivity
  table; ``(section, warnings, images)``."""
  t = time.perf_counter()
  yn = np.asarray(y)
  steps, lr = int(cfg["invariance_steps"]), float(cfg["invariance_lr"])
  ia, ib = pair_indices(yn, min(int(cfg["invariance_pairs"]), len(yn)))
  keep = yn[ia] != yn[ib]
  ia, ib = ia[keep], ib[keep]
  out: Dict[str, Any] = {"oracle": oracle_summary(orc, why),
                         "num_pairs": int(len(ia)), "steps": steps,
                         "lr": lr, "tol": I.DEFAULT_MATCH_TOL}
  if not len(ia):
    return dict(out, rows=[]), ["invariance search: no report pairs of "
                                "different classes."], {}
  xa, xb = x[ia], x[ib]
  yb = jnp.asarray(yn[ib])
  # Without an oracle the model's own class of B stands in, so the search
  # and its match still run; the rate is then not reported.
  judge_fn = orc.logits if orc is not None else (lambda z: jnp.zeros(
      (z.shape[0], int(yn.max()) + 1)))
  runs = [(norm, list(autoattack[norm]["eps"])) for norm in ("linf", "l2")
          if norm in autoattack and autoattack[norm]["eps"]]
  if not runs:
    runs = [("l2", [])]
  runs[-1][1].append(float("inf"))          # the box only, last
  rows, x_box = [], None
  for norm, eps in runs:
    r = I.invariance_rate(fn, judge_fn, xa, xb, yb, eps, norm=norm,
                          steps=steps, lr=lr, bounds=bounds)
    x_box = r.pop("x")
    for k, e in enumerate(eps):
      aa = autoattack.get(norm, {})
      ra = (aa["robust_accuracy"][aa["eps"].index(e)]
            if np.isfinite(e) and e in aa.get("eps", []) else None)
      rows.append({
          "norm": norm, "eps": e if np.isfinite(e) else None,
          "autoattack_robust_accuracy": ra,
          "invariance_rate": r["invariance_rate"][k] if orc else None,
          "matched": r["matched"][k],
          "same_class_as_logits_source": r["same_class_as_logits_source"][k],
          "oracle_reads_nuisance_source": (
              r["oracle_reads_nuisance_source"][k] if orc else None),
          "median_distance": r["median_distance"][k]})
  m = min(int(cfg["num_metamers"]), len(ia))
  pred = np.argmax(np.asarray(fn(x_box)), -1)
  out["rows"] = rows
  out["box_metamers"] = judge(orc, x_box, xa, xb, yn[ia], yn[ib], bounds)
  oracle_label = (np.argmax(np.asarray(orc.logits(x_box[:m])), -1)
                  if orc is not None else None)
  out["grid"] = {
      "logits_source_label": [int(v) for v in yn[ia[:m]]],
      "nuisance_source_label": [int(v) for v in yn[ib[:m]]],
      "metamer_prediction": [int(v) for v in pred[:m]],
      "oracle_label": (None if oracle_label is None
                       else [int(v) for v in oracle_label])}
  out["seconds"] = time.perf_counter() - t
  images = {"model_metamers": (np.asarray(xa[:m]), np.asarray(xb[:m]),
                               np.asarray(x_box[:m]))}
  warns = []
  if orc is None:
    warns.append(f"invariance: {why}; pass the training images to judge "
                 "what the metamers look like.")
  return out, warns, images
