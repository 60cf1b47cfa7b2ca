"""Invertible layers: exact inverses, log-determinants, orderings, reversible
backprop. Parameters are randomly perturbed (fresh couplings are the
identity, so an inverse test on them would prove little)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from advinv_jax.layers import (DCT2D, ActNorm, Chain, Compute, Coupling,
                               FixedAffine, InvConv1x1, LogitTransform, Psi,
                               Reverse, Shuffle, Squeeze, SubnetSettings,
                               alpha_for_widening, conv3x3, count_params,
                               dct_matrix, logit_image_bounds, matmul_lowp)
from tests._helpers import (assert_trees_rel_close, compiled_conv_labels,
                            max_rel_err, perturb)


def coupling(width, kind="additive", affine_scale="sigmoid", scale_floor=1e-3,
             **compute):
  """A :class:`Coupling` of subnet ``width`` that runs by ``compute``
  (:class:`Compute`'s fields)."""
  return Coupling(SubnetSettings(width, compute=Compute(**compute)), kind,
                  affine_scale, scale_floor)


def step(i, kind="affine", perm=None, **kw):
  perm = Shuffle(seed=i) if perm is None else perm
  return Chain((ActNorm(), perm, coupling(4, kind, **kw)))


LAYERS = {
    "actnorm": ActNorm(),
    "additive": coupling(8, "additive"),
    "affine_sigmoid": coupling(8, "affine", "sigmoid"),
    "affine_exp_tanh": coupling(8, "affine", "exp_tanh"),
    "affine_conv_auto": coupling(8, "affine", conv3x3_impl="auto",
                                 conv1x1_as_matmul=False),
    "affine_bf16_1x1": coupling(8, "affine", dtype="bfloat16_1x1"),
    "affine_bf16": coupling(8, "affine", dtype="bfloat16"),
    "squeeze": Squeeze(),
    "psi": Psi(),
    "reverse": Reverse(),
    "shuffle": Shuffle(seed=3),
    "conv1x1": InvConv1x1(seed=2),
    "dct": DCT2D(),
    "fixed_affine": FixedAffine(2.0, -1.0),
    "chain": Chain((ActNorm(), Squeeze(), Reverse(), coupling(4))),
    "reversible_chain": Chain((step(0), step(1)), reversible=True),
    "stacked_scan_chain": Chain((step(0), step(1), step(2)), stacked=True,
                                reversible_loop="scan"),
}
SHAPE = (3, 4, 4, 6)


def _setup(layer, shape=SHAPE):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  params = jax.jit(layer.init)(jax.random.PRNGKey(1), x)
  params = perturb(params, jax.random.PRNGKey(2))
  return x, params


class LayerTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*LAYERS.items())
  def test_inverse_and_logdets(self, layer):
    x, params = _setup(layer)
    fwd = self.variant(layer.forward)
    inv = self.variant(layer.inverse_with_logdet)
    y, ld = fwd(params, x)
    chex.assert_shape(y, layer.output_shape(x.shape))
    chex.assert_shape(ld, (x.shape[0],))
    xr, ld_inv = inv(params, y)
    chex.assert_tree_all_finite((y, ld, xr, ld_inv))
    self.assertLessEqual(max_rel_err(xr, x), 1e-5)
    chex.assert_trees_all_close(ld, -ld_inv, atol=1e-4, rtol=1e-5)

  @parameterized.named_parameters(*LAYERS.items())
  def test_logdet_matches_jacobian(self, layer):
    x, params = _setup(layer, (1, 4, 4, 4))
    flat = lambda v: layer.forward(params, v.reshape(x.shape))[0].reshape(-1)
    # jacrev: a reversible chain is a custom_vjp (reverse mode only).
    jac = jax.jit(jax.jacrev(flat))(x.reshape(-1))
    _, expected = jnp.linalg.slogdet(jac)
    ld = layer.forward(params, x)[1][0]
    self.assertLessEqual(abs(float(ld - expected)),
                         1e-4 * max(1.0, abs(float(expected))))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(1 / 34, 0.05)
  def test_logit_transform_inverse_and_closed_form(self, alpha):
    # Pixels in the box, its edges included (the data's 0 and 1).
    layer = LogitTransform(alpha)
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, 4, 4, 2))
    x = x.at[0, 0].set(0.0).at[0, 1].set(1.0)
    y, ld = self.variant(layer.forward)({}, x)
    xr, ld_inv = self.variant(layer.inverse_with_logdet)({}, y)
    self.assertLessEqual(float(jnp.abs(xr - x).max()), 1e-6)
    chex.assert_trees_all_close(ld, -ld_inv, rtol=1e-5)
    # The edges go to logit(alpha) and -logit(alpha).
    edge = float(np.log(alpha / (1 - alpha)))
    chex.assert_trees_all_close(y[0, 0], jnp.full((4, 2), edge), rtol=1e-5)
    chex.assert_trees_all_close(y[0, 1], jnp.full((4, 2), -edge), rtol=1e-5)

  def test_logit_transform_logdet_matches_jacobian(self):
    layer = LogitTransform(1 / 34)
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, 2, 2, 2))
    flat = lambda v: layer.forward({}, v.reshape(x.shape))[0].reshape(-1)
    _, expected = jnp.linalg.slogdet(jax.jacfwd(flat)(x.reshape(-1)))
    chex.assert_trees_all_close(layer.forward({}, x)[1][0], expected,
                                rtol=1e-5)

  def test_logit_transform_image_is_the_widened_box(self):
    # alpha from half a grey level of 17 levels: the box widened by 1/32.
    alpha = alpha_for_widening(1 / 32)
    lo, hi = logit_image_bounds(alpha)
    self.assertAlmostEqual(lo, -1 / 32)
    self.assertAlmostEqual(hi, 1 + 1 / 32)
    layer = LogitTransform(alpha)
    y = jnp.concatenate([
        jnp.array([-1e30, -1e4, -40.0, 0.0, 40.0, 1e4, 1e30]),
        30.0 * jax.random.normal(jax.random.PRNGKey(0), (57,))])
    x = layer.inverse({}, y.reshape(1, 8, 8, 1))
    self.assertGreaterEqual(float(x.min()), lo - 1e-7)
    self.assertLessEqual(float(x.max()), hi + 1e-7)
    chex.assert_trees_all_close(x[0, 0, :2, 0], jnp.full((2,), lo), atol=1e-7)
    with self.assertRaisesRegex(ValueError, "alpha=0.5 must lie in"):
      LogitTransform(0.5)

  def test_squeeze_and_psi_channel_order(self):
    b, h, w, c = 2, 4, 6, 3
    x = jnp.arange(b * h * w * c, dtype=jnp.float32).reshape(b, h, w, c)
    ys = Squeeze().forward({}, x)[0]
    yp = Psi().forward({}, x)[0]
    for i, j, di, dj, k in [(0, 0, 0, 1, 2), (1, 2, 1, 0, 1), (1, 1, 1, 1, 0)]:
      v = x[:, 2 * i + di, 2 * j + dj, k]
      chex.assert_trees_all_equal(ys[:, i, j, 4 * k + 2 * di + dj], v)
      chex.assert_trees_all_equal(yp[:, i, j, (2 * di + dj) * c + k], v)

  def test_permutation_orders(self):
    x = jnp.arange(2 * 2 * 2 * 5, dtype=jnp.float32).reshape(2, 2, 2, 5)
    chex.assert_trees_all_equal(Reverse().forward({}, x)[0], x[..., ::-1])
    perm = np.random.RandomState(7).permutation(5)
    chex.assert_trees_all_equal(Shuffle(seed=7).forward({}, x)[0],
                                x[..., perm])

  def test_conv1x1_logdet_is_hw_sum_log_s(self):
    layer = InvConv1x1(seed=1)
    x, params = _setup(layer)
    _, ld = layer.forward(params, x)
    chex.assert_trees_all_close(ld[0], 16 * jnp.sum(params["log_s"]),
                                rtol=1e-6)

  def test_dct_is_orthonormal_and_dc_is_scaled_mean(self):
    d = dct_matrix(7)
    chex.assert_trees_all_close(d @ d.T, np.eye(7), atol=1e-6)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 6, 3))
    y = DCT2D().forward({}, x)[0]
    chex.assert_trees_all_close(y[:, 0, 0], jnp.sqrt(24.0) * x.mean((1, 2)),
                                atol=1e-5)

  @parameterized.parameters("im2col", "outshift", "xla_gemm_grad")
  def test_conv3x3_impls_match_xla(self, impl):
    for cin, cout in [(3, 8), (5, 8), (8, 3)]:
      x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6, cin))
      w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, cin, cout))
      f = jax.jit(conv3x3, static_argnums=2)
      chex.assert_trees_all_close(f(x, w, impl), f(x, w, "xla"), atol=1e-4)
      # Both gradients (filter and input) match XLA's autodiff.
      grads = lambda i: jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w, i))),
                                 argnums=(0, 1))(x, w)
      chex.assert_trees_all_close(grads(impl), grads("xla"), atol=1e-4)
      jf = lambda i: jax.jacfwd(lambda w: f(x[:1, :3, :3], w, i))(w)
      if impl == "xla_gemm_grad":   # a custom_vjp: reverse mode only
        with self.assertRaisesRegex(TypeError, "forward-mode"):
          jf(impl)
      else:
        chex.assert_trees_all_close(jf(impl), jf("xla"), atol=1e-4)

  @parameterized.parameters("auto", "im2col", "xla_gemm_grad")
  def test_conv3x3_stride2_space_to_depth_matches_xla(self, impl):
    # Even sizes take the space-to-depth path; odd ones fall back to XLA.
    f = jax.jit(conv3x3, static_argnums=(2, 3))
    for shape in [(2, 8, 6, 3), (2, 4, 4, 5), (1, 5, 7, 2)]:
      x = jax.random.normal(jax.random.PRNGKey(0), shape)
      w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, shape[-1], 4))
      ref = jax.lax.conv_general_dilated(
          x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
      chex.assert_trees_all_close(f(x, w, impl, 2), ref, atol=1e-4)
      # Both gradients (input: what attacks use; filter) match too.
      g = lambda i: jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w, i, 2))),
                             argnums=(0, 1))(x, w)
      chex.assert_trees_all_close(g(impl), g("xla"), atol=1e-4)
      jvp = lambda: jax.jvp(lambda w: f(x, w, impl, 2), (w,),
                            (jnp.ones_like(w),))[1]
      if impl == "xla_gemm_grad" and shape[1] % 2 == 0:  # custom_vjp
        with self.assertRaisesRegex(TypeError, "forward-mode"):
          jvp()
      else:   # forward mode works for the other impls (the s2d form)
        chex.assert_trees_all_close(jvp(), f(x, jnp.ones_like(w), "xla", 2),
                                    atol=1e-4)
    with self.assertRaisesRegex(ValueError, "stride"):
      conv3x3(x, w, "xla", 3)

  def test_conv3x3_gemm_grad_gradients_stay_canonical_in_loops(self):
    # XLA CPU runs a convolution fast only in its canonical form
    # (NHWC x HWIO -> NHWC). In straight-line code it rewrites JAX's
    # transposed convolutions into it; inside a while loop it does not and
    # takes a ~10x slower generic kernel (layers/_conv.py,
    # _conv_input_grad). xla_gemm_grad writes every gradient convolution in
    # that form itself, so a scanned gradient compiles to canonical ones only
    # ('xla' does not: checked as the control).
    def labels(impl, stride, cin, cout):
      x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, cin))
      ws = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, cin, cout))

      def grad(x, ws):
        def body(c, w):
          gx, gw = jax.grad(lambda x, w: jnp.sum(conv3x3(x, w, impl,
                                                         stride) ** 2),
                            argnums=(0, 1))(x, w)
          return c + jnp.sum(gx) + jnp.sum(gw), None
        return jax.lax.scan(body, 0.0, ws)[0]
      return compiled_conv_labels(grad, x, ws)
    for stride, cin, cout in [(1, 3, 8), (1, 5, 8), (1, 8, 3), (2, 3, 4)]:
      found = labels("xla_gemm_grad", stride, cin, cout)
      self.assertNotEmpty(found)
      self.assertEqual(set(found), {"b01f_01io->b01f"},
                       (stride, cin, cout))
    self.assertNotEqual(set(labels("xla", 1, 8, 3)), {"b01f_01io->b01f"})

  def test_actnorm_init_normalises_and_guards_flat_channels(self):
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x = jnp.concatenate([
        3.0 + 2.0 * jax.random.normal(k1, (64, 4, 4, 1)),
        jnp.zeros((64, 4, 4, 1)),                                 # padding
        jax.random.uniform(k2, (64, 4, 4, 1), maxval=1 / 256)],   # dequant
                        axis=-1)
    layer = ActNorm(min_std=1e-2)
    p = layer.init(jax.random.PRNGKey(1), x)
    y = layer.forward(p, x)[0]
    chex.assert_trees_all_close(y[..., 0].mean(), 0.0, atol=1e-4)
    chex.assert_trees_all_close(y[..., 0].std(), 1.0, atol=1e-3)
    self.assertTrue(bool(jnp.all(jnp.isfinite(p["s"]))))
    # No channel is amplified by more than 1 / min_std (not 1e6 or ~444).
    self.assertLessEqual(float(jnp.exp(p["s"]).max()), 100.0 + 1e-3)
    chex.assert_trees_all_equal(y[..., 1], jnp.zeros_like(y[..., 1]))

  def test_actnorm_relu_derivatives_equal_plain_autodiff(self):
    from advinv_jax.layers._actnorm import actnorm_apply, actnorm_relu
    ks = jax.random.split(jax.random.PRNGKey(0), 6)
    x = jax.random.normal(ks[0], (4, 3, 3, 5)).at[0, 0, 0].set(0.0)
    p = {"b": 0.3 * jax.random.normal(ks[1], (5,)),
         "s": 0.3 * jax.random.normal(ks[2], (5,))}
    p["b"] = p["b"].at[0].set(0.0)        # a pre-activation exactly 0
    plain = lambda p, x: jax.nn.relu(actnorm_apply(p, x))
    chex.assert_trees_all_close(actnorm_relu(p, x), plain(p, x))
    r = jax.random.normal(ks[3], x.shape)
    grads = [jax.grad(lambda p, x: jnp.sum(f(p, x) * r), (0, 1))(p, x)
             for f in (actnorm_relu, plain)]
    chex.assert_trees_all_close(*grads, rtol=1e-6, atol=1e-6)
    tangents = ({"b": jax.random.normal(ks[4], (5,)),
                 "s": jax.random.normal(ks[5], (5,))}, r)
    jvps = [jax.jvp(f, (p, x), tangents)[1] for f in (actnorm_relu, plain)]
    chex.assert_trees_all_close(*jvps, rtol=1e-6, atol=1e-6)

  def test_fresh_coupling_is_identity(self):
    layer = coupling(8, "affine")
    x = jax.random.normal(jax.random.PRNGKey(0), SHAPE)
    p = layer.init(jax.random.PRNGKey(1), x)
    y, ld = layer.forward(p, x)
    chex.assert_trees_all_close(y[..., :3], x[..., :3])
    # affine at init: scale sigmoid(2) (floored), shift 0.
    scale = 1e-3 + (1 - 1e-3) * jax.nn.sigmoid(2.0)
    chex.assert_trees_all_close(y[..., 3:], x[..., 3:] * scale, rtol=1e-6)
    chex.assert_trees_all_close(ld, jnp.full((3,), 48 * jnp.log(scale)),
                                rtol=1e-5)

  def test_affine_scale_is_bounded_away_from_zero(self):
    layer = coupling(8, "affine", scale_floor=1e-3)
    s = layer._scale(jnp.array([-1e4, 0.0, 1e4]))
    self.assertGreaterEqual(float(s.min()), 1e-3)
    self.assertLess(float(s.max()), 1.0 + 1e-6)

  def test_count_params(self):
    layer = coupling(8, "additive")
    p = layer.init(jax.random.PRNGKey(0), jnp.ones(SHAPE))
    # w1 3x3x3x8, a1 2x8, w2 8x8, a2 2x8, w3 3x3x8x3, b3 3, logs3 3.
    self.assertEqual(count_params(p), 216 + 16 + 64 + 16 + 216 + 6)

  def test_bad_shapes_raise(self):
    with self.assertRaisesRegex(ValueError, "even H and W"):
      Squeeze().output_shape((1, 5, 4, 2))
    with self.assertRaisesRegex(ValueError, ">= 2 channels"):
      coupling(8).init(jax.random.PRNGKey(0), jnp.ones((1, 4, 4, 1)))
    with self.assertRaisesRegex(ValueError, "\\[B, H, W, C\\]"):
      ActNorm().init(jax.random.PRNGKey(0), jnp.ones((4, 4, 1)))
    with self.assertRaisesRegex(ValueError, "coupling="):
      coupling(8, "multiplicative")
    with self.assertRaisesRegex(ValueError, "reversible_loop='scan'"):
      Chain((step(0), Squeeze()), reversible=True, reversible_loop="scan")
    with self.assertRaisesRegex(ValueError, "stacked=True needs layers"):
      Chain((step(0), Squeeze()), stacked=True)


class ReversibleTest(chex.TestCase):

  @parameterized.parameters("bfloat16_1x1", "bfloat16")
  def test_bf16_matmul_products_and_coupling_gradients(self, dtype):
    # matmul_lowp: bfloat16 operands, float32 accumulation, in all three
    # products: equal to float32 products of the bfloat16-rounded operands.
    kx, kw, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (2, 3, 5, 64))
    w = jax.random.normal(kw, (64, 24))
    g = jax.random.normal(kg, (2, 3, 5, 24))
    r = lambda a: a.astype(jnp.bfloat16).astype(jnp.float32)
    y, pull = jax.vjp(jax.jit(matmul_lowp), x, w)
    dx, dw = pull(g)
    hi = jax.lax.Precision.HIGHEST
    chex.assert_trees_all_close(
        (y, dx, dw),
        (jnp.einsum("...k,kn->...n", r(x), r(w), precision=hi),
         jnp.einsum("...n,kn->...k", r(g), r(w), precision=hi),
         jnp.einsum("bhwk,bhwn->kn", r(x), r(g), precision=hi)),
        rtol=1e-5, atol=1e-4)
    self.assertGreater(float(jnp.max(jnp.abs(y - x @ w))), 1e-3)  # rounded
    # A reversible chain of bf16 couplings: gradients equal its autodiff
    # (same rounding), and the float32 chain's up to bfloat16 rounding (as a
    # whole: single entries of this tiny random net differ by up to ~10%).
    mk = lambda dt, rev: Chain(tuple(step(i, dtype=dt)
                                     for i in range(2)), reversible=rev)
    x, params = _setup(mk("float32", False), (3, 4, 4, 6))

    def grads(chain):
      def f(p, v):
        y, ld = chain.forward(p, v)
        return jnp.sum(jnp.sin(y)) + 0.1 * jnp.sum(ld)
      return jax.jit(jax.grad(f, argnums=(0, 1)))(params, x)

    g_rev = grads(mk(dtype, True))
    g_bf = grads(mk(dtype, False))
    g_32 = grads(mk("float32", False))
    assert_trees_rel_close(g_rev, g_bf, 1e-4)
    flat = lambda t: jnp.concatenate([v.ravel() for v in
                                      jax.tree_util.tree_leaves(t)])
    self.assertLessEqual(float(jnp.linalg.norm(flat(g_bf) - flat(g_32)) /
                               jnp.linalg.norm(flat(g_32))), 3e-2)
    self.assertGreater(max_rel_err(g_bf[0]["001"]["002"]["net"]["w2"],
                                   g_32[0]["001"]["002"]["net"]["w2"]), 1e-5)
    with self.assertRaisesRegex(ValueError, "dtype='float16'"):
      coupling(4, dtype="float16")

  @chex.variants(with_jit=True)
  @parameterized.parameters(("unrolled", "additive-reverse"),
                            ("unrolled", "affine-conv1x1"),
                            ("scan", "affine-shuffle"))
  def test_grads_equal_autodiff(self, loop, kind):
    coupling, perm = kind.split("-")
    mk = {"reverse": lambda i: Reverse(), "shuffle": lambda i: Shuffle(i),
          "conv1x1": lambda i: InvConv1x1(i)}[perm]
    steps = tuple(step(i, coupling, mk(i)) for i in range(2))
    plain = Chain(steps)
    rev = Chain(steps, reversible=True, reversible_loop=loop)
    x, params = _setup(plain, (2, 4, 4, 6))

    def loss(layer):
      def f(p, v):
        y, ld = layer.forward(p, v)
        return jnp.sum(jnp.sin(y) * jnp.arange(y.size).reshape(y.shape) /
                       y.size) + 0.1 * jnp.sum(ld)
      return self.variant(jax.grad(f, argnums=(0, 1)))

    g_plain = loss(plain)(params, x)
    g_rev = loss(rev)(params, x)
    assert_trees_rel_close(g_rev, g_plain, 1e-4)
    chex.assert_trees_all_close(rev.forward(params, x),    # 'scan' sums
                                plain.forward(params, x),  # in another
                                rtol=1e-5)                 # order

  def test_stacked_params_same_function_and_gradients(self):
    # stacked=True only changes the params' layout: forward, inverse and
    # gradients (plain and reversible, unrolled and scanned) equal those of
    # the per-layer chain, in the stacked layout.
    steps = tuple(step(i, "affine") for i in range(3))
    plain = Chain(steps)
    x, params = _setup(plain, (5, 4, 4, 6))
    sp = plain.stack_params(params)
    chex.assert_shape(sp["stacked"]["002"]["net"]["w1"], (3, 3, 3, 3, 4))
    chex.assert_trees_all_equal(plain.unstack_params(sp), params)

    def grads(layer, p):
      def f(p, v):
        y, ld = layer.forward(p, v)
        return jnp.sum(jnp.sin(y)) + 0.1 * jnp.sum(ld)
      return jax.jit(jax.grad(f, argnums=(0, 1)))(p, x)

    g_ref = grads(plain, params)
    g_ref = (plain.stack_params(g_ref[0]), g_ref[1])
    y_ref = plain.forward(params, x)
    # batch_chunk: scanned steps on chunks of 2, 2, 1 (uneven) / 1 example.
    for rev, loop, chunk in [(False, "scan", 1), (True, "unrolled", 0),
                             (True, "scan", 2)]:
      c = Chain(steps, reversible=rev, reversible_loop=loop, stacked=True,
                batch_chunk=chunk)
      fresh = c.init(jax.random.PRNGKey(1), x)
      self.assertEqual(jax.tree_util.tree_structure(fresh),
                       jax.tree_util.tree_structure(sp))
      y = jax.jit(c.forward)(sp, x)
      chex.assert_trees_all_close(y, y_ref, rtol=1e-5, atol=1e-5)
      chex.assert_trees_all_close(jax.jit(c.inverse)(sp, y[0]), x, atol=1e-5)
      assert_trees_rel_close(grads(c, sp), g_ref, 1e-4, (rev, loop, chunk))

  def test_memory_does_not_grow_with_depth(self):
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 4))

    def temp(depth, reversible):
      c = Chain(tuple(step(i, "additive", Reverse()) for i in range(depth)),
                reversible=reversible)
      p = c.init(jax.random.PRNGKey(1), x)
      f = jax.grad(lambda p, v: jnp.sum(c.forward(p, v)[0] ** 2),
                   argnums=(0, 1))
      return jax.jit(f).lower(p, x).compile().memory_analysis(
          ).temp_size_in_bytes

    rev6 = temp(6, True)
    self.assertLessEqual(rev6, 1.3 * temp(2, True))
    self.assertLess(rev6, 0.5 * temp(6, False))


if __name__ == "__main__":
  absltest.main()
