"""Nar et al.'s experiment scripts (differential training, low-rank
margins) at the tiny scale; their results hold the properties the
experiment is about. The robustness report from a trained workdir's
checkpoint: tests/test_experiments.py."""
import os

import numpy as np

from tests._helpers import run_experiment as _run


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
