"""Every config in configs/ and each of its variants loads and validates;
builders read only schema fields; old workdirs' configs migrate."""
import glob
import importlib
import itertools
import os

import pytest

from advinv_jax.config import validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3]
                 for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not os.path.basename(p).startswith("_"))


def _variants(mod):
  """Every variant string of a config module: one choice per group."""
  groups = getattr(mod, "VARIANTS", None)
  if not groups:
    return [None]
  return [",".join(combo) for combo in itertools.product(*groups.values())]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_and_every_variant_validate_and_document_the_command(name):
  mod = importlib.import_module(f"configs.{name}")
  assert "python " in (mod.__doc__ or ""), "docstring gives the command"
  assert "ost" in mod.__doc__, "docstring gives the expected cost"
  for variant in _variants(mod):
    cfg = mod.get_config(variant) if variant else mod.get_config()
    if "seed" in cfg and "data" in cfg:  # a training config
      validate_config(cfg)


def test_variants_compose_in_any_order_and_default_per_group():
  from configs import binary, mnist
  assert mnist.get_config("cpu,ice") == mnist.get_config("ice,cpu")
  assert mnist.get_config("ice").loss.name == "ice"
  assert mnist.get_config().loss.name == "ce"
  assert mnist.get_config("ice").model.depth == 16      # paper scale
  assert mnist.get_config("cpu").model.depth == 4
  c = binary.get_config("mnist,differential,linear")
  assert (c.data.name, c.loss.name, c.model.name) == ("mnist", "differential",
                                                      "mlp")
  with pytest.raises(ValueError, match="unknown variant 'mlp'.*model: cnn, "
                     "linear"):
    binary.get_config("mnist,mlp")
  with pytest.raises(ValueError, match="'ce' and 'ice' are both a loss"):
    mnist.get_config("ce,ice")


@pytest.mark.parametrize("variant", ["ce,cifar10", "differential,mnist"])
def test_binary_linear_variant_is_a_linear_model(variant):
  """``:linear`` builds a model with no hidden layer (logits affine in x)."""
  import jax
  import numpy as np
  from advinv_jax.models import build_model
  from configs import binary
  cfg = binary.get_config(variant + ",linear")
  assert cfg.model.name == "mlp" and tuple(cfg.model.hidden) == ()
  assert cfg.optimizer.name == "sgd" and cfg.optimizer.momentum == 0.0
  model = build_model(cfg.model, (4, 4, 1), 2)
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 4, 4, 1))
  params = model.init(jax.random.PRNGKey(1), x)
  f = lambda v: model.logits(params, v)
  # Affine: f(a x + (1 - a) y) = a f(x) + (1 - a) f(y).
  np.testing.assert_allclose(f(0.3 * x + 0.7 * x[::-1]),
                             0.3 * f(x) + 0.7 * f(x[::-1]), atol=1e-5)
  assert binary.get_config(variant).model.name == "cnn"


class _Recorder:
  """A read-only model section that records the fields a builder reads and
  offers no ``get`` (so no builder can fall back to a default of its own)."""

  def __init__(self, section):
    object.__setattr__(self, "_section", section)
    object.__setattr__(self, "read", set())

  def __getattr__(self, name):
    if name not in self._section:
      raise AssertionError(f"a builder read config.model.{name}, which the "
                           "schema lacks")
    self.read.add(name)
    return self._section[name]

  __getitem__ = __getattr__


@pytest.mark.parametrize("name,shape", [("firevnet", (8, 8, 1)),
                                        ("firevnet_imagenet", (16, 16, 3)),
                                        ("cnn", (8, 8, 1)), ("mlp", (8, 8, 1))])
def test_builders_read_only_schema_fields(name, shape):
  from advinv_jax.config import config_section
  from advinv_jax.models import _base
  section = config_section("model", name=name, blocks=(1, 1),
                           channels=(4, 8), depth=1, width=4, levels=1)
  rec = _Recorder(section)
  _base._REGISTRY[name](rec, shape, 2)
  assert rec.read <= set(section.keys())
  assert rec.read, "the builder reads its fields from the section"


def test_partial_sections_take_the_schema_defaults():
  """One default per field: a partial model or data section is completed from
  advinv_jax/config.py (e.g. the MLP's hidden widths, the ActNorm floor)."""
  from advinv_jax.config import ConfigError, config_section, default_config
  from advinv_jax.models import build_model
  schema = default_config()
  m = config_section("model", {"name": "mlp"})
  assert tuple(m.hidden) == tuple(schema.model.hidden)
  assert m.actnorm_std_floor == schema.model.actnorm_std_floor
  mlp = build_model({"name": "mlp"}, (4, 4, 1), 3)
  import jax
  params = mlp.init(jax.random.PRNGKey(0), jax.numpy.zeros((1, 4, 4, 1)))
  widths = sorted(v.shape[-1] for v in jax.tree_util.tree_leaves(params)
                  if v.ndim == 1)
  assert widths == sorted(tuple(schema.model.hidden) + (3,))
  with pytest.raises(ConfigError, match="config.model.hiden; did you mean "
                     "config.model.hidden"):
    config_section("model", name="mlp", hiden=(3,))
  with pytest.raises(ValueError, match="config.model.coupling='nope'"):
    build_model({"name": "firevnet", "coupling": "nope"}, (8, 8, 1), 10)


def test_old_workdir_config_json_migrates():
  """A config.json written before fields were added (here: the report's
  attack settings, model.matmul_dtype, loss.differential.bias) loads: missing
  fields take their schema default, or the value reproducing the older run
  (the differential bias rule was the midpoint before the field existed);
  JSON lists become tuples; an unknown field is one error naming it."""
  import json
  from advinv_jax.config import ConfigError, default_config, migrate_config
  raw = json.loads(json.dumps(default_config().to_dict()))
  del raw["loss"]["differential"]["bias"], raw["model"]["matmul_dtype"]
  del raw["report"]["attack_loop"]
  cfg = migrate_config(raw)
  validate_config(cfg)
  assert cfg.loss.differential.bias == "midpoint"
  assert cfg.model.matmul_dtype == default_config().model.matmul_dtype
  assert cfg.report.attack_loop == default_config().report.attack_loop
  assert isinstance(cfg.report.linf_eps, tuple)
  raw["model"]["widht"] = 3
  with pytest.raises(ConfigError, match="config.model.widht; did you mean "
                     "config.model.width"):
    migrate_config(raw)
