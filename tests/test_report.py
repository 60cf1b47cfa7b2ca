"""robustness_report on a tiny CNN and on a tiny invertible model."""
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from advinv_jax.models import build_model
from advinv_jax.report import robustness_report
from test_attacks import OrthoFlat   # tests/ is on sys.path (rootdir mode)

SHAPE = (8, 8, 1)
TOP_KEYS = {"num_examples", "clean_accuracy", "invertible", "pgd", "deepfool",
            "warnings", "seconds"}


def tiny_report_config():
  return ml_collections.ConfigDict({
      "num_examples": 32, "linf_eps": (0.02, 0.1), "l2_eps": (0.2, 1.0),
      "pgd_steps": 3, "pgd_restarts": 1, "pgd_loss": "ce",
      "attack_loop": "fori", "deepfool_steps": 5, "deepfool_candidates": 3,
      "num_metamers": 4, "interpolation_steps": 4, "interpolation_pairs": 2,
      "nuisance_classifier_steps": 20, "nuisance_classifier_hidden": (16,),
      "nuisance_classifier_lr": 1e-3, "nuisance_classifier_batch_size": 16})


def data(n=40, k=10):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(0, 1, (n,) + SHAPE), jnp.float32)
  return x, jnp.asarray(rng.integers(0, k, n), jnp.int32)


def _finite_numbers(tree):
  if isinstance(tree, dict):
    for v in tree.values():
      yield from _finite_numbers(v)
  elif isinstance(tree, list):
    for v in tree:
      yield from _finite_numbers(v)
  elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
    yield tree


def check_common(report, workdir, cfg):
  with open(os.path.join(workdir, "report.json")) as f:
    on_disk = json.load(f)
  assert on_disk == json.loads(json.dumps(report))
  assert TOP_KEYS <= set(report)
  assert report["num_examples"] == cfg.num_examples
  for norm, eps in (("linf", cfg.linf_eps), ("l2", cfg.l2_eps)):
    sec = report["pgd"][norm]
    assert sec["eps"] == list(eps)
    for key in ("robust_accuracy", "attack_success_ratio",
                "attack_success_ratio_all"):
      assert len(sec[key]) == len(eps)
      assert all(0.0 <= v <= 1.0 for v in sec[key])
    # robust examples are a subset of the clean-correct ones
    assert all(v <= report["clean_accuracy"] + 1e-9
               for v in sec["robust_accuracy"])
  for norm in ("l2", "linf"):
    assert set(report["deepfool"][norm]) >= {"median_norm", "success_rate"}
  assert all(math.isfinite(v) for v in _finite_numbers(report))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # dead ReLUs: real
def test_report_tiny_cnn(tmp_path):
  cfg = tiny_report_config()
  model = build_model(ml_collections.ConfigDict(
      {"name": "cnn", "features": (4, 4), "hidden": 8}), SHAPE, 10)
  x, _ = data()
  params = model.init(jax.random.PRNGKey(0), x)
  y = jnp.argmax(model.logits(params, x), -1).astype(jnp.int32)  # all correct
  report = robustness_report(model, params, x, y, cfg, str(tmp_path),
                             jax.random.PRNGKey(1))
  check_common(report, str(tmp_path), cfg)
  assert report["clean_accuracy"] == 1.0 and not report["invertible"]
  assert "invariance" not in report
  dl2 = report["deepfool"]["l2"]
  assert dl2["success_rate"] > 0.5 and dl2["median_norm"] > 0
  assert not list(tmp_path.glob("*.png"))
  # A second report on the same architecture and shapes (another split, a
  # retrained model: new params, images) reuses the compiled attacks.
  from advinv_jax import report as R
  jitted = (R._jit_eps_sweep, R._jit_minimal, R._jit_logits)
  sizes = [f._cache_size() for f in jitted]
  params2 = jax.tree_util.tree_map(lambda a: a * 1.1, params)
  robustness_report(model, params2, x[::-1], y[::-1], cfg,
                    str(tmp_path / "again"), jax.random.PRNGKey(2))
  assert [f._cache_size() for f in jitted] == sizes
  with pytest.raises(ValueError, match="labels"):
    robustness_report(model, params, x, y + 10, cfg, str(tmp_path),
                      jax.random.PRNGKey(1))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_report_tiny_invertible(tmp_path):
  cfg = tiny_report_config()
  model = OrthoFlat(SHAPE, 10)
  x, y = data()
  params = model.init(jax.random.PRNGKey(0), x)
  (xtr, ytr), (xte, yte) = data(24), data(20)
  nd = ({"image": xtr, "label": ytr}, {"image": xte, "label": yte})
  report = robustness_report(model, params, x, y, cfg, str(tmp_path),
                             jax.random.PRNGKey(1), nuisance_data=nd)
  check_common(report, str(tmp_path), cfg)
  inv = report["invariance"]
  assert inv["metamer_logit_max_abs_diff"] <= 1e-4
  assert inv["metamer_same_prediction_as_logits_source"] == 1.0
  nc = inv["nuisance_classifier"]
  assert nc["num_train"] == 24 and nc["num_test"] == 20
  assert 0.0 <= nc["test_accuracy"] <= 1.0
  for png in ("metamers.png", "nuisance_interpolation.png"):
    p = tmp_path / png
    assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_report_differential_bias_shifts_the_decision(tmp_path):
  """A binary model's bias b (differential training) enters the attacked
  logits: with b = +1e4 everything is class 1, so clean accuracy is the
  share of label 1 and no attack can flip those within the budgets."""
  cfg = tiny_report_config()
  cfg.pgd_steps, cfg.deepfool_steps = 1, 2
  model = build_model(ml_collections.ConfigDict(
      {"name": "cnn", "features": (4,), "hidden": 8}), SHAPE, 2)
  x, y = data(32, k=2)
  params = model.init(jax.random.PRNGKey(0), x)
  report = robustness_report(model, params, x, y, cfg, str(tmp_path),
                             jax.random.PRNGKey(1), bias=1e4, bounds=(0, 1))
  share1 = float(np.mean(np.asarray(y) == 1))
  assert report["bias"] == 1e4
  assert report["clean_accuracy"] == pytest.approx(share1)
  assert report["pgd"]["linf"]["robust_accuracy"] == pytest.approx(
      [share1, share1])
  with pytest.raises(ValueError, match="binary"):
    robustness_report(OrthoFlat(SHAPE, 10), None, x, y, cfg, str(tmp_path),
                      jax.random.PRNGKey(1), bias=1.0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_report_fmn_section_matches_deepfool_on_a_linear_model(tmp_path):
  """``fmn_steps > 0`` adds FMN's minimal perturbations; on a linear model
  (OrthoFlat: logits affine in x) both attacks find the distance to the
  decision boundary, so their medians agree."""
  cfg = tiny_report_config()
  cfg.fmn_steps = 60
  model = OrthoFlat(SHAPE, 10)
  x, _ = data()
  params = model.init(jax.random.PRNGKey(0), x)
  y = jnp.argmax(model.logits(params, x), -1).astype(jnp.int32)
  report = robustness_report(model, params, x, y, cfg, str(tmp_path),
                             jax.random.PRNGKey(1))
  for norm in ("l2", "linf"):
    fm, df = report["fmn"][norm], report["deepfool"][norm]
    assert fm["success_rate"] == 1.0 and fm["num_correct"] == 32
    assert 0 < fm["median_norm"] <= 1.02 * df["median_norm"]
    assert fm["median_norm"] >= 0.9 * df["median_norm"]
  cfg.fmn_steps = 0
  report = robustness_report(model, params, x, y, cfg, str(tmp_path),
                             jax.random.PRNGKey(1))
  assert "fmn" not in report
