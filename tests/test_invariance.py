"""Invariance analysis: metamers and their validity check, nuisance
interpolation, the nuisance probe, the spheres counter-example, and valid
metamers on briefly trained models of every shipped invertible config
family."""
import importlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advinv_jax import invariance as I
from advinv_jax.models import build_model
from test_attacks import SHAPE, OrthoFlat, interior_batch
from tests._helpers import model_section

def test_metameric_sample_has_logit_source_logits():
  model = OrthoFlat(SHAPE, 3)
  xa, xb = interior_batch(1, 6), interior_batch(2, 6)
  params = model.init(jax.random.PRNGKey(0), xa)
  met = jax.jit(I.metameric_sample, static_argnums=0)(model, params, xa, xb)
  chex.assert_shape(met, xa.shape)
  np.testing.assert_allclose(model.logits(params, met),
                             model.logits(params, xa), atol=1e-4)
  zn_met = model.split(model.forward(params, met)[0])[1]
  zn_b = model.split(model.forward(params, xb)[0])[1]
  np.testing.assert_allclose(zn_met, zn_b, atol=1e-4)
  with pytest.raises(ValueError, match="InvertibleModel"):
    I.metameric_sample(object(), params, xa, xb)


def test_nuisance_interpolation_endpoints_and_logits():
  model = OrthoFlat(SHAPE, 3)
  xa, xb = interior_batch(3, 4), interior_batch(4, 4)
  params = model.init(jax.random.PRNGKey(1), xa)
  frames = I.nuisance_interpolation(model, params, xa, xb, num_steps=5)
  chex.assert_shape(frames, (5,) + xa.shape)
  np.testing.assert_allclose(frames[0], xa, atol=1e-5)
  np.testing.assert_allclose(frames[-1], I.metameric_sample(model, params,
                                                            xa, xb), atol=1e-5)
  za = model.logits(params, xa)
  for fr in frames:
    np.testing.assert_allclose(model.logits(params, fr), za, atol=1e-4)


def test_metamer_validity_closed_form_on_an_orthogonal_map():
  """z = x Q + c with Q orthogonal: moving a metamer by e along Q's column j
  moves exactly z_j by e, so the round-trip errors are known in closed form;
  pixels pushed out of [0, 1] are counted exactly."""
  k, n = 3, 5
  model = OrthoFlat(SHAPE, k)
  xa, xb = interior_batch(5, n), interior_batch(6, n)
  params = model.init(jax.random.PRNGKey(2), xa)
  z = I.metamer_latent(model, params, xa, xb)
  met = model.inverse(params, z)
  check = jax.jit(I.metamer_validity, static_argnums=0,
                  static_argnames=("bounds", "tol"))
  v = check(model, params, met, z, bounds=(-10.0, 10.0), tol=1e-3)
  assert bool(jnp.all(v.valid)) and float(jnp.max(v.logit_drift)) < 1e-5
  np.testing.assert_array_equal(v.out_of_bounds, 0.0)
  q = np.asarray(params["q"])
  e = np.array([0.0, 1e-2, 0.0, 2e-4, 0.0], np.float32)[:, None]
  col = np.zeros((n, model.latent_dim), np.float32)
  col[1] = q[:, 0]              # example 1: logit 0 moves by 1e-2
  col[3] = q[:, k + 2]          # example 3: z_n entry 2 moves by 2e-4
  moved = met + jnp.asarray(e * col).reshape(met.shape)
  v = check(model, params, moved, z, bounds=(-10.0, 10.0), tol=1e-3)
  np.testing.assert_allclose(v.z_s_error[1], 1e-2, rtol=1e-3)
  np.testing.assert_allclose(v.logit_drift[1], 1e-2, rtol=1e-3)
  np.testing.assert_allclose(v.z_n_error[3], 2e-4, rtol=2e-2)
  assert float(v.z_s_error[3]) < 1e-5
  np.testing.assert_array_equal(v.valid, [True, False, True, True, True])
  # tol scales with |z_n| for the nuisance: 2e-4 fails a tol of 1e-5 * scale
  v = check(model, params, moved, z, bounds=(-10.0, 10.0), tol=2e-5)
  assert not bool(v.valid[3]) and float(v.z_n_scale[3]) < 10.0
  # bounds: 3 of 16 pixels of example 0 outside [0, 1], by up to 0.5
  bad = met.at[0, 0, 0, 0].set(-0.5).at[0, 1, 1, 0].set(1.25)
  bad = bad.at[0, 2, 2, 0].set(1.5)
  v = I.metamer_validity(model, params, bad, z, bounds=(0.0, 1.0))
  np.testing.assert_allclose(v.out_of_bounds[0], 3 / 16)
  np.testing.assert_allclose(v.overshoot[0], 0.5)
  v = I.metamer_validity(model, params, met.at[2, 0, 0, 0].set(jnp.nan), z)
  assert not bool(v.finite[2]) and not bool(v.valid[2])
  assert bool(v.finite[0])
  s = I.summarize_validity(v)
  assert s["num"] == n and s["valid_share"] == pytest.approx(0.8)
  with pytest.raises(ValueError, match="z_requested"):
    I.metamer_validity(model, params, met, z[:, :4])
  with pytest.raises(ValueError, match="tol"):
    I.metamer_validity(model, params, met, z, tol=0.0)


def _tiny_firevnet(coupling):
  return build_model(model_section(name="firevnet", levels=2, depth=2,
                                   width=8, coupling=coupling), (8, 8, 1), 10)


@jax.jit
def _digits_like(key):
  return jax.random.uniform(key, (16, 8, 8, 1))


def test_metamer_validity_flags_an_exploding_inverse():
  """Affine couplings whose output convs are scaled up saturate the sigmoid
  scale at its floor: the inverse divides by ~1e-3 per coupling and the
  metamers explode (the Behrmann et al. failure); the same network with
  its initial (zero) output convs is exactly invertible."""
  x = _digits_like(jax.random.PRNGKey(0))
  model = _tiny_firevnet("affine")
  params = model.init(jax.random.PRNGKey(0), x)

  @jax.jit
  def validity(params):
    z = I.metamer_latent(model, params, x[:8], x[8:])
    return I.metamer_validity(model, params, model.inverse(params, z), z)

  ok = validity(params)
  assert bool(jnp.all(ok.valid)) and float(jnp.max(ok.logit_drift)) < 1e-5

  def blow_up(path, a):
    if "w3" in jax.tree_util.keystr(path):
      return 30.0 * jax.random.normal(jax.random.PRNGKey(a.size), a.shape)
    return a

  bad = validity(jax.tree_util.tree_map_with_path(blow_up, params))
  assert not bool(jnp.any(bad.valid))
  assert float(jnp.min(bad.logit_drift)) > 1.0
  assert float(jnp.mean(bad.out_of_bounds)) > 0.5


def _load_config(name):
  """``configs/<name>.py``'s config; ``name`` may carry a variant
  (``"mnist:ce"``)."""
  name, _, variant = name.partition(":")
  mod = importlib.import_module(f"configs.{name}")
  return mod.get_config(variant) if variant else mod.get_config()


def _shrink(cfg):
  """The config's model family at a seconds-long size, on the digits."""
  cfg.data.name, cfg.data.pad_to, cfg.data.image_size = "digits", 0, 0
  cfg.model.firevnet.depth, cfg.model.firevnet.width, cfg.model.firevnet.levels = 1, 8, 3
  cfg.model.firevnet_imagenet.blocks, cfg.model.firevnet_imagenet.channels = (1, 1), (4, 8)
  cfg.model.firevnet_imagenet.strides, cfg.model.firevnet_imagenet.init_squeeze = (1, 2), 2
  cfg.model.compute.batch_chunk = 0
  cfg.train.batch_size, cfg.train.num_epochs, cfg.train.num_steps = 64, 0, 30
  cfg.train.checkpoint_every, cfg.train.progress_bar = 0, False
  cfg.optimizer.schedule, cfg.optimizer.learning_rate = "constant", 3e-3
  cfg.optimizer.boundaries, cfg.optimizer.scales = (), ()
  cfg.report.enabled = False
  return cfg


@pytest.mark.parametrize("name", ["default", "mnist:ce",
                                  "firevnet48_imagenet"])
def test_shipped_invertible_families_give_valid_metamers(tmp_path, name):
  """Each shipped invertible config's coupling / scale / permutation, at a
  tiny size and trained briefly: every metamer of test digits is valid
  (logit drift <= 1e-3, exact round trip) after 30 training steps."""
  from advinv_jax.train import train_and_evaluate
  cfg = _shrink(_load_config(name))
  res = train_and_evaluate(cfg, str(tmp_path))
  assert res["steps"] == 30
  model, params = res["model"], res["state"].params
  test = res["dataset"].test.get(np.arange(64))
  x, y = jnp.asarray(test["image"]), np.asarray(test["label"])
  order = np.argsort(y, kind="stable")           # pair different digits
  xa, xb = x[order], x[np.roll(order, 32)]

  @jax.jit
  def validity(params):
    z = I.metamer_latent(model, params, xa, xb)
    return I.metamer_validity(model, params, model.inverse(params, z), z,
                              bounds=res["dataset"].bounds)

  v = I.summarize_validity(validity(params))
  assert v["valid_share"] == 1.0, v
  assert v["logit_drift_max"] <= 1e-3


def test_nuisance_classifier_bounds_label_information():
  rng = np.random.default_rng(0)
  n, k, dim = 400, 4, 12
  y = rng.integers(0, k, n)
  centers = rng.normal(size=(k, dim)) * 3
  informative = centers[y] + rng.normal(size=(n, dim))
  noise = rng.normal(size=(n, dim))
  key = jax.random.PRNGKey(0)
  kw = dict(hidden=(32,), steps=200, lr=3e-3, batch_size=64, rng=key)
  tr, te, params = I.train_nuisance_classifier(
      informative[:300], y[:300], informative[300:], y[300:], **kw)
  assert float(te) > 0.9 and float(tr) > 0.9
  logits = I.nuisance_classifier_logits(params, jnp.asarray(informative[300:],
                                                            jnp.float32))
  np.testing.assert_allclose(jnp.mean(jnp.argmax(logits, -1) == y[300:]), te)
  _, te_noise, _ = I.train_nuisance_classifier(noise[:300], y[:300],
                                               noise[300:], y[300:], **kw)
  assert float(te_noise) < 0.45          # chance is 0.25
  with pytest.raises(ValueError, match="hidden"):
    I.train_nuisance_classifier(noise, y, noise, y, hidden=(0,), rng=key)


def test_spheres_counterexample_closed_form():
  """Inner points (radius 1) in R^d moved onto the radius-10 sphere via x_d
  only: the norm-of-x[:d-1] classifier is perfect on the data and keeps
  every moved point 'inner'."""
  rng = np.random.default_rng(0)
  d, n = 16, 64
  u = rng.normal(size=(n, d))
  u /= np.linalg.norm(u, axis=1, keepdims=True)
  y = np.arange(n) % 2
  x = u * np.where(y == 1, 10.0, 1.0)[:, None]
  out = I.norm_classifier_counterexample(x, y)
  assert float(out["clean_accuracy"]) == 1.0
  assert float(out["attack_success"]) == 1.0
  assert 1.0 > float(out["threshold"]) > 0.0 or float(out["threshold"]) > 1.0
