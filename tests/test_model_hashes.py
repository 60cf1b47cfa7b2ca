"""The default models stay unchanged: their initial parameters and their
outputs on a fixed input, against tests/data/model_hashes.json.

A refactor of the config, the builders or the layers must not change what a
config builds: the parameters ``model.init`` draws, ``forward``'s ``(z,
logdet)``, ``logits`` and the train-mode ``forward_train`` (dropout, logit
BatchNorm) on a fixed batch.

Bitwise where it can be: the fixture stores sha256 hashes together with the
fingerprint of the machine that wrote them (jax and jaxlib versions, CPU
architecture and vector extensions, device count). On a machine with the
same fingerprint the hashes must match exactly. XLA CPU rounds differently on
other CPU kinds and versions (another vector width changes the order of
float32 sums), so there the test compares 64 stored values per output and
their sums at ``rtol=1e-4``: float32 carries ~6e-8 relative error per
rounding, and a reordered sum of n terms can move by ~n ulps; across the
model's depth that stays orders of magnitude below 1e-4, while any change of
what the config builds (another layer, initialiser or default) moves values
by O(1).

Rewrite the fixture (``ADVINV_WRITE_MODEL_HASHES=1 pytest
tests/test_model_hashes.py``) only from a commit known to be good, never from
the commit under test.
"""
import hashlib
import json
import os
import platform

import jax
import jaxlib
import numpy as np
import pytest

from advinv_jax.config import default_config
from advinv_jax.models import build_model
from configs import mnist

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                       "model_hashes.json")

# name: (config, input shape (H, W, C) of the fixed batch, num_classes)
CASES = {
    "default": (default_config, (8, 8, 1), 10),
    "mnist_ice_cpu_authors": (lambda: mnist.get_config("ice,cpu,authors"),
                              (16, 16, 1), 10),
}
_SAMPLES = 64
_RTOL = 1e-4


def _fingerprint() -> str:
  """What decides XLA CPU's float rounding: versions, CPU kind, devices."""
  flags = set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          flags = set(line.split(":", 1)[1].split())
          break
  except OSError:
    pass
  ext = ",".join(e for e in ("avx2", "avx512f", "avx512_bf16", "amx_tile")
                 if e in flags)
  return (f"jax {jax.__version__} jaxlib {jaxlib.__version__} "
          f"{platform.machine()} [{ext}] devices {jax.device_count()}")


def _sha(tree) -> str:
  """sha256 over every leaf's path, dtype, shape and bytes."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    a = np.asarray(leaf)
    h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def _values(tree) -> list:
  """64 evenly spaced entries of all float leaves, then their sum and the
  sum of their absolute values (float64)."""
  flat = np.concatenate([np.asarray(l, np.float64).ravel()
                         for l in jax.tree_util.tree_leaves(tree)
                         if np.issubdtype(np.asarray(l).dtype, np.floating)])
  idx = np.linspace(0, flat.size - 1, _SAMPLES).astype(int)
  return [float(v) for v in flat[idx]] + [float(flat.sum()),
                                          float(np.abs(flat).sum())]


def _outputs(name):
  make_config, shape, num_classes = CASES[name]
  model = build_model(make_config().model, shape, num_classes)
  x = np.random.default_rng(0).uniform(size=(4,) + shape).astype(np.float32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  train = jax.jit(lambda p, v, k: model.forward_train(p, v, k))(
      params, x, jax.random.PRNGKey(1))
  return {"init": params, "forward": jax.jit(model.forward)(params, x),
          "logits": jax.jit(model.logits)(params, x), "forward_train": train}


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_unchanged(name):
  outs = _outputs(name)
  got = {k: _sha(v) for k, v in outs.items()}
  got_values = {k: _values(v) for k, v in outs.items()}
  if os.environ.get("ADVINV_WRITE_MODEL_HASHES"):
    stored = {}
    if os.path.exists(FIXTURE):
      with open(FIXTURE) as f:
        stored = json.load(f)
    stored[name] = {"fingerprint": _fingerprint(), "sha256": got,
                    "values": got_values}
    with open(FIXTURE, "w") as f:
      json.dump(stored, f, indent=1, sort_keys=True)
      f.write("\n")
  with open(FIXTURE) as f:
    want = json.load(f)[name]
  if want["fingerprint"] == _fingerprint():
    assert got == want["sha256"], "not bitwise equal on the fixture's machine"
  for k, v in want["values"].items():
    scale = float(np.max(np.abs(v[:_SAMPLES])))
    np.testing.assert_allclose(got_values[k], v, rtol=_RTOL,
                               atol=_RTOL * scale, err_msg=f"{name}: {k}")
