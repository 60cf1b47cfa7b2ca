"""Attacks: closed forms on linear models, ball/bounds, monotonicity, sharding,
invariance attacks on a tiny invertible model, validation and self-checks."""
import dataclasses
import functools
import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advinv_jax import attacks as A
from advinv_jax.models import InvertibleModel
from tests._helpers import subprocess_env

SHAPE = (4, 4, 1)          # tiny images: d = 16
D = 16


# ----------------------------------------------------------------- helpers
def linear_model(seed, k):
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.normal(size=(D, k)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(k,)), jnp.float32)
  return w, b


def linear_logits(w, b, x):
  return x.reshape((x.shape[0], -1)) @ w + b


def closed_form(w, b, x, y, norm):
  """Exact distance to the decision boundary of a linear classifier:
  min over j != y of (z_y - z_j) / ||w_y - w_j||_* (dual norm)."""
  w, z = np.asarray(w, np.float64), np.asarray(linear_logits(w, b, x),
                                                np.float64)
  y = np.asarray(y)
  out = np.full(len(y), np.inf)
  for i in range(len(y)):
    for j in range(w.shape[1]):
      if j == y[i]:
        continue
      dw = w[:, y[i]] - w[:, j]
      dual = np.abs(dw).sum() if norm == "linf" else np.linalg.norm(dw)
      out[i] = min(out[i], (z[i, y[i]] - z[i, j]) / dual)
  return out


def interior_batch(seed, n, lo=0.3, hi=0.7):
  rng = np.random.default_rng(seed + 1000)
  return jnp.asarray(rng.uniform(lo, hi, size=(n,) + SHAPE), jnp.float32)


def linear_problem(seed, k, n=48):
  w, b = linear_model(seed, k)
  x = interior_batch(seed, n)
  y = jnp.argmax(linear_logits(w, b, x), -1).astype(jnp.int32)
  return w, b, x, y


@functools.partial(jax.jit, static_argnames=("norm", "num_targets", "steps",
                                             "bounded"))
def pgd_linear(w, b, x, y, eps, key, *, norm, num_targets, steps=30,
               bounded=False):
  return A.pgd(functools.partial(linear_logits, w, b), x, y, eps=eps,
               norm=norm, steps=steps, num_targets=num_targets,
               bounds=(0.0, 1.0) if bounded else None, loop="fori", rng=key)


# ----------------------------------------------------- closed forms (linear)
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("k", [2, 5])
def test_deepfool_matches_closed_form(norm, k):
  w, b, x, y = linear_problem(k, k)
  res = jax.jit(functools.partial(
      A.deepfool, functools.partial(linear_logits, w, b), norm=norm,
      bounds=None, candidates=k - 1))(x, y)
  exact = closed_form(w, b, x, y, norm)
  assert bool(jnp.all(res.success))
  np.testing.assert_allclose(np.asarray(res.perturbation_norm), exact,
                             rtol=1e-2)
  # The returned point is adversarial and its norm is what is reported.
  z = linear_logits(w, b, res.x_adv)
  assert bool(jnp.all(jnp.argmax(z, -1) != y))
  d = (res.x_adv - x).reshape(len(y), -1)
  n = jnp.max(jnp.abs(d), 1) if norm == "linf" else jnp.linalg.norm(d, axis=1)
  np.testing.assert_allclose(n, res.perturbation_norm, rtol=1e-5)


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("k", [2, 5])
def test_pgd_threshold_at_closed_form(norm, k):
  """PGD at 1.01x the exact distance succeeds on >= 99%, at 0.99x on none.

  Binary: plain untargeted PGD (CE). Multi-class: multi-targeted PGD, which
  is exact on linear models (plain untargeted PGD follows the largest other
  logit, not the nearest boundary)."""
  w, b, x, y = linear_problem(10 + k, k)
  exact = jnp.asarray(closed_form(w, b, x, y, norm), jnp.float32)
  nt = 0 if k == 2 else k - 1
  key = jax.random.PRNGKey(k)
  above = pgd_linear(w, b, x, y, 1.01 * exact, key, norm=norm, num_targets=nt)
  below = pgd_linear(w, b, x, y, 0.99 * exact, key, norm=norm, num_targets=nt)
  assert float(jnp.mean(above.success)) >= 0.99
  assert not bool(jnp.any(below.success))
  for res, s in ((above, 1.01), (below, 0.99)):
    for i in range(len(y)):   # per-example radius
      A.check_adversarial(x[i:i + 1], res.x_adv[i:i + 1], float(s * exact[i]),
                          norm, bounds=None)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_closed_form(norm):
  """On a binary linear model FGSM/FGM moves exactly eps along the steepest
  direction of w_other - w_y (sign for linf, normalised for l2), clipped."""
  w, b, x, y = linear_problem(3, 2)
  x = x.at[:4].set(jnp.clip(x[:4] * 3 - 1, 0, 1))   # some at the bounds
  y = jnp.argmax(linear_logits(w, b, x), -1).astype(jnp.int32)
  eps = 0.05
  res = jax.jit(_fgsm_variant, static_argnums=(4, 5))(w, b, x, y, eps, norm)
  dw = (w[:, 1] - w[:, 0])[None] * jnp.where(y == 0, 1.0, -1.0)[:, None]
  if norm == "linf":
    step = eps * jnp.sign(dw)
  else:
    step = eps * dw / jnp.linalg.norm(dw, axis=1, keepdims=True)
  expect = jnp.clip(x.reshape(len(y), -1) + step, 0, 1)
  chex.assert_trees_all_close(res.x_adv.reshape(len(y), -1), expect,
                              atol=1e-6)
  A.check_adversarial(x, res.x_adv, eps, norm)


def _fgsm_variant(w, b, x, y, eps, norm):
  return A.fgsm(functools.partial(linear_logits, w, b), x, y, eps=eps,
                norm=norm)


class FgsmVariants(chex.TestCase):
  """chex variants: the attack is the same with and without jit."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_fgsm_jit_equals_eager(self):
    w, b, x, y = linear_problem(4, 3)
    fn = self.variant(lambda x, y: A.fgsm(
        functools.partial(linear_logits, w, b), x, y, eps=0.05, norm="linf"))
    ref = _fgsm_variant(w, b, x, y, 0.05, "linf")
    chex.assert_trees_all_close(fn(x, y), ref, atol=1e-6)


def test_loop_forms_agree():
  w, b, x, y = linear_problem(5, 3, n=16)
  f = functools.partial(linear_logits, w, b)
  outs = [jax.jit(lambda x, y, loop=loop: A.pgd(
      f, x, y, eps=0.05, steps=3, loop=loop, loss="margin",
      rng=jax.random.PRNGKey(0)))(x, y) for loop in ("fori", "unrolled",
                                                     "scan")]
  for o in outs[1:]:
    chex.assert_trees_all_close(o, outs[0], atol=1e-6)


def test_restarts_never_worse_and_best_kept():
  w, b, x, y = linear_problem(6, 4)
  f = functools.partial(linear_logits, w, b)
  eps = jnp.asarray(closed_form(w, b, x, y, "l2") * 1.01, jnp.float32)
  run = jax.jit(lambda x, y, r: A.pgd(
      f, x, y, eps=eps, norm="l2", steps=5, loss="margin", loop="fori",
      restarts=r, rng=jax.random.PRNGKey(1)), static_argnums=2)
  one, four = run(x, y, 1), run(x, y, 4)
  assert int(four.success.sum()) >= int(one.success.sum())
  # success is what the returned points achieve
  np.testing.assert_array_equal(jnp.argmax(f(four.x_adv), -1) != y,
                                four.success)


# ---------------------------------------- ball, bounds, monotone (property)
@functools.partial(jax.jit, static_argnames=("norm", "eps_values", "nt"))
def _sweep_linear(w, b, x, y, key, *, norm, eps_values, nt):
  attack = functools.partial(A.pgd, norm=norm, steps=20, loss="margin",
                             num_targets=nt, loop="fori")
  return A.eps_sweep(attack, functools.partial(linear_logits, w, b), x, y,
                     eps_values, rng=key)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_property_sweep_ball_bounds_monotone(norm):
  """Seeded sweep over random linear models, inputs touching the bounds and
  budgets: every x_adv is in the ball and the box, and success is monotone
  in eps (exact attack on linear models)."""
  eps_values = (0.02, 0.05, 0.1, 0.2) if norm == "linf" else (
      0.1, 0.25, 0.5, 1.0)
  k = 3
  for seed in range(4):
    w, b = linear_model(100 + seed, k)
    x = interior_batch(seed, 32, lo=0.0, hi=1.0)   # touches the bounds
    x = x.at[:8].set(jnp.round(x[:8]))             # exactly on the bounds
    y = jnp.argmax(linear_logits(w, b, x), -1).astype(jnp.int32)
    key = jax.random.PRNGKey(seed)
    succ = _sweep_linear(w, b, x, y, key, norm=norm, eps_values=eps_values,
                         nt=k - 1)
    chex.assert_shape(succ, (len(eps_values), 32))
    assert not A.monotonicity_warnings(eps_values, succ)
    assert np.all(np.diff(np.asarray(succ, int), axis=0) >= 0)
    for e, s in zip(eps_values, succ):
      res = pgd_linear(w, b, x, y, jnp.float32(e), key, norm=norm,
                       num_targets=k - 1, steps=20, bounded=True)
      A.check_adversarial(x, res.x_adv, e, norm, (0.0, 1.0))
      np.testing.assert_array_equal(np.asarray(res.success), np.asarray(s))


def test_eps_sweep_metrics():
  succ = jnp.asarray([[0, 1, 0, 0], [1, 1, 0, 1]], bool)
  correct = jnp.asarray([1, 1, 0, 1], bool)
  np.testing.assert_allclose(A.robust_accuracy_curve(succ, correct),
                             [0.5, 0.0])
  np.testing.assert_allclose(A.attack_success_ratio(succ, correct),
                             [1 / 3, 1.0])
  np.testing.assert_allclose(A.attack_success_ratio(succ, correct, "all"),
                             [0.5, 1.0])
  assert A.monotonicity_warnings([0.1, 0.2], succ) == []
  assert A.monotonicity_warnings([0.2, 0.1], succ)   # reversed: lost ones


# --------------------------------------------------- validation / self-checks
def test_validation_errors_name_the_argument():
  w, b, x, y = linear_problem(7, 3, n=4)
  f = functools.partial(linear_logits, w, b)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="eps"):
    A.pgd(f, x, y, eps=-0.1, rng=key)
  with pytest.raises(ValueError, match="norm"):
    A.pgd(f, x, y, eps=0.1, norm="l3", rng=key)
  with pytest.raises(ValueError, match=r"labels y must lie in \[0, 3\)"):
    A.pgd(f, x, y + 3, eps=0.1, rng=key)
  with pytest.raises(ValueError, match="rank >= 2"):
    A.pgd(f, x.reshape(-1)[:4], y, eps=0.1, rng=key)
  with pytest.raises(ValueError, match="empty batch"):
    A.pgd(f, x[:0], y[:0], eps=0.1, rng=key)
  with pytest.raises(ValueError, match="loop"):
    A.pgd(f, x, y, eps=0.1, loop="while", rng=key)
  with pytest.raises(ValueError, match="rng"):
    A.pgd(f, x, y, eps=0.1)
  with pytest.raises(ValueError, match="eps_values"):
    A.eps_sweep(A.pgd, f, x, y, [0.1, -1.0])
  with pytest.raises(ValueError, match="norm"):
    A.deepfool(f, x, y, norm="l1")


def test_check_adversarial_catches_violations():
  x = jnp.full((2,) + SHAPE, 0.5)
  A.check_adversarial(x, x + 0.1, 0.1, "linf")
  with pytest.raises(AssertionError, match="ball"):
    A.check_adversarial(x, x + 0.1 + 1e-4, 0.1, "linf")
  with pytest.raises(AssertionError, match="ball"):
    A.check_adversarial(x, x + 0.1, 0.1, "l2")          # l2 norm is 0.4
  with pytest.raises(AssertionError, match="bounds"):
    A.check_adversarial(x, x + 0.6, 1.0, "linf")


def test_run_attack_verifies_and_warns_on_zero_gradients():
  w, b, x, y = linear_problem(8, 3, n=8)
  res, warns = A.run_attack(A.pgd, functools.partial(linear_logits, w, b),
                            x, y, eps=0.05, norm="l2", steps=3, loop="fori")
  assert warns == []
  A.check_adversarial(x, res.x_adv, 0.05, "l2")
  flat = lambda x: jnp.zeros((x.shape[0], 3)) + 0.0 * x.sum()  # masked
  with pytest.warns(RuntimeWarning, match="gradient"):
    res, warns = A.run_attack(A.pgd, flat, x, jnp.zeros(8, jnp.int32),
                              eps=0.05, steps=2, loop="fori")
  assert warns and not bool(jnp.any(res.success))


def test_deepfool_edge_cases():
  w, b, x, y = linear_problem(9, 3, n=8)
  f = functools.partial(linear_logits, w, b)
  wrong = (y + 1) % 3
  res = A.deepfool(f, x, wrong, steps=3)              # already misclassified
  np.testing.assert_array_equal(res.perturbation_norm, 0.0)
  const = lambda x: jnp.tile(jnp.asarray([[1.0, 0.0]]), (x.shape[0], 1))
  res = A.deepfool(const, x, jnp.zeros(8, jnp.int32), steps=3)
  assert not bool(jnp.any(res.success))
  assert bool(jnp.all(jnp.isinf(res.perturbation_norm)))


# -------------------------------------------------- invertible toy + invariance
@dataclasses.dataclass(frozen=True)
class OrthoFlat(InvertibleModel):
  """Tiny bijection for tests: z = flatten(x) @ Q + c, Q random orthogonal."""

  def init(self, rng, x):
    self.check_input(x)
    k1, k2 = jax.random.split(rng)
    q, _ = jnp.linalg.qr(jax.random.normal(k1, (self.latent_dim,) * 2))
    return {"q": q, "c": 0.1 * jax.random.normal(k2, (self.latent_dim,))}

  def forward(self, params, x):
    self.check_input(x)
    z = x.reshape((x.shape[0], -1)) @ params["q"] + params["c"]
    return z, jnp.zeros((x.shape[0],))

  def inverse(self, params, z):
    x = (z - params["c"]) @ params["q"].T
    return x.reshape((z.shape[0],) + tuple(self.input_shape))


def test_metameric_sample_has_logit_source_logits():
  model = OrthoFlat(SHAPE, 3)
  xa, xb = interior_batch(1, 6), interior_batch(2, 6)
  params = model.init(jax.random.PRNGKey(0), xa)
  met = jax.jit(A.metameric_sample, static_argnums=0)(model, params, xa, xb)
  chex.assert_shape(met, xa.shape)
  np.testing.assert_allclose(model.logits(params, met),
                             model.logits(params, xa), atol=1e-4)
  zn_met = model.split(model.forward(params, met)[0])[1]
  zn_b = model.split(model.forward(params, xb)[0])[1]
  np.testing.assert_allclose(zn_met, zn_b, atol=1e-4)
  with pytest.raises(ValueError, match="InvertibleModel"):
    A.metameric_sample(object(), params, xa, xb)


def test_nuisance_interpolation_endpoints_and_logits():
  model = OrthoFlat(SHAPE, 3)
  xa, xb = interior_batch(3, 4), interior_batch(4, 4)
  params = model.init(jax.random.PRNGKey(1), xa)
  frames = A.nuisance_interpolation(model, params, xa, xb, num_steps=5)
  chex.assert_shape(frames, (5,) + xa.shape)
  np.testing.assert_allclose(frames[0], xa, atol=1e-5)
  np.testing.assert_allclose(frames[-1], A.metameric_sample(model, params,
                                                            xa, xb), atol=1e-5)
  za = model.logits(params, xa)
  for fr in frames:
    np.testing.assert_allclose(model.logits(params, fr), za, atol=1e-4)


def test_nuisance_classifier_bounds_label_information():
  rng = np.random.default_rng(0)
  n, k, dim = 400, 4, 12
  y = rng.integers(0, k, n)
  centers = rng.normal(size=(k, dim)) * 3
  informative = centers[y] + rng.normal(size=(n, dim))
  noise = rng.normal(size=(n, dim))
  key = jax.random.PRNGKey(0)
  kw = dict(hidden=(32,), steps=200, lr=3e-3, batch_size=64, rng=key)
  tr, te, params = A.train_nuisance_classifier(
      informative[:300], y[:300], informative[300:], y[300:], **kw)
  assert float(te) > 0.9 and float(tr) > 0.9
  logits = A.nuisance_classifier_logits(params, jnp.asarray(informative[300:],
                                                            jnp.float32))
  np.testing.assert_allclose(jnp.mean(jnp.argmax(logits, -1) == y[300:]), te)
  _, te_noise, _ = A.train_nuisance_classifier(noise[:300], y[:300],
                                               noise[300:], y[300:], **kw)
  assert float(te_noise) < 0.45          # chance is 0.25


# ---------------------------------------------------------------- sharding
_SHARD_SCRIPT = textwrap.dedent("""
    import functools, json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh
    from advinv_jax import attacks as A
    assert len(jax.devices()) == 2, jax.devices()
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)
    x = jnp.asarray(rng.uniform(0, 1, (8, 4, 4, 1)), jnp.float32)
    y = jnp.argmax(x.reshape(8, -1) @ w, -1).astype(jnp.int32)
    def attack(x, y, key, eps):
      f = lambda x: x.reshape(x.shape[0], -1) @ w
      return A.pgd(f, x, y, eps=eps, norm="l2", steps=5, restarts=2,
                   loop="fori", rng=key)
    key = jax.random.PRNGKey(3)
    one = jax.jit(attack)(x, y, key, jnp.float32(0.3))
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    two = A.shard_batch_attack(attack, mesh)(x, y, key, jnp.float32(0.3))
    print(json.dumps({
        "ndev": len(two.x_adv.sharding.device_set),
        "max_diff": float(jnp.max(jnp.abs(one.x_adv - two.x_adv))),
        "same_success": bool(jnp.all(one.success == two.success)),
        "any_success": bool(jnp.any(one.success)),
        "all_success": bool(jnp.all(one.success))}))
""")


def test_sharded_two_devices_equals_one_device():
  env = subprocess_env(2)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", _SHARD_SCRIPT], env=env,
                       capture_output=True, text=True, timeout=120, cwd=root)
  assert out.returncode == 0, out.stderr[-2000:]
  r = json.loads(out.stdout.strip().splitlines()[-1])
  assert r["ndev"] == 2
  assert r["same_success"] and r["any_success"] and not r["all_success"]
  assert r["max_diff"] <= 1e-6


def test_bad_grad_flags_zero_and_nonfinite_rows():
  from advinv_jax.attacks import _common
  g = np.ones((6, 3, 2, 1), np.float32)
  g[0] = 0.0                          # all zero -> bad
  g[1, 0, 0, 0] = np.nan              # one NaN -> bad
  g[2, 1, 1, 0] = -np.inf             # one -Inf -> bad
  g[3] = 0.0
  g[3, 2, 1, 0] = 1e-30               # a single tiny non-zero -> ok
  g[4] = -g[4]                        # negative entries cancel nowhere -> ok
  bad = np.asarray(jax.jit(_common.bad_grad)(jnp.asarray(g)))
  np.testing.assert_array_equal(bad, [True, True, True, False, False, False])
  # The PGD loop reports them per example: a constant model has zero grads.
  res = A.pgd(lambda x: jnp.zeros((x.shape[0], 3)) + 0 * x.sum(),
                    jnp.full((4, 2, 2, 1), 0.5), jnp.zeros(4, jnp.int32),
                    eps=0.1, steps=3, random_start=False)
  np.testing.assert_array_equal(np.asarray(res.bad_grad_steps), [3, 3, 3, 3])
