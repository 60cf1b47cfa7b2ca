"""The main job as a function: train, evaluate, report (no flags here).

``advinv_jax.main`` is its command line; experiment scripts call :func:`run`.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from advinv_jax import runs
from advinv_jax.report import (print_progress, provenance_from_config,
                               robustness_report)
from advinv_jax.train import check_config, make_mesh, train_and_evaluate


def run(config, workdir: str) -> dict:
  """Trains, evaluates and (if enabled) writes the robustness report.

  Everything that can be checked before the data loads is checked first
  (``train.check_config``); a start that fails leaves the workdir as it was.
  The job holds the workdir once, for training and the report
  (``runs.Run``: its lock; SIGINT/SIGTERM anywhere raise
  ``runs.Interrupted``, the lock is released, no staging folder stays). The
  report is written atomically (``runs.staged_dir``: its
  files appear complete or not at all); if it fails, the summary says so in
  ``report_error`` (one line) and the training outputs stay as they are. A
  finished run whose report exists is not reported again, unless a
  ``report.*`` field changed: then the report is rewritten with it, and
  the change is recorded in the history only once the report is written.
  """
  check_config(config, make_mesh())
  with runs.Run(workdir) as held:
    return _run_held(config, held)


def _run_held(config, held: runs.Run):
  workdir = held.workdir
  result = train_and_evaluate(config, workdir, run=held)
  summary = {"test_accuracy": result["eval"]["accuracy"],
             "train_accuracy": result["train_eval"]["accuracy"],
             "steps": result["steps"]}
  report_path = os.path.join(workdir, "report.json")
  changed = result.get("report_changes") or {}
  if not config.report.enabled or (result["finished_before"] and not changed
                                   and os.path.exists(report_path)):
    return summary
  if result["finished_before"] and changed:
    print("rewriting the report of the finished run: "
          + "; ".join(f"config.{f}: {a!r} -> {b!r}"
                      for f, (a, b) in changed.items()))
  try:
    with runs.staged_dir(workdir) as stage:
      report = _report(config, result, stage)
  except Exception as e:  # pylint: disable=broad-except
    what = ("disk full" if runs.is_disk_full(e) else
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    summary["report_error"] = (
        f"the robustness report failed ({what}); the training outputs in "
        f"{workdir} are intact: rerun the report with python "
        f"-m experiments.robustness_report --workdir={workdir}")
    return summary
  if changed:
    runs.record_history(workdir, {"event": "report", "changes": changed},
                        result["steps"])
  summary["report"] = os.path.join(workdir, "report.html")
  summary["report_json"] = report_path
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


def _report(config, result, out_dir):
  ds = result["dataset"]
  n = min(config.report.num_examples, len(ds.test))
  test = ds.test.get(np.arange(n))
  model, params = result["model"], result["state"].params
  quiet = not config.train.progress_bar or jax.process_index() != 0
  return robustness_report(
      model, params, test["image"], test["label"], config.report, out_dir,
      jax.random.PRNGKey(config.seed + 1),
      nuisance_data=_nuisance_data(ds, config),   # also the oracle's
      bias=result["extras"].get("differential_bias"),
      bounds=ds.bounds, progress=None if quiet else print_progress,
      provenance=provenance_from_config(
          config, checkpoint_step=result["steps"], split="test",
          indices=np.arange(n), split_size=len(ds.test)))


def _nuisance_data(ds, config):
  """Train/test images for the post-hoc nuisance classifier (capped), both
  as evaluation presents them (``Dataset.split``)."""
  del config
  n_tr = min(len(ds.train), 10000)
  n_te = min(len(ds.test), 2000)
  return (ds.split("train").get(np.arange(n_tr)),
          ds.test.get(np.arange(n_te)))
