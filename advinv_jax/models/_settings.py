"""The ``config.model`` section, assembled from the models' own settings.

``config.model.name`` picks the architecture; each architecture reads its
own sub-sections (registered next to its builder with
:func:`register_model_section` and named in its ``register_model``), and
every model the compute settings of ``config.model.compute``
(:func:`advinv_jax.layers.compute_defaults`: how it runs, the same function
for every value). Older workdirs' flat ``config.model`` loads through
:func:`nest_model_fields`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict

import ml_collections

from advinv_jax import _settings as S
from advinv_jax.layers import compute_defaults, validate_compute
from advinv_jax.models._base import model_names, model_sections


@dataclasses.dataclass(frozen=True)
class _SubSection:
  defaults: Callable[[], ml_collections.ConfigDict]
  validate: Callable[[ml_collections.ConfigDict], None]


_SUBSECTIONS: Dict[str, _SubSection] = {}


def register_model_section(name: str, defaults, validate) -> None:
  """Adds the sub-section ``config.model.<name>``: ``defaults() ->
  ConfigDict`` and ``validate(model) -> None``, which gets the whole,
  completed ``config.model`` (to check its fields against ``compute`` or
  ``name``) and raises one ConfigError."""
  if name in _SUBSECTIONS:
    raise ValueError(f"config.model.{name} registered twice")
  _SUBSECTIONS[name] = _SubSection(defaults, validate)


def model_defaults() -> ml_collections.ConfigDict:
  """The ``config.model`` section: the default model's name, every
  registered sub-section and ``compute``."""
  model = ml_collections.ConfigDict()
  model.name = "firevnet"       # one of models.model_names()
  for name, sub in _SUBSECTIONS.items():
    model[name] = sub.defaults()
  model.compute = compute_defaults()
  return model


def validate_model_config(model: ml_collections.ConfigDict) -> None:
  """Checks a complete ``config.model`` section (the name among the
  registered models, each sub-section's own checks, the compute settings);
  raises one clear ConfigError. Shape checks that need the input
  (divisibility by the downsampling) stay with the builders."""
  if model.name not in model_names():
    raise S.ConfigError(f"config.model.name={model.name!r} is not a known "
                        f"model; choose one of {model_names()}.")
  for sub in _SUBSECTIONS.values():
    sub.validate(model)
  validate_compute(model.compute)


# --------------------------------------------------------- older workdirs
# Renamed fields of the flat model schema: old name -> (new name, {old
# value: new value}); nest_model_fields then moves the new name.
_RENAMED_FIELDS = {"matmul_dtype": ("compute_dtype",
                                    {"bfloat16": "bfloat16_1x1"})}

# The flat config.model of older workdirs (and the flat shorthand of
# nest_model_fields, which also takes fields added since, such as
# zero_channels): field -> its sub-section now (hidden and dropout: the
# section of the architecture the run used).
_FLAT_MODEL_FIELDS = {
    **{f: "firevnet" for f in (
        "levels", "depth", "width", "coupling", "affine_scale", "scale_floor",
        "permutation", "perm_seed", "downsample", "actnorm_std_floor",
        "actnorm_eps", "split_prior", "logit_bn", "logit_bn_momentum",
        "zero_channels", "zero_channel_noise", "zero_channel_fill")},
    **{f: "firevnet_imagenet" for f in (
        "init_squeeze", "blocks", "channels", "strides")},
    "features": "cnn",
    **{f: "compute" for f in (
        "reversible", "reversible_loop", "scan_batch_chunk", "batch_chunk",
        "conv3x3_impl", "conv1x1_as_matmul")},
    "compute_dtype": ("compute", "dtype"),
}


def nest_model_fields(fields, name: str = "firevnet") -> dict:
  """``{field: value}`` of the flat ``config.model`` (older workdirs, or
  shorthand such as ``levels=2, batch_chunk=0``) as the nested section:
  each field in its sub-section (``{"firevnet": {"levels": 2}, "compute":
  {"batch_chunk": 0}}``). ``hidden`` / ``dropout`` go to the section of the
  architecture ``name`` (the cnn's or the mlp's hidden; the fiRevNet's or
  the mlp's dropout). Sub-sections and ``name`` pass through; unknown
  fields are kept as they are (validation names them)."""
  out: dict = {}
  name = fields.get("name", name)
  for key, value in fields.items():
    if key in ("hidden", "dropout"):
      home = {"hidden": ("cnn" if name == "cnn" else "mlp"),
              "dropout": ("mlp" if name == "mlp" else "firevnet")}[key]
      path = (home, key)
    else:
      home = _FLAT_MODEL_FIELDS.get(key)
      path = None if home is None else (
          home if isinstance(home, tuple) else (home, key))
    if path is None:
      if hasattr(value, "keys") and key in out:
        out[key].update(dict(value.items()))
      else:
        out[key] = dict(value.items()) if hasattr(value, "keys") else value
    else:
      out.setdefault(path[0], {})[path[1]] = value
  return out


def _migrate(raw: dict) -> dict:
  for old, (new, values) in _RENAMED_FIELDS.items():
    if old in raw:
      value = raw.pop(old)
      raw.setdefault(new, values.get(value, value))
  return nest_model_fields(raw)


S.register_section(S.Section(
    "model", model_defaults, validate_model_config,
    # Older runs computed in float32 (the field's platform default differs).
    value_before={"compute.dtype": "float32"}, migrate=_migrate))

__all__ = ["model_defaults", "model_sections", "nest_model_fields",
           "register_model_section", "validate_model_config"]
