"""The PyTorch port of the fiRevNet (benchmarks/_torch_firevnet.py) computes
our logits (and their input gradients): equal within 1e-4 of max |logit| on
random inputs with random parameters. Skipped when torch is not installed
(CI does not install it)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from advinv_jax.layers import Chain, Layer  # noqa: E402
from advinv_jax.models import build_model  # noqa: E402
from tests._helpers import (load_benchmark, model_section,  # noqa: E402
                            random_params)

PORT = load_benchmark("_torch_firevnet")

CASES = {
    # name: (model config, input shape HWC)
    "additive_reverse": (dict(coupling="additive", permutation="reverse"),
                         (32, 32, 1)),
    "affine_reverse": (dict(coupling="affine", permutation="reverse"),
                       (32, 32, 1)),
    "additive_shuffle": (dict(coupling="additive", permutation="shuffle"),
                         (32, 32, 1)),
    "affine_shuffle": (dict(coupling="affine", permutation="shuffle"),
                       (32, 32, 1)),
    # psi, LU 1x1 conv, exp_tanh scale; final 2x2x8 (8 < 10 channels): the
    # logits are the first 10 entries of the flattened final tensor.
    "psi_conv1x1_exptanh_8x8": (dict(levels=2, downsample="psi",
                                     permutation="conv1x1",
                                     affine_scale="exp_tanh",
                                     conv3x3_impl="auto",
                                     conv1x1_as_matmul=False),
                                (8, 8, 1)),
    "imagenet_dct": (dict(name="firevnet_imagenet", blocks=(1, 1),
                          channels=(8, 16), permutation="shuffle",
                          coupling="affine"),
                     (16, 16, 3)),
}


def _torch_logits(net, x, requires_grad=False):
  xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy(),
                    requires_grad=requires_grad)
  return xt, net(xt)


@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_logits_equal_ours(case):
  kw, shape = CASES[case]
  cfg = model_section(**{**dict(name="firevnet", levels=3, depth=2, width=8),
                         **kw})
  model = build_model(cfg, shape, 10)
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(4,) + shape).astype(np.float32)
  params = random_params(model, x, rng)
  logits = jax.jit(model.logits)
  ours = np.asarray(logits(params, x))
  with torch.no_grad():
    _, theirs = _torch_logits(PORT.make_torch_firevnet(model, params), x)
  assert theirs.shape == ours.shape == (4, 10)
  scale = float(np.max(np.abs(ours)))
  assert scale > 1e-2        # the logits are not trivially zero
  np.testing.assert_allclose(theirs.numpy(), ours, rtol=0, atol=1e-4 * scale)
  # The coupling subnets matter: with their last convs zeroed (identity
  # couplings, as at init) the logits differ.
  ident = jax.tree_util.tree_map_with_path(
      lambda path, a: 0 * a if path[-1].key in ("w3", "b3") else a, params)
  assert np.max(np.abs(np.asarray(logits(ident, x)) - ours)) > 1e-2 * scale


def test_input_gradients_equal_ours():
  """Input gradients of the cross-entropy (what PGD follows) agree too."""
  cfg = model_section(name="firevnet", levels=3, depth=2, width=8,
                      coupling="affine")
  model = build_model(cfg, (32, 32, 1), 10)
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(4, 32, 32, 1)).astype(np.float32)
  params = random_params(model, x, rng)
  y = np.arange(4) % 10

  def loss(x):
    logp = jax.nn.log_softmax(model.logits(params, x))
    return -logp[np.arange(4), y].sum()

  g_ours = np.asarray(jax.jit(jax.grad(loss))(x)).transpose(0, 3, 1, 2)
  xt, out = _torch_logits(PORT.make_torch_firevnet(model, params), x,
                          requires_grad=True)
  ce = torch.nn.functional.cross_entropy(out, torch.tensor(y),
                                         reduction="sum")
  (g_theirs,) = torch.autograd.grad(ce, xt)
  np.testing.assert_allclose(g_theirs.numpy(), g_ours, rtol=0,
                             atol=1e-4 * float(np.max(np.abs(g_ours))))


def test_rejects_non_firevnet_and_bad_input():
  cnn = build_model({"name": "cnn"}, (8, 8, 1), 10)
  with pytest.raises(ValueError, match="fiRevNet"):
    PORT.make_torch_firevnet(cnn, {})
  cfg = model_section(name="firevnet", levels=1, depth=1, width=4)
  model = build_model(cfg, (8, 8, 1), 2)
  x = np.zeros((2, 8, 8, 1), np.float32)
  net = PORT.make_torch_firevnet(model, random_params(
      model, x, np.random.default_rng(0)))
  with pytest.raises(ValueError, match="NCHW"):
    net(torch.zeros(2, 8, 8, 1))


def test_rejects_unported_layer():
  class Unported(Layer):

    def apply(self, params, consts, x):
      return x, jnp.zeros((x.shape[0],))

  cfg = model_section(name="firevnet", levels=1, depth=1, width=4)
  model = build_model(cfg, (8, 8, 1), 2)
  stage = dataclasses.replace(model.stages[0], steps=Chain((Unported(),)))
  model = dataclasses.replace(model, stages=(stage,))
  with pytest.raises(ValueError, match="no PyTorch port of layer .*Unported"):
    PORT.make_torch_firevnet(model, {"stage_0": {"000": {}}})
