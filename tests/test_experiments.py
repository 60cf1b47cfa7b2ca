"""Each experiment script runs end to end at the tiny scale (bundled digits)
and its results hold the properties the experiment is about."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, workdir, *args, table=True):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", script),
       f"--workdir={workdir}", *args],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  if table:
    assert os.path.exists(os.path.join(workdir, "results.md"))
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def test_invariance_mnist_tiny(tmp_path):
  res = _run("invariance_mnist.py", tmp_path, "--scale=tiny")
  for loss in ("ce", "ice"):
    r = res[loss]
    # Metamers keep the logit source's logits exactly (a bijection).
    assert r["metamer_logit_max_abs_diff"] <= 1e-3
    assert 0.0 <= r["zn_test_error"] <= 1.0
    assert os.path.exists(r["metamer_png"])


def test_spheres_tiny(tmp_path):
  res = _run("spheres.py", tmp_path, "--scale=tiny")
  nc = res["norm_classifier"]
  # The classifier that ignores x_d is perfect on data and fully fooled by
  # moving x_d alone: the invariance counter-example.
  assert nc["clean_accuracy"] == 1.0
  assert nc["attack_success"] == 1.0
  assert 0.0 <= res["firevnet_test_error"] <= 1.0


def test_differential_binary_tiny(tmp_path):
  res = _run("differential_binary.py", tmp_path, "--scale=tiny",
             "--num_examples=32")
  for loss in ("ce", "differential"):
    for split in ("train", "test"):
      for norm in ("linf", "l2"):
        succ = res[loss][split][norm]["attack_success_ratio"]
        assert all(0.0 <= s <= 1.0 for s in succ)
        assert np.all(np.diff(succ) >= -1e-9), "success grows with eps"


def test_shiftmnist_tiny(tmp_path):
  res = _run("shiftmnist.py", tmp_path, "--scale=tiny")
  for loss in ("ce", "ice"):
    assert 0.0 <= res[loss]["test_accuracy_random_code"] <= 1.0


def test_robustness_report_from_checkpoint(tmp_path):
  wd = tmp_path / "run"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  subprocess.run(
      [sys.executable, "-m", "advinv_jax.main", "--config=configs/default.py",
       f"--workdir={wd}", "--config.model.depth=1", "--config.model.width=8",
       "--config.train.num_steps=4", "--config.report.enabled=False",
       "--config.train.progress_bar=False"],
      cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments",
                                    "robustness_report.py"),
       f"--workdir={wd}", "--num_examples=16"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(wd / "report_test" / "report.json") as f:
    rep = json.load(f)
  assert rep["num_examples"] == 16
  assert rep["invariance"]["metamer_logit_max_abs_diff"] <= 1e-3
  assert os.path.exists(wd / "report_test" / "metamers.png")


def test_lowrank_margin_runs_small(tmp_path):
  res = _run("lowrank_margin.py", tmp_path,
             "--config=configs/lowrank_margin.py", "--config.seeds=(0,)",
             "--config.ks=(1,10)", table=False)
  assert [c["k"] for c in res["cells"]] == [1, 10]
  for cell in res["cells"]:
    ratios = {k: v for k, v in cell.items() if k.endswith("_ratio")}
    # The exact SVM has the largest margin; differential training nears it,
    # CE from a large initialisation stays far below.
    assert all(r <= 1.0 + 1e-5 for r in ratios.values()), ratios
    assert ratios["normalized/differential_ratio"] >= 0.95
    assert ratios["gd/ce_large_ratio"] < 0.8
