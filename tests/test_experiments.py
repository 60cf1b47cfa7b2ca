"""Jacobsen et al.'s experiment scripts run end to end at the tiny scale
(bundled digits) and their results hold the properties the experiment is
about; the robustness report from a trained workdir's checkpoint; every
script's command line (overrides, one-line errors).
Nar et al.'s scripts: tests/test_experiments_nar.py."""
import json
import os
import subprocess
import sys

import pytest

from tests._helpers import ROOT, run_experiment as _run, subprocess_env


@pytest.fixture(scope="module")
def ice_run(tmp_path_factory):
  """invariance_mnist at the tiny scale, iCE only: ``(results, workdir)``.

  Trained once per module: its iCE workdir (a fiRevNet checkpoint) is also
  the run the report-from-checkpoint test reports on."""
  wd = tmp_path_factory.mktemp("invariance_mnist")
  return _run("invariance_mnist", wd, "--scale=tiny", "--losses=ice"), wd


def test_invariance_mnist_tiny(ice_run):
  # iCE (the nuisance classifier's path); CE runs through test_shiftmnist_tiny.
  res, _ = ice_run
  assert "ce" not in res
  for loss in ("ice",):
    r = res[loss]
    # Metamers keep the logit source's logits exactly (a bijection).
    assert r["metamer_logit_max_abs_diff"] <= 1e-3
    assert r["metamer_valid_share"] == 1.0
    assert 0.0 <= r["zn_test_error"] <= 1.0
    assert os.path.exists(r["metamer_png"])


def test_robustness_report_from_checkpoint(ice_run):
  """experiments.robustness_report on a finished run's workdir: the report
  of its checkpoint at --num_examples (the run's config says 32), with
  valid metamers and AutoAttack's headline, written to report_test/."""
  wd = ice_run[1] / "ice"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.robustness_report",
       f"--workdir={wd}", "--num_examples=16"],
      cwd=ROOT, env=subprocess_env(1), capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(wd / "config.json") as f:
    assert json.load(f)["report"]["num_examples"] != 16
  with open(wd / "report_test" / "report.json") as f:
    rep = json.load(f)
  assert rep["num_examples"] == 16
  assert rep["invariance"]["metamer_logit_max_abs_diff"] <= 1e-3
  assert rep["invariance"]["metamer_validity"]["valid_share"] == 1.0
  assert rep["headline"]["source"] == "autoattack"
  for f in ("metamers.png", "report.html", "report.md"):
    assert os.path.exists(wd / "report_test" / f)
  assert "report_test/report.html" in proc.stdout


def test_invariance_architectures_tiny(tmp_path):
  """An MLP and a CNN-judged fiRevNet: one oracle per architecture, trained
  for the first model and loaded for the second (the second oracle, an MLP,
  too); the box-only search never leaves the box; each rate is bounded by
  what it requires; both judges read the same metamers."""
  res = _run("invariance_architectures", tmp_path, "--scale=tiny",
             "--losses=mlp,firevnet_ce", "--second_oracle")
  assert set(res) >= {"mlp", "firevnet_ce"} and "cnn" not in res
  mlp, rev = res["mlp"], res["firevnet_ce"]
  assert mlp["oracle"]["architecture"] == rev["oracle"]["architecture"] == "cnn"
  assert not mlp["oracle"]["loaded"] and rev["oracle"]["loaded"]
  assert (mlp["second_oracle"]["architecture"]
          == rev["second_oracle"]["architecture"] == "mlp")
  assert not mlp["second_oracle"]["loaded"] and rev["second_oracle"]["loaded"]
  assert len(os.listdir(tmp_path / "oracle")) == 4   # .msgpack, .json each
  for r, kinds in ((mlp, ("box",)), (rev, ("box", "analytic"))):
    for kind in kinds:
      one, two = r[f"{kind}_metamers"], r[f"{kind}_metamers_second_oracle"]
      for key in ("in_bounds_share", "overshoot_max"):
        assert one[key] == two[key]           # the same images
      for j in (one, two):
        assert abs(j["as_nuisance_source"] + j["as_logits_source"]
                   + j["as_other"] - 1.0) < 1e-6
  for r in (mlp, rev):
    assert r["box_metamers"]["in_bounds_share"] == 1.0
    assert r["box_metamers"]["overshoot_max"] == 0.0
    for norm in ("linf", "l2"):
      sec = r[norm]
      for k, rate in enumerate(sec["invariance_rate"]):
        assert rate <= min(sec["matched"][k],
                           sec["oracle_reads_nuisance_source"][k])
      for ra in sec["robust_accuracy"]:
        assert 0.0 <= ra <= r["clean_accuracy"]
  assert rev["analytic_metamers"]["valid_share"] == 1.0
  assert "analytic_metamers" not in mlp


def test_spheres_tiny(tmp_path):
  res = _run("spheres", tmp_path, "--scale=tiny")
  nc = res["norm_classifier"]
  # The classifier that ignores x_d is perfect on data and fully fooled by
  # moving x_d alone: the invariance counter-example.
  assert nc["clean_accuracy"] == 1.0
  assert nc["attack_success"] == 1.0
  assert res["metamers"]["validity"]["num"] == res["metamers"]["num"]
  assert 0.0 <= res["firevnet_test_error"] <= 1.0


def test_shiftmnist_tiny(tmp_path):
  # CE only: the diagnostics are the same code for CE and iCE (iCE's path
  # through train and report is test_invariance_mnist_tiny's).
  res = _run("shiftmnist", tmp_path, "--scale=tiny", "--losses=ce")
  assert "ice" not in res
  for loss in ("ce",):
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
               for name in ("differential_binary", "invariance_architectures",
                            "invariance_mnist", "lowrank_margin", "robustness_report",
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
