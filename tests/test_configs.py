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
  assert mnist.get_config("ice").model.firevnet.depth == 16      # paper scale
  assert mnist.get_config("cpu").model.firevnet.depth == 4
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
  assert cfg.model.name == "mlp" and tuple(cfg.model.mlp.hidden) == ()
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
  """A read-only model section that records the dotted fields a builder
  reads and offers no ``get`` (so no builder can fall back to a default of
  its own); sub-sections are recorders too."""

  def __init__(self, section, prefix="", read=None):
    object.__setattr__(self, "_section", section)
    object.__setattr__(self, "_prefix", prefix)
    object.__setattr__(self, "read", set() if read is None else read)

  def __getattr__(self, name):
    path = self._prefix + name
    if name not in self._section:
      raise AssertionError(f"a builder read config.model.{path}, which the "
                           "schema lacks")
    value = self._section[name]
    if hasattr(value, "keys"):
      return _Recorder(value, path + ".", self.read)
    self.read.add(path)
    return value

  __getitem__ = __getattr__


@pytest.mark.parametrize("name,shape", [("firevnet", (8, 8, 1)),
                                        ("firevnet_imagenet", (16, 16, 3)),
                                        ("cnn", (8, 8, 1)), ("mlp", (8, 8, 1))])
def test_builders_read_only_their_schema_sections(name, shape):
  """Each builder reads fields of the schema only, and only of its own
  sub-sections (config.MODEL_SECTIONS) and config.model.compute."""
  from advinv_jax.config import MODEL_SECTIONS, config_section
  from advinv_jax.models import _base
  section = config_section("model", {
      "name": name, "firevnet_imagenet": {"blocks": (1, 1), "channels": (4, 8)},
      "firevnet": {"depth": 1, "width": 4, "levels": 1}})
  rec = _Recorder(section)
  _base._REGISTRY[name](rec, shape, 2)
  assert rec.read, "the builder reads its fields from the section"
  own = set(MODEL_SECTIONS[name]) | {"compute"}
  assert {p.split(".")[0] for p in rec.read} <= own, rec.read
  assert set(MODEL_SECTIONS) == set(_base.model_names())


def test_partial_sections_take_the_schema_defaults():
  """One default per field: a partial model or data section is completed from
  its component's settings (e.g. the MLP's hidden widths, the ActNorm
  floor)."""
  from advinv_jax.config import ConfigError, config_section, default_config
  from advinv_jax.models import build_model
  schema = default_config()
  m = config_section("model", {"name": "mlp"})
  assert tuple(m.mlp.hidden) == tuple(schema.model.mlp.hidden)
  assert m.firevnet.actnorm_std_floor == schema.model.firevnet.actnorm_std_floor
  mlp = build_model({"name": "mlp"}, (4, 4, 1), 3)
  import jax
  params = mlp.init(jax.random.PRNGKey(0), jax.numpy.zeros((1, 4, 4, 1)))
  widths = sorted(v.shape[-1] for v in jax.tree_util.tree_leaves(params)
                  if v.ndim == 1)
  assert widths == sorted(tuple(schema.model.mlp.hidden) + (3,))
  with pytest.raises(ConfigError, match=r"config.model.mlp.hiden; did you "
                     r"mean config.model.mlp.hidden"):
    config_section("model", {"name": "mlp", "mlp": {"hiden": (3,)}})
  # The flat form of older configs names the field's new place.
  with pytest.raises(ConfigError, match=r"config.model.levels; did you mean "
                     r"config.model.firevnet.levels"):
    config_section("model", levels=2)
  with pytest.raises(ValueError, match="config.model.firevnet.coupling='nope'"):
    build_model({"name": "firevnet", "firevnet": {"coupling": "nope"}},
                (8, 8, 1), 10)
  with pytest.raises(ValueError, match="firevnet.input_transform='tanh'"):
    build_model({"name": "firevnet", "firevnet": {"input_transform": "tanh"}},
                (8, 8, 1), 10)
  with pytest.raises(ValueError, match=r"firevnet.input_alpha=0.5 must lie "
                     r"in \(0, 0.5\)"):
    build_model({"name": "firevnet", "firevnet": {"input_alpha": 0.5}},
                (8, 8, 1), 10)


def test_old_workdir_config_json_migrates():
  """A config.json of an older workdir loads in today's schema. The fixture
  (tests/data/config_flat_model.json) was written by the flat ``config.model``
  schema, for a cnn run, without fields added later (the report's attack
  loop, the subnet compute dtype, the differential bias rule, the report's
  oracle and invariance search): the flat
  fields move to their sub-sections (hidden to the cnn's: the run's model),
  missing fields take their schema default or the value reproducing the
  older run, JSON lists become tuples, a renamed field takes its new name,
  an unknown field is one error naming it and its place."""
  import json
  from advinv_jax.config import ConfigError, default_config, migrate_config
  with open(os.path.join(os.path.dirname(__file__), "data",
                         "config_flat_model.json")) as f:
    raw = json.load(f)
  assert "levels" in raw["model"] and "firevnet" not in raw["model"]
  cfg = migrate_config(raw)
  validate_config(cfg)
  m = cfg.model
  assert m.name == "cnn" and m.cnn.features == (8, 8) and m.cnn.hidden == (16,)
  assert m.mlp.hidden == default_config().model.mlp.hidden
  assert m.firevnet.levels == 2 and m.compute.batch_chunk == 0
  assert m.compute.dtype == "float32"           # what older runs computed in
  assert cfg.loss.differential.bias == "midpoint"
  assert cfg.report.attack_loop == default_config().report.attack_loop
  assert isinstance(cfg.report.linf_eps, tuple)
  # Every field of the flat section has a place: nothing else differs from
  # the defaults.
  want = default_config()
  want.model.name, want.model.firevnet.levels = "cnn", 2
  want.model.cnn.features, want.model.cnn.hidden = (8, 8), (16,)
  want.model.compute.dtype = "float32"
  want.loss.differential.bias = "midpoint"
  # Its report had no oracle and no invariance search.
  want.report.invariance_pairs = want.report.oracle_steps = 0
  # The run's own values of fields whose default changed since it was
  # written (the fixture holds them): they stay.
  want.report.autoattack_l2_eps = tuple(raw["report"]["autoattack_l2_eps"])
  want.report.metamer_max_out_of_bounds = raw["report"][
      "metamer_max_out_of_bounds"]
  assert cfg.to_dict() == want.to_dict()
  # Today's config.json migrates to itself.
  assert migrate_config(json.loads(cfg.to_json())).to_dict() == cfg.to_dict()
  # The renamed field: matmul_dtype='bfloat16' was the 1x1-only form.
  raw["model"]["matmul_dtype"] = "bfloat16"
  assert migrate_config(raw).model.compute.dtype == "bfloat16_1x1"
  del raw["model"]["matmul_dtype"]
  raw["model"]["widht"] = 3
  with pytest.raises(ConfigError, match="config.model.widht; did you mean "
                     "config.model.firevnet.width"):
    migrate_config(raw)
