"""The main job as a function: train, evaluate, report (no flags here).

``advinv_jax.main`` is its command line; experiment scripts call :func:`run`.
"""
from __future__ import annotations

import os

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
    report = robustness_report(
        model, params, test["image"], test["label"], config.report, workdir,
        jax.random.PRNGKey(config.seed + 1),
        nuisance_data=_nuisance_data(ds, config) if model.invertible else None,
        bias=result["extras"].get("differential_bias"),
        bounds=ds.bounds)
    summary["report"] = os.path.join(workdir, "report.json")
    summary.update({k: v for k, v in report.items()
                    if isinstance(v, (int, float))})
  return summary


def _nuisance_data(ds, config):
  """Train/test images for the post-hoc nuisance classifier (capped)."""
  del config
  n_tr = min(len(ds.train), 10000)
  n_te = min(len(ds.test), 2000)
  return (ds.train.get(np.arange(n_tr)), ds.test.get(np.arange(n_te)))
