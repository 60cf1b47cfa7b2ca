"""Every config in configs/ loads, validates and builds its model."""
import glob
import importlib.util
import os

import pytest

from advinv_jax.config import validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not os.path.basename(p).startswith("_"))


def _load(path):
  spec = importlib.util.spec_from_file_location(
      "cfg_" + os.path.basename(path)[:-3], path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_validates_and_documents_its_command(path):
  mod = _load(path)
  assert "python " in (mod.__doc__ or ""), "docstring gives the command"
  assert "ost" in mod.__doc__, "docstring gives the expected cost"
  cfg = mod.get_config()
  if "seed" in cfg and "data" in cfg:  # a training config
    validate_config(cfg)
    if "cpu" in mod.__doc__:
      validate_config(mod.get_config("cpu"))
    if ":linear" in mod.__doc__:
      validate_config(mod.get_config("linear"))


@pytest.mark.parametrize("name", ["binary_ce", "mnist_binary_differential"])
def test_binary_linear_variant_is_a_linear_model(name):
  """``:linear`` builds a model with no hidden layer (logits affine in x);
  an unknown variant is one error naming the choices."""
  import jax
  import numpy as np
  from advinv_jax.models import build_model
  mod = _load(os.path.join(ROOT, "configs", f"{name}.py"))
  cfg = mod.get_config("linear")
  assert cfg.model.name == "mlp" and tuple(cfg.model.hidden) == ()
  assert cfg.optimizer.name == "sgd" and cfg.optimizer.momentum == 0.0
  model = build_model(cfg.model, (4, 4, 1), 2)
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 4, 4, 1))
  params = model.init(jax.random.PRNGKey(1), x)
  f = lambda v: model.logits(params, v)
  # Affine: f(a x + (1 - a) y) = a f(x) + (1 - a) f(y).
  np.testing.assert_allclose(f(0.3 * x + 0.7 * x[::-1]),
                             0.3 * f(x) + 0.7 * f(x[::-1]), atol=1e-5)
  assert mod.get_config("cnn").model.name == "cnn"
  with pytest.raises(ValueError, match="unknown.*'cnn', 'linear'"):
    mod.get_config("mlp")
