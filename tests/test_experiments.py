"""Each experiment script runs end to end at the tiny scale (bundled digits)
and its results hold the properties the experiment is about."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests._helpers import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, workdir, *args, table=True, optimize=False):
  env = subprocess_env(1, optimize=optimize)
  proc = subprocess.run(
      [sys.executable, "-m", f"experiments.{script}",
       f"--workdir={workdir}", *args],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  if table:
    assert os.path.exists(os.path.join(workdir, "results.md"))
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def test_invariance_mnist_tiny(tmp_path):
  res = _run("invariance_mnist", tmp_path, "--scale=tiny")
  for loss in ("ce", "ice"):
    r = res[loss]
    # Metamers keep the logit source's logits exactly (a bijection).
    assert r["metamer_logit_max_abs_diff"] <= 1e-3
    assert r["metamer_valid_share"] == 1.0
    assert 0.0 <= r["zn_test_error"] <= 1.0
    assert os.path.exists(r["metamer_png"])


def test_spheres_tiny(tmp_path):
  res = _run("spheres", tmp_path, "--scale=tiny")
  nc = res["norm_classifier"]
  # The classifier that ignores x_d is perfect on data and fully fooled by
  # moving x_d alone: the invariance counter-example.
  assert nc["clean_accuracy"] == 1.0
  assert nc["attack_success"] == 1.0
  assert res["metamers"]["validity"]["num"] == res["metamers"]["num"]
  assert 0.0 <= res["firevnet_test_error"] <= 1.0


def test_differential_binary_tiny(tmp_path):
  res = _run("differential_binary", tmp_path, "--scale=tiny",
             "--num_examples=32",
             "--protocols=end_to_end,frozen_features,linear")
  assert res["differential"]["bias_rule"] == "max_accuracy"
  assert res["linear_differential"]["bias_rule"] == "max_accuracy"
  assert os.path.getsize(tmp_path / "attack_success.png") > 0
  for loss in ("ce", "differential", "head_ce", "head_differential",
               "linear_ce", "linear_differential"):
    for split in ("train", "test"):
      for norm in ("linf", "l2"):
        succ = res[loss][split][norm]["attack_success_ratio"]
        assert all(0.0 <= s <= 1.0 for s in succ)
        assert np.all(np.diff(succ) >= -1e-9), "success grows with eps"


def test_shiftmnist_tiny(tmp_path):
  res = _run("shiftmnist", tmp_path, "--scale=tiny")
  for loss in ("ce", "ice"):
    r = res[loss]
    d = r["diagnostics"]
    assert 0.0 <= r["test_accuracy_random_code"] <= 1.0
    rates = ("follows_digit", "follows_code", "follows_both",
             "follows_neither", "code_equals_label",
             "follows_digit_when_conflict", "follows_code_when_conflict")
    for k in rates:
      assert 0.0 <= d[k] <= 1.0, (loss, k, d[k])
    # follows_digit is the argmax of z_s vs the label: the test accuracy.
    assert abs(d["follows_digit"] - r["test_accuracy_random_code"]) <= 1e-6
    assert r["follows_digit"] == d["follows_digit"]
    assert r["follows_code"] == d["follows_code"]
    # Inclusion-exclusion over {pred = digit} and {pred = code}.
    assert abs(d["follows_digit"] + d["follows_code"] - d["follows_both"]
               + d["follows_neither"] - 1.0) <= 1e-6
    # pred = digit = code needs code = digit.
    assert d["follows_both"] <= d["code_equals_label"] + 1e-9
    # The random test code agrees with the digit only by chance (~10%).
    assert d["code_equals_label"] < 0.3
    assert d["num_test"] == 360                       # all digits test images
    probes = d["probes"]
    assert set(probes) == {"zs_train_to_test", "zn_train_to_test",
                           "zs_test_half", "zn_test_half"}
    for p in probes.values():
      assert 0.0 <= p["train_accuracy"] <= 1.0
      assert 0.0 <= p["test_accuracy"] <= 1.0
    assert probes["zs_train_to_test"]["num_train"] == 1437   # all at tiny
    assert probes["zn_test_half"]["num_train"] == 180
    assert probes["zn_test_half"]["num_test"] == 180
  with open(tmp_path / "results.md") as f:
    md = f.read()
  assert "follows code %" in md and "probe z_n->digit % (test half->half)" in md


def test_robustness_report_from_checkpoint(tmp_path):
  wd = tmp_path / "run"
  env = subprocess_env(1)
  subprocess.run(
      [sys.executable, "-m", "advinv_jax.main", "--config=configs/default.py",
       f"--workdir={wd}", "--config.model.depth=1", "--config.model.width=8",
       "--config.train.num_steps=4", "--config.report.enabled=False",
       "--config.train.progress_bar=False", "--config.report.pgd_steps=2",
       "--config.report.deepfool_steps=3",
       "--config.report.nuisance_classifier_steps=10",
       "--config.report.autoattack_steps=2",
       "--config.report.autoattack_num_targets=1",
       "--config.report.autoattack_queries=10",
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


def test_overrides_reach_the_config_and_reject_unknown_fields():
  from advinv_jax import cli
  from configs import mnist
  cfg = mnist.get_config("ice,cpu")
  cli.apply_overrides(cfg, {"train.num_epochs": 8,
                            "loss.ice.nuisance_hidden": (64, 64),
                            "optimizer.name": "adam",
                            "optimizer.learning_rate": 2e-4})
  assert cfg.train.num_epochs == 8
  assert tuple(cfg.loss.ice.nuisance_hidden) == (64, 64)
  assert cfg.optimizer.name == "adam" and cfg.optimizer.learning_rate == 2e-4
  with pytest.raises(cli.UsageError, match="did you mean --config.train.num_epochs"):
    cli.apply_overrides(cfg, {"train.num_epoch": 8})


def test_losses_flag_selects_models_and_rejects_unknown_names():
  from advinv_jax import cli
  from experiments import _common as C
  cfgs = {"ce": 1, "ice": 2}
  assert C.select_losses(cfgs, []) == cfgs
  assert C.select_losses(cfgs, ["ice"]) == {"ice": 2}
  with pytest.raises(cli.UsageError, match="'differential'.*\\['ce', 'ice'\\]"):
    C.select_losses(cfgs, ["differential"])


# advinv_jax.main and every experiment script (each parses its flags before
# importing jax, so a bad command line costs ~0.5 s of start-up).
COMMANDS = {"main": ["advinv_jax.main", "--config=configs/default.py",
                     "--workdir=unused"],
            **{name: [f"experiments.{name}", "--workdir=unused"]
               for name in ("differential_binary", "invariance_mnist",
                            "lowrank_margin", "robustness_report",
                            "shiftmnist", "spheres")}}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_misspelt_override_is_one_line_naming_the_fix(name):
  """``--config.train.batch_sise=3`` ends the program with at most two lines
  that name the field (and, where the config has it, the right spelling)."""
  proc = subprocess.run(
      [sys.executable, "-m", *COMMANDS[name], "--config.train.batch_sise=3"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  out = (proc.stdout + proc.stderr).strip().splitlines()
  assert proc.returncode != 0
  assert len(out) <= 2, "\n".join(out)
  assert "config.train.batch_sise" in out[0]
  if name not in ("lowrank_margin", "robustness_report"):  # no train fields
    assert "did you mean --config.train.batch_size?" in out[0]


@pytest.mark.parametrize("args,expected", [
    (["--config=configs/nope.py"], "No such file"),
    (["--config=configs/binary.py:mnist,mlp"], "unknown variant 'mlp'"),
    (["--config=configs/default.py", "--config.train.batch_size=many"],
     "--config.train.batch_size=many"),
    (["--config=configs/default.py", "--config.train.batch_size=-1"],
     "config.train.batch_size=-1 must be > 0"),
])
def test_main_config_errors_are_one_line(args, expected):
  proc = subprocess.run(
      [sys.executable, "-m", "advinv_jax.main", "--workdir=unused", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  out = (proc.stdout + proc.stderr).strip().splitlines()
  assert proc.returncode != 0 and len(out) == 1, out
  assert expected in out[0], out


def test_losses_flag_is_refused_where_not_honoured(tmp_path):
  """Only invariance_mnist and shiftmnist define --losses; another script
  must reject it instead of training every model regardless."""
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.differential_binary",
       "--losses=ce", f"--workdir={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "Unknown command line flag 'losses'" in proc.stderr
