"""fiRevNet models: bijectivity, log-determinants, the z layout, reversible
gradients and shape validation (tiny widths/depths, perturbed params)."""
import importlib.util
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from advinv_jax.config import default_config, validate_config
from advinv_jax.layers import DCT2D, count_params
from advinv_jax.models import InvertibleModel, build_model, model_names
from tests._helpers import (assert_trees_rel_close, max_rel_err, model_section,
                            perturb)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model_cfg(**kw):
  return model_section(**{"depth": 1, "width": 4, **kw})


CASES = {
    # name: (config overrides, input shape, final tensor shape)
    "digits8x8": (dict(coupling="affine"), (8, 8, 1), (1, 1, 16)),
    "mnist_padded32": (dict(coupling="additive", permutation="reverse"),
                       (32, 32, 1), (4, 4, 16)),
    "rgb16_psi_conv1x1": (dict(levels=2, downsample="psi",
                               permutation="conv1x1",
                               affine_scale="exp_tanh"),
                          (16, 16, 3), (4, 4, 24)),
    "imagenet_small": (dict(name="firevnet_imagenet", blocks=(1, 1),
                            channels=(24, 96), permutation="shuffle"),
                       (32, 32, 3), (4, 4, 192)),
}


def _setup(name, batch=3, **extra):
  kw, shape, _ = CASES[name]
  m = build_model(model_cfg(**{**kw, **extra}), shape, 10)
  x = jax.random.uniform(jax.random.PRNGKey(0), (batch,) + shape)
  p = perturb(jax.jit(m.init)(jax.random.PRNGKey(1), x),
              jax.random.PRNGKey(2))
  return m, p, x


def _final_map(m, p, x):
  """The final tensor, recomputed stage by stage (before the readout)."""
  h, _ = m.pre.forward({}, x)
  for i, st in enumerate(m.stages):
    if st.down is not None:
      h, _ = st.down.forward({}, h)
    h, _ = st.steps.forward(p[f"stage_{i}"], h)
    if st.split:
      h = h[..., :h.shape[-1] // 2]
  return h


class ModelTest(chex.TestCase):

  def test_registered(self):
    self.assertIn("firevnet", model_names())
    self.assertIn("firevnet_imagenet", model_names())

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(*[(n, n) for n in CASES])
  def test_bijective_shapes_and_logdet(self, name):
    self._check_bijective(name)

  @chex.variants(without_jit=True)
  def test_bijective_shapes_and_logdet_eager(self):
    self._check_bijective("digits8x8")

  def _check_bijective(self, name):
    m, p, x = _setup(name)
    self.assertIsInstance(m, InvertibleModel)
    d = int(np.prod(x.shape[1:]))
    z, ld = self.variant(m.forward)(p, x)
    chex.assert_shape(z, (3, d))
    chex.assert_shape(ld, (3,))
    z_s, z_n = m.split(z)
    chex.assert_shape(z_s, (3, 10))
    chex.assert_shape(z_n, (3, d - 10))
    chex.assert_trees_all_close(m.merge(z_s, z_n), z)
    chex.assert_trees_all_close(m.logits(p, x), z_s, atol=1e-5)
    xr, ld_inv = self.variant(m.inverse_with_logdet)(p, z)
    chex.assert_tree_all_finite((z, ld, xr, ld_inv))
    self.assertLessEqual(max_rel_err(xr, x), 1e-5)
    chex.assert_trees_all_close(ld, -ld_inv, atol=1e-3, rtol=1e-5)

  def test_logdet_matches_jacobian(self):
    # Forward mode needs conv3x3_impl='xla' (the CPU default xla_gemm_grad
    # is a custom_vjp); jacrev on the default must give the same Jacobian.
    m, p, x = _setup("digits8x8", batch=1, conv3x3_impl="xla")
    flat = lambda v: m.forward(p, v.reshape(x.shape))[0].reshape(-1)
    jac = jax.jit(jax.jacfwd(flat))(x.reshape(-1))
    m_default = build_model(model_cfg(**CASES["digits8x8"][0]), (8, 8, 1), 10)
    flat_d = lambda v: m_default.forward(p, v.reshape(x.shape))[0].reshape(-1)
    chex.assert_trees_all_close(jax.jit(jax.jacrev(flat_d))(x.reshape(-1)),
                                jac, atol=1e-4)
    _, expected = jnp.linalg.slogdet(jac)
    ld = m.forward(p, x)[1][0]
    # includes the fixed x -> 2x - 1 map: 64 log 2.
    self.assertLessEqual(abs(float(ld - expected)),
                         1e-4 * max(1.0, abs(float(expected))))

  @parameterized.named_parameters(*[(n, n) for n in CASES])
  def test_logits_location(self, name):
    m, p, x = _setup(name)
    z, _ = m.forward(p, x)
    f = _final_map(m, p, x)
    chex.assert_shape(f, (3,) + CASES[name][2])
    if m.readout == "dct":
      # DC coefficients of the first 10 channels = sqrt(HW) * spatial mean.
      expected = jnp.sqrt(16.0) * f.mean((1, 2))[:, :10]
      rest = DCT2D().forward({}, f)[0].reshape(3, -1)[:, 10:]
    elif f.shape[-1] >= 10:
      h, w = f.shape[1:3]
      expected = f[:, h // 2, w // 2, :10]
      rest = None
    else:
      expected = f.reshape(3, -1)[:, :10]
      rest = None
    chex.assert_trees_all_close(z[:, :10], expected, atol=1e-4)
    if rest is not None:
      chex.assert_trees_all_close(z[:, 10:], rest, atol=1e-4)

  def test_nuisance_order_digits(self):
    # 8x8x1, 3 levels: final 1x1x16 (logits = its first 10 channels), then
    # its remaining 6 entries, then the split-offs of level 1 (4x4x2 = 32)
    # and level 2 (2x2x4 = 16).
    m, p, x = _setup("digits8x8")
    z, _ = m.forward(p, x)
    h, _ = m.pre.forward({}, x)
    splits = []
    for i, st in enumerate(m.stages):
      h, _ = st.down.forward({}, h)
      h, _ = st.steps.forward(p[f"stage_{i}"], h)
      if st.split:
        c = h.shape[-1] // 2
        splits.append(h[..., c:].reshape(3, -1))
        h = h[..., :c]
    expected = jnp.concatenate([h.reshape(3, -1)] + splits, axis=1)
    chex.assert_trees_all_close(z, expected, atol=1e-5)
    self.assertEqual([s.shape[1] for s in splits], [32, 16])

  def test_metamer_keeps_logits(self):
    m, p, x = _setup("mnist_padded32")
    z, _ = m.forward(p, x)
    z_s, z_n = m.split(z)
    met = m.inverse(p, m.merge(z_s, jnp.roll(z_n, 1, axis=0)))
    chex.assert_trees_all_close(m.logits(p, met), z_s, atol=1e-4)

  def test_logit_input_metamers_lie_in_the_widened_box(self):
    # The logit input layer bounds every inverse by construction: metamers
    # and the preimages of far-off z lie within 1/32 of [0, 1].
    m, p, x = _setup("digits8x8", coupling="additive",
                     firevnet=dict(input_transform="logit",
                                   input_alpha=1 / 34))

    @jax.jit
    def run(p, x, far):
      z, _ = m.forward(p, x)
      z_s, z_n = m.split(z)
      xs = m.inverse(p, jnp.concatenate(
          [z, m.merge(z_s, jnp.roll(z_n, 1, axis=0)), far]))
      return xs, z_s, m.logits(p, xs[3:6])

    far = 1e3 * jax.random.normal(jax.random.PRNGKey(3), (3, m.latent_dim))
    xs, z_s, met_logits = run(p, x, far)
    self.assertLessEqual(max_rel_err(xs[:3], x), 1e-5)     # round trip
    self.assertGreaterEqual(float(xs.min()), -1 / 32 - 1e-7)
    self.assertLessEqual(float(xs.max()), 1 + 1 / 32 + 1e-7)
    chex.assert_trees_all_close(met_logits, z_s, atol=1e-4)

  @parameterized.parameters(("bfloat16_1x1", 1e-2, 8e-2),
                            ("bfloat16", 3e-2, 0.12))
  def test_bf16_model_is_exactly_invertible(self, dtype, z_tol, grad_tol):
    # config.model.compute.dtype reaches every coupling: same params, a
    # (slightly) different function, still an exact bijection with a
    # float32 log-det; its gradients are the float32 model's up to bfloat16
    # rounding.
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, 8, 8, 1))
    m32 = build_model(model_cfg(width=16, levels=2, compute_dtype="float32"),
                      (8, 8, 1), 10)
    m16 = build_model(model_cfg(width=16, levels=2, compute_dtype=dtype),
                      (8, 8, 1), 10)
    p = perturb(jax.jit(m32.init)(jax.random.PRNGKey(1), x),
                jax.random.PRNGKey(2), scale=0.2)
    (z, ld), (z32, ld32) = jax.jit(m16.forward)(p, x), jax.jit(m32.forward)(
        p, x)
    self.assertGreater(float(jnp.max(jnp.abs(z - z32))), 1e-6)
    self.assertLess(float(jnp.linalg.norm(z - z32) / jnp.linalg.norm(z32)),
                    z_tol)
    self.assertEqual((z.dtype, ld.dtype), (jnp.float32, jnp.float32))
    x_rec, ld_inv = jax.jit(m16.inverse_with_logdet)(p, z)
    # As exact as the float32 model's own inverse.
    x_rec32, ld_inv32 = jax.jit(m32.inverse_with_logdet)(p, z32)
    err32 = float(jnp.max(jnp.abs(x_rec32 - x)))
    self.assertLess(float(jnp.max(jnp.abs(x_rec - x))), max(1e-5, 4 * err32))
    chex.assert_trees_all_close(ld_inv, -ld, atol=1e-4)
    chex.assert_trees_all_close(ld_inv32, -ld32, atol=1e-4)

    def loss(m):   # logits and log-det, as in iCE
      return lambda q: jnp.sum(jnp.sin(m.forward(q, x)[0])) + 0.01 * jnp.sum(
          m.forward(q, x)[1])

    g16, g32 = (jax.jit(jax.grad(loss(m)))(p) for m in (m16, m32))
    flat = lambda t: jnp.concatenate([v.ravel() for v in
                                      jax.tree_util.tree_leaves(t)])
    self.assertEqual({v.dtype for v in jax.tree_util.tree_leaves(g16)},
                     {jnp.dtype(jnp.float32)})
    rel = float(jnp.linalg.norm(flat(g16) - flat(g32)) /
                jnp.linalg.norm(flat(g32)))
    self.assertLess(rel, grad_tol)
    self.assertGreater(rel, 1e-6)
    with self.assertRaisesRegex(ValueError, "compute.dtype"):
      build_model(model_cfg(compute_dtype="float16"), (8, 8, 1), 10)

  def test_reversible_grads_equal_autodiff(self, loop="unrolled"):
    # (the 'scan' loop is checked on layer chains in test_layers.py)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 1))
    kw = dict(levels=2, depth=2, permutation="conv1x1", downsample="psi")
    mr = build_model(model_cfg(**kw, reversible=True, reversible_loop=loop),
                     (8, 8, 1), 10)
    m = build_model(model_cfg(**kw), (8, 8, 1), 10)
    p = perturb(jax.jit(m.init)(jax.random.PRNGKey(1), x),
                jax.random.PRNGKey(2))

    def loss(model):
      def f(p, v):
        z, ld = model.forward(p, v)
        return (jnp.sum(jax.nn.log_softmax(z[:, :10])[:, 3])
                + 0.01 * jnp.sum(z[:, 10:] ** 2) - 0.01 * jnp.sum(ld))
      return jax.jit(jax.grad(f, argnums=(0, 1)))

    ga, gb = loss(mr)(p, x), loss(m)(p, x)
    assert_trees_rel_close(ga, gb, 1e-4)

  def test_scan_model_stacks_params_same_function(self):
    # reversible_loop='scan' stores each level's steps stacked; converted
    # params give the unrolled model's z, logdet, inverse and gradients.
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 1))
    kw = dict(levels=2, depth=3, permutation="conv1x1", reversible=True)
    m = build_model(model_cfg(**kw), (8, 8, 1), 10)
    ms = build_model(model_cfg(**kw, reversible_loop="scan"), (8, 8, 1), 10)
    p = perturb(jax.jit(m.init)(jax.random.PRNGKey(1), x),
                jax.random.PRNGKey(2))
    restack = lambda p: {f"stage_{i}": st.steps.stack_params(
        p[f"stage_{i}"]) for i, st in enumerate(ms.stages)}
    ps = restack(p)
    self.assertEqual(jax.tree_util.tree_structure(ps), jax.tree_util.
                     tree_structure(jax.jit(ms.init)(jax.random.PRNGKey(1),
                                                     x)))
    chex.assert_shape(ps["stage_0"]["stacked"]["000"]["s"], (3, 4))
    with self.assertRaisesRegex(ValueError, "scan_batch_chunk=-1"):
      build_model(model_cfg(**kw, scan_batch_chunk=-1), (8, 8, 1), 10)
    z, ld = jax.jit(m.forward)(p, x)
    chex.assert_trees_all_close(jax.jit(ms.forward)(ps, x), (z, ld),
                                atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(jax.jit(ms.inverse)(ps, z), x, atol=1e-5)

    def grad(model, p):
      def f(p):
        z, ld = model.forward(p, x)
        return jnp.sum(jax.nn.log_softmax(z[:, :10])[:, 3]) - 0.01 * jnp.sum(
            ld)
      return jax.jit(jax.grad(f))(p)
    assert_trees_rel_close(grad(ms, ps), restack(grad(m, p)), 1e-4)

  @parameterized.parameters(
      dict(reversible=True, impl="xla_gemm_grad", loop="unrolled"),
      dict(reversible=True, impl="xla", loop="scan"),
      dict(reversible=False, impl="xla_gemm_grad", loop="unrolled"),
      dict(reversible=True, impl="xla_gemm_grad", loop="unrolled",
           case="digits8x8"),   # affine couplings: x-dependent logdets
      dict(reversible=True, impl="xla", loop="scan", case="digits8x8"))
  def test_grads_under_user_shard_map_equal_one_device(
      self, reversible, impl, loop, case="mnist_padded32"):
    """Other JAX code may differentiate our models inside its own
    ``jax.shard_map`` (default ``check_vma=True``: replicated params, batch
    split). Our custom VJPs (reversible chains, ``xla_gemm_grad``) must give
    the params' gradient summed over the batch axis, like JAX autodiff."""
    from jax.sharding import Mesh, PartitionSpec as P
    kw, shape, _ = CASES[case]
    m = build_model(model_cfg(**kw, reversible=reversible,
                              reversible_loop=loop, conv3x3_impl=impl),
                    shape, 10)
    x = jax.random.uniform(jax.random.PRNGKey(0), (4,) + shape)
    p = perturb(jax.jit(m.init)(jax.random.PRNGKey(1), x),
                jax.random.PRNGKey(2))

    def loss(p, v):
      z, ld = m.forward(p, v)
      return (jnp.sum(jax.nn.log_softmax(z[:, :10])[:, 3])
              + 0.01 * jnp.sum(z[:, 10:] ** 2) - 0.01 * jnp.sum(ld))

    grad = jax.grad(loss, argnums=(0, 1))
    mesh = Mesh(np.array(jax.devices()[:2]), ("b",))
    sharded = jax.jit(jax.shard_map(grad, mesh=mesh, in_specs=(P(), P("b")),
                                    out_specs=(P(), P("b"))))
    got, want = sharded(p, x), jax.jit(grad)(p, x)
    chex.assert_trees_all_close(got, want, atol=1e-5, rtol=1e-4)

  def test_batch_chunk_is_the_same_function(self):
    """``batch_chunk=k`` runs chunks of <= k (here 3, 2: uneven) and must
    give the whole-batch model's outputs, inverse and gradients."""
    shape = (8, 8, 1)
    cfg = model_cfg(levels=1, depth=2, reversible=True)
    m = build_model(cfg, shape, 10)
    mc = build_model(model_cfg(levels=1, depth=2, reversible=True,
                               batch_chunk=3), shape, 10)
    self.assertIsInstance(mc, InvertibleModel)
    self.assertEqual((mc.latent_dim, mc.stages), (m.latent_dim, m.stages))
    x = jax.random.uniform(jax.random.PRNGKey(0), (5,) + shape)
    # init sees the whole batch (data-dependent ActNorm): identical params.
    p0 = jax.jit(mc.init)(jax.random.PRNGKey(1), x)
    chex.assert_trees_all_close(p0, jax.jit(m.init)(jax.random.PRNGKey(1), x))
    p = perturb(p0, jax.random.PRNGKey(2))
    (z, ld), (zc, ldc) = jax.jit(m.forward)(p, x), jax.jit(mc.forward)(p, x)
    chex.assert_trees_all_close((zc, ldc), (z, ld), atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(jax.jit(mc.inverse)(p, z),
                                jax.jit(m.inverse)(p, z), atol=1e-5, rtol=1e-5)

    def loss(model):
      def f(p, v):
        z, ld = model.forward(p, v)
        # not a per-example sum: couples the chunks through the batch mean
        return (jnp.mean(jax.nn.log_softmax(z[:, :10])[:, 3]) ** 2
                + 0.01 * jnp.mean(z[:, 10:] ** 2) - 0.01 * jnp.mean(ld))
      return jax.jit(jax.grad(f, argnums=(0, 1)))

    chex.assert_trees_all_close(loss(mc)(p, x), loss(m)(p, x), atol=1e-5,
                                rtol=1e-4)

  def test_batch_chunk_bad_value_and_non_invertible(self):
    with self.assertRaisesRegex(ValueError, "batch_chunk=-2 must be an int"):
      build_model(model_cfg(batch_chunk=-2), (8, 8, 1), 10)
    # -1: the platform default (tests run on CPU: chunks of 32)
    self.assertEqual(build_model(model_cfg(batch_chunk=-1), (8, 8, 1),
                                 10).chunk, 32)
    cnn = default_config().model
    cnn.name, cnn.compute.batch_chunk = "cnn", 2
    m = build_model(cnn, (8, 8, 1), 10)
    self.assertFalse(m.invertible)
    x = jax.random.uniform(jax.random.PRNGKey(0), (5, 8, 8, 1))
    p = m.init(jax.random.PRNGKey(1), x)
    chex.assert_trees_all_close(jax.jit(m.logits)(p, x),
                                jax.jit(m.base.logits)(p, x), atol=1e-5)
    with self.assertRaisesRegex(ValueError, "not invertible"):
      m.forward(p, x)
    with self.assertRaisesRegex(ValueError, "expects images of shape"):
      m.logits(p, x[..., 0])

  def test_param_count(self):
    m, p, _ = _setup("digits8x8")
    self.assertEqual(m.param_count(), count_params(p))

  def test_actnorm_init_guard_on_padded_channels(self):
    # The authors' 3-channel layout: digit in channel 0, channels 1-2 zero
    # plus U(0, 1/256) noise. No channel may be scaled by more than 1/floor.
    m = build_model(model_cfg(actnorm_std_floor=1e-2, levels=1), (8, 8, 3),
                    10)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x = jnp.concatenate([
        jax.random.uniform(k1, (16, 8, 8, 1)),
        jax.random.uniform(k2, (16, 8, 8, 2), maxval=1 / 256)], axis=-1)
    p = jax.jit(m.init)(jax.random.PRNGKey(1), x)
    s_first = p["stage_0"]["000"]["000"]["s"]
    self.assertLessEqual(float(jnp.exp(s_first).max()), 100.0 + 1e-3)

  def test_bad_shapes_raise(self):
    with self.assertRaisesRegex(ValueError, "2\\*\\*levels.*pad"):
      build_model(model_cfg(), (28, 28, 1), 10)
    with self.assertRaisesRegex(ValueError, "num_classes=20 exceeds"):
      build_model(model_cfg(), (8, 8, 1), 20)
    with self.assertRaisesRegex(ValueError, "init_squeeze \\* prod"):
      build_model(model_cfg(name="firevnet_imagenet", blocks=(1, 1),
                            channels=(24, 96)), (36, 36, 3), 10)
    with self.assertRaisesRegex(ValueError, "coupling"):
      build_model(model_cfg(coupling="nope"), (8, 8, 1), 10)
    m = build_model(model_cfg(), (8, 8, 1), 10)
    # Raised in Python before any params are touched or anything is traced.
    with self.assertRaisesRegex(ValueError, "expects images of shape"):
      m.forward(None, jnp.ones((2, 8, 8, 3)))
    with self.assertRaisesRegex(ValueError, "expects z of shape"):
      m.inverse(None, jnp.ones((2, 63)))

  def test_imagenet_config_full_layout(self):
    path = os.path.join(ROOT, "configs", "firevnet48_imagenet.py")
    spec = importlib.util.spec_from_file_location("cfg_fr48", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config()
    validate_config(cfg)
    m = build_model(cfg.model, (224, 224, 3), 1000)   # Python only
    self.assertEqual(m._plan["final"], (1, 7, 7, 3072))
    self.assertEqual(sum(len(s.steps.layers) for s in m.stages), 100)
    self.assertEqual(m.latent_dim, 224 * 224 * 3)


class CNNTest(chex.TestCase):
  """The plain CNN: every conv3x3_impl computes the same function (and input
  gradient, which attacks use) with the same parameters."""

  def test_conv_impls_agree(self):
    base = dict(name="cnn", features=(4, 6, 6), hidden=(8,))
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, 12, 12, 1))
    m_xla = build_model(model_cfg(**base, conv3x3_impl="xla"), (12, 12, 1), 5)
    p = perturb(m_xla.init(jax.random.PRNGKey(1), x), jax.random.PRNGKey(2))
    self.assertEqual(sorted(p), ["Conv_0", "Conv_1", "Conv_2", "Dense_0",
                                 "Dense_1"])
    chex.assert_shape(p["Conv_1"]["kernel"], (3, 3, 4, 6))
    loss = lambda m: jax.grad(lambda x: jnp.sum(
        jax.nn.log_softmax(m.logits(p, x))[:, 0]))(x)
    for impl in ("auto", "im2col"):
      m = build_model(model_cfg(**base, conv3x3_impl=impl), (12, 12, 1), 5)
      chex.assert_trees_all_close(m.logits(p, x), m_xla.logits(p, x),
                                  atol=1e-5)
      chex.assert_trees_all_close(loss(m), loss(m_xla), atol=1e-5)
    with self.assertRaisesRegex(ValueError, "conv3x3_impl"):
      build_model(model_cfg(**base, conv3x3_impl="fft"), (12, 12, 1), 5)


if __name__ == "__main__":
  absltest.main()
