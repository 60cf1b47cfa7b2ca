"""The main job as a function: train, evaluate, report (no flags here).

``advinv_jax.main`` is its command line; experiment scripts call :func:`run`.
"""
from __future__ import annotations

import os
import sys
import traceback

import jax
import numpy as np

from advinv_jax.report import robustness_report
from advinv_jax.train import train_and_evaluate


def run(config, workdir: str) -> dict:
  """Trains, evaluates and (if enabled) writes the robustness report."""
  result = train_and_evaluate(config, workdir)
  summary = {"test_accuracy": result["eval"]["accuracy"],
             "train_accuracy": result["train_eval"]["accuracy"],
             "steps": result["steps"]}
  if config.report.enabled:
    ds = result["dataset"]
    n = min(config.report.num_examples, len(ds.test))
    test = ds.test.get(np.arange(n))
    model, params = result["model"], result["state"].params
    try:
      report = robustness_report(
          model, params, test["image"], test["label"], config.report,
          workdir, jax.random.PRNGKey(config.seed + 1),
          nuisance_data=(_nuisance_data(ds, config) if model.invertible
                         else None),
          bias=result["extras"].get("differential_bias"),
          bounds=ds.bounds)
    except Exception as e:  # pylint: disable=broad-except
      # The training outputs (checkpoints, results.json) are on disk already;
      # a failing report must not take them down with it.
      traceback.print_exc()
      summary["report_error"] = f"{type(e).__name__}: {e}"
      print(f"the report failed ({summary['report_error']}); training "
            f"outputs are kept in {workdir}", file=sys.stderr)
      return summary
    summary["report"] = report["files"]["report_html"]
    summary["report_json"] = report["files"]["report_json"]
    summary["warnings"] = len(report["warnings"])
    summary.update({k: v for k, v in report.items()
                    if isinstance(v, (int, float))})
    h = report["headline"]
    if h.get("source"):
      summary["robust_accuracy"] = h["robust_accuracy"]
      summary["robust_accuracy_by"] = (
          f"{h['source']} {h['norm']} eps={h['eps']:g} "
          f"(n={h['num_examples']})")
    inv = report.get("invariance")
    if inv:
      summary["valid_metamers"] = inv["metamer_validity"]["valid_share"]
  return summary


def _nuisance_data(ds, config):
  """Train/test images for the post-hoc nuisance classifier (capped)."""
  del config
  n_tr = min(len(ds.train), 10000)
  n_te = min(len(ds.test), 2000)
  return (ds.train.get(np.arange(n_tr)), ds.test.get(np.arange(n_te)))
