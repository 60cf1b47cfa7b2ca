"""APGD, Square and AutoAttack: closed forms on linear models, sanity flags,
bad input, any per-example shape, masked AutoAttack = its members by hand."""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advinv_jax import attacks as A
from tests._helpers import only_traced, recording_logits_fn

D = 16


def linear(seed, k, n):
  """Random linear logits on vectors ``[n, D]`` with labels = predictions,
  and the exact minimal distance to the boundary per norm."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(D, k))
  b = rng.normal(size=(k,))
  x = rng.uniform(0.3, 0.7, size=(n, D))
  z = x @ w + b
  y = z.argmax(1)
  dist = {}
  for norm in ("linf", "l2"):
    d = np.full(n, np.inf)
    for j in range(k):
      dw = w[:, y] - w[:, j:j + 1]                        # [D, n]
      dual = (np.abs(dw).sum(0) if norm == "linf"
              else np.linalg.norm(dw, axis=0))
      dj = (z[np.arange(n), y] - z[:, j]) / np.where(dual > 0, dual, 1.0)
      d = np.where(np.arange(k)[j] == y, d, np.minimum(d, dj))
    dist[norm] = d
  wj, bj = jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)
  fn = lambda v: v.reshape((v.shape[0], -1)) @ wj + bj  # noqa: E731
  return fn, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32), dist


def at_factors(x, y, d):
  """The batch twice: radii 1.01 d (first half) and 0.99 d (second)."""
  eps = jnp.asarray(np.concatenate([1.01 * d, 0.99 * d]), jnp.float32)
  return jnp.concatenate([x, x]), jnp.concatenate([y, y]), eps


def assert_closed_form(success, n):
  s = np.asarray(success)
  assert s[:n].mean() >= 0.99, s[:n].mean()
  assert not s[n:].any(), s[n:].sum()


# ---------------------------------------------------------------- closed forms
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_exact_on_linear_models(norm):
  """Binary: APGD-CE; 5 classes: APGD-T (targeted DLR, all 4 targets). Both
  at 1.01x the exact minimal distance succeed, at 0.99x never."""
  n = 48
  for k, kw in ((2, dict(loss="ce")),
                (5, dict(loss="dlr", targeted=True, num_targets=4))):
    f, x, y, dist = linear(k, k, n)
    xx, yy, eps = at_factors(x, y, dist[norm])
    run = jax.jit(lambda xx, yy, eps, key, f=f, kw=kw: A.apgd(
        f, xx, yy, eps=eps, norm=norm, steps=100, bounds=None, rng=key,
        **kw))
    res = run(xx, yy, eps, jax.random.PRNGKey(0))
    assert_closed_form(res.success, n)
    assert np.all(np.asarray(res.perturbation_norm) <=
                  np.asarray(eps) * (1 + 1e-5))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_exact_on_binary_linear_models(norm):
  """Square (no gradients) on a binary linear model, [B, D] vectors (the
  random-subset fallback) and linf also on [B, 4, 4, 1] images (square
  windows): >= 99% at 1.01x the exact distance, none at 0.99x; per-example
  query counts stop at success."""
  n = 48
  f, x, y, dist = linear(11, 2, n)
  xx, yy, eps = at_factors(x, y, dist[norm])
  shapes = [(2 * n, D)] + ([(2 * n, 4, 4, 1)] if norm == "linf" else [])
  for shape in shapes:
    run = jax.jit(lambda xx, yy, eps, key: A.square(
        f, xx, yy, eps=eps, norm=norm, queries=5000, bounds=None, rng=key))
    res = run(xx.reshape(shape), yy, eps, jax.random.PRNGKey(1))
    assert_closed_form(res.success, n)
    q = np.asarray(res.queries)
    assert np.all(q[n:] == 5000) and q[:n].max() < 5000
    assert np.all(np.asarray(res.perturbation_norm) <=
                  np.asarray(eps) * (1 + 1e-5))


# ---------------------------------------------------------------- flags
def test_flags_fire_on_gradient_masking_and_probability_outputs():
  """A model whose outputs are a saturating softmax of stop_gradient'ed
  logits: APGD sees zero gradients and finds nothing, the gradient-free
  Square breaks inputs -> gradient_masking, zero_gradients and
  probability_outputs fire; a plain model raises none of them."""
  n = 16
  f, x, y, dist = linear(3, 2, n)
  eps = float(np.quantile(dist["linf"], 0.5) * 1.5)
  masked = lambda v: jax.nn.softmax(  # noqa: E731
      10.0 * jax.lax.stop_gradient(f(v)), axis=-1)
  kw = dict(eps=eps, attacks=("apgd-ce", "square"), steps=10, queries=300,
            bounds=None, rng=jax.random.PRNGKey(0))
  res = A.autoattack(masked, x, y, **kw)
  per = np.asarray(res.per_attack_success)
  assert per[0] == 0 and per[1] > 0
  fl = {k: bool(v) for k, v in res.flags.items()}
  assert fl["gradient_masking"] and fl["zero_gradients"]
  assert fl["probability_outputs"] and not fl["randomized"]
  assert any("gradient masking" in w for w in A.autoattack_warnings(res))
  plain = A.autoattack(f, x, y, **kw)
  fp = {k: bool(v) for k, v in plain.flags.items()}
  assert not (fp["gradient_masking"] or fp["zero_gradients"] or
              fp["probability_outputs"] or fp["outside_eps_ball"] or
              fp["nonfinite"])
  assert np.asarray(plain.per_attack_success)[0] > 0
  # Every returned point lies in the ball; robust accuracy is consistent.
  A.check_adversarial(x, plain.x_adv, eps, "linf", bounds=None)
  assert float(plain.robust_accuracy) == pytest.approx(
      float(np.mean(np.asarray(plain.clean_correct & ~plain.success))))


def test_randomized_model_flag_and_rand_version():
  """version='rand' takes logits_fn(x, key): two clean forwards under two
  keys disagree -> 'randomized'."""
  n = 8
  f, x, y, dist = linear(5, 3, n)
  noisy = lambda v, key: f(v) + 0.1 * jax.random.normal(  # noqa: E731
      key, (v.shape[0], 3))
  res = A.autoattack(noisy, x, y, eps=0.05, version="rand",
                     attacks=("apgd-ce",), steps=3, eot_iter=2, bounds=None,
                     rng=jax.random.PRNGKey(0))
  assert bool(res.flags["randomized"])
  assert res.attacks == ("apgd-ce",)



# ---------------------------------------------------------------- bad input
def test_bad_input_errors_before_compilation():
  f, calls = recording_logits_fn()
  x = jnp.full((4, D), 0.5)
  y = jnp.zeros((4,), jnp.int32)
  key = jax.random.PRNGKey(0)
  cases = [
      (dict(eps=-0.1), "eps"), (dict(eps=0.1, version="fast"), "version"),
      (dict(eps=0.1, norm="l3"), "norm"), (dict(eps=0.1, queries=0),
                                           "queries"),
      (dict(eps=0.1, steps=0), "steps"), (dict(eps=0.1, mode="jit"), "mode"),
      (dict(eps=0.1, attacks=("fab-x",)), "attacks"),
      (dict(eps=0.1, num_targets=0), "num_targets"),
      (dict(eps=0.1, version="custom"), "attacks"),
      (dict(eps=0.1, fab_steps=0), "fab_steps"),
      (dict(eps=0.1, verbose=3), "verbose"),
      (dict(eps=0.1, verbose=True, mode="masked"), "verbose")]
  for kw, match in cases:
    with pytest.raises(ValueError, match=match):
      A.autoattack(f, x, y, rng=key, **kw)
  with pytest.raises(ValueError, match="labels"):
    A.autoattack(f, x, y + 7, eps=0.1, rng=key)
  with pytest.raises(ValueError, match="target"):
    A.fmn(f, x, y, target=y, targeted=True)
  with pytest.raises(ValueError, match="target"):
    A.fmn(f, x, y, target=y[:2])
  with pytest.raises(ValueError, match="queries"):
    A.square(f, x, y, eps=0.1, queries=-5, rng=key)
  with pytest.raises(ValueError, match="eps"):
    A.square(f, x, y, eps=-1.0, rng=key)
  with pytest.raises(ValueError, match="steps"):
    A.apgd(f, x, y, eps=0.1, steps=0, rng=key)
  with pytest.raises(ValueError, match="loss"):
    A.apgd(f, x, y, eps=0.1, loss="margin", rng=key)
  with pytest.raises(ValueError, match="rng"):
    A.apgd(f, x, y, eps=0.1)
  # Only abstract traces (eval_shape) happened, never a concrete call.
  assert only_traced(calls), calls


# ---------------------------------------------------------------- shapes
def test_every_attack_takes_vectors_and_matches_images():
  """pgd, fgsm, deepfool, fmn, apgd and square on [B, D] vectors give the
  same points as on the same data shaped [B, 4, 4, 1] (square: the image
  path differs by design, so only its success on vectors is checked)."""
  n = 8
  f, x, y, _ = linear(9, 3, n)
  key = jax.random.PRNGKey(0)
  img = x.reshape((n, 4, 4, 1))

  @jax.jit
  def run_all(v):
    return {
        "pgd": A.pgd(f, v, y, eps=0.1, steps=3, rng=key),
        "fgsm": A.fgsm(f, v, y, eps=0.1),
        "deepfool": A.deepfool(f, v, y, norm="l2", steps=5, refine_steps=4),
        "fmn": A.fmn(f, v, y, norm="linf", steps=5),
        "apgd": A.apgd(f, v, y, eps=0.1, norm="l2", steps=3, rng=key),
    }

  vec, im = run_all(x), run_all(img)
  for name in vec:
    a, b = vec[name], im[name]
    assert a.x_adv.shape == x.shape, name
    np.testing.assert_allclose(np.asarray(a.x_adv),
                               np.asarray(b.x_adv).reshape(x.shape),
                               atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(a.success, b.success, err_msg=name)
  sq = jax.jit(lambda v: A.square(f, v, y, eps=0.1, queries=20, rng=key))(x)
  assert sq.x_adv.shape == x.shape and sq.queries.shape == (n,)


# ------------------------------------------------ masked = members by hand
def test_masked_autoattack_equals_its_members_by_hand():
  """jax.jit(autoattack(mode='masked')) = running APGD-T, FAB-T (2 targets
  each) and Square by hand on the inputs still robust, with the keys
  autoattack documents."""
  n = 12
  f, x, y, dist = linear(13, 4, n)
  eps = float(np.median(dist["linf"]))
  kw = dict(attacks=("apgd-t", "fab-t", "square"), steps=8, num_targets=2,
            fab_steps=8, queries=40, bounds=None)
  rng = jax.random.PRNGKey(3)
  res = jax.jit(lambda x, y, k: A.autoattack(f, x, y, eps=eps, rng=k,
                                             mode="masked", **kw))(x, y, rng)
  _, k_run = jax.random.split(rng)

  def key(m, t):
    return jax.random.fold_in(jax.random.fold_in(k_run, m), t)

  robust = np.array(jnp.argmax(f(x), -1) == y)
  index = np.full(n, -1)

  @jax.jit
  def members(x, y):
    targets = A.top_other_classes(f(x), y, 2)
    runs = [(0, A.apgd(f, x, y, eps=eps, loss="dlr", target=targets[:, t],
                       steps=8, bounds=None, rng=key(0, t)))
            for t in range(2)]
    runs += [(1, A.fab(f, x, y, norm="linf", eps=eps, target=targets[:, t],
                       steps=8, bounds=None)) for t in range(2)]
    runs += [(2, A.square(f, x, y, eps=eps, queries=40, bounds=None,
                          rng=key(2, 0)))]
    return [(m, r, jnp.argmax(f(r.x_adv), -1) != y) for m, r in runs]

  x_adv = np.asarray(x).copy()
  for m, r, fresh in members(x, y):
    m = int(m)
    ok = (np.asarray(r.success) & np.asarray(fresh)
          & (np.asarray(r.perturbation_norm) <= eps * (1 + 1e-6)))
    take = robust & ok
    index[take] = m
    x_adv[take] = np.asarray(r.x_adv)[take]
    robust &= ~take
  np.testing.assert_array_equal(res.attack_index, index)
  np.testing.assert_array_equal(res.success, ~robust)
  np.testing.assert_allclose(res.x_adv, x_adv, atol=0)
  assert 0 < int(np.sum(index >= 0)) < n


def test_host_mode_compiles_each_member_once_across_eps_and_params():
  """Host mode with a ``jax.tree_util.Partial``: a second call at another
  eps with other parameter values compiles nothing, and it computes what a
  closure over those parameters computes."""
  _, x, y, _ = linear(5, 4, 8)
  rng = np.random.default_rng(0)
  p1 = {"w": jnp.asarray(rng.normal(size=(D, 4)), jnp.float32),
        "b": jnp.zeros((4,), jnp.float32)}
  p2 = {"w": 1.5 * p1["w"], "b": p1["b"] + 0.1}

  def lin(p, v):
    return v.reshape((v.shape[0], -1)) @ p["w"] + p["b"]

  y = jnp.argmax(lin(p1, x), -1).astype(jnp.int32)
  kw = dict(attacks=("apgd-ce", "apgd-t", "square"), steps=4, num_targets=2,
            queries=20, bounds=None, rng=jax.random.PRNGKey(1))
  A.autoattack(jax.tree_util.Partial(lin, p1), x, y, eps=0.05, **kw)
  compiles = []
  listener = lambda event, *a, **k: compiles.append(event)  # noqa: E731
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    got = A.autoattack(jax.tree_util.Partial(lin, p2), x, y, eps=0.08, **kw)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  # Neither compiled nor fetched from the suite's persistent cache.
  assert not [e for e in compiles if "backend_compile" in e
              or "cache_retrieval" in e], compiles
  want = A.autoattack(lambda v: lin(p2, v), x, y, eps=0.08, **kw)
  np.testing.assert_array_equal(got.success, want.success)
  np.testing.assert_array_equal(got.attack_index, want.attack_index)
  np.testing.assert_allclose(got.x_adv, want.x_adv, atol=1e-5)
  assert 0 < int(np.sum(np.asarray(got.attack_index) >= 0))


# ------------------------------------------------ the log: passes, accuracy
def test_log_counts_the_passes_the_model_sees():
  """Host mode, APGD-T, FAB-T, FMN-T and Square: the forward and backward
  passes counted by a wrapper around the model (in examples, padding
  included) equal ``passes``; the robust accuracy after each member, the
  largest perturbation and the pixel range agree with the returned
  points; ``verbose`` prints what ``autoattack_log`` gives afterwards."""
  n = 10
  f, x, y, dist = linear(17, 4, n)
  eps = float(np.median(dist["l2"]))
  seen = {"f": 0, "b": 0}

  def add(kind, rows):
    seen[kind] += rows

  @jax.custom_vjp
  def counted(v):
    jax.debug.callback(functools.partial(add, "f", v.shape[0]))
    return f(v)

  def fwd(v):
    jax.debug.callback(functools.partial(add, "f", v.shape[0]))
    out, vjp = jax.vjp(f, v)
    return out, vjp

  def bwd(vjp, g):
    jax.debug.callback(functools.partial(add, "b", g.shape[0]))
    return vjp(g)

  counted.defvjp(fwd, bwd)
  lines, snaps = [], []

  def log(line):                    # the counts at each line of the log
    jax.effects_barrier()
    lines.append(line)
    snaps.append((seen["f"], seen["b"]))

  members = ("apgd-t", "fab-t", "fmn-t", "square")
  res = A.autoattack(counted, x, y, eps=eps, norm="l2", version="custom",
                     attacks=members, steps=3, num_targets=2, fab_steps=3,
                     fmn_steps=3, queries=30, bounds=None,
                     rng=jax.random.PRNGKey(2), verbose=log)
  passes = np.asarray(res.passes)
  assert snaps[0] == (2 * n, 0)                   # the two clean forwards
  np.testing.assert_array_equal(np.diff(np.asarray(snaps[1:2 + len(
      members)]), axis=0), passes)
  assert passes[1, 1] > 0 and passes[3, 1] == 0
  per = np.asarray(res.per_attack_success)
  correct = int(np.sum(res.clean_correct))
  np.testing.assert_allclose(res.robust_accuracy_after,
                             (correct - np.cumsum(per)) / n)
  assert 0 < per.sum() < correct
  d = np.linalg.norm(np.asarray(res.x_adv - x), axis=-1)
  assert float(res.max_perturbation[-1]) == pytest.approx(d.max(), rel=1e-6)
  assert d.max() <= eps * (1 + 1e-6)
  xa = np.asarray(res.x_adv)
  np.testing.assert_allclose(res.x_adv_range[-1], [xa.min(), xa.max()])
  strip = lambda s: re.sub(r"[\d.]+ s", "", s)  # noqa: E731
  assert [strip(s) for s in lines] == [strip(s)
                                       for s in A.autoattack_log(res)]
  assert any("robust accuracy after FAB-T" in s for s in lines)


def test_fmn_t_member_reaches_the_pairwise_boundary():
  """AutoAttack's FMN-T member, fmn(target=t): on a linear 5-class model
  its point lies within 1% of the closed-form distance to the boundary
  between y and t, (z_y - z_t) / ||w_y - w_t||_2 (or nearer, where another
  class wins first), and is adversarial. fmn(targeted=True), which demands
  argmax == t, is farther on some inputs: the goal FMN-T had before."""
  n = 48
  f, x, y, dist = linear(27, 5, n)
  z = np.asarray(f(x), np.float64)
  w = np.asarray(jax.jacobian(lambda v: f(v[None])[0])(x[0]))    # [K, D]
  t = np.asarray(A.top_other_classes(f(x), y, 4))[:, 2]           # 3rd
  yn = np.asarray(y)
  d_t = (z[np.arange(n), yn] - z[np.arange(n), t]) / np.linalg.norm(
      w[yn] - w[t], axis=-1)
  run = jax.jit(lambda x, y, t: (
      A.fmn(f, x, y, norm="l2", target=t, bounds=None),
      A.fmn(f, x, t, norm="l2", targeted=True, bounds=None)))
  pair, exact = run(x, y, jnp.asarray(t))
  pn = np.asarray(pair.perturbation_norm)
  assert np.all(np.asarray(pair.success))
  assert np.all(pn <= 1.01 * d_t) and np.all(pn >= dist["l2"] * (1 - 1e-5))
  assert np.mean(np.asarray(exact.perturbation_norm) > 1.05 * d_t) > 0.1
