"""Tests of advinv_jax.lowrank: exact SVM, data geometry, CE vs differential."""
import math

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax import lowrank


class SvmTest(chex.TestCase):

  def test_known_margin_hand_made(self):
    # Positives at x1 >= 2, negatives at x1 <= -1 (plus distractors): the SVM
    # is the bisector x1 = 0.5, margin 1.5.
    x = np.array([[2.0, 0.0], [2.0, 3.0], [5.0, -1.0],
                  [-1.0, 1.0], [-1.0, -4.0], [-3.0, 0.0]])
    y = np.array([1, 1, 1, 0, 0, 0])
    w, b, margin = lowrank.hard_margin_svm(x, y)
    self.assertAlmostEqual(margin, 1.5, places=10)
    np.testing.assert_allclose(w, [1 / 1.5, 0.0], atol=1e-10)
    self.assertAlmostEqual(b, -0.5 / 1.5, places=10)

  def test_known_margin_diagonal(self):
    # Closest pair (1, 1) vs (0, 0): margin sqrt(2)/2, w along (1, 1).
    x = np.array([[1.0, 1.0], [3.0, 1.0], [1.0, 4.0], [0.0, 0.0],
                  [-2.0, 0.0], [0.0, -1.0]])
    y = np.array([1, 1, 1, 0, 0, 0])
    w, b, margin = lowrank.hard_margin_svm(x, y)
    self.assertAlmostEqual(margin, math.sqrt(2) / 2, places=10)
    np.testing.assert_allclose(w, [1.0, 1.0], atol=1e-9)
    self.assertAlmostEqual(b, -1.0, places=9)

  def test_matches_sklearn_and_is_feasible(self):
    from sklearn.svm import SVC  # pylint: disable=g-import-not-at-top
    data = lowrank.make_lowrank_data(jax.random.PRNGKey(0), 40, 12, 3,
                                     offset=1.0, shift=1.0)
    w, b, margin = lowrank.hard_margin_svm(data.x, data.y)
    x = np.asarray(data.x, np.float64)
    y = np.asarray(data.y)
    functional = (2 * y - 1) * (x @ w + b)
    self.assertAlmostEqual(functional.min(), 1.0, places=8)
    self.assertAlmostEqual(margin, 1 / np.linalg.norm(w), places=10)
    svc = SVC(C=1e8, kernel="linear", tol=1e-8).fit(x, y)
    ws, bs = svc.coef_[0], svc.intercept_[0]
    sk_margin = np.min((2 * y - 1) * (x @ ws + bs)) / np.linalg.norm(ws)
    self.assertAlmostEqual(margin, sk_margin, places=5)
    self.assertGreaterEqual(margin, sk_margin - 1e-9)  # ours is the optimum

  def test_inseparable_raises(self):
    x = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    with self.assertRaisesRegex(ValueError, "separable"):
      lowrank.hard_margin_svm(x, np.array([1, 1, 0, 0]))
    with self.assertRaisesRegex(ValueError, "both classes"):
      lowrank.hard_margin_svm(x, np.array([1, 1, 1, 1]))


class DataTest(chex.TestCase):

  def test_geometry(self):
    n, d, k = 30, 10, 3
    data = lowrank.make_lowrank_data(jax.random.PRNGKey(1), n, d, k,
                                     offset=2.0, shift=0.5, margin_gap=1.0)
    chex.assert_shape((data.x, data.y, data.basis, data.offset),
                      ((n, d), (n,), (d, k), (d,)))
    chex.assert_trees_all_close(data.basis.T @ data.basis, jnp.eye(k),
                                atol=1e-5)
    chex.assert_trees_all_close(data.basis.T @ data.offset, jnp.zeros(k),
                                atol=1e-5)
    self.assertAlmostEqual(float(jnp.linalg.norm(data.offset)), 2.0, places=5)
    # points minus offset lie in span(basis)
    centred = data.x - data.offset
    proj = centred @ data.basis @ data.basis.T
    chex.assert_trees_all_close(proj, centred, atol=1e-5)
    # separated by a_1 = shift with gap >= margin_gap: SVM margin >= 1/2
    _, _, margin = lowrank.hard_margin_svm(data.x, data.y)
    self.assertGreaterEqual(margin, 0.5 - 1e-5)
    a1 = centred @ data.basis[:, 0]
    sign = 2.0 * data.y - 1.0
    self.assertGreaterEqual(float(jnp.min(sign * (a1 - 0.5))), 0.5 - 1e-5)

  def test_bad_sizes_raise(self):
    with self.assertRaisesRegex(ValueError, "exceeds"):
      lowrank.make_lowrank_data(jax.random.PRNGKey(0), 10, 3, 4)
    with self.assertRaisesRegex(ValueError, "offset"):
      lowrank.make_lowrank_data(jax.random.PRNGKey(0), 10, 3, 3, offset=1.0)


class ToyTest(chex.TestCase):

  def test_closed_form_ce_solution(self):
    for s, h in ((2.0, 1.0), (4.0, 0.5)):
      x, y = lowrank.toy_2d_data(s, h)
      w, b = lowrank.toy_2d_ce_direction(s, h)
      x = np.asarray(x, np.float64)
      np.testing.assert_allclose(x @ w + b, [1.0, -1.0], atol=1e-12)
      self.assertAlmostEqual(1 / np.linalg.norm(w),
                             lowrank.toy_2d_ce_margin_ratio(s, h), places=12)
      ws, bs, margin = lowrank.hard_margin_svm(x, y)
      self.assertAlmostEqual(margin, 1.0, places=10)
      np.testing.assert_allclose(ws, [1.0, 0.0], atol=1e-10)
      self.assertAlmostEqual(bs, -s, places=9)

  def test_differential_reaches_svm_and_ce_does_not(self):
    for s, h in ((2.0, 1.0), (4.0, 0.5)):
      x, y = lowrank.toy_2d_data(s, h)
      ratio = lowrank.toy_2d_ce_margin_ratio(s, h)
      dt = lowrank.train_linear(x, y, "differential", steps=500, lr=1.0,
                                key=jax.random.PRNGKey(0), init_scale=1e-2)
      dt_margin = float(lowrank.geometric_margin(dt.w, dt.b, x, y))
      self.assertGreaterEqual(dt_margin, 0.95)         # SVM margin is 1
      ce = lowrank.train_linear(x, y, "ce", steps=20000, lr=1.0)
      ce_margin = float(lowrank.geometric_margin(ce.w, ce.b, x, y))
      self.assertLess(ce_margin, 0.8)
      self.assertLess(abs(ce_margin - ratio) / ratio, 0.04)
      ce_n = lowrank.train_linear(x, y, "ce", steps=3000, lr=0.1,
                                  normalized=True)
      ce_n_margin = float(lowrank.geometric_margin(ce_n.w, ce_n.b, x, y))
      self.assertLess(abs(ce_n_margin - ratio) / ratio, 0.01)


class TrainLinearTest(chex.TestCase):

  def test_orthogonal_component_never_moves(self):
    """Gradients lie in span(x, 1): the off-span weights keep their init."""
    data = lowrank.make_lowrank_data(jax.random.PRNGKey(2), 20, 8, 2,
                                     offset=1.0, shift=1.0)
    span = jnp.concatenate([data.basis, data.offset[:, None]], axis=1)
    q, _ = jnp.linalg.qr(span)
    perp = jnp.eye(8) - q @ q.T
    for loss in ("ce", "differential"):
      key = jax.random.PRNGKey(5)
      fit = lowrank.train_linear(data.x, data.y, loss, key=key,
                                 init_scale=3.0, steps=200, lr=0.5)
      w0 = 3.0 * jax.random.normal(key, (8,)) / math.sqrt(8)
      chex.assert_trees_all_close(perp @ fit.w, perp @ w0, atol=1e-4)
      self.assertLess(float(fit.losses[-1]), float(fit.losses[0]))

  def test_geometric_margin_value(self):
    x = jnp.array([[3.0, 0.0], [1.0, 4.0], [-1.0, 0.0]])
    y = jnp.array([1, 1, 0])
    m = lowrank.geometric_margin(jnp.array([2.0, 0.0]), -1.0, x, y)
    chex.assert_trees_all_close(m, 0.5)   # closest: x=(1,4) at distance 0.5
    m = jax.jit(lowrank.geometric_margin)(jnp.array([-2.0, 0.0]), 1.0, x, y)
    chex.assert_trees_all_close(m, -2.5)  # misclassified -> negative

  def test_bad_inputs_raise(self):
    x = jnp.zeros((4, 2))
    with self.assertRaisesRegex(ValueError, "loss"):
      lowrank.train_linear(x, jnp.array([0, 1, 0, 1]), "hinge")
    with self.assertRaisesRegex(ValueError, "key"):
      lowrank.train_linear(x, jnp.array([0, 1, 0, 1]), init_scale=1.0)
    with self.assertRaisesRegex(ValueError, "both classes"):
      lowrank.train_linear(x, jnp.array([1, 1, 1, 1]))


if __name__ == "__main__":
  absltest.main()
