"""Tests of advinv_jax.losses: closed forms, invariances, min-max signs."""
import math

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from advinv_jax import losses


class CrossEntropyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_hand_computed_value(self):
    logits = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, math.log(2.0)]])
    labels = jnp.array([0, 2])
    # -log softmax: row 0 -> 2 + log(1 + e^-1 + e^-2); row 1 -> log 4 - log 2
    expected = 0.5 * ((2.0 + math.log(1 + math.exp(-1) + math.exp(-2))) +
                      math.log(2.0))
    got = self.variant(losses.cross_entropy)(logits, labels)
    chex.assert_trees_all_close(got, expected, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_label_smoothing_value(self):
    logits = jnp.array([[0.0, math.log(3.0)]])   # p = (1/4, 3/4)
    eps = 0.2
    # targets (eps/2, 1 - eps/2) for label 1
    expected = -(0.1 * math.log(0.25) + 0.9 * math.log(0.75))
    got = self.variant(
        lambda l, y: losses.cross_entropy(l, y, label_smoothing=eps))(
            logits, jnp.array([1]))
    chex.assert_trees_all_close(got, expected, rtol=1e-6)

  def test_weights_give_weighted_mean(self):
    logits = jnp.array([[0.0, 0.0], [5.0, -5.0]])
    labels = jnp.array([0, 1])
    per = [math.log(2.0), 10.0 + math.log1p(math.exp(-10.0))]
    got = losses.cross_entropy(logits, labels, weights=jnp.array([1.0, 3.0]))
    chex.assert_trees_all_close(got, (per[0] + 3 * per[1]) / 4, rtol=1e-6)
    zero = losses.cross_entropy(logits, labels, weights=jnp.zeros(2))
    self.assertEqual(float(zero), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_extreme_logits_finite(self):
    logits = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]])
    labels = jnp.array([1, 0])
    fn = self.variant(jax.value_and_grad(
        lambda l: losses.cross_entropy(l, labels, label_smoothing=0.1)))
    value, grad = fn(logits)
    chex.assert_tree_all_finite((value, grad))
    # 0.9 * 2e4 (row 0) + 0.9 * (2e4 + log 2) (row 1) + smoothing parts, /2
    self.assertGreater(float(value), 1e4)

  def test_bad_inputs_raise(self):
    with self.assertRaisesRegex(ValueError, "labels must hold integer"):
      losses.cross_entropy(jnp.zeros((2, 3)), jnp.zeros((2,)))
    with self.assertRaisesRegex(ValueError, "batch size"):
      losses.cross_entropy(jnp.zeros((2, 3)), jnp.zeros((3,), jnp.int32))
    with self.assertRaisesRegex(ValueError, r"\[B, C\]"):
      losses.cross_entropy(jnp.zeros((3,)), jnp.zeros((3,), jnp.int32))
    with self.assertRaisesRegex(ValueError, "label_smoothing"):
      losses.cross_entropy(jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32), 1.0)

  def test_binary_scores(self):
    s = losses.binary_scores(jnp.array([[1.0, 3.5], [2.0, -1.0]]))
    chex.assert_trees_all_close(s, jnp.array([2.5, -3.0]))
    # two-class CE == softplus(-(2y-1) s)
    logits = jnp.array([[0.3, -1.2], [2.0, 0.5]])
    y = jnp.array([0, 1])
    s = losses.binary_scores(logits)
    chex.assert_trees_all_close(
        losses.cross_entropy(logits, y),
        jnp.mean(jax.nn.softplus(-(2 * y - 1) * s)), rtol=1e-6)
    with self.assertRaisesRegex(ValueError, "exactly 2 logits"):
      losses.binary_scores(jnp.zeros((2, 3)))


class IceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_factorial_gaussian_nll_hand_formula(self):
    z = jnp.array([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]])
    mean = jnp.array([0.0, 1.0, -1.0])
    log_std = jnp.array([0.0, math.log(2.0), math.log(0.5)])
    got = self.variant(losses.factorial_gaussian_nll)(z, mean, log_std)
    zn, mn, sd = np.asarray(z), np.asarray(mean), np.exp(np.asarray(log_std))
    expected = np.sum(0.5 * np.log(2 * np.pi) + np.log(sd) +
                      0.5 * ((zn - mn) / sd) ** 2, axis=1)
    chex.assert_shape(got, (2,))
    chex.assert_trees_all_close(got, expected, rtol=1e-6)

  def test_init_prior_is_standard_normal(self):
    prior = losses.init_prior_params(4)
    z = jnp.array([[1.0, 0.0, -2.0, 0.5]])
    expected = 4 * 0.5 * math.log(2 * math.pi) + 0.5 * (1 + 4 + 0.25)
    chex.assert_trees_all_close(
        losses.factorial_gaussian_nll(z, **prior), jnp.array([expected]),
        rtol=1e-6)
    with self.assertRaisesRegex(ValueError, "dim"):
      losses.init_prior_params(0)

  def test_mle_term_is_nll_minus_logdet(self):
    key = jax.random.PRNGKey(0)
    z = jax.random.normal(key, (3, 5))
    logdet = jnp.array([0.5, -2.0, 10.0])
    prior = {"mean": jnp.full((5,), 0.3), "log_std": jnp.full((5,), -0.2)}
    nll = losses.factorial_gaussian_nll(z, prior["mean"], prior["log_std"])
    got = losses.mle_nuisance_term(z, logdet, prior)
    chex.assert_trees_all_close(got, nll - logdet, rtol=1e-6)
    bpd = losses.mle_nuisance_term(z, logdet, prior, bits_per_dim_dim=7)
    chex.assert_trees_all_close(bpd, (nll - logdet) / (7 * math.log(2.0)),
                                rtol=1e-6)
    with self.assertRaisesRegex(ValueError, "prior mean"):
      losses.mle_nuisance_term(z, logdet, losses.init_prior_params(4))

  def test_network_loss_signs(self):
    key1, key2 = jax.random.split(jax.random.PRNGKey(1))
    z_s = jax.random.normal(key1, (4, 3))
    z_n = jax.random.normal(key2, (4, 6))
    nl = z_n[:, :3] * 2.0
    labels = jnp.array([0, 1, 2, 1])
    logdet = jnp.array([1.0, 2.0, 3.0, 4.0])
    prior = losses.init_prior_params(6)
    loss, m = losses.ice_network_loss(z_s, z_n, logdet, labels, nl, prior,
                                      weights=(1.0, 0.05, 2.0))
    sce = losses.cross_entropy(z_s, labels)
    nce = losses.cross_entropy(nl, labels)
    mle = jnp.mean(losses.mle_nuisance_term(z_n, logdet, prior))
    chex.assert_trees_all_close(loss, sce - 0.05 * nce + 2.0 * mle, rtol=1e-6)
    chex.assert_trees_all_close((m["sce"], m["nce"], m["mle"]),
                                (sce, nce, mle), rtol=1e-6)
    self.assertGreater(float(m["nce"]), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradient_reversal_flips_gradients(self):
    x = jnp.array([1.0, -2.0, 3.0])
    c = jnp.array([0.5, 1.0, -4.0])
    f = self.variant(lambda v, s: jnp.sum(losses.gradient_reversal(v, s) * c))
    chex.assert_trees_all_close(losses.gradient_reversal(x, 2.0), x)
    g, gs = jax.grad(f, argnums=(0, 1))(x, 2.0)
    chex.assert_trees_all_close(g, -2.0 * c)
    self.assertEqual(float(gs), 0.0)

  def test_gradient_reversal_equals_alternating_gradients(self):
    """One-pass GRL gives D its CE descent and the net the -w_n CE gradient."""
    kx, kw, kd = jax.random.split(jax.random.PRNGKey(2), 3)
    x = jax.random.normal(kx, (6, 4))
    labels = jnp.array([0, 1, 0, 1, 1, 0])
    net = jax.random.normal(kw, (4, 4))
    dis = jax.random.normal(kd, (2, 2))
    prior = losses.init_prior_params(2)
    w = (1.0, 0.3, 0.5)

    def parts(net):
      z = x @ net
      logdet = jnp.full((6,), jnp.linalg.slogdet(net)[1])
      return z[:, :2], z[:, 2:], logdet

    def grl_objective(net, dis):
      z_s, z_n, logdet = parts(net)
      nl = losses.gradient_reversal(z_n, w[1]) @ dis
      return (w[0] * losses.cross_entropy(z_s, labels) +
              losses.cross_entropy(nl, labels) +
              w[2] * jnp.mean(losses.mle_nuisance_term(z_n, logdet, prior)))

    def network_objective(net):
      z_s, z_n, logdet = parts(net)
      return losses.ice_network_loss(z_s, z_n, logdet, labels, z_n @ dis,
                                     prior, weights=w)[0]

    g_net, g_dis = jax.grad(grl_objective, argnums=(0, 1))(net, dis)
    chex.assert_trees_all_close(g_net, jax.grad(network_objective)(net),
                                rtol=1e-5, atol=1e-6)
    z_n = parts(net)[1]
    chex.assert_trees_all_close(
        g_dis, jax.grad(lambda d: losses.nuisance_classifier_loss(
            z_n @ d, labels))(dis), rtol=1e-5, atol=1e-6)

  def test_alternating_updates_min_max(self):
    """z_n of a linear 'network' carries the label; D learns, the net hides."""
    n = 64
    key = jax.random.PRNGKey(3)
    labels = jnp.arange(n) % 2
    noise = 0.3 * jax.random.normal(key, (n, 4))
    x = noise.at[:, 3].add(2.0 * labels - 1.0)   # label in x_3
    net = jnp.eye(4)                             # z_n = (x_2, x_3) carries y
    prior = losses.init_prior_params(2)
    dis = {"w": jnp.zeros((2, 2)), "b": jnp.zeros((2,))}
    apply_fn = lambda p, z: z @ p["w"] + p["b"]
    nc_opt = optax.sgd(0.5)
    nc_state = nc_opt.init(dis)
    weights = (0.0, 1.0, 0.0)   # isolate the nuisance term

    def nce_of(net, dis):
      z_n = (x @ net)[:, 2:]
      return losses.nuisance_classifier_loss(apply_fn(dis, z_n), labels)

    def net_loss(net, dis):
      z = x @ net
      logdet = jnp.full((n,), jnp.linalg.slogdet(net)[1])
      nl = apply_fn(jax.lax.stop_gradient(dis), z[:, 2:])
      return losses.ice_network_loss(z[:, :2], z[:, 2:], logdet, labels, nl,
                                     prior, weights=weights)[0]

    update = jax.jit(lambda p, s, z: losses.nuisance_updates(
        p, s, z, labels, apply_fn, nc_opt, 5))
    nce_of = jax.jit(nce_of)
    net_grad = jax.jit(jax.grad(net_loss))
    for _ in range(3):
      z_n = (x @ net)[:, 2:]
      before = float(nce_of(net, dis))
      dis, nc_state, last = update(dis, nc_state, z_n)
      after = float(nce_of(net, dis))
      self.assertLess(after, before)             # D's loss goes down
      self.assertLess(after, float(last))        # last = start of step 5
      grad = net_grad(net, dis)
      new_net = net - 0.1 * grad
      self.assertGreater(float(nce_of(new_net, dis)), after)  # net's goes up
      net = new_net
    # D has learnt something about y from the (still informative) z_n.
    self.assertLess(after, math.log(2.0))

  def test_nuisance_updates_k0_and_rng(self):
    params = {"w": jnp.ones((3, 2))}
    z = jnp.arange(12.0).reshape(4, 3) / 10
    labels = jnp.array([0, 1, 1, 0])
    opt = optax.sgd(0.1)
    state = opt.init(params)
    p0, _, loss0 = losses.nuisance_updates(
        params, state, z, labels, lambda p, v: v @ p["w"], opt, 0)
    chex.assert_trees_all_close(p0, params)
    chex.assert_trees_all_close(
        loss0, losses.cross_entropy(z @ params["w"], labels))
    seen = []
    def apply_with_rng(p, v, rng):
      seen.append(rng.shape)
      mask = jax.random.bernoulli(rng, 0.9, v.shape)
      return (v * mask) @ p["w"]
    p2, _, last = losses.nuisance_updates(params, state, z, labels,
                                          apply_with_rng, opt, 3,
                                          rng=jax.random.PRNGKey(0))
    chex.assert_tree_all_finite((p2, last))
    self.assertTrue(seen)
    with self.assertRaisesRegex(ValueError, "k"):
      losses.nuisance_updates(params, state, z, labels,
                              lambda p, v: v @ p["w"], opt, -1)


class DifferentialTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_value_and_shift_invariance(self):
    pos = jnp.array([1.0, 3.0])
    neg = jnp.array([0.0, 2.0, -1.0])
    diffs = np.array([1, 2, -1, 3, 1, 4], np.float64)   # all s+ - s-
    expected = np.mean(np.log1p(np.exp(-diffs)))
    fn = self.variant(losses.differential_loss)
    chex.assert_trees_all_close(fn(pos, neg), expected, rtol=1e-6)
    chex.assert_trees_all_close(fn(pos + 7.5, neg + 7.5), expected, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_batch_form_matches_pair_form(self):
    scores = jnp.array([1.0, 0.0, 3.0, 2.0, -1.0, 9.0])
    labels = jnp.array([1, 0, 1, 0, 0, -1])        # -1: ignored (padding)
    loss, m = self.variant(losses.differential_loss_from_batch)(scores, labels)
    chex.assert_trees_all_close(
        loss, losses.differential_loss(jnp.array([1.0, 3.0]),
                                       jnp.array([0.0, 2.0, -1.0])), rtol=1e-6)
    self.assertEqual(float(m["single_class_batch"]), 0.0)
    self.assertEqual(float(m["num_pairs"]), 6.0)
    chex.assert_trees_all_close(m["pair_accuracy"], 5.0 / 6.0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_single_class_batch(self):
    fn = self.variant(jax.value_and_grad(
        losses.differential_loss_from_batch, has_aux=True))
    for labels in (jnp.array([1, 1, 1]), jnp.array([0, 0, 0])):
      (loss, m), grad = fn(jnp.array([0.5, -2.0, 1e4]), labels)
      self.assertEqual(float(loss), 0.0)
      chex.assert_tree_all_finite((loss, grad, m))
      chex.assert_trees_all_close(grad, jnp.zeros(3))
      self.assertEqual(float(m["single_class_batch"]), 1.0)

  def test_midpoint_bias_halfway(self):
    pos = jnp.array([3.0, 1.5, 4.0])
    neg = jnp.array([-2.0, 0.5, -1.0])
    b = losses.midpoint_bias(pos, neg)
    chex.assert_trees_all_close(b, -1.0)       # threshold at s = 1
    chex.assert_trees_all_close(jnp.min(pos) + b, -(jnp.max(neg) + b))
    self.assertTrue(bool(jnp.all(pos + b > 0) & jnp.all(neg + b < 0)))

  @chex.variants(with_jit=True, without_jit=True)
  def test_max_accuracy_bias_equals_midpoint_when_separable(self):
    fn = self.variant(losses.max_accuracy_bias)
    rng = np.random.default_rng(0)
    for _ in range(5):
      pos = rng.normal(size=7) + 2.0 + rng.uniform()
      neg = rng.normal(size=9) - 2.0
      gap = np.min(pos) - np.max(neg)
      if gap <= 0:
        continue
      s = np.concatenate([pos, neg]).astype(np.float32)
      y = np.array([1] * 7 + [0] * 9, np.int32)
      perm = rng.permutation(16)
      b = fn(jnp.asarray(s[perm]), jnp.asarray(y[perm]))
      chex.assert_trees_all_close(
          b, losses.midpoint_bias(jnp.asarray(pos), jnp.asarray(neg)),
          atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_max_accuracy_bias_ignores_outliers(self):
    # One negative outlier at +40 and one positive at -60 set the midpoint
    # rule's threshold; the accuracy-optimal gap ignores them.
    s = jnp.array([-3.0, -2.0, -1.5, 40.0, 1.0, 2.5, 3.0, -60.0])
    y = jnp.array([0, 0, 0, 0, 1, 1, 1, 1])
    b = self.variant(losses.max_accuracy_bias)(s, y)
    chex.assert_trees_all_close(b, 0.25)          # gap (-1.5, 1.0)
    mid = losses.midpoint_bias(s[y == 1], s[y == 0])
    chex.assert_trees_all_close(mid, 10.0)        # -(-60 + 40) / 2
    acc = lambda bias: float(jnp.mean((s + bias > 0) == (y == 1)))
    self.assertEqual(acc(b), 0.75)
    self.assertLess(acc(mid), acc(b))
    # Brute force: no threshold is more accurate than the returned one.
    grid = -np.concatenate([np.asarray(s) - 1e-3, np.asarray(s) + 1e-3])
    self.assertLessEqual(max(acc(g) for g in grid), acc(b))

  def test_decision_bias_rules(self):
    s = jnp.array([-3.0, -1.0, 5.0, 0.5, 2.0, -10.0])
    y = jnp.array([0, 0, 0, 1, 1, 1])
    chex.assert_trees_all_close(losses.decision_bias(s, y, "midpoint"), 2.5)
    chex.assert_trees_all_close(losses.decision_bias(s, y), 0.25)
    with self.assertRaisesRegex(ValueError, "differential.bias"):
      losses.decision_bias(s, y, "median")
    with self.assertRaisesRegex(ValueError, "both classes"):
      losses.max_accuracy_bias(s, jnp.zeros(6, jnp.int32))

  def test_bias_over_a_split_and_applied(self):
    """differential_bias over a split (in uneven batches) is decision_bias
    of all its scores; with_bias predicts class 1 iff s + b > 0."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 2)).astype(np.float32)
    x = rng.normal(size=(13, 3)).astype(np.float32)
    y = (rng.uniform(size=13) < 0.5).astype(np.int32)
    y[:2] = (0, 1)

    class Split:
      def __len__(self):
        return len(x)

      def get(self, idx):
        return {"image": x[idx], "label": y[idx]}

    logits_fn = lambda p, v: v @ p
    s = losses.binary_scores(jnp.asarray(x @ w))
    for rule in ("midpoint", "max_accuracy"):
      b = losses.differential_bias(logits_fn, w, Split(), 5, rule=rule)
      # the same scores to float32 rounding (the split's are jitted)
      np.testing.assert_allclose(b, losses.decision_bias(s, y, rule),
                                 rtol=1e-6, atol=1e-6)
      pred = jnp.argmax(losses.with_bias(logits_fn, b)(w, x), -1)
      np.testing.assert_array_equal(pred, s + b > 0)
    np.testing.assert_array_equal(losses.with_bias(logits_fn, None)(w, x),
                                  x @ w)
    self.assertEqual(hash(losses.with_bias(logits_fn, 0.5)),
                     hash(losses.with_bias(logits_fn, 0.5)))

    class ThreeClasses:
      num_classes = 3
    with self.assertRaisesRegex(ValueError, "binary model"):
      losses.with_bias(ThreeClasses(), 0.5)

  def test_bad_inputs_raise(self):
    with self.assertRaisesRegex(ValueError, "empty"):
      losses.differential_loss(jnp.zeros((0,)), jnp.zeros((2,)))
    with self.assertRaisesRegex(ValueError, "batch size"):
      losses.differential_loss_from_batch(jnp.zeros((3,)),
                                          jnp.zeros((2,), jnp.int32))


if __name__ == "__main__":
  absltest.main()
