"""The PyTorch iCE training step (benchmarks/_torch_train_step.py) does our
step's arithmetic: the port's full forward (benchmarks/_torch_firevnet.py,
``forward_full``) gives our ``z`` and ``logdet`` within 1e-4 relative, and one
PyTorch step gives our train step's losses and gradient norm. Skipped when
torch is not installed (CI does not install it)."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from advinv_jax.models import build_model  # noqa: E402
from tests._helpers import load_benchmark, random_params  # noqa: E402

from configs.mnist import mnist_firevnet  # noqa: E402

PORT = load_benchmark("_torch_firevnet")
STEP = load_benchmark("_torch_train_step")


@pytest.mark.parametrize("coupling", ["additive", "affine"])
def test_full_forward_equals_ours(coupling):
  """z (split-off halves included, in our order) and logdet, on a 3-level
  network whose final 4x4x16 tensor holds the logits at its centre."""
  cfg = {"name": "firevnet", "firevnet": dict(
      levels=3, depth=2, width=16, coupling=coupling,
      permutation="reverse" if coupling == "additive" else "shuffle")}
  model = build_model(cfg, (32, 32, 1), 10)
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(4, 32, 32, 1)).astype(np.float32)
  params = random_params(model, x, rng)
  net = PORT.make_torch_firevnet(model, params, full=True)
  d = PORT.check_full_forward(model, params, x, net=net)
  assert d["z_rel"] < 1e-4 and d["logdet_rel"] < 1e-4, d
  assert d["max_abs_z"] > 1e-1 and d["max_abs_logdet"] > 1.0, d
  # full=True: forward is forward_full; the logits API is unchanged.
  xt = torch.tensor(x.transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    z, ld = net(xt)
    logits = PORT.make_torch_firevnet(model, params)(xt)
  assert z.shape == (4, 32 * 32) and ld.shape == (4,)
  np.testing.assert_array_equal(z[:, :10].numpy(), logits.numpy())


def test_torch_ice_step_equals_ours():
  """One step from the same parameters, without noise: the network loss
  before and after the k nuisance-classifier updates, its terms, the
  classifier's loss and the gradient norm agree within 1e-4 relative."""
  cfg = mnist_firevnet(loss="ice")
  cfg.model.firevnet.update(dict(levels=2, depth=1, width=8,
                                 coupling="affine"))
  cfg.model.compute.batch_chunk = 0
  cfg.loss.ice.nuisance_hidden = (32,)
  cfg.loss.ice.nuisance_steps = 2
  model = build_model(cfg.model, (8, 8, 1), 10)
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(4, 8, 8, 1)).astype(np.float32)
  y = np.array([0, 3, 7, 9])
  params = random_params(model, x, rng)
  d_n = model.latent_dim - 10
  loss_params = {"prior": {
      "mean": (0.1 * rng.standard_normal(d_n)).astype(np.float32),
      "log_std": (0.1 * rng.standard_normal(d_n)).astype(np.float32)}}
  out = STEP.check_ice_step(cfg, model, params, x, y, loss_params=loss_params)
  for name, (t, j, rel) in out.items():
    assert rel < 1e-4, (name, t, j, rel)
  assert out["nce"][1] > 0.1 and abs(out["mle"][1]) > 0.1, out
