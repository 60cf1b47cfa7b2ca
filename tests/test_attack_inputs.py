"""Attacks on invalid inputs: eager errors before compiling, per-example
flags under tracing (never counted as successes)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advinv_jax import attacks as A

W = jax.random.normal(jax.random.PRNGKey(0), (16, 3))
KEY = jax.random.PRNGKey(0)


def linear(x):
  return x.reshape(x.shape[0], -1) @ W


X = jax.random.uniform(jax.random.PRNGKey(1), (4, 4, 4, 1))
Y = jnp.argmax(linear(X), -1)


@pytest.mark.parametrize("x,kw,match", [
    (X.at[0, 0, 0, 0].set(jnp.nan), {}, "1 non-finite entries"),
    (X.at[1, 0, 0, 0].set(1.5), {}, "outside bounds"),
    (X.astype(jnp.bfloat16), {}, "float32"),
    (X.astype(jnp.float16), {}, "float32"),
    (X, {"step_size": -0.1}, "step_size=-0.1 must be finite and > 0"),
    (X, {"rel_step_size": 0.0}, "rel_step_size=0.0 must be"),
    (X, {"eps": -0.5}, "must be finite and >= 0"),
])
def test_eager_invalid_inputs_are_errors(x, kw, match):
  kw = {"eps": 0.0, **kw}
  with pytest.raises(ValueError, match=match):
    A.pgd(linear, x, Y, rng=KEY, **kw)


def test_eager_deepfool_refuses_out_of_bounds():
  with pytest.raises(ValueError, match="outside bounds"):
    A.deepfool(linear, X * 2.0, Y)


def test_traced_invalid_inputs_and_eps_are_flagged_not_attacked():
  run = jax.jit(lambda x, e: A.pgd(linear, x, Y, eps=e, steps=3, rng=KEY))
  bad_x = X.at[0, 0, 0, 0].set(jnp.nan).at[1, 0, 0, 0].set(1.5)
  res = run(bad_x, 0.5)
  np.testing.assert_array_equal(res.flagged, [True, True, False, False])
  assert not np.any(np.asarray(res.success)[:2])
  for eps in (jnp.inf, -0.5, jnp.nan):
    res = run(X, eps)
    assert np.all(res.flagged) and not np.any(res.success)
    np.testing.assert_array_equal(res.x_adv, X)  # not perturbed
  res = run(X, jnp.array([0.5, jnp.inf, -1.0, 0.5]))
  np.testing.assert_array_equal(res.flagged, [False, True, True, False])
  assert np.all(np.isfinite(res.x_adv))
  # The valid rows are attacked as without the invalid ones.
  ref = run(X, 0.5)
  np.testing.assert_array_equal(np.asarray(res.x_adv)[[0, 3]],
                                np.asarray(ref.x_adv)[[0, 3]])


@pytest.mark.parametrize("attack", ["apgd", "square"])
def test_traced_invalid_inputs_are_flagged_in_apgd_and_square(attack):
  fn = {"apgd": functools.partial(A.apgd, steps=3),
        "square": functools.partial(A.square, queries=10)}[attack]
  run = jax.jit(lambda x, e: fn(linear, x, Y, eps=e, rng=KEY))
  bad_x = X.at[0, 0, 0, 0].set(jnp.nan).at[1, 0, 0, 0].set(1.5)
  res = run(bad_x, 0.5)
  np.testing.assert_array_equal(res.flagged, [True, True, False, False])
  assert not np.any(np.asarray(res.success)[:2])
  np.testing.assert_array_equal(np.asarray(res.x_adv)[1], np.asarray(bad_x)[1])
  res = run(X, jnp.array([0.5, jnp.inf, -1.0, 0.5]))
  np.testing.assert_array_equal(res.flagged, [False, True, True, False])
  assert np.all(np.isfinite(res.x_adv)) and not np.any(
      np.asarray(res.success)[1:3])


def test_masked_autoattack_flags_traced_invalid_inputs():
  run = jax.jit(lambda x: A.autoattack(
      linear, x, Y, eps=0.5, mode="masked", attacks=("apgd-ce", "square"),
      steps=3, queries=10, rng=KEY))
  assert not bool(run(X).flags["invalid_inputs"])
  res = run(X.at[1, 0, 0, 0].set(1.5))
  assert bool(res.flags["invalid_inputs"]) and int(res.attack_index[1]) == -1
  assert any("outside the bounds" in w for w in A.autoattack_warnings(res))


def test_nonfinite_clean_logits_are_flagged_in_every_attack():
  def nan_row(x):
    return linear(x).at[0].set(jnp.nan)
  results = [
      jax.jit(lambda x: A.pgd(nan_row, x, Y, eps=0.5, steps=2, rng=KEY))(X),
      jax.jit(lambda x: A.deepfool(nan_row, x, Y, steps=3))(X),
      jax.jit(lambda x: A.fmn(nan_row, x, Y, steps=3))(X),
  ]
  for res in results:
    np.testing.assert_array_equal(res.flagged, [True, False, False, False])
    assert not bool(res.success[0])
  res, warns = A.run_attack(functools.partial(A.pgd, steps=2), nan_row, X, Y,
                            eps=0.5, rng=KEY, emit_warnings=False)
  assert any("1 inputs were not attacked" in w for w in warns)


def test_eps_sweep_flags_under_its_own_jit():
  success = A.eps_sweep(functools.partial(A.pgd, steps=2), linear, X, Y,
                        [0.0, 0.5], rng=KEY)
  assert not np.any(np.asarray(success)[0])  # eps 0 on correct inputs
  with pytest.raises(ValueError, match="outside bounds"):
    A.eps_sweep(functools.partial(A.pgd, steps=2), linear, X + 2.0, Y, [0.1],
                rng=KEY)
  # The attack's own bounds decide (here: unbounded inputs are fine).
  A.eps_sweep(functools.partial(A.pgd, steps=2, bounds=None), linear, X + 2.0,
              Y, [0.1], rng=KEY)


# --------------------------------------------------------------- labels
# Every input correct with a logit margin of about 5 (>> what eps = 0.02
# can move): robust, so a success on a row with a bad label is a misreport.
# Rows 0-2 carry labels 10, -1 and 99 on a 10-class model.
NK = 10
WL = 10.0 * jnp.eye(NK) + 0.1 * jax.random.normal(jax.random.PRNGKey(2),
                                                   (NK, NK))
YL = jnp.arange(5, dtype=jnp.int32)
XL = 0.25 + 0.5 * jax.nn.one_hot(YL, NK)
YBAD = YL.at[:3].set(jnp.array([10, -1, 99], jnp.int32))
FLAG = np.array([True, True, True, False, False])


def linear_l(x):
  return x @ WL


LABEL_ATTACKS = {
    "pgd": lambda y: A.pgd(linear_l, XL, y, eps=0.02, steps=2, rng=KEY),
    "fgsm": lambda y: A.fgsm(linear_l, XL, y, eps=0.02),
    "apgd": lambda y: A.apgd(linear_l, XL, y, eps=0.02, steps=2, rng=KEY),
    "apgd-t": lambda y: A.apgd(linear_l, XL, y, eps=0.02, steps=2,
                               loss="dlr", targeted=True, num_targets=2,
                               rng=KEY),
    "square": lambda y: A.square(linear_l, XL, y, eps=0.02, queries=8,
                                 rng=KEY),
    "fmn": lambda y: A.fmn(linear_l, XL, y, steps=3),
    # the labels are the targets (a valid one is met at x: norm 0)
    "fmn-t": lambda y: A.fmn(linear_l, XL, y, steps=3, targeted=True),
    "deepfool": lambda y: A.deepfool(linear_l, XL, y, steps=3),
    "fab-t": lambda y: A.fab(linear_l, XL, y, norm="l2", steps=3,
                             n_target_classes=2),
    "eps_sweep": lambda y: A.eps_sweep(
        functools.partial(A.pgd, steps=2), linear_l, XL, y, [0.0, 0.02],
        rng=KEY, full=True),
}
MINIMAL = ("fmn", "fmn-t", "deepfool", "fab-t")


@pytest.mark.parametrize("name", sorted(LABEL_ATTACKS))
def test_labels_outside_the_classes_are_flagged_under_jit(name):
  run = jax.jit(LABEL_ATTACKS[name])
  res, ref = run(YBAD), run(YL)

  def rows(a):      # batch axis first (eps_sweep: [budgets, B, ...])
    a = np.asarray(a)
    return np.moveaxis(a, 1, 0) if name == "eps_sweep" else a

  flagged = rows(res.flagged)
  assert (flagged.T == FLAG).all() and not rows(res.success)[:3].any()
  np.testing.assert_array_equal(
      rows(res.x_adv)[:3], np.broadcast_to(
          np.asarray(XL)[:3, None] if name == "eps_sweep"
          else np.asarray(XL)[:3], rows(res.x_adv)[:3].shape))
  np.testing.assert_array_equal(rows(res.perturbation_norm)[:3],
                                np.inf if name in MINIMAL else 0.0)
  np.testing.assert_array_equal(rows(res.bad_grad_steps)[:3], 0)
  # The valid rows come out as with valid labels everywhere, bitwise.
  for a, b in zip(jax.tree_util.tree_leaves(res),
                  jax.tree_util.tree_leaves(ref)):
    np.testing.assert_array_equal(rows(a)[3:], rows(b)[3:])
  if name not in MINIMAL:   # robust: nothing broken at eps 0.02
    assert not np.asarray(ref.success).any()


def test_labels_outside_the_classes_in_autoattack_and_the_runners():
  run = jax.jit(lambda y: A.autoattack(
      linear_l, XL, y, eps=0.02, mode="masked", attacks=("apgd-ce", "square"),
      steps=2, queries=8, rng=KEY))
  res, ref = run(YBAD), run(YL)
  assert float(ref.robust_accuracy) == 1.0 and not np.any(ref.flagged)
  # The flagged rows are neither robust nor broken: the accuracy over the
  # two valid rows stays 1.
  assert float(res.robust_accuracy) == 1.0
  np.testing.assert_array_equal(res.flagged, FLAG)
  assert not np.asarray(res.success).any()
  assert not np.asarray(res.clean_correct)[:3].any()
  np.testing.assert_array_equal(np.asarray(res.attack_index)[:3], -1)
  np.testing.assert_array_equal(res.x_adv, XL)
  assert bool(res.flags["invalid_inputs"])
  assert any("label outside [0, K)" in w for w in A.autoattack_warnings(res))
  # A data-parallel attack flags them too (labels are sharded, traced).
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("b",))
  sharded = A.shard_batch_attack(
      lambda x, y: A.pgd(linear_l, x, y, eps=0.02, steps=2, rng=KEY), mesh)
  out = sharded(XL, YBAD)
  np.testing.assert_array_equal(out.flagged, FLAG)
  assert not np.asarray(out.success).any()
  # Concrete labels are refused before anything is compiled.
  match = r"labels y must lie in \[0, 10\)"
  for call in (
      lambda: A.autoattack(linear_l, XL, YBAD, eps=0.02, rng=KEY),
      lambda: A.autoattack(linear_l, XL, YBAD, eps=0.02, mode="masked",
                           rng=KEY),
      lambda: A.run_attack(A.pgd, linear_l, XL, YBAD, eps=0.02),
      lambda: A.eps_sweep(A.pgd, linear_l, XL, YBAD, [0.02]),
      *(functools.partial(f, YBAD) for f in LABEL_ATTACKS.values())):
    with pytest.raises(ValueError, match=match):
      call()
  with pytest.raises(ValueError, match="labels y must be integers"):
    jax.jit(lambda y: A.pgd(linear_l, XL, y, eps=0.02, rng=KEY))(
        YL.astype(jnp.float32))


# ---------------------------------------------------------- low precision
WB = jax.random.normal(jax.random.PRNGKey(4), (16, NK))
BB = jax.random.normal(jax.random.PRNGKey(5), (NK,))
XB = jax.random.uniform(jax.random.PRNGKey(6), (6, 4, 4, 1), minval=0.3,
                        maxval=0.7)


def low_precision(dtype, internal=True):
  """A linear model whose logits come out in ``dtype``: computed in it
  (``internal``) or in float32 and rounded at the end."""
  def fn(x):
    v = x.reshape(x.shape[0], -1)
    if internal:
      return v.astype(dtype) @ WB.astype(dtype) + BB.astype(dtype)
    return (v @ WB + BB).astype(dtype)
  return fn


LP_ATTACKS = {
    "pgd": lambda f, y: A.pgd(f, XB, y, eps=0.05, steps=3, rng=KEY),
    "square": lambda f, y: A.square(f, XB, y, eps=0.05, queries=10, rng=KEY),
    "fmn": lambda f, y: A.fmn(f, XB, y, steps=5),
    "deepfool": lambda f, y: A.deepfool(f, XB, y, steps=5),
    "apgd-t": lambda f, y: A.apgd(f, XB, y, eps=0.05, steps=2, loss="dlr",
                                  targeted=True, num_targets=2, rng=KEY),
    # Square in host mode runs in segments (where bfloat16 used to fail).
    "autoattack-host": lambda f, y: A.autoattack(
        f, XB, y, eps=0.05, attacks=("square",), queries=10, rng=KEY),
    "autoattack-masked": lambda f, y: A.autoattack(
        f, XB, y, eps=0.05, mode="masked", attacks=("apgd-ce",), steps=2,
        rng=KEY),
}


@pytest.mark.parametrize("name", sorted(LP_ATTACKS))
def test_low_precision_logits_are_attacked_in_float32(name):
  """bfloat16 logits: every attack gives, bitwise, what it gives on the
  same model with its logits cast to float32 (the attacks compute on the
  logits in float32, so the model's own rounding is the only difference;
  DeepFool's VJP and Square's state used to fail on bfloat16)."""
  lp = low_precision(jnp.bfloat16)
  as_f32 = lambda v: lp(v).astype(jnp.float32)  # noqa: E731
  y = jnp.argmax(as_f32(XB), -1)
  attack = LP_ATTACKS[name]
  run = attack if name == "autoattack-host" else jax.jit(attack,
                                                          static_argnums=0)
  res, ref = run(lp, y), run(as_f32, y)
  leaves = lambda r: [l for p, l in jax.tree_util.tree_flatten_with_path(  # noqa
      r)[0] if "seconds" not in jax.tree_util.keystr(p)]
  for a, b in zip(leaves(res), leaves(ref), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype,u", [(jnp.bfloat16, 2.0 ** -8),
                                     (jnp.float16, 2.0 ** -11)])
def test_low_precision_deepfool_matches_float32_within_rounding(dtype, u):
  """Logits rounded to ``dtype`` (unit roundoff ``u``: 8 and 11 significand
  bits) move each margin ``z_y - z_k`` by at most ``u (|z_y| + |z_k|)``, so
  on a linear model the boundary, and DeepFool's exact distance to it, by
  at most ``2 u max|z| / min_k ||w_y - w_k||_2``; each run's bisection adds
  ``2^-12`` of its ``(1 + overshoot)`` step."""
  f32 = lambda v: v.reshape(v.shape[0], -1) @ WB + BB  # noqa: E731
  lp = low_precision(dtype, internal=False)
  y = jnp.argmax(f32(XB), -1)
  assert (jnp.argmax(lp(XB), -1) == y).all()
  ref = jax.jit(lambda v: A.deepfool(f32, v, y, steps=10))(XB)
  res = jax.jit(lambda v: A.deepfool(lp, v, y, steps=10))(XB)
  assert np.asarray(ref.success).all() and np.asarray(res.success).all()
  z = np.abs(np.concatenate([np.asarray(f32(v)) for v in
                             (XB, ref.x_adv, res.x_adv)], 1)).max(1)
  w, yn = np.asarray(WB, np.float64), np.asarray(y)
  gap = np.array([np.linalg.norm(w[:, [c]] - np.delete(w, c, 1), axis=0).min()
                  for c in yn])
  n32, nlp = np.asarray(ref.perturbation_norm), np.asarray(
      res.perturbation_norm)
  tol = 2 * u * z / gap + 2.0 ** -12 * 1.02 * (n32 + nlp)
  assert np.all(np.abs(nlp - n32) <= tol), (nlp - n32, tol)
