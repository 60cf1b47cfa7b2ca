"""Nar et al.'s experiment scripts (differential training, low-rank
margins) at the tiny scale, and the robustness report from a trained
workdir's checkpoint; their results hold the properties the experiment is
about."""
import json
import os
import subprocess
import sys

import numpy as np

from tests._helpers import ROOT, run_experiment as _run, subprocess_env


def test_differential_binary_tiny(tmp_path):
  # frozen_features (a new head on a CE run's features) is the mechanism of
  # tests/test_train.py::test_head_on_frozen_features_from_another_run.
  res = _run("differential_binary", tmp_path, "--scale=tiny",
             "--num_examples=32", "--protocols=end_to_end,linear")
  assert res["protocols"] == ["end_to_end", "linear"]
  assert res["differential"]["bias_rule"] == "max_accuracy"
  assert res["linear_differential"]["bias_rule"] == "max_accuracy"
  assert "head_ce" not in res
  assert os.path.getsize(tmp_path / "attack_success.png") > 0
  for loss in ("ce", "differential", "linear_ce", "linear_differential"):
    for split in ("train", "test"):
      for norm in ("linf", "l2"):
        succ = res[loss][split][norm]["attack_success_ratio"]
        assert all(0.0 <= s <= 1.0 for s in succ)
        assert np.all(np.diff(succ) >= -1e-9), "success grows with eps"


def test_robustness_report_from_checkpoint(tmp_path):
  wd = tmp_path / "run"
  env = subprocess_env(1)
  subprocess.run(
      [sys.executable, "-m", "advinv_jax.main", "--config=configs/default.py",
       f"--workdir={wd}", "--config.model.firevnet.depth=1", "--config.model.firevnet.width=8",
       "--config.train.num_steps=4", "--config.report.enabled=False",
       "--config.train.progress_bar=False", "--config.report.pgd_steps=2",
       "--config.report.deepfool_steps=3",
       "--config.report.nuisance_classifier_steps=10",
       "--config.report.autoattack_steps=2",
       "--config.report.autoattack_num_targets=1",
       "--config.report.autoattack_queries=10",
       "--config.report.autoattack_fab_steps=2",
       "--config.report.autoattack_fmn_steps=2"],
      cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.robustness_report",
       f"--workdir={wd}", "--num_examples=16"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(wd / "report_test" / "report.json") as f:
    rep = json.load(f)
  assert rep["num_examples"] == 16
  assert rep["invariance"]["metamer_logit_max_abs_diff"] <= 1e-3
  assert rep["invariance"]["metamer_validity"]["valid_share"] == 1.0
  assert rep["headline"]["source"] == "autoattack"
  for f in ("metamers.png", "report.html", "report.md"):
    assert os.path.exists(wd / "report_test" / f)
  assert "report_test/report.html" in proc.stdout


def test_lowrank_margin_runs_small(tmp_path):
  res = _run("lowrank_margin", tmp_path, "--config.seeds=(0,)",
             "--config.ks=(1,10)", table=False, optimize=True)
  assert [c["k"] for c in res["cells"]] == [1, 10]
  for cell in res["cells"]:
    ratios = {k: v for k, v in cell.items() if k.endswith("_ratio")}
    # The exact SVM has the largest margin; differential training nears it,
    # CE from a large initialisation stays far below.
    assert all(r <= 1.0 + 1e-5 for r in ratios.values()), ratios
    assert ratios["normalized/differential_ratio"] >= 0.95
    assert ratios["gd/ce_large_ratio"] < 0.8
