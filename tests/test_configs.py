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
