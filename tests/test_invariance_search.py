"""Invariance of any model by optimisation: model metamers reach the
analytic metamers of a fiRevNet and the closed form of a linear model; the
invariance attack's rate per distance on a linear model in closed form;
feature layers; one clear error per bad argument."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advinv_jax import invariance as I
from advinv_jax.models import build_model
from tests._helpers import model_section

D, K = 16, 3


def _linear(seed):
  """logits = flat(x) W + c with W: [D, K] orthogonal columns scaled by
  (1, 1.5, 2): the Hessian of 1/2 ||logits - t||^2 has eigenvalues 1 .. 4
  on W's span (gd with lr 0.25 contracts it) and 0 on its null space."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(D, K)))
  w = jnp.asarray(q * np.array([1.0, 1.5, 2.0]), jnp.float32)
  c = jnp.asarray(rng.normal(size=(K,)), jnp.float32)
  return w, c, lambda x: x.reshape((x.shape[0], -1)) @ w + c


def _images(seed, n):
  return jax.random.uniform(jax.random.PRNGKey(seed), (n, 4, 4, 1))


def test_linear_metamer_is_the_closed_form():
  """From start B, gradient descent moves only inside W's column space: the
  metamer of A is B + (W^T)^+ W^T (A - B) (the null-space part of B kept)."""
  w, _, logits = _linear(0)
  xa, xb = _images(1, 8), _images(2, 8)
  res = jax.jit(functools.partial(I.model_metamer, logits, steps=200, lr=0.25,
                                  bounds=None, optimizer="gd"))(xa, xb)
  wt = np.asarray(w).T                                   # [K, D]
  flat_a = np.asarray(xa).reshape(8, D)
  flat_b = np.asarray(xb).reshape(8, D)
  closed = flat_b + (np.linalg.pinv(wt) @ (wt @ (flat_a - flat_b).T)).T
  np.testing.assert_allclose(np.asarray(res.x).reshape(8, D), closed,
                             atol=1e-4)
  assert bool(jnp.all(res.converged)) and float(res.match_error.max()) < 1e-4
  assert float(res.initial_match_error.min()) > 1e-2
  # Adam matches the logits too (its per-entry scaling may leave the span)
  res = I.model_metamer(logits, xa, xb, steps=300, lr=0.05, bounds=None)
  assert bool(jnp.all(res.converged))
  np.testing.assert_allclose(logits(res.x), logits(xa), atol=1e-3)


def _tiny_firevnet():
  """A 2-level additive fiRevNet on 8x8x1 whose subnets' output convs are
  random (at init they are zero and the flow is linear)."""
  model = build_model(model_section(name="firevnet", levels=2, depth=2,
                                    width=8, coupling="additive"),
                      (8, 8, 1), 10)
  params = model.init(jax.random.PRNGKey(0),      # ActNorm's data init
                      jax.random.uniform(jax.random.PRNGKey(1), (64, 8, 8, 1)))

  def perturb(path, a):
    if "w3" in jax.tree_util.keystr(path):
      return 0.1 * jax.random.normal(jax.random.PRNGKey(a.size), a.shape)
    return a

  return model, jax.tree_util.tree_map_with_path(perturb, params)


def test_optimisation_reaches_the_analytic_metamer_of_a_firevnet():
  """Matching all of z* = (z_s(A), z_n(B)) by optimisation from B reaches
  F^-1(z*) within 1e-2 per pixel on >= 99% of 128 pairs. Unbounded (the
  analytic metamers of random images leave [0, 1]); 300 Adam steps."""
  model, params = _tiny_firevnet()
  x = jax.random.uniform(jax.random.PRNGKey(3), (256, 8, 8, 1))
  xa, xb = x[:128], x[128:]
  z = I.metamer_latent(model, params, xa, xb)
  analytic = model.inverse(params, z)
  feats = I.model_features(model, params, ("z",))
  res = jax.jit(functools.partial(I.match_features, feats, steps=300, lr=0.05,
                                  bounds=None))(z, xb)
  err = jnp.max(jnp.abs(res.x - analytic).reshape((128, -1)), axis=1)
  assert float(jnp.mean(err <= 1e-2)) >= 0.99
  assert float(jnp.max(jnp.abs(analytic - xb))) > 0.1    # far from the start
  # z_s and z_n of the result are A's logits and B's nuisance
  zs, zn = model.split(model.forward(params, res.x)[0])
  ok = err <= 1e-2
  np.testing.assert_allclose(zs[ok], model.logits(params, xa)[ok], atol=1e-2)


def test_invariance_rate_closed_form_on_a_linear_model():
  """The least l2 change of B that gives A's logits is r = ||(W^T)^+ W^T
  (A - B)||: within eps < min r no pair matches, within eps > max r all do
  (gd reaches the nearest solution, at distance r). With an oracle that
  reads every image as B's class the invariance rate is the matched share."""
  w, _, logits = _linear(4)
  xa, xb = _images(5, 6), _images(6, 6)
  wt = np.asarray(w).T
  diff = np.asarray(xa - xb).reshape(6, D)
  r = np.linalg.norm((np.linalg.pinv(wt) @ (wt @ diff.T)).T, axis=1)
  yb = jnp.ones(6, jnp.int32)
  oracle = lambda x: jax.nn.one_hot(jnp.ones(x.shape[0], jnp.int32), K)
  out = I.invariance_rate(logits, oracle, xa, xb, yb,
                          [0.5 * r.min(), 2.0 * r.max(), float("inf")],
                          steps=200, lr=0.25, bounds=None, optimizer="gd")
  assert out["invariance_rate"] == [0.0, 1.0, 1.0]
  assert out["matched"] == out["invariance_rate"]
  assert out["oracle_reads_nuisance_source"] == [1.0, 1.0, 1.0]
  np.testing.assert_allclose(out["median_distance"][0], 0.5 * r.min(),
                             rtol=1e-4)
  np.testing.assert_allclose(out["median_distance"][2], np.median(r),
                             rtol=1e-3)


def test_model_features_layers():
  cnn = build_model({"name": "cnn", "cnn": {"features": (4, 8),
                                            "hidden": (16,)}}, (8, 8, 1), K)
  x = _images(7, 3).repeat(2, 1).repeat(2, 2)            # [3, 8, 8, 1]
  p = cnn.init(jax.random.PRNGKey(0), x)
  names = I.feature_layers(cnn, p)
  assert {"logits", "Conv_0", "Conv_1", "Dense_0"} <= set(names)
  f = I.model_features(cnn, p, ("Conv_1", "logits"))
  out = f(x)
  assert out.shape == (3, 4 * 4 * 8 + K)
  np.testing.assert_allclose(out[:, -K:], cnn.logits(p, x), atol=1e-6)
  with pytest.raises(ValueError, match="Conv_9"):
    I.model_features(cnn, p, ("Conv_9",))
  model, params = _tiny_firevnet()
  xx = jax.random.uniform(jax.random.PRNGKey(8), (2, 8, 8, 1))
  z = model.forward(params, xx)[0]
  np.testing.assert_allclose(
      I.model_features(model, params, ("z_s", "z_n"))(xx), z, atol=1e-6)
  with pytest.raises(ValueError, match="Dense_0"):
    I.model_features(model, params, ("Dense_0",))


def test_bad_arguments_raise_one_clear_error():
  _, _, logits = _linear(9)
  xa, xb = _images(10, 4), _images(11, 4)
  t = logits(xa)
  cases = [
      (dict(x_init=xb[:, :, :2]), "x_init of shape"),     # the model's shape
      (dict(x_init=xb.reshape(-1)), "x_init"),
      (dict(steps=0), "steps"),
      (dict(steps=2.5), "steps"),
      (dict(lr=-1.0), "lr"),
      (dict(tol=0.0), "tol"),
      (dict(bounds=(1.0, 0.0)), "bounds"),
      (dict(x_init=xb + 2.0), "bounds"),
      (dict(eps=-0.1), "eps"),
      (dict(norm="l1"), "norm"),
      (dict(optimizer="lbfgs"), "optimizer"),
      (dict(x_init=xb.astype(jnp.int32)), "x_init"),
  ]
  for kw, match in cases:
    args = dict(x_init=xb)
    args.update(kw)
    x0 = args.pop("x_init")
    with pytest.raises(ValueError, match=match):
      I.match_features(logits, t, x0, **args)
  with pytest.raises(ValueError, match="features_fn"):
    I.match_features(lambda x: x, t, xb)                # not [B, D]
  with pytest.raises(ValueError, match="target_features"):
    I.match_features(logits, t[:, :2], xb)
  with pytest.raises(ValueError, match="same shape"):
    I.model_metamer(logits, xa[:2], xb)
  with pytest.raises(ValueError, match="eps_values"):
    I.invariance_rate(logits, logits, xa, xb, jnp.zeros(4, jnp.int32), [])
  with pytest.raises(ValueError, match="y_nuisance_source"):
    I.invariance_rate(logits, logits, xa, xb, jnp.zeros(3, jnp.int32), [1.0])
