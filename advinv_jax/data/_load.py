"""``load_dataset``: config -> validated -> base dataset -> derived dataset.

Order of work: (1) every ``config.data`` field is checked on its own; (2) the
base dataset's metadata is read cheaply (image shape, classes, split sizes:
constants, IDX headers, or tfds ``dataset_info``; a missing tfds dataset
fails here, in milliseconds); (3) fields that depend on the metadata
(``classes``, ``pad_to``, ``shift``) are checked; only then (4) the data are
read and (5) derived: binary subset -> num_train/num_test -> pad -> zero
channels -> shift -> test noise.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Optional, Tuple

from advinv_jax import _settings
from advinv_jax.data import _builtin, _derive, _idx, _tfds
from advinv_jax.data._settings import DATASETS, TFDS_NAMES, data_defaults
from advinv_jax.data._sources import Dataset

MNIST_ENV = "ADVINV_MNIST_DIR"

def _int(field: str, v, minimum: int = 0) -> int:
  if isinstance(v, bool) or not isinstance(v, (int,)) and not (
      hasattr(v, "__index__")):
    raise ValueError(f"config.data.{field}={v!r} must be an integer.")
  v = int(v)
  if v < minimum:
    raise ValueError(f"config.data.{field}={v} must be >= {minimum}"
                     + ("; use 0 for the default/all." if minimum == 0 else
                        "."))
  return v


def read_data_config(data_config) -> Dict[str, Any]:
  """Normalises ``config.data`` into a plain dict; field-local checks only.

  Raises:
    ValueError: naming the field and the fix.
  """
  # Missing fields take their defaults (data/_settings.py, the only ones);
  # an unknown field or a value of the wrong type is a ConfigError (a
  # ValueError).
  c = _settings.config_section("data", data_config).to_dict()
  name = c["name"]
  if not isinstance(name, str) or not (
      name in DATASETS or (name.startswith("tfds:") and len(name) > 5)):
    raise ValueError(f"config.data.name={name!r} is not a known dataset; use "
                     f"one of {list(DATASETS)} or 'tfds:<tfds name>'.")
  if not isinstance(c["data_dir"], str):
    raise ValueError(f"config.data.data_dir={c['data_dir']!r} must be a "
                     "string path ('' for the default).")
  for f in ("pad_to", "num_train", "num_test", "image_size"):
    c[f] = _int(f, c[f])
  for f in ("sphere_dim", "sphere_num_train", "sphere_num_test"):
    c[f] = _int(f, c[f], 1)
  classes = c["classes"]
  if classes is None:
    classes = ()
  try:
    classes = tuple(classes)
  except TypeError:
    raise ValueError(f"config.data.classes={classes!r} must be () or two "
                     "class ids, e.g. (3, 8).") from None
  if classes and (len(classes) != 2 or len(set(classes)) != 2 or any(
      isinstance(x, bool) or not hasattr(x, "__index__") or int(x) < 0
      for x in classes)):
    raise ValueError(f"config.data.classes={classes} must be () or two "
                     "distinct non-negative class ids, e.g. (3, 8).")
  c["classes"] = tuple(int(x) for x in classes)
  if not 0.0 < float(c["crop_fraction"]) <= 1.0:
    raise ValueError(f"config.data.crop_fraction={c['crop_fraction']} must "
                     "lie in (0, 1] (0.875: resize to size/0.875, crop size).")
  radii = tuple(float(r) for r in c["sphere_radii"])
  if len(radii) != 2 or min(radii) <= 0 or radii[0] == radii[1]:
    raise ValueError(f"config.data.sphere_radii={radii} must be two distinct "
                     "positive radii (label 0, label 1), e.g. (1.0, 10.0).")
  c["sphere_radii"] = radii
  if c["sphere_layout"] not in ("square", "channels"):
    raise ValueError(f"config.data.sphere_layout={c['sphere_layout']!r} must "
                     "be 'square' or 'channels'.")
  c["zero_channels"] = _int("zero_channels", c["zero_channels"])
  if float(c["test_noise"]) < 0:
    raise ValueError(f"config.data.test_noise={c['test_noise']} must be >= 0.")
  s = c["shift"]
  if s["construction"] not in _derive.SHIFT_CONSTRUCTIONS:
    raise ValueError(f"config.data.shift.construction={s['construction']!r}"
                     f" must be one of {_derive.SHIFT_CONSTRUCTIONS}.")
  if s["enabled"]:
    if isinstance(s["code_size"], bool) or int(s["code_size"]) < 1:
      raise ValueError(f"config.data.shift.code_size={s['code_size']} must be "
                       ">= 1.")
    pos = tuple(s["position"]) if not isinstance(s["position"], str) else ()
    if len(pos) != 2 or any(int(p) < 0 for p in pos):
      raise ValueError(f"config.data.shift.position={s['position']!r} must be "
                       "a (row, col) pair of non-negative ints.")
    if s["test_mode"] not in ("random", "none"):
      raise ValueError(f"config.data.shift.test_mode={s['test_mode']!r} must "
                       "be 'random' or 'none'.")
  if c["image_size"] and not (name in TFDS_NAMES or name.startswith("tfds:")):
    raise ValueError(f"config.data.image_size={c['image_size']} only applies "
                     "to tfds datasets (cifar10, imagenet2012, tfds:<name>); "
                     f"for {name!r} set it to 0 (use pad_to to enlarge).")
  return c


@dataclasses.dataclass
class _Base:
  """Cheap metadata of a base dataset plus a thunk that reads the data."""
  name: str
  image_shape: Tuple[int, int, int]
  num_classes: int
  bounds: Optional[Tuple[float, float]]
  sizes: Optional[Tuple[int, int]]
  load: Callable[[], Tuple[Any, Any]]


def _mnist_dirs(data_dir: str):
  dirs = [d for d in (data_dir, os.environ.get(MNIST_ENV, "")) if d]
  return [os.path.expanduser(d) for d in dirs]


def _idx_base(name: str, folder: str) -> _Base:
  shape, sizes = _idx.mnist_idx_meta(folder)
  return _Base(name, shape, 10, (0.0, 1.0), (sizes["train"], sizes["test"]),
               lambda: _idx.load_mnist_idx(folder))


def _tfds_base(name: str, tfds_name: str, c) -> _Base:
  info = _tfds.tfds_info(tfds_name, c["data_dir"], c["image_size"],
                         c["test_split"])
  return _Base(name, info["image_shape"], info["num_classes"], info["bounds"],
               (len(info["train"]), len(info["test"])),
               lambda: _tfds.load_tfds(tfds_name, c["data_dir"],
                                       c["image_size"], c["crop_fraction"],
                                       info=info))


def _base(c, seed: int) -> _Base:
  name = c["name"]
  if name == "digits":
    n_test = _builtin.DIGITS_NUM_TEST
    return _Base(name, _builtin.DIGITS_SHAPE, 10, (0.0, 1.0),
                 (1797 - n_test, n_test), _builtin.load_digits)
  if name == "spheres":
    shape = _builtin.sphere_shape(c["sphere_dim"], c["sphere_layout"])

    def load():
      return tuple(
          _builtin.sample_spheres(n, c["sphere_dim"], c["sphere_radii"],
                                  [int(seed), 21 + k], c["sphere_layout"])
          for k, n in enumerate((c["sphere_num_train"], c["sphere_num_test"])))
    return _Base(name, shape, 2, None,
                 (c["sphere_num_train"], c["sphere_num_test"]), load)
  if name == "mnist_idx":
    for folder in _mnist_dirs(c["data_dir"]):
      if _idx.find_idx_files(folder):
        return _idx_base(name, folder)
    where = c["data_dir"] or f"${MNIST_ENV}"
    missing = _idx.missing_idx_files(_mnist_dirs(c["data_dir"])[0]
                                     if _mnist_dirs(c["data_dir"]) else "")
    raise _tfds.DatasetNotPreparedError(
        f"config.data.name='mnist_idx' found no MNIST IDX files in {where!r} "
        f"(missing: {', '.join(missing)}); set config.data.data_dir (or "
        f"${MNIST_ENV}) to the folder holding the four IDX files of the "
        "MNIST distribution.")
  if name == "mnist":
    tfds_dir = _tfds.resolve_tfds_dir(c["data_dir"])
    vdir, reason = _tfds.find_prepared("mnist", tfds_dir)
    if vdir is not None:
      return _tfds_base(name, "mnist", c)
    for folder in _mnist_dirs(c["data_dir"]):
      if _idx.find_idx_files(folder):
        return _idx_base(name, folder)
    raise _tfds.DatasetNotPreparedError(
        _tfds.not_prepared_message("mnist", tfds_dir, reason) +
        f" No IDX files were found either (looked in config.data.data_dir and "
        f"${MNIST_ENV}).")
  tfds_name = TFDS_NAMES.get(name) or name[len("tfds:"):]
  return _tfds_base(name, tfds_name, c)


def validate_data_config(data_config) -> Dict[str, Any]:
  """Field-local checks of ``config.data`` (no I/O); returns normalised fields."""
  return read_data_config(data_config)


def _validate_section(data_config) -> None:
  try:
    read_data_config(data_config)
  except _settings.ConfigError:
    raise
  except ValueError as e:
    raise _settings.ConfigError(str(e)) from None


_settings.register_section(_settings.Section("data", data_defaults,
                                             _validate_section))


def load_dataset(data_config, *, seed: int = 0) -> Dataset:
  """Loads the dataset named by ``data_config.name`` and applies derivations.

  Args:
    data_config: the ``config.data`` section (ConfigDict or mapping; missing
      fields take their defaults, ``data/_settings.py``).
    seed: numpy seed for the seeded derivations (num_train/num_test subsets,
      shiftMNIST test codes) and for sampling spheres. The digits split is
      fixed and does not depend on it.

  Returns:
    A :class:`Dataset`; ``get`` returns ``{"image": f32[n, H, W, C],
    "label": i32[n]}``.

  Raises:
    ValueError: a bad field (named, with the fix), before any data are read.
    DatasetNotPreparedError: (a FileNotFoundError and ValueError) the data are
      not on disk; raised in milliseconds, with how to provide them.
  """
  c = read_data_config(data_config)
  base = _base(c, seed)
  # Checks against the metadata, before reading any data.
  num_classes = base.num_classes
  if c["classes"]:
    if max(c["classes"]) >= base.num_classes:
      raise ValueError(f"config.data.classes={c['classes']} must be two "
                       f"distinct class ids in [0, {base.num_classes}) for "
                       f"{c['name']!r}.")
    num_classes = 2
  h, w, ch = base.image_shape
  if c["pad_to"] and c["pad_to"] < max(h, w):
    raise ValueError(f"config.data.pad_to={c['pad_to']} is smaller than the "
                     f"{h}x{w} images of {c['name']!r}; set pad_to >= "
                     f"{max(h, w)} or 0 for no padding.")
  if base.sizes is not None and not c["classes"]:
    for f, n in zip(("num_train", "num_test"), base.sizes):
      if c[f] > n:
        raise ValueError(f"config.data.{f}={c[f]} exceeds the {n} examples "
                         f"of {c['name']!r}; use at most {n} (or 0 for all).")
  s = c["shift"]
  if s["enabled"]:
    final = ((c["pad_to"], c["pad_to"]) if c["pad_to"] else (h, w)) + (
        ch + c["zero_channels"],)
    if s["construction"] == "texture":
      _derive.check_texture_shift(final, s["channel"], s["value"],
                                  s["texture_frequency"], base.bounds)
    elif s["construction"] == "pixel":
      _derive.check_pixel_shift(final, num_classes, s["position"],
                                s["channel"], s["value"], base.bounds)
    else:
      _derive.check_shift(final, num_classes, s["code_size"], s["position"],
                          s["value"], base.bounds)
  # Read, then derive.
  train, test = base.load()
  ds = Dataset(name=c["name"], train=train, test=test,
               num_classes=base.num_classes, image_shape=base.image_shape,
               bounds=base.bounds)
  if c["classes"]:
    ds = _derive.binary_subset(ds, c["classes"])
  ds = _derive.subset_dataset(ds, num_train=c["num_train"],
                              num_test=c["num_test"], seed=seed)
  if c["pad_to"]:
    ds = _derive.pad_dataset(ds, c["pad_to"])
  ds = _derive.zero_channels_dataset(ds, c["zero_channels"])
  if s["enabled"]:
    ds = _derive.shift_dataset(ds, code_size=int(s["code_size"]),
                               position=tuple(s["position"]),
                               value=float(s["value"]), seed=seed,
                               test_mode=s["test_mode"],
                               construction=s["construction"],
                               channel=int(s["channel"]),
                               texture_frequency=float(
                                   s["texture_frequency"]))
  return _derive.test_noise_dataset(ds, float(c["test_noise"]), seed)
