"""FAB / FAB-T: closed forms on linear models, the box-constrained
projections against linear programs, bad input, jit = no jit."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog

from advinv_jax import attacks as A
from advinv_jax.attacks._fab import project_hyperplane
from tests._helpers import only_traced, recording_logits_fn
from test_autoattack import (D, assert_closed_form, at_factors,  # noqa: I100
                             linear)


# ---------------------------------------------------------------- closed forms
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_exact_on_linear_models(norm):
  """FAB-T (all 4 targets of a 5-class model) and FAB (untargeted) at 1.01x
  the exact minimal distance succeed on >= 99% of the inputs, at 0.99x on
  none (bounds=None, where the closed form holds)."""
  n = 48
  f, x, y, dist = linear(21, 5, n)
  xx, yy, eps = at_factors(x, y, dist[norm])
  for targeted in (True, False):
    res = jax.jit(lambda xx, yy, eps, t=targeted: A.fab(
        f, xx, yy, norm=norm, eps=eps, targeted=t, bounds=None))(xx, yy, eps)
    assert_closed_form(res.success, n)
    pn = np.asarray(res.perturbation_norm)
    assert np.all(pn[:n] >= dist[norm] * (1 - 1e-5))   # never below exact


def test_fab_l1_and_the_box_on_binary_linear_models():
  """Binary linear model, inputs uniform in the box [0, 1]: the exact
  minimal perturbation inside the box is the box-constrained projection of
  x onto the decision hyperplane, computed here by a linear program (linf,
  l1) or bisection on the KKT multiplier (l2). FAB at 1.01x of it succeeds
  on >= 99%, at 0.99x on none; inputs the box cannot make adversarial
  never succeed. l1 also without bounds (closed form)."""
  n = 40
  f, x, y, dist = linear(23, 2, n)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(0.0, 1.0, size=(n, D)), jnp.float32)
  y = jnp.argmax(f(x), -1).astype(jnp.int32)
  wcol = np.asarray(jax.jacobian(lambda v: f(v[None])[0])(x[0]))   # [2, D]
  z = np.asarray(f(x), np.float64)
  yn = np.asarray(y)
  w = wcol[1 - yn] - wcol[yn]                       # grad of z_j - z_y
  c = z[np.arange(n), 1 - yn] - z[np.arange(n), yn]  # < 0: w.x - b
  xn = np.asarray(x, np.float64)
  for norm in ("linf", "l2", "l1"):
    exact = np.array([np.sum(np.abs(box_projection(xn[i], w[i], c[i], norm)))
                      if norm == "l1" else
                      _norm(box_projection(xn[i], w[i], c[i], norm), norm)
                      for i in range(n)])
    ok = np.isfinite(exact)
    free = np.abs(c) / {"linf": np.abs(w).sum(-1), "l2": np.linalg.norm(
        w, axis=-1), "l1": np.abs(w).max(-1)}[norm]
    assert np.mean(exact > free * 1.001) > 0.2, norm      # the box binds
    e = np.where(ok, exact, 1.0)
    xx, yy, eps = at_factors(x, y, e)
    res = jax.jit(lambda xx, yy, eps, norm=norm: A.fab(
        f, xx, yy, norm=norm, eps=eps))(xx, yy, eps)
    s = np.asarray(res.success)
    assert s[:n][ok].mean() >= 0.99 and not s[n:][ok].any(), norm
    assert not s[:n][~ok].any() and not s[n:][~ok].any(), norm
  fu, xu, yu, _ = linear(24, 3, n)
  wu = np.asarray(jax.jacobian(lambda v: fu(v[None])[0])(xu[0]))    # [3, D]
  zu = np.asarray(fu(xu), np.float64)
  yun = np.asarray(yu)
  d1 = np.full(n, np.inf)
  for j in range(3):
    dual = np.maximum(np.abs(wu[yun] - wu[j]).max(-1), 1e-12)
    d1 = np.where(j == yun, d1, np.minimum(
        d1, (zu[np.arange(n), yun] - zu[:, j]) / dual))
  xx, yy, eps = at_factors(xu, yu, d1)
  assert_closed_form(A.fab(fu, xx, yy, norm="l1", eps=eps,
                           bounds=None).success, n)


def box_projection(p, w, c, norm):
  """Reference for the box-constrained projection in [0, 1]: ``d`` with
  ``w.(p + d) = w.p - c``; None-like (inf) where the box cannot reach."""
  if c < 0:
    w, c = -w, -c
  room = np.where(w > 0, p, 1.0 - p)
  room = np.where(w == 0, 0.0, room)
  aw, sgn = np.abs(w), np.sign(w)
  if np.sum(aw * room) < c:
    return np.full_like(p, np.inf)
  dd = len(p)
  if norm == "l2":
    lo, hi = 0.0, 1.0
    while np.sum(aw * np.minimum(hi * aw, room)) < c:
      hi *= 2.0
    for _ in range(200):
      mu = 0.5 * (lo + hi)
      lo, hi = ((mu, hi) if np.sum(aw * np.minimum(mu * aw, room)) < c
                else (lo, mu))
    return -sgn * np.minimum(hi * aw, room)
  # LP over the movements a_i in [0, room_i] (and t = max a_i for linf).
  if norm == "l1":
    res = linprog(np.ones(dd), A_eq=aw[None], b_eq=[c],
                  bounds=list(zip(np.zeros(dd), room)), method="highs")
    return -sgn * res.x
  cost = np.r_[np.zeros(dd), 1.0]
  a_ub = np.c_[np.eye(dd), -np.ones(dd)]
  res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(dd),
                A_eq=np.r_[aw, 0.0][None], b_eq=[c],
                bounds=list(zip(np.zeros(dd), room)) + [(0, None)],
                method="highs")
  return -sgn * res.x[:dd]


def _norm(d, norm):
  return np.max(np.abs(d)) if norm == "linf" else np.sqrt(np.sum(d * d))


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_box_projection_matches_reference(norm):
  """project_hyperplane in the box [0, 1] against linear programs (linf,
  l1) and bisection (l2): the same minimal norm, on the hyperplane, inside
  the box; unreachable rows move every coordinate to its face."""
  rng = np.random.default_rng(1)
  m, dd = 64, 12
  p = rng.uniform(0, 1, size=(m, dd))
  w = rng.normal(size=(m, dd)) * (rng.uniform(size=(m, dd)) > 0.2)
  c = rng.normal(size=(m,)) * rng.choice([0.3, 1.0, 4.0], size=m)
  got = np.asarray(project_hyperplane(jnp.asarray(p), jnp.asarray(w),
                                      jnp.asarray(c), norm, (0.0, 1.0)))
  nrm = {"linf": lambda d: np.max(np.abs(d)), "l1": lambda d: np.sum(
      np.abs(d)), "l2": lambda d: np.sqrt(np.sum(d * d))}[norm]
  reached = 0
  for i in range(m):
    ref = box_projection(p[i], w[i], c[i], norm)
    q = p[i] + got[i]
    assert np.all(q >= -1e-6) and np.all(q <= 1 + 1e-6)
    if np.all(np.isfinite(ref)):
      reached += 1
      assert abs(w[i] @ got[i] + c[i]) < 1e-4 * (1 + abs(c[i]))
      np.testing.assert_allclose(nrm(got[i]), nrm(ref), rtol=1e-4,
                                 atol=1e-6)
    else:           # the box point closest to the hyperplane
      face = np.where(w[i] * np.sign(c[i]) > 0, 0.0, 1.0)
      np.testing.assert_allclose(q[w[i] != 0], face[w[i] != 0], atol=1e-6)
  assert 0.3 * m < reached < m


# ---------------------------------------------------------------- bad input
def test_fab_bad_input_errors_before_compilation():
  f, calls = recording_logits_fn()
  x = jnp.full((4, D), 0.5)
  y = jnp.zeros((4,), jnp.int32)
  cases = [
      (dict(norm="l3"), "norm"), (dict(norm="linf", targeted="yes"),
                                  "targeted"),
      (dict(norm="linf", n_target_classes=0), "n_target_classes"),
      (dict(norm="linf", steps=0), "steps"),
      (dict(norm="linf", restarts=0), "restarts"),
      (dict(norm="linf", alpha_max=1.5), "alpha_max"),
      (dict(norm="linf", eta=0.5), "eta"), (dict(norm="linf", beta=1.0),
                                            "beta"),
      (dict(norm="linf", restarts=2, rng=jax.random.PRNGKey(0)), "eps"),
      (dict(norm="linf", restarts=2, eps=0.1), "rng"),
      (dict(norm="linf", eps=-0.1), "eps"),
      (dict(norm="linf", target=jnp.zeros((3,), jnp.int32)), "target"),
      (dict(norm="linf", bounds=(1.0, 0.0)), "bounds"),
      (dict(norm="linf", loop="while"), "loop")]
  for kw, match in cases:
    with pytest.raises(ValueError, match=match):
      A.fab(f, x, y, **kw)
  with pytest.raises(ValueError, match="labels"):
    A.fab(f, x, y + 7, norm="l2")
  assert only_traced(calls), calls


# ---------------------------------------------------------------- jit
@functools.partial(jax.jit, static_argnums=0)
def _jitted_fab(f, img, y, eps, key):
  return A.fab(f, img, y, norm="l2", eps=eps, n_target_classes=2,
               restarts=2, steps=20, rng=key)


class FabJitTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_equals_no_jit(self):
    """Images [B, 4, 4, 1] in the box, 2 targets x 2 restarts (random
    starts), eps given: the same result with and without jit."""
    n = 6
    f, x, y, dist = linear(25, 4, n)
    img = x.reshape((n, 4, 4, 1))
    eps = float(np.median(dist["l2"]))

    @self.variant
    def run(v, key):
      return A.fab(f, v, y, norm="l2", eps=eps, n_target_classes=2,
                   restarts=2, steps=20, rng=key)

    a = run(img, jax.random.PRNGKey(0))
    b = _jitted_fab(f, img, y, eps, jax.random.PRNGKey(0))
    np.testing.assert_allclose(a.x_adv, b.x_adv, atol=1e-5)
    np.testing.assert_array_equal(a.success, b.success)
    assert 0 < int(np.sum(a.success)) < n
