"""robustness_report on a tiny CNN and on a tiny invertible model; its pages
(report.html / report.md), metamer validity in the report, atomic writes."""
import base64
import dataclasses
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
            "warnings", "seconds", "headline", "autoattack", "settings",
            "files"}
PAGES = ("report.json", "report.md", "report.html", "robust_accuracy.png",
         "minimal_perturbations.png")


def tiny_report_config():
  return ml_collections.ConfigDict({
      "num_examples": 32, "linf_eps": (0.02, 0.1), "l2_eps": (0.2, 1.0),
      "pgd_steps": 3, "pgd_restarts": 1, "pgd_loss": "ce",
      "attack_loop": "fori", "deepfool_steps": 5, "deepfool_candidates": 3,
      "num_metamers": 4, "interpolation_steps": 4, "interpolation_pairs": 2,
      "nuisance_classifier_steps": 20, "nuisance_classifier_hidden": (16,),
      "nuisance_classifier_lr": 1e-3, "nuisance_classifier_batch_size": 16,
      "autoattack_num_examples": 16, "autoattack_linf_eps": (0.1,),
      "autoattack_l2_eps": (), "autoattack_steps": 3,
      "autoattack_num_targets": 1, "autoattack_queries": 10,
      "autoattack_fmn_steps": 3})


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
  for f in PAGES:
    assert os.path.getsize(os.path.join(workdir, f)) > 0
  assert not [f for f in os.listdir(workdir) if f.endswith(".tmp")]
  assert list(on_disk)[0] == "warnings"       # warnings first in the JSON


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # dead ReLUs: real
def test_report_tiny_cnn(tmp_path):
  cfg = tiny_report_config()
  model = build_model({"name": "cnn", "cnn": {"features": (4, 4),
                                              "hidden": (8,)}}, SHAPE, 10)
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
  assert not (tmp_path / "metamers.png").exists()
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
  v = inv["metamer_validity"]
  assert v["num"] == cfg.num_examples and v["valid_share"] == 1.0
  assert v["logit_drift_max"] <= 1e-4 and inv["grid"]["valid"] == [True] * 4
  assert not any("METAMERS" in w for w in report["warnings"])
  for png in ("metamers.png", "nuisance_interpolation.png"):
    p = tmp_path / png
    assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  check_pages(report, tmp_path)


def check_pages(report, workdir):
  """report.html embeds every figure as a PNG data URI and, like report.md,
  shows the warnings before any section and the headline numbers."""
  page = (workdir / "report.html").read_text()
  md = (workdir / "report.md").read_text()
  h = report["headline"]
  head = f"{100 * h['robust_accuracy']:.1f}%"
  for text in (page, md):
    assert head in text and f"{100 * report['clean_accuracy']:.1f}%" in text
    first_section = text.index("Headline")
    for w in report["warnings"]:
      esc = w.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
      esc = esc.replace("'", "&#x27;").replace('"', "&quot;")
      assert min(i for i in (text.find(w), text.find(esc)) if i >= 0) < (
          first_section)
  import re
  uris = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
  assert len(uris) == len([f for f in report["files"] if f.endswith("_png")])
  for u in uris:
    assert base64.b64decode(u)[:8] == b"\x89PNG\r\n\x1a\n"
  assert "src='metamers.png'" not in page     # self-contained
  assert "](robust_accuracy.png)" in md
  if report["invertible"]:
    v = report["invariance"]["metamer_validity"]
    assert f"{100 * v['valid_share']:.1f}% valid" in md


@dataclasses.dataclass(frozen=True)
class LossyInverse(OrthoFlat):
  """OrthoFlat whose inverse is off by 1% of z: a "metamer" then misses
  its requested logits by ~1e-2 |z|, like an exploding inverse does."""

  def inverse(self, params, z):
    return super().inverse(params, 1.01 * z)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_report_flags_invalid_metamers_at_the_top(tmp_path):
  cfg = tiny_report_config()
  cfg.linf_eps, cfg.l2_eps, cfg.pgd_steps, cfg.deepfool_steps = (
      (0.1,), (1.0,), 1, 2)
  model = LossyInverse(SHAPE, 10)
  x, y = data()
  x = x + 2.0             # |z| large: the 1% error is far above the tolerance
  params = model.init(jax.random.PRNGKey(0), x)
  report = robustness_report(model, params, x, y, cfg, str(tmp_path),
                             jax.random.PRNGKey(1), bounds=(0.0, 3.0))
  inv = report["invariance"]
  assert inv["metamer_validity"]["valid_share"] == 0.0
  assert inv["grid"]["valid"] == [False] * 4
  assert report["warnings"][0].startswith("METAMERS INVALID: only 0.0%")
  check_pages(report, tmp_path)
  page = (tmp_path / "report.html").read_text()
  assert page.index("METAMERS INVALID") < page.index("<h2>Headline")


def test_write_atomic_leaves_no_partial_file(tmp_path, monkeypatch):
  """A write that fails midway (disk full, say) leaves neither a truncated
  target nor a temporary file; an existing file keeps its old content; the
  error names the file and the fix."""
  from advinv_jax import _files as F
  target = tmp_path / "report.json"
  F.write_atomic(str(target), "old")
  real_fdopen = os.fdopen

  class Failing:
    def __init__(self, f):
      self.f = f

    def __enter__(self):
      return self

    def __exit__(self, *a):
      self.f.close()

    def write(self, data):
      self.f.write(data[:3])
      raise OSError(28, "No space left on device")

  monkeypatch.setattr(F.os, "fdopen", lambda fd, mode: Failing(
      real_fdopen(fd, mode)))
  with pytest.raises(F.DiskFullError, match="disk full.*report.json"):
    F.write_atomic(str(target), "new content")
  with pytest.raises(F.DiskFullError, match="report.html"):
    F.write_atomic(str(tmp_path / "report.html"), b"<html>")
  assert target.read_text() == "old"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
  assert oct(target.stat().st_mode & 0o777) != oct(0o600)   # not mkstemp's


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_report_differential_bias_shifts_the_decision(tmp_path):
  """A binary model's bias b (differential training) enters the attacked
  logits: with b = +1e4 everything is class 1, so clean accuracy is the
  share of label 1 and no attack can flip those within the budgets."""
  cfg = tiny_report_config()
  cfg.pgd_steps, cfg.deepfool_steps = 1, 2
  model = build_model({"name": "cnn", "cnn": {"features": (4,),
                                              "hidden": (8,)}}, SHAPE, 2)
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
