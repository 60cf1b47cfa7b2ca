"""The report's invariance part for any model: a plain logits_fn with an
oracle gets model metamers and the invariance-vs-sensitivity table; an
invertible model given training images gets the oracle (trained once,
cached in the workdir, loaded by the next report) judging its metamers."""
import os

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax import invariance as I
from advinv_jax.report import logits_report, robustness_report
from test_attacks import SHAPE, OrthoFlat

FAST = {"num_examples": 12, "linf_eps": (0.1,), "l2_eps": (),
        "pgd_steps": 2, "deepfool_steps": 3, "autoattack_num_examples": 12,
        "autoattack_linf_eps": (0.1,), "autoattack_l2_eps": (),
        "autoattack_steps": 2,
        "autoattack_num_targets": 1, "autoattack_queries": 10,
        "num_metamers": 4, "invariance_pairs": 6, "invariance_steps": 20,
        "oracle_steps": 30, "oracle_num_train": 512}


def _rows(n, seed, size=4, k=4):
  """``size x size`` images of ``k`` classes: class c is a bright row c."""
  rng = np.random.default_rng(seed)
  y = (np.arange(n) % k).astype(np.int32)
  x = rng.uniform(0.0, 0.3, size=(n, size, size, 1)).astype(np.float32)
  x[np.arange(n), y, :, 0] = 0.9
  return jnp.asarray(x), jnp.asarray(y)


def test_plain_logits_fn_gets_model_metamers_and_the_table(tmp_path):
  x, y = _rows(12, 0)
  templates = jnp.zeros((4, 4, 4)).at[jnp.arange(4), jnp.arange(4)].set(1.0)

  def logits_fn(xx):                      # row sums: a perfect classifier
    return jnp.einsum("bhw,khw->bk", xx[..., 0], templates)

  xt, yt = _rows(200, 1)
  orc = I.train_oracle(xt, yt, cache_dir=str(tmp_path / "oracle"),
                       rng=jax.random.PRNGKey(0), architecture="mlp",
                       steps=60, batch_size=32)
  rep = logits_report(logits_fn, x, y, str(tmp_path / "r"),
                      jax.random.PRNGKey(0), settings=FAST, oracle=orc)
  assert "invariance" not in rep            # no inverse: no analytic part
  s = rep["invariance_search"]
  assert s["oracle"]["architecture"] == "mlp" and s["num_pairs"] == 6
  assert s["steps"] == 20
  linf, box = s["rows"]
  assert linf["norm"] == "linf" and linf["eps"] == 0.1 and box["eps"] is None
  assert linf["autoattack_robust_accuracy"] == (
      rep["autoattack"]["linf"]["robust_accuracy"][0])
  for r in (linf, box):
    assert r["invariance_rate"] <= min(r["matched"],
                                       r["oracle_reads_nuisance_source"])
  assert linf["median_distance"] <= 0.1 + 1e-6
  j = s["box_metamers"]
  assert j["in_bounds_share"] == 1.0 and j["overshoot_max"] == 0.0
  assert abs(j["as_nuisance_source"] + j["as_logits_source"] + j["as_other"]
             - 1.0) < 1e-9
  assert len(s["grid"]["oracle_label"]) == 4
  assert os.path.exists(tmp_path / "r" / "model_metamers.png")
  with open(tmp_path / "r" / "report.md") as f:
    md = f.read()
  assert "Invariance vs sensitivity" in md and "The oracle" in md
  # Switched off, the search is one line in the report, no figure.
  off = logits_report(logits_fn, x, y, str(tmp_path / "off"),
                      jax.random.PRNGKey(0),
                      settings=dict(FAST, invariance_pairs=0), oracle=orc)
  assert off["invariance_search"]["off"] == (
      "The invariance search is off (report.invariance_pairs=0).")
  assert not os.path.exists(tmp_path / "off" / "model_metamers.png")
  with open(tmp_path / "off" / "report.md") as f:
    assert off["invariance_search"]["off"] in f.read()


def test_invertible_report_trains_the_oracle_once(tmp_path):
  model = OrthoFlat(SHAPE, 4)
  x, y = _rows(12, 2)
  params = model.init(jax.random.PRNGKey(0), x)
  train = dict(zip(("image", "label"), _rows(160, 3)))
  test = dict(zip(("image", "label"), _rows(40, 4)))
  kw = dict(nuisance_data=(train, test))
  rep = robustness_report(model, params, x, y, FAST, str(tmp_path),
                          jax.random.PRNGKey(0), **kw)
  inv, s = rep["invariance"], rep["invariance_search"]
  assert s["oracle"]["architecture"] == "cnn" and not s["oracle"]["loaded"]
  j = inv["oracle_judgement"]
  v = inv["metamer_validity"]
  assert j["num"] == v["num"] == 12
  np.testing.assert_allclose(1.0 - j["in_bounds_share"],
                             v["out_of_bounds_share"], atol=1e-6)
  assert os.path.dirname(s["oracle"]["file"]) == str(tmp_path)
  again = robustness_report(model, params, x, y, FAST, str(tmp_path),
                            jax.random.PRNGKey(0), **kw)
  assert again["invariance_search"]["oracle"]["loaded"]
  assert again["invariance"]["oracle_judgement"] == j
  # report.oracle_steps=0: no oracle, no search, and the report says why.
  off = robustness_report(model, params, x, y, dict(FAST, oracle_steps=0),
                          str(tmp_path / "off"), jax.random.PRNGKey(0), **kw)
  assert off["invariance"]["oracle_judgement"] is None
  assert not off["invariance_search"]["oracle"]["available"]
  assert "report.oracle_steps=0" in off["invariance_search"]["off"]
  assert not [f for f in os.listdir(tmp_path / "off")
              if f.startswith("oracle_")]
