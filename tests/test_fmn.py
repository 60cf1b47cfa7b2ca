"""Fast Minimum-Norm attack: closed forms on linear models, validity of the
returned points, at least as tight as DeepFool on a small MLP, jit / no-jit,
loop forms, starting points and argument validation."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advinv_jax import attacks as A
from test_attacks import closed_form, linear_logits  # tests/ is on sys.path

SHAPE = (4, 4, 1)          # tiny images: d = 16
D = 16


# ----------------------------------------------------------------- helpers
def binary_linear(seed, n=48):
  """Two-class linear model with logits ``[0, w.x + b]``: the decision
  function is ``w.x + b`` and the closed-form distances are
  ``|w.x + b| / ||w||_2`` (l2) and ``|w.x + b| / ||w||_1`` (linf)."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(D,))
  b = rng.normal()
  ww = jnp.asarray(np.stack([np.zeros(D), w], 1), jnp.float32)
  bb = jnp.asarray([0.0, b], jnp.float32)
  x = jnp.asarray(rng.uniform(0.3, 0.7, size=(n,) + SHAPE), jnp.float32)
  y = jnp.argmax(linear_logits(ww, bb, x), -1).astype(jnp.int32)
  return ww, bb, x, y, w, b


def multiclass_linear(seed, k, n=48):
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.normal(size=(D, k)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(k,)), jnp.float32)
  x = jnp.asarray(rng.uniform(0.3, 0.7, size=(n,) + SHAPE), jnp.float32)
  y = jnp.argmax(linear_logits(w, b, x), -1).astype(jnp.int32)
  return w, b, x, y


def mlp(seed, k=5, hidden=32):
  """A fixed random tanh MLP ``f32[B,4,4,1] -> f32[B,k]`` (nonlinear enough
  that FMN and DeepFool disagree)."""
  rng = np.random.default_rng(seed)
  w1 = jnp.asarray(rng.normal(size=(D, hidden)) * 3 / np.sqrt(D), jnp.float32)
  b1 = jnp.asarray(rng.normal(size=(hidden,)), jnp.float32)
  w2 = jnp.asarray(rng.normal(size=(hidden, k)) * 3 / np.sqrt(hidden),
                   jnp.float32)
  b2 = jnp.asarray(rng.normal(size=(k,)), jnp.float32)

  def logits_fn(x):
    return jnp.tanh(x.reshape((x.shape[0], -1)) @ w1 + b1) @ w2 + b2
  return logits_fn


def mlp_problem(seed, n=128):
  f = mlp(seed)
  rng = np.random.default_rng(seed + 7)
  x = jnp.asarray(rng.uniform(0.0, 1.0, size=(n,) + SHAPE), jnp.float32)
  y = jnp.argmax(f(x), -1).astype(jnp.int32)
  return f, x, y


def norm_of(d, norm):
  d = np.asarray(d, np.float64).reshape(len(d), -1)
  return np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)


def run_fmn(f, x, y, **kw):
  kw.setdefault("loop", "fori")
  return jax.jit(functools.partial(A.fmn, f, **kw))(x, y)


# ----------------------------------------------------- closed forms (linear)
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_fmn_binary_linear_closed_form(norm):
  ww, bb, x, y, w, b = binary_linear(1)
  res = run_fmn(functools.partial(linear_logits, ww, bb), x, y, norm=norm,
                bounds=None)
  f = np.asarray(x, np.float64).reshape(len(y), -1) @ w + b
  dual = np.abs(w).sum() if norm == "linf" else np.linalg.norm(w)
  exact = np.abs(f) / dual
  assert bool(jnp.all(res.success))
  got = np.asarray(res.perturbation_norm, np.float64)
  np.testing.assert_allclose(got, exact, rtol=1e-2)
  assert np.all(got >= exact * (1 - 1e-4))      # nothing beats the minimum


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_fmn_multiclass_linear_closed_form(norm):
  w, b, x, y = multiclass_linear(5, 5)
  res = run_fmn(functools.partial(linear_logits, w, b), x, y, norm=norm,
                bounds=None)
  exact = closed_form(w, b, x, y, norm)
  assert bool(jnp.all(res.success))
  got = np.asarray(res.perturbation_norm, np.float64)
  np.testing.assert_allclose(got, exact, rtol=1e-2)
  assert np.all(got >= exact * (1 - 1e-4))


def test_fmn_starting_points_reach_closed_form():
  """Starting from far adversarial points (another example of the other
  class, pushed 3x away) still ends at the boundary distance."""
  ww, bb, x, y, _, _ = binary_linear(2)
  f = functools.partial(linear_logits, ww, bb)
  other = np.asarray(y)
  idx = np.array([np.flatnonzero(other != other[i])[0] for i in range(len(y))])
  start = x + 3.0 * (x[idx] - x)
  # The crossing on the segment lies 35-190x farther than the boundary and
  # the radius shrinks by (1 - gamma_k) per step: this needs ~100 steps.
  res = run_fmn(f, x, y, norm="l2", bounds=None, starting_points=start)
  assert bool(jnp.all(res.success))
  np.testing.assert_allclose(res.perturbation_norm,
                             closed_form(ww, bb, x, y, "l2"), rtol=1e-2)


# ------------------------------------------------- validity of the results
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("targeted", [False, True])
def test_fmn_points_adversarial_in_bounds_norms_consistent(norm, targeted):
  f, x, y = mlp_problem(3, n=32)
  labels = np.asarray(y).copy()
  if targeted:
    labels = (labels + 1) % 5
    labels[:3] = np.asarray(y)[:3]       # target = current class: done
  else:
    labels[:3] = (labels[:3] + 1) % 5    # already misclassified
  labels = jnp.asarray(labels, jnp.int32)
  res = run_fmn(f, x, labels, norm=norm, targeted=targeted, steps=60)
  succ = np.asarray(res.success)
  assert succ.mean() > 0.9
  pred = np.asarray(jnp.argmax(f(res.x_adv), -1))
  hit = pred == np.asarray(labels) if targeted else pred != np.asarray(labels)
  assert np.all(hit[succ])
  xa = np.asarray(res.x_adv)
  assert xa.min() >= 0.0 and xa.max() <= 1.0
  pn = np.asarray(res.perturbation_norm)
  np.testing.assert_allclose(pn[succ], norm_of(xa - np.asarray(x), norm)[succ],
                             rtol=0, atol=1e-5)
  assert np.all(np.isinf(pn[~succ]))
  # Inputs that already meet the goal come back unchanged, norm 0.
  assert np.all(succ[:3]) and np.all(pn[:3] == 0.0)
  np.testing.assert_array_equal(xa[:3], np.asarray(x)[:3])
  chex.assert_shape(res.x_adv, x.shape)
  assert res.bad_grad_steps.dtype == jnp.int32
  assert int(res.bad_grad_steps.sum()) == 0


# ------------------------------------------------------ nonlinear: vs DeepFool
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_fmn_at_least_as_tight_as_deepfool_on_mlp(norm):
  """Where FMN is looser than DeepFool (~5%), it crossed into another class
  than DeepFool did (a local-basin effect of the max-logit loss)."""
  f, x, y = mlp_problem(0)
  fm = run_fmn(f, x, y, norm=norm)
  df = jax.jit(functools.partial(A.deepfool, f, norm=norm, candidates=4))(x, y)
  both = np.asarray(fm.success & df.success)
  assert both.mean() > 0.95
  ratio = (np.asarray(fm.perturbation_norm)[both] /
           np.asarray(df.perturbation_norm)[both])
  assert np.mean(ratio <= 1.05) >= 0.9, np.sort(ratio)[-12:]
  assert np.median(ratio) < 1.0


# --------------------------------------------------- jit, loops, validation
class FmnVariants(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_and_eager_agree(self):
    f, x, y = mlp_problem(4, n=16)
    attack = self.variant(functools.partial(A.fmn, f, norm="l2", steps=30,
                                            loop="fori"))
    res = attack(x, y)
    ref = run_fmn(f, x, y, norm="l2", steps=30)
    np.testing.assert_array_equal(res.success, ref.success)
    np.testing.assert_array_equal(res.bad_grad_steps, ref.bad_grad_steps)
    chex.assert_trees_all_close(res.perturbation_norm, ref.perturbation_norm,
                                rtol=1e-5)
    chex.assert_trees_all_close(res.x_adv, ref.x_adv, atol=1e-5)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_loop_forms_agree(norm):
  f, x, y = mlp_problem(5, n=16)
  out = {loop: run_fmn(f, x, y, norm=norm, steps=12, loop=loop)
         for loop in ("fori", "unrolled", "scan")}
  for loop in ("unrolled", "scan"):
    np.testing.assert_array_equal(out[loop].success, out["fori"].success)
    np.testing.assert_allclose(out[loop].perturbation_norm,
                               out["fori"].perturbation_norm, rtol=0,
                               atol=1e-5)


def test_validation_errors_before_any_call():
  w, b, x, y = multiclass_linear(7, 3, n=4)
  calls = []

  def f(xx):
    calls.append(1)
    return linear_logits(w, b, xx)

  bad = [(dict(steps=0), "steps"), (dict(norm="l1"), "norm"),
         (dict(gamma_init=0.0, gamma_final=0.0), "gamma"),
         (dict(gamma_init=1.0), "gamma"),
         (dict(gamma_init=0.01, gamma_final=0.05), "gamma"),
         (dict(alpha_init=0.0), "alpha_init"),
         (dict(alpha_final=-1.0), "alpha_final"),
         (dict(loop="while"), "loop")]
  for kw, name in bad:
    with pytest.raises(ValueError, match=name):
      A.fmn(f, x, y, **kw)
  assert not calls                     # raised before any trace of logits_fn
  with pytest.raises(ValueError, match="starting_points"):
    A.fmn(f, x, y, starting_points=x[:2])
  with pytest.raises(ValueError, match=r"labels y must lie in \[0, 3\)"):
    A.fmn(f, x, y + 3)
