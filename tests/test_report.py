"""robustness_report on a tiny CNN and on a tiny invertible model; its pages
(report.html / report.md), metamer validity in the report, atomic writes;
logits_report on a flax.nnx model; Wilson intervals; consistency warnings."""
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

from advinv_jax import platform
from advinv_jax.models import build_model
from advinv_jax.config import default_config
from advinv_jax.report import (_box_warning, _invalid_metamer_cause,
                               consistency_warnings, fingerprint,
                               logits_report, robustness_report,
                               wilson_interval)
from test_attacks import OrthoFlat   # tests/ is on sys.path (rootdir mode)

SHAPE = (8, 8, 1)
TOP_KEYS = {"num_examples", "clean_accuracy", "invertible", "pgd", "deepfool",
            "warnings", "seconds", "headline", "autoattack", "settings",
            "files", "card", "clean_accuracy_ci"}
CARD_KEYS = {"model", "model_config", "loss", "checkpoint_step", "dataset",
             "split", "inputs", "seeds", "bounds", "eps_units", "attacks",
             "software", "fingerprints"}
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
      "autoattack_fab_steps": 3, "autoattack_fmn_steps": 3,
      "invariance_pairs": 4, "invariance_steps": 20, "oracle_steps": 30,
      "oracle_num_train": 512})


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


def check_common(report, workdir, cfg, report_inputs):
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
  # Every accuracy carries its Wilson interval, which contains it.
  n = report["num_examples"]
  assert report["clean_accuracy_ci"] == list(wilson_interval(
      round(report["clean_accuracy"] * n), n))
  for sec in list(report["pgd"].values()) + list(
      report["autoattack"].values()):
    for v, (lo, hi) in zip(sec["robust_accuracy"], sec["robust_accuracy_ci"]):
      assert lo <= v <= hi
  card = report["card"]
  assert CARD_KEYS <= set(card) and list(on_disk)[1] == "card"
  assert card["software"]["jax"] == jax.__version__
  assert card["software"]["device_count"] == jax.device_count()
  assert card["software"]["host_cpu"] == platform.cpu_model()
  assert card["attacks"]["pgd_linf"]["steps"] == cfg.pgd_steps
  assert card["fingerprints"]["inputs_sha256"] == fingerprint(
      {"images": jnp.asarray(report_inputs[0])[:n],
       "labels": jnp.asarray(report_inputs[1])[:n]})
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
  check_common(report, str(tmp_path), cfg, (x, y))
  assert report["clean_accuracy"] == 1.0 and not report["invertible"]
  assert "invariance" not in report
  dl2 = report["deepfool"]["l2"]
  assert dl2["success_rate"] > 0.5 and dl2["median_norm"] > 0
  assert not (tmp_path / "metamers.png").exists()
  # A second report on the same architecture and shapes (another split, a
  # retrained model: new params, images) reuses the compiled attacks.
  from advinv_jax import report as R
  jitted = (R._jit_eps_sweep, R._jit_minimal, R._jit_apply)
  sizes = [f._cache_size() for f in jitted]
  params2 = jax.tree_util.tree_map(lambda a: a * 1.1, params)
  again = robustness_report(model, params2, x[::-1], y[::-1], cfg,
                            str(tmp_path / "again"), jax.random.PRNGKey(2))
  assert [f._cache_size() for f in jitted] == sizes
  fp, fp2 = (r["card"]["fingerprints"] for r in (report, again))
  assert fp["params_sha256"] == fingerprint(params) != fp2["params_sha256"]
  assert fp["inputs_sha256"] != fp2["inputs_sha256"]
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
  check_common(report, str(tmp_path), cfg, (x, y))
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
  nc = inv["nuisance_classifier"]
  assert nc["model_accuracy"] == pytest.approx(np.mean(np.argmax(
      np.asarray(model.logits(params, xte)), -1) == np.asarray(yte)))
  # AutoAttack's log: the robust accuracy after each member falls by the
  # inputs it broke and ends at the ensemble's robust accuracy.
  aa = report["autoattack"]["linf"]
  log = aa["log"][0]
  left = aa["clean_accuracy"] * aa["num_examples"]
  for m, broke in zip(log["members"], aa["per_attack_success"][0]):
    left -= broke
    assert m["broken"] == broke
    assert m["robust_accuracy_after"] == pytest.approx(
        left / aa["num_examples"])
  assert log["members"][-1]["robust_accuracy_after"] == pytest.approx(
      aa["robust_accuracy"][0])
  lp = log["largest_perturbation"]
  assert lp is None or 0 < lp <= aa["eps"][0] * (1 + 1e-6)
  assert 0.0 <= log["adversarial_range"][0] <= log["adversarial_range"][1] <= 1
  assert log["members"][0]["forward_passes"] >= aa["num_examples"]
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


def test_box_warning_states_the_share_inside_and_the_overshoot():
  # The defaults are the box goal: >= 95% of the pixels inside, overshoot
  # <= 0.1; missing either warns, with both numbers beside their goals.
  cfg, box = default_config().report, (0.0, 1.0)
  assert _box_warning({"out_of_bounds_share": 0.05, "overshoot_max": 0.1},
                      cfg, box) == []
  (w,) = _box_warning({"out_of_bounds_share": 0.25, "overshoot_max": 1.5},
                      cfg, box)
  assert "75.0% of metamer pixels lie inside the input bounds" in w
  assert "(need >= 95%), largest overshoot 1.5 (need <= 0.1)" in w
  for oob, over in ((0.0, 0.2), (0.06, 0.0), (0.0, None)):
    assert len(_box_warning({"out_of_bounds_share": oob,
                             "overshoot_max": over}, cfg, box)) == 1


def test_invalid_metamer_warning_names_the_logit_input():
  model = default_config().model
  plain = build_model(model, SHAPE, 10)
  model.firevnet.input_transform = "logit"
  logit = build_model(model, SHAPE, 10)
  assert "exploding inverse" in _invalid_metamer_cause(plain)[0]
  assert "input_transform='logit'" in _invalid_metamer_cause(logit)[0]


def test_write_atomic_leaves_no_partial_file(tmp_path, monkeypatch):
  """A write that fails midway (disk full, say) leaves neither a truncated
  target nor a temporary file; an existing file keeps its old content; the
  error names the file and the fix."""
  from advinv_jax.runs import _files as F
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


def test_wilson_interval_known_values():
  """Known values of the Wilson 95% interval: 5/10 -> [0.2366, 0.7634] and
  0/10 -> [0, z^2 / (n + z^2)] = [0, 0.2775] (textbook cases), 10/10
  mirrors 0/10, 81/263 -> [0.2553, 0.3662] (worked by hand from the
  formula); bad counts raise."""
  assert wilson_interval(5, 10) == pytest.approx((0.236593, 0.763407),
                                                 abs=1e-6)
  assert wilson_interval(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-6)
  assert wilson_interval(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-6)
  assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662),
                                                   abs=1e-4)
  assert wilson_interval(0, 0) == (0.0, 1.0)
  for bad in ((11, 10), (-1, 10), (1.5, 10), (0, -1)):
    with pytest.raises(ValueError, match="successes|n="):
      wilson_interval(*bad)


def test_consistency_warnings_count_the_inputs_a_weaker_attack_missed():
  """A minimal perturbation <= eps on an input PGD left robust is counted
  (per norm and eps); larger ones, not-found ones and other norms are not."""
  nrm = np.asarray([0.05, 0.2, np.inf, 0.01])
  robust = {("PGD-20", "l2", 0.1): np.asarray([True, True, True, False]),
            ("PGD-20", "l2", 0.5): np.asarray([False, False, True, True]),
            ("PGD-20", "linf", 0.1): np.ones(4, bool)}
  w = consistency_warnings({("deepfool", "l2"): nrm}, robust)
  assert len(w) == 2
  assert "deepfool" in w[0] and "PGD-20" in w[0]
  assert "eps=0.1 on 1 of the 3" in w[0]
  assert "eps=0.5 on 1 of the 2" in w[1]
  assert consistency_warnings({("fmn", "l2"): np.full(4, np.inf)},
                              robust) == []


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_logits_report_for_a_flax_nnx_model(tmp_path):
  """The README's snippet: a flax.nnx model's report through logits_report.
  On a linear model without bounds DeepFool's minimal l2 perturbation is the
  closed-form distance to the nearest boundary, min_j (z_y - z_j) /
  ||w_y - w_j||, up to its documented 2^-12 line-search tolerance; the
  card fingerprints the nnx state; progress names every section; bad
  arguments raise before compilation."""
  from flax import nnx

  class Linear(nnx.Module):
    def __init__(self, rngs):
      self.lin = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
      return self.lin(x.reshape((x.shape[0], -1)))

  model = Linear(nnx.Rngs(0))
  graphdef, state = nnx.split(model)

  def logits_fn(state, x):
    return nnx.merge(graphdef, state)(x)

  x, _ = data(24)
  y = jnp.argmax(model(x), -1).astype(jnp.int32)
  settings = {"num_examples": 24, "linf_eps": (0.05,), "l2_eps": (),
              "pgd_steps": 2, "deepfool_steps": 5,
              "autoattack_num_examples": 0}
  msgs = []
  report = logits_report(logits_fn, x, y, str(tmp_path),
                         jax.random.PRNGKey(0), params=state,
                         settings=settings, bounds=None,
                         provenance={"model": "nnx Linear", "seed": 0},
                         progress=msgs.append)
  w = np.asarray(model.lin.kernel[...], np.float64)
  z = np.asarray(x, np.float64).reshape(24, -1) @ w + np.asarray(
      model.lin.bias[...], np.float64)
  yy = np.asarray(y)
  exact = np.asarray([min((z[i, yy[i]] - z[i, j]) / np.linalg.norm(
      w[:, yy[i]] - w[:, j]) for j in range(10) if j != yy[i])
                      for i in range(24)])
  got = np.asarray(report["deepfool"]["l2"]["norms"])
  assert np.all(got >= exact * (1 - 1e-5))
  assert np.all(got <= exact * (1 + 2.0**-12) + 1e-5)
  assert report["clean_accuracy"] == 1.0 and not report["invertible"]
  card = report["card"]
  assert card["fingerprints"]["params_sha256"] == fingerprint(state)
  assert card["model"] == "nnx Linear" and card["bounds"] is None
  assert [m.split()[0] for m in msgs] == ["clean", "PGD-2", "deepfool",
                                          "deepfool", "writing"]
  assert (tmp_path / "report.html").exists()
  bad = [(dict(settings=dict(settings, pgd_stpes=3)),
          "did you mean 'pgd_steps'"),
         (dict(settings=dict(settings, linf_eps=(-0.1,))), "linf_eps"),
         (dict(settings=dict(settings, autoattack_version="fast")),
          "autoattack_version"),
         (dict(bounds=(1.0, 0.0)), "bounds"),
         (dict(progress="yes"), "progress"),
         (dict(provenance={"modle": "x"}), "provenance"),
         (dict(params=None), "logits_fn")]
  for kw, match in bad:
    args = dict(params=state, settings=settings, bounds=(0.0, 1.0))
    args.update(kw)
    with pytest.raises(ValueError, match=match):
      logits_report(logits_fn, x, y, str(tmp_path / "bad"),
                    jax.random.PRNGKey(0), **args)
  with pytest.raises(ValueError, match="bounds"):
    logits_report(logits_fn, x + 1.0, y, str(tmp_path / "bad"),
                  jax.random.PRNGKey(0), params=state, settings=settings)
  with pytest.raises(ValueError, match="labels"):
    logits_report(logits_fn, x, y + 10, str(tmp_path / "bad"),
                  jax.random.PRNGKey(0), params=state, settings=settings)
  assert not (tmp_path / "bad").exists()


def test_compilation_cache_folder_and_opt_out(tmp_path, monkeypatch):
  """advinv_jax.platform.enable_compilation_cache: JAX's own variable wins
  (the tests' cache stays in place), else the user cache folder under
  XDG_CACHE_HOME or the folder ADVINV_JAX_COMPILATION_CACHE names; 'off'
  turns it off."""
  updates = []
  monkeypatch.setattr(platform.jax.config, "update",
                      lambda k, v: updates.append((k, v)))
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
  assert platform.enable_compilation_cache() == str(tmp_path / "jax")
  assert updates == []
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  monkeypatch.delenv(platform.CACHE_ENV, raising=False)
  want = str(tmp_path / "xdg" / "advinv_jax" / "jax")
  assert platform.enable_compilation_cache() == want
  assert os.path.isdir(want)
  monkeypatch.setenv(platform.CACHE_ENV, str(tmp_path / "mine"))
  assert platform.enable_compilation_cache() == str(tmp_path / "mine")
  assert updates == [("jax_compilation_cache_dir", want),
                     ("jax_compilation_cache_dir", str(tmp_path / "mine"))]
  for off in ("off", "0", ""):
    monkeypatch.setenv(platform.CACHE_ENV, off)
    assert platform.enable_compilation_cache() is None
  assert len(updates) == 2
