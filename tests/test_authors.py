"""The authors'-code options: each against a value computed by
hand or by brute force. Small models only; nothing is trained."""
import math
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from advinv_jax import losses
from advinv_jax.config import default_config, validate_config
from advinv_jax.data import _derive
from advinv_jax.data._sources import ArraySource, Dataset
from advinv_jax.layers import ActNorm
from advinv_jax.models import build_model, mlp_classifier
from advinv_jax.models._firevnet import (bn_eval, bn_train, split_prior_logp,
                                         std_normal_logp)
from advinv_jax.train import _objectives
from advinv_jax.train._parallel import AXIS, data_parallel, make_mesh

from experiments import _common as C
from tests._helpers import model_section


def _model_cfg(**kw):
  return model_section(**{
      **dict(name="firevnet", levels=2, depth=1, width=8,
             coupling="additive", permutation="reverse", batch_chunk=0),
      **kw})


def _perturb(params, key, scale=0.05):
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree_util.tree_unflatten(tree, [
      l + scale * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])


# ------------------------------------------------------------ parameter count
def test_authors_variant_param_count_and_level_shapes():
  """2,366,640 = the flow `model` of their train.py (Glow_: steps + Split
  convs; their BatchNorm1d(10) and the nuisance MLP are separate modules),
  counted as sum(p.numel()). Shapes by hand: 3x32x32 -> squeeze 12x16x16
  -> split 6 -> squeeze 24x8x8 -> split 12 -> squeeze 48x4x4."""
  cfg = C.load_config("mnist", "ice,authors")
  validate_config(cfg)
  m = build_model(cfg.model, (32, 32, 1), 10).base   # the digit; + 2 fixed
  assert m.flow_shape == (32, 32, 3) and m.latent_dim == 3072
  x = jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32)
  p = jax.eval_shape(m.init, jax.random.PRNGKey(0), x)
  count = lambda t: sum(int(np.prod(a.shape))
                        for a in jax.tree_util.tree_leaves(t))
  flow = {k: v for k, v in p.items() if k != "logit_bn"}
  assert count(flow) == 2_366_640
  # By hand, per level: 16 steps x (ActNorm 2C + subnet) + Split conv.
  def step(c):
    ca = c // 2
    return 2 * c + 9 * ca * 128 + 256 + 128 * 128 + 256 + 9 * 128 * ca + 2 * ca
  assert [count(p[f"stage_{i}"]) for i in range(3)] == [
      16 * step(12), 16 * step(24), 16 * step(48)]
  assert [count(p[f"split_{i}"]) for i in range(2)] == [
      9 * 6 * 12 + 24, 9 * 12 * 24 + 48]
  assert count(p["logit_bn"]) == 40     # scale, bias + running mean, var
  plan = m._plan
  assert [s[1:] for s in plan["splits"]] == [(16, 16, 6), (8, 8, 12)]
  assert plan["final"][1:] == (4, 4, 48) and m.final_dim == 768
  assert p["stage_0"]["000"]["002"]["net"]["w1"].shape == (3, 3, 6, 128)
  assert p["stage_2"]["015"]["002"]["net"]["w3"].shape == (3, 3, 128, 24)
  out = jax.eval_shape(lambda q, v: m.forward_train(q, v, jax.random.PRNGKey(1)),
                       p, x)
  assert out["z"].shape == (2, 3072) and out["logits"].shape == (2, 10)


# ------------------------------------------------------------ split prior
def test_conditional_split_prior_logp_brute_force():
  rng = np.random.default_rng(0)
  z1 = rng.normal(size=(2, 3, 4, 2)).astype(np.float32)
  z2 = rng.normal(size=(2, 3, 4, 3)).astype(np.float32)
  p = {"w": rng.normal(size=(3, 3, 2, 6)).astype(np.float32) * 0.3,
       "b": rng.normal(size=(6,)).astype(np.float32) * 0.3,
       "logs": rng.normal(size=(6,)).astype(np.float32) * 0.1}
  got = np.asarray(split_prior_logp(p, jnp.asarray(z1), jnp.asarray(z2)))
  # Brute force: zero-padded 3x3 correlation, one output at a time.
  zp = np.pad(z1, ((0, 0), (1, 1), (1, 1), (0, 0)))
  want = np.zeros(2)
  for b in range(2):
    for i in range(3):
      for j in range(4):
        h = (np.einsum("xyc,xyco->o", zp[b, i:i + 3, j:j + 3], p["w"])
             + p["b"]) * np.exp(3 * p["logs"])
        for k in range(3):
          mu, ls = h[2 * k], h[2 * k + 1]
          want[b] += (-0.5 * math.log(2 * math.pi) - ls
                      - 0.5 * (z2[b, i, j, k] - mu) ** 2 * math.exp(-2 * ls))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Zero-initialised conv: exactly N(0, 1).
  zero = {k: np.zeros_like(v) for k, v in p.items()}
  np.testing.assert_allclose(
      split_prior_logp(zero, z1, z2), std_normal_logp(z2.reshape(2, -1)),
      rtol=1e-6)


def test_glow_nll_is_minus_logdet_minus_prior_plus_dequant_constant():
  ld, lp = jnp.array([3.0, -1.0]), jnp.array([-50.0, -20.0])
  d = 12
  nats = losses.glow_nll(ld, lp, d, 256, bits_per_dim=False)
  np.testing.assert_allclose(nats, [47 + 12 * math.log(256),
                                    21 + 12 * math.log(256)], rtol=1e-6)
  np.testing.assert_allclose(losses.glow_nll(ld, lp, d, 256),
                             nats / (d * math.log(2)), rtol=1e-6)


def test_model_log_prior_is_splits_plus_std_normal_final():
  m = build_model(_model_cfg(split_prior="conditional"), (8, 8, 1), 4)
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(3, 8, 8, 1)),
                  jnp.float32)
  p = _perturb(m.init(jax.random.PRNGKey(0), x), jax.random.PRNGKey(1))
  out = jax.jit(m.forward_train)(p, x)
  z = out["z"]
  # Rebuild the split: level 0's tensor is [4, 4, 4], half (2 ch) split off.
  nf = m.final_dim
  z2 = z[:, nf:].reshape(3, 4, 4, 2)
  # the kept half = the input of stage 1 before its squeeze
  @jax.jit
  def level0(q, v):
    h, _ = m.pre.forward({}, v)
    h, _ = m.stages[0].down.forward({}, h)
    return m.stages[0].steps.forward(q["stage_0"], h)[0]
  h = level0(p, x)
  np.testing.assert_allclose(h[..., 2:], z2, atol=1e-6)
  want = (split_prior_logp(p["split_0"], h[..., :2], z2)
          + std_normal_logp(z[:, :nf]))
  np.testing.assert_allclose(out["log_prior"], want, rtol=1e-5)


# ------------------------------------------------------------ BatchNorm
def test_logit_bn_train_and_eval_against_hand_values():
  x = jnp.array([[1.0, 2.0], [3.0, -2.0], [5.0, 0.0], [7.0, 4.0]])
  p = {"scale": jnp.array([2.0, 1.0]), "bias": jnp.array([0.5, -1.0]),
       "mean": jnp.array([1.0, 1.0]), "var": jnp.array([4.0, 1.0])}
  y, st = bn_train(p, x, momentum=0.9, eps=0.0)
  mu, var = np.array([4.0, 1.0]), np.array([5.0, 5.0])   # biased
  np.testing.assert_allclose(y, (np.asarray(x) - mu) / np.sqrt(var)
                             * [2.0, 1.0] + [0.5, -1.0], rtol=1e-6)
  np.testing.assert_allclose(st["mean"], 0.1 * 1.0 + 0.9 * mu, rtol=1e-6)
  np.testing.assert_allclose(st["var"], 0.1 * np.array([4.0, 1.0])
                             + 0.9 * var * 4 / 3, rtol=1e-6)   # unbiased
  ye, ld = bn_eval(p, x, eps=0.0)
  np.testing.assert_allclose(ye, (np.asarray(x) - 1.0) / np.sqrt([4.0, 1.0])
                             * [2.0, 1.0] + [0.5, -1.0], rtol=1e-6)
  np.testing.assert_allclose(ld, [math.log(1.0) + math.log(1.0)] * 4,
                             atol=1e-7)


def test_logit_bn_across_four_devices_equals_one_device():
  assert len(jax.devices()) >= 4
  mesh = make_mesh(jax.devices()[:4])
  x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)) * 3 + 1,
                  jnp.float32)
  p = {"scale": jnp.array([1.5, 1.0, 0.5]), "bias": jnp.zeros(3),
       "mean": jnp.ones(3), "var": jnp.full((3,), 2.0)}
  f = data_parallel(lambda q, v: bn_train(q, v, 0.9, 1e-5, AXIS), mesh,
                    in_specs=(P(), P(AXIS)), out_specs=(P(AXIS), P()))
  y4, st4 = f(p, x)
  y1, st1 = bn_train(p, x, 0.9, 1e-5)
  np.testing.assert_allclose(y4, y1, rtol=1e-5, atol=1e-6)
  for k in ("mean", "var"):
    np.testing.assert_allclose(st4[k], st1[k], rtol=1e-5)


def test_train_step_writes_running_stats_and_eval_uses_them():
  """One iCE step of a tiny authors-style model: the running statistics in
  the state equal the BatchNorm update from the step's logits, on 1 and on
  4 devices (averaged), and eval logits use them."""
  from advinv_jax import train
  cfg = default_config()
  cfg.model = _model_cfg(logit_bn=True, split_prior="conditional")
  cfg.loss.name = "ice"
  cfg.loss.ice.likelihood = "glow"
  cfg.loss.ice.nuisance_hidden = (16,)
  cfg.loss.ice.nuisance_steps = 1
  validate_config(cfg)
  m = build_model(cfg.model, (8, 8, 1), 4)
  obj = train.make_objective(cfg)
  opt = train.make_optimizer(cfg.optimizer, 10)
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.uniform(size=(8, 8, 8, 1)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 4, 8), jnp.int32)}
  state = jax.jit(lambda r, v: train.init_train_state(m, obj, opt, r, v))(
      jax.random.PRNGKey(0), batch["image"])
  state = state.replace(params=_perturb(state.params, jax.random.PRNGKey(3)))
  zs = jax.jit(lambda q, v: m.forward_train(q, v)["z"][:, :4])(
      state.params, batch["image"])
  _, want = bn_train(state.params["logit_bn"], zs, 0.9, 1e-5)
  step = jax.jit(train.make_train_step(m, obj, opt))
  new, _ = step(state, batch, jax.random.PRNGKey(5))
  mesh = make_mesh(jax.devices()[:4])
  p_step = data_parallel(train.make_train_step(m, obj, opt, axis_name=AXIS),
                         mesh, in_specs=(P(), P(AXIS), P()),
                         out_specs=(P(), P()))
  new4, _ = p_step(state, batch, jax.random.PRNGKey(5))
  for s in (new, new4):
    for k in ("mean", "var"):
      np.testing.assert_allclose(s.params["logit_bn"][k], want[k], rtol=1e-4)
  # Eval mode: the affine map with the running statistics.
  z_new = jax.jit(lambda q, v: m._flow(q, v)[0][:, :4])(new.params,
                                                         batch["image"])
  want_logits = bn_eval(new.params["logit_bn"], z_new)[0]
  np.testing.assert_allclose(jax.jit(m.logits)(new.params, batch["image"]),
                             want_logits, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ dropout
def test_dropout_off_inverse_exact_on_differs():
  cfg = _model_cfg(dropout=0.5, logit_bn=True, split_prior="conditional",
                   actnorm_eps=1e-3, actnorm_std_floor=0.0, width=4)
  m = build_model(cfg, (8, 8, 3), 4)
  x = jnp.asarray(np.random.default_rng(2).uniform(size=(4, 8, 8, 3)),
                  jnp.float32)
  p = _perturb(m.init(jax.random.PRNGKey(0), x), jax.random.PRNGKey(1), 0.2)
  p["logit_bn"] = dict(p["logit_bn"], var=jnp.full((4,), 2.0))
  # jitted: eager dispatch of every small op is slow on a busy CPU
  z, ld = jax.jit(m.forward)(p, x)             # eval mode: dropout off
  x_rec, ld_inv = jax.jit(m.inverse_with_logdet)(p, z)
  np.testing.assert_allclose(x_rec, x, atol=2e-5)
  np.testing.assert_allclose(ld_inv, -ld, rtol=1e-5, atol=1e-3)
  # Train mode: a key turns dropout on (z differs), and the same key
  # gives the same z; no key = eval mode.
  train_z = jax.jit(lambda q, v, k: m.forward_train(q, v, k)["z"])
  zt = train_z(p, x, jax.random.PRNGKey(7))
  zt2 = train_z(p, x, jax.random.PRNGKey(7))
  z_eval_pre = jax.jit(lambda q, v: m.forward_train(q, v)["z"])(p, x)
  assert float(jnp.max(jnp.abs(zt - z_eval_pre))) > 1e-3
  np.testing.assert_array_equal(zt, zt2)
  np.testing.assert_allclose(z_eval_pre[:, 4:], z[:, 4:], atol=1e-6)


def test_dropout_needs_plain_loop():
  with pytest.raises(ValueError, match="config.model.firevnet.dropout"):
    build_model(_model_cfg(dropout=0.1, reversible=True), (8, 8, 1), 4)


def test_mlp_dropout_train_only():
  mlp = mlp_classifier(6, (32,), 3, dropout=0.5)
  v = jnp.ones((5, 6, 1, 1))
  p = mlp.init(jax.random.PRNGKey(0), v)
  a, b = jax.jit(mlp.logits)(p, v), mlp.logits(p, v)
  np.testing.assert_allclose(a, b, rtol=1e-6)
  t = jax.jit(lambda q, w, k: mlp.logits_train(q, w, k)[0])(
      p, v, jax.random.PRNGKey(1))
  assert float(jnp.max(jnp.abs(t - a))) > 1e-4


# ------------------------------------------------------------ ActNorm form
def test_actnorm_eps_form_logdet_and_inverse():
  lay = ActNorm(min_std=0.0, eps=1e-3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 3, 2)),
                  jnp.float32)
  p = {"b": jnp.array([0.5, -1.0]), "s": jnp.array([-8.0, 0.3])}
  y, ld = lay.forward(p, x)
  m = np.exp([-8.0, 0.3]) + 1e-3
  np.testing.assert_allclose(y, (np.asarray(x) + [0.5, -1.0]) * m, rtol=1e-6)
  np.testing.assert_allclose(ld, [9 * np.log(m).sum()] * 2, rtol=1e-6)
  np.testing.assert_allclose(lay.inverse(p, y), x, atol=1e-5)


# ------------------------------------------------------------ input layout trap
def test_input_layout_trap_and_test_noise_remedy():
  """Authors' 3-channel layout: the first ActNorm, initialised without a
  std floor on noisy images, scales each zero channel by ~1 / std(2u) with
  u ~ U(0, 1/256), i.e. 256 sqrt(12) / 2 = 443.4; a noise-free test image
  then puts those channels at the constant (0 - mean) / std = -sqrt(3) for
  every pixel, off the training distribution U(-sqrt 3, sqrt 3). With the
  remedy (test_noise = the training noise) they follow it again."""
  n, a = 512, 1.0 / 256
  rng = np.random.default_rng(0)
  digit = (rng.uniform(size=(n, 8, 8, 1)) > 0.7).astype(np.float32)
  src = ArraySource(digit, rng.integers(0, 4, n).astype(np.int32))
  ds = _derive.zero_channels_dataset(Dataset("toy", src, src, 4, (8, 8, 1)), 2)
  assert ds.image_shape == (8, 8, 3)
  train_x = ds.train.get(np.arange(n))["image"]
  assert np.all(train_x[..., :2] == 0)
  noisy = train_x + rng.uniform(0, a, train_x.shape).astype(np.float32)
  lay = ActNorm(min_std=0.0, eps=1e-3)
  p = lay.init(None, jnp.asarray(2 * noisy - 1))
  scale = np.exp(np.asarray(p["s"])) + 1e-3
  np.testing.assert_allclose(scale[:2], 256 * math.sqrt(12) / 2, rtol=0.05)
  clean = ds.test.get(np.arange(64))["image"]
  h = np.asarray(lay.forward(p, jnp.asarray(2 * clean - 1))[0])
  np.testing.assert_allclose(h[..., :2], -math.sqrt(3), rtol=0.05)
  assert h[..., :2].std() < 0.05            # constant: the trap
  fixed = _derive.test_noise_dataset(ds, a, seed=0)
  assert fixed.bounds == (0.0, 1.0 + a)
  t = fixed.test.get(np.arange(64))["image"]
  np.testing.assert_array_equal(t, fixed.test.get(np.arange(64))["image"])
  h = np.asarray(lay.forward(p, jnp.asarray(2 * t - 1))[0])[..., :2]
  assert abs(h.mean()) < 0.1 and abs(h.std() - 1.0) < 0.1   # U(-sqrt3, sqrt3)
  # Evaluation and probes see training images the same way (their own fixed
  # draw); training itself reads the noise-free source.
  assert fixed.split("train") is fixed.train_eval and ds.split("train") is (
      ds.train)
  e = fixed.split("train").get(np.arange(64))["image"]
  np.testing.assert_array_equal(e, fixed.split("train").get(
      np.arange(64))["image"])
  np.testing.assert_array_equal(fixed.train.get(np.arange(64))["image"],
                                train_x[:64])
  assert not np.array_equal(e, t) and 0 < (e - train_x[:64]).min() and (
      (e - train_x[:64]).max() < a)
  h = np.asarray(lay.forward(p, jnp.asarray(2 * e - 1))[0])[..., :2]
  assert abs(h.mean()) < 0.1 and abs(h.std() - 1.0) < 0.1
  # Our guard instead: the std floor caps the amplification at 1 / floor.
  g = ActNorm(min_std=0.3).init(None, jnp.asarray(2 * noisy - 1))
  assert np.all(np.exp(np.asarray(g["s"])) <= 1 / 0.3 + 1e-3)


# ------------------------------------------------------------ nuisance term
def test_nuisance_term_with_shuffled_labels_by_hand():
  z_s = jnp.zeros((4, 3))
  nl = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1],
                          [0.3, 0.3, 0.4], [0.5, 0.25, 0.25]]))
  y = jnp.array([0, 1, 2, 0])
  y2 = jnp.array([1, 0, 0, 2])
  mle = jnp.zeros((4,))
  val, m = losses.ice_network_loss(z_s, jnp.zeros((4, 5)), jnp.zeros(4), y,
                                   nl, None, weights=(1.0, 0.05, 1.0),
                                   mle=mle, nuisance_labels=y2)
  ce = lambda lab: -np.mean(np.log(np.exp(np.asarray(nl))[np.arange(4),
                                                           np.asarray(lab)]))
  np.testing.assert_allclose(val, math.log(3) - 0.05 * ce(y2), rtol=1e-6)
  np.testing.assert_allclose(m["nce"], ce(y), rtol=1e-6)
  np.testing.assert_allclose(m["nce_term"], ce(y2), rtol=1e-6)
  # A negative weight: the authors' first commit (+0.05 CE).
  val2, _ = losses.ice_network_loss(z_s, jnp.zeros((4, 5)), jnp.zeros(4), y,
                                    nl, None, weights=(1.0, -0.05, 1.0),
                                    mle=mle, nuisance_labels=y2)
  np.testing.assert_allclose(val2, math.log(3) + 0.05 * ce(y2), rtol=1e-6)


def test_shuffled_labels_a_global_permutation_on_four_devices():
  y = jnp.arange(16, dtype=jnp.int32) % 10
  key = jax.random.PRNGKey(3)
  one = _objectives.shuffled_labels(y, key)
  np.testing.assert_array_equal(np.sort(one), np.sort(y))
  assert np.any(np.asarray(one) != np.asarray(y))
  mesh = make_mesh(jax.devices()[:4])
  f = data_parallel(lambda v, k: _objectives.shuffled_labels(v, k, AXIS),
                    mesh, in_specs=(P(AXIS), P()), out_specs=P(AXIS))
  np.testing.assert_array_equal(f(y, key), one)


# ------------------------------------------------------------ shiftMNIST
def test_single_pixel_shift_position_is_the_class():
  n = 40
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, n).astype(np.int32)
  src = ArraySource(np.zeros((n, 12, 12, 3), np.float32), labels)
  ds = Dataset("toy", src, src, 10, (12, 12, 3))
  sh = _derive.shift_dataset(ds, construction="pixel", position=(1, 2),
                             channel=0, seed=0)
  tr = sh.train.get(np.arange(n))
  for i in range(n):
    assert np.argwhere(tr["image"][i] > 0).tolist() == [[1 + labels[i], 2, 0]]
  te = sh.test.get(np.arange(n))
  for i in range(n):
    assert np.argwhere(te["image"][i] > 0).tolist() == [
        [1 + te["code_label"][i], 2, 0]]
  assert np.mean(te["code_label"] == labels) < 0.5
  gone = _derive.shift_dataset(ds, construction="pixel", position=(1, 2),
                               channel=0, test_mode="none")
  assert gone.test.get(np.arange(n))["image"].max() == 0.0
  with pytest.raises(ValueError, match="config.data.shift.position"):
    _derive.shift_dataset(ds, construction="pixel", position=(3, 0))


def test_texture_shift_is_the_class_grating_behind_the_digit():
  """construction='texture': t_c is the closed-form grating (one orientation
  per class, values in [0, 1]); on a blank channel the planted image IS
  value * t_{class} (so the class decodes by nearest template), strokes at
  or above the texture are untouched (max blend), other channels are
  untouched, and test images carry a random class's texture."""
  n, h, a = 40, 16, 0.5
  t = _derive.shift_textures((h, h), 10, 4.0)
  i, j = 3, 5
  want = 0.5 * (1 + np.cos(2 * np.pi * 4.0 / h * (i * np.cos(np.pi * 0.3) +
                                                  j * np.sin(np.pi * 0.3))))
  np.testing.assert_allclose(t[3, i, j], want, atol=1e-6)
  assert t.shape == (10, h, h) and t.min() >= 0 and t.max() <= 1
  flat = (t - t.mean((1, 2), keepdims=True)).reshape(10, -1)
  cos = flat @ flat.T / np.outer(*[np.linalg.norm(flat, axis=1)] * 2)
  assert np.max(np.abs(cos - np.eye(10))) < 0.5    # distinct textures

  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, n).astype(np.int32)
  img = np.zeros((n, h, h, 2), np.float32)
  img[:, 4:12, 6:10, 1] = 1.0                       # a "digit" in channel 1
  img[:, 4:12, 6:10, 0] = 1.0                       # and strokes in channel 0
  src = ArraySource(img, labels)
  ds = Dataset("toy", src, src, 10, (h, h, 2), bounds=(0.0, 1.0))
  sh = _derive.shift_dataset(ds, construction="texture", position=(0, 0),
                             channel=0, value=a, seed=0)
  tr = sh.train.get(np.arange(n))["image"]
  np.testing.assert_array_equal(tr[..., 1], img[..., 1])
  np.testing.assert_array_equal(tr[:, 4:12, 6:10, 0], 1.0)
  bg = np.ones((h, h), bool)
  bg[4:12, 6:10] = False
  np.testing.assert_allclose(tr[:, bg, 0], a * t[labels][:, bg], atol=1e-7)
  dec = np.argmin(((tr[:, None, bg, 0] - a * t[None, :, bg]) ** 2).sum(-1), 1)
  np.testing.assert_array_equal(dec, labels)
  te = sh.test.get(np.arange(n))
  np.testing.assert_allclose(te["image"][:, bg, 0],
                             a * t[te["code_label"]][:, bg], atol=1e-7)
  assert np.mean(te["code_label"] == labels) < 0.5
  gone = _derive.shift_dataset(ds, construction="texture", position=(0, 0),
                               test_mode="none", value=a)
  np.testing.assert_array_equal(gone.test.get(np.arange(n))["image"], img)
  for kw, field in ((dict(texture_frequency=0.0), "texture_frequency"),
                    (dict(texture_frequency=9.0), "Nyquist"),
                    (dict(value=1.5), "shift.value"),
                    (dict(channel=2), "shift.channel")):
    with pytest.raises(ValueError, match=field):
      _derive.shift_dataset(ds, construction="texture", position=(0, 0),
                            **dict(dict(value=a), **kw))


# ------------------------------------------------------------ fixed channels
def test_zero_channels_are_a_fixed_input_layer():
  """model.firevnet.zero_channels: the model takes the image; its map is the
  3-channel flow's on [fill, fill, x] (same params, same logits and z), the
  inverse returns the image exactly, attacks' gradients have the image's
  shape, and the train-mode channels are U(0, noise) draws per example."""
  a = 1.0 / 256
  kw = dict(actnorm_std_floor=0.0, actnorm_eps=1e-3, width=4, levels=2)
  m = build_model(_model_cfg(zero_channels=2, zero_channel_noise=a,
                             zero_channel_fill=a / 2, **kw), (8, 8, 1), 4)
  flat = build_model(_model_cfg(**kw), (8, 8, 3), 4)
  assert (m.input_shape, m.flow_shape, m.latent_dim) == ((8, 8, 1),
                                                         (8, 8, 3), 192)
  rng = np.random.default_rng(0)
  x = jnp.asarray((rng.uniform(size=(6, 8, 8, 1)) > 0.6), jnp.float32)
  p = _perturb(m.init(jax.random.PRNGKey(0), x), jax.random.PRNGKey(1), 0.1)
  x3 = jnp.concatenate([jnp.full((6, 8, 8, 2), a / 2), x], axis=-1)
  z, ld = jax.jit(m.forward)(p, x)
  z3, ld3 = jax.jit(flat.forward)(p, x3)
  np.testing.assert_array_equal(z, z3)
  np.testing.assert_array_equal(ld, ld3)
  np.testing.assert_allclose(jax.jit(m.inverse)(p, z), x, atol=1e-5)
  g = jax.grad(lambda v: m.logits(p, v)[:, 0].sum())(x)
  assert g.shape == x.shape                 # the attack surface: the image
  with pytest.raises(ValueError, match=r"expects images of shape \[B, 8, 8, "
                     r"1\]"):
    m.logits(p, x3)
  padded = m.pad(x, jax.random.PRNGKey(2))
  np.testing.assert_array_equal(padded[..., 2:], x)
  noise = np.asarray(padded[..., :2])
  assert noise.min() >= 0 and noise.max() < a and noise.std() > a / 5
  assert not np.allclose(noise[0], noise[1])            # per example
  np.testing.assert_array_equal(m.pad(x)[..., :2], a / 2)  # eval: the fill


def test_zero_channels_init_sees_the_training_noise_and_the_fill_remedy():
  """The data-dependent init pads with the training noise, so the authors'
  first ActNorm (no std floor) scales each fixed channel by ~443 = 256
  sqrt(12) / 2, as with zeros in the data. In eval, exact zeros (the
  authors' test input) put those channels at -sqrt(3) after it (the edge of
  the training range [-sqrt 3, sqrt 3]); the fill = the noise's mean puts
  them at its centre, 0."""
  a, n = 1.0 / 256, 512
  rng = np.random.default_rng(3)
  x = jnp.asarray((rng.uniform(size=(n, 8, 8, 1)) > 0.7), jnp.float32)
  for fill, want in ((0.0, -math.sqrt(3)), (a / 2, 0.0)):
    m = build_model(_model_cfg(zero_channels=2, zero_channel_noise=a,
                               zero_channel_fill=fill, actnorm_std_floor=0.0,
                               actnorm_eps=1e-3), (8, 8, 1), 4)
    p = m.init(jax.random.PRNGKey(0), x)
    act, down = m.stages[0].steps.layers[0].layers[0], m.stages[0].down
    pa = p["stage_0"]["000"]["000"]
    marker = jnp.concatenate([jnp.ones((1, 8, 8, 2)), jnp.zeros((1, 8, 8, 1))],
                             axis=-1)
    is_pad = np.asarray(down.forward({}, marker)[0][0, 0, 0]) == 1
    assert is_pad.sum() == 8
    scale = np.exp(np.asarray(pa["s"])) + 1e-3
    np.testing.assert_allclose(scale[is_pad], 256 * math.sqrt(12) / 2,
                               rtol=0.05)
    h = down.forward({}, m.pre.forward({}, m.pad(x[:64]))[0])[0]
    out = np.asarray(act.forward(pa, h)[0])[..., is_pad]
    np.testing.assert_allclose(out, want, atol=0.1)
    assert out.std() < 0.05                   # a constant in eval


def test_zero_channels_model_is_not_onto_the_latent_space():
  """With fixed input channels F maps images onto part of the latent space
  only. The metamer of (A, A) is A and valid; a latent whose flow preimage
  has other values in the fixed channels (here: a training-noise draw) has
  no preimage image: the inverse returns its image channels, and
  metamer_validity fails it, where the same latent passes for the flow on
  3-channel inputs."""
  from advinv_jax import invariance as I
  a = 1.0 / 256
  m = build_model(_model_cfg(zero_channels=2, zero_channel_noise=a,
                             zero_channel_fill=a / 2, width=4), (8, 8, 1), 4)
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.uniform(size=(8, 8, 8, 1)), jnp.float32)
  p = _perturb(m.init(jax.random.PRNGKey(0), x), jax.random.PRNGKey(1), 0.1)
  same = I.metameric_sample(m, p, x, x)
  np.testing.assert_allclose(same, x, atol=1e-5)
  assert np.all(np.asarray(I.metamer_validity(
      m, p, same, I.metamer_latent(m, p, x, x), bounds=None).valid))
  flat = build_model(_model_cfg(width=4), (8, 8, 3), 4)
  x3 = m.pad(x, jax.random.PRNGKey(7))          # fixed channels off the fill
  z3, _ = flat.forward(p, x3)
  np.testing.assert_allclose(m.inverse(p, z3), x, atol=1e-5)
  assert not np.any(np.asarray(I.metamer_validity(
      m, p, m.inverse(p, z3), z3, bounds=None).valid))
  assert np.all(np.asarray(I.metamer_validity(
      flat, p, flat.inverse(p, z3), z3, bounds=None).valid))
