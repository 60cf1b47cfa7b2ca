"""The default models stay bitwise equal: sha256 of their initial parameters
and of their outputs on a fixed input, against tests/data/model_hashes.json.

A refactor of the config, the builders or the layers must not change what a
config builds: the parameters ``model.init`` draws, ``forward``'s ``(z,
logdet)``, ``logits`` and the train-mode ``forward_train`` (dropout, logit
BatchNorm) on a fixed batch. The hashes were recorded under the suite's XLA
flags (tests/conftest.py); a change of jax / XLA version or of the machine's
CPU kind may change float rounding and so the hashes: then rewrite them
(``ADVINV_WRITE_MODEL_HASHES=1 pytest tests/test_model_hashes.py``) from a
commit known to be good, never from the commit under test.
"""
import hashlib
import json
import os

import jax
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


def _sha(tree) -> str:
  """sha256 over every leaf's path, dtype, shape and bytes."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    a = np.asarray(leaf)
    h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def _hashes(name):
  make_config, shape, num_classes = CASES[name]
  model = build_model(make_config().model, shape, num_classes)
  x = np.random.default_rng(0).uniform(size=(4,) + shape).astype(np.float32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  out = {"init": _sha(params),
         "forward": _sha(jax.jit(model.forward)(params, x)),
         "logits": _sha(jax.jit(model.logits)(params, x))}
  train = jax.jit(lambda p, v, k: model.forward_train(p, v, k))(
      params, x, jax.random.PRNGKey(1))
  out["forward_train"] = _sha(train)
  return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_bitwise_unchanged(name):
  got = _hashes(name)
  if os.environ.get("ADVINV_WRITE_MODEL_HASHES"):
    stored = {}
    if os.path.exists(FIXTURE):
      with open(FIXTURE) as f:
        stored = json.load(f)
    stored[name] = got
    with open(FIXTURE, "w") as f:
      json.dump(stored, f, indent=1, sort_keys=True)
      f.write("\n")
  with open(FIXTURE) as f:
    want = json.load(f)[name]
  assert got == want
