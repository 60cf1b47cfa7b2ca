"""The oracle that judges metamers: trained once and cached, its judgement
in closed form on a hand-made template oracle, and its bad inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advinv_jax import invariance as I
from advinv_jax.invariance import _oracle

K = 4


def _bars(seed, n):
  """8x8 images of K classes: class k is a bright row 2k (plus noise)."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, K, n).astype(np.int32)
  x = rng.uniform(0.0, 0.3, size=(n, 8, 8, 1)).astype(np.float32)
  x[np.arange(n), 2 * y, :, 0] = 0.9
  return jnp.asarray(x), jnp.asarray(y)


def test_oracle_is_trained_once_then_loaded(tmp_path, monkeypatch):
  x, y = _bars(0, 240)
  kw = dict(cache_dir=str(tmp_path), rng=jax.random.PRNGKey(0), steps=60,
            batch_size=32, num_classes=K)
  orc = I.train_oracle(x[:200], y[:200], x_test=x[200:], y_test=y[200:],
                       architecture="mlp", **kw)
  assert not orc.loaded and orc.test_accuracy >= 0.95
  assert orc.path.startswith(str(tmp_path))

  def no_training(*args, **kwargs):
    raise AssertionError("the oracle was trained again")

  monkeypatch.setattr(_oracle, "_fit", no_training)
  again = I.train_oracle(x[:200], y[:200], x_test=x[200:], y_test=y[200:],
                         architecture="mlp", **kw)
  assert again.loaded and again.path == orc.path
  assert again.test_accuracy == orc.test_accuracy
  jax.tree_util.tree_map(np.testing.assert_array_equal, again.params,
                         orc.params)
  np.testing.assert_array_equal(again.logits(x[200:]), orc.logits(x[200:]))
  # other training data or another architecture is another oracle
  with pytest.raises(AssertionError, match="trained again"):
    I.train_oracle(x[:100], y[:100], architecture="mlp", **kw)
  with pytest.raises(AssertionError, match="trained again"):
    I.train_oracle(x[:200], y[:200], architecture="cnn", **kw)


def test_oracle_architecture_differs_from_the_model_under_test():
  from advinv_jax.models import build_model
  cnn = build_model({"name": "cnn"}, (8, 8, 1), K)
  mlp = build_model({"name": "mlp"}, (8, 8, 1), K)
  assert I.oracle_architecture(cnn) == "mlp"
  assert I.oracle_architecture(mlp) == "cnn"
  assert I.oracle_architecture(lambda x: x) == "cnn"


def test_oracle_bad_inputs(tmp_path):
  x, y = _bars(1, 16)
  kw = dict(cache_dir=str(tmp_path), rng=jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="architecture"):
    I.train_oracle(x, y, architecture="vit", **kw)
  with pytest.raises(ValueError, match="x_train"):
    I.train_oracle(x[:, :, :, 0], y, **kw)
  with pytest.raises(ValueError, match="y_train"):
    I.train_oracle(x, y[:3], **kw)
  with pytest.raises(ValueError, match="steps"):
    I.train_oracle(x, y, steps=0, **kw)
  with pytest.raises(ValueError, match="x_test"):
    I.train_oracle(x, y, x_test=x, **kw)
  assert not list(tmp_path.iterdir())      # nothing trained or written


def test_judge_metamers_closed_form():
  """A template oracle (class = the brightest even row) judges images built
  from A (class 0) and B (class 1): B itself, A itself, a class-2 image and
  B pushed out of the box; shares, bounds and distances in closed form."""

  def oracle(x):
    return x[:, ::2, :, 0].sum(-1)                # [B, 4] row sums

  a = np.full((1, 8, 8, 1), 0.1, np.float32)
  a[0, 0] = 0.9                                   # class 0
  b = np.full((1, 8, 8, 1), 0.1, np.float32)
  b[0, 2] = 0.9                                   # class 1
  c = np.full((1, 8, 8, 1), 0.1, np.float32)
  c[0, 4] = 0.9                                   # class 2
  out = b.copy()
  out[0, 7, :4] = 1.5                             # 4 of 64 pixels over by 0.5
  x = jnp.asarray(np.concatenate([b, a, c, out]))
  xa = jnp.asarray(np.repeat(a, 4, 0))
  xb = jnp.asarray(np.repeat(b, 4, 0))
  ya, yb = jnp.zeros(4, jnp.int32), jnp.ones(4, jnp.int32)
  j = jax.jit(I.judge_metamers, static_argnums=0)(oracle, x, xa, xb, ya, yb)
  np.testing.assert_array_equal(j.label, [1, 0, 2, 1])
  np.testing.assert_array_equal(j.as_nuisance_source, [1, 0, 0, 1])
  np.testing.assert_array_equal(j.as_logits_source, [0, 1, 0, 0])
  np.testing.assert_array_equal(j.as_other, [0, 0, 1, 0])
  np.testing.assert_allclose(j.in_bounds, [1, 1, 1, 60 / 64])
  np.testing.assert_allclose(j.overshoot, [0, 0, 0, 0.5])
  ab = np.sqrt(2 * 8 * 0.8 ** 2)                  # ||A - B||_2
  np.testing.assert_allclose(j.l2_to_nuisance_source[:2], [0, ab], rtol=1e-6)
  np.testing.assert_allclose(j.l2_to_logits_source[:2], [ab, 0], rtol=1e-6)
  np.testing.assert_allclose(j.linf_to_nuisance_source, [0, 0.8, 0.8, 1.4],
                             rtol=1e-6)
  s = I.summarize_judgement(j)
  assert s["num"] == 4 and s["as_nuisance_source"] == 0.5
  assert s["as_logits_source"] == 0.25 and s["as_other"] == 0.25
  assert s["overshoot_max"] == pytest.approx(0.5)
  with pytest.raises(ValueError, match="x_nuisance_source"):
    I.judge_metamers(oracle, x, xa, xb[:2], ya, yb)
  with pytest.raises(ValueError, match="y_logits_source"):
    I.judge_metamers(oracle, x, xa, xb, ya[:1], yb)
