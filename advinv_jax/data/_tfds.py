"""TFDS datasets through ``tfds.data_source`` (array_record, no TensorFlow).

Route (what this module does, in order):

1. Resolve the tfds data_dir: ``config.data.data_dir``, else ``$TFDS_DATA_DIR``,
   else ``~/tensorflow_datasets``.
2. Check, with plain filesystem calls, that the dataset is *prepared* there:
   ``<data_dir>/<name>[/<config>]/<version>/dataset_info.json`` next to
   ``*.array_record*`` shards. If not, raise :class:`DatasetNotPreparedError`
   at once (milliseconds). tfds itself is never asked to look for the data:
   without network it would retry DNS for minutes.
3. Open the splits with ``tfds.data_source(name, split=..., data_dir=...,
   download=False, try_gcs=False)``: nothing can trigger a download.
4. Small datasets (mnist, fashion_mnist, kmnist, emnist, cifar10, cifar100,
   svhn_cropped) are read once into uint8 numpy arrays; others (imagenet2012,
   any other ``tfds:<name>``) stay lazy: each ``get`` reads and decodes only
   the requested records (PNG/JPEG decoded by tfds with Pillow).
5. Images: the ``"image"`` feature, uint8 -> float32 / 255 (bounds (0, 1));
   other dtypes are passed through as float32 (bounds None). Labels: the
   ``"label"`` ``ClassLabel`` feature. With ``image_size > 0`` (and always for
   datasets of variable image size, where 0 means 224), every image is
   resized so that its shorter side is ``round(image_size / crop_fraction)``
   (Pillow bicubic, antialiased) and centre-cropped to
   ``image_size x image_size``.

How to provide a prepared dataset on a machine without network access:

* on a machine with network and TensorFlow::

    import tensorflow_datasets as tfds
    tfds.builder("cifar10", data_dir="DIR",
                 file_format="array_record").download_and_prepare()

  then copy ``DIR/cifar10`` to the offline machine and set ``config.data.data_dir``
  (or ``$TFDS_DATA_DIR``) to the copy's parent. ImageNet (``imagenet2012``)
  additionally needs the ILSVRC2012 tars in ``DIR/downloads/manual``.
  The ``file_format="array_record"`` matters: ``data_source`` cannot read
  the default tfrecord shards.
* for MNIST no tfds is needed: ``config.data.name = "mnist_idx"`` with
  ``data_dir`` holding the four IDX files of the MNIST distribution.
"""
from __future__ import annotations

import glob
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from advinv_jax.data._sources import ArraySource, Batch, Source, as_indices

SMALL_DATASETS = frozenset({"mnist", "fashion_mnist", "kmnist", "emnist",
                            "cifar10", "cifar100", "svhn_cropped"})
DEFAULT_IMAGE_SIZE = 224     # for datasets without a fixed image size
_CHUNK = 2048


class DatasetNotPreparedError(FileNotFoundError, ValueError):
  """The requested tfds dataset is not prepared under the data_dir.

  Subclasses both FileNotFoundError and ValueError.
  """


def resolve_tfds_dir(data_dir: str) -> str:
  """``data_dir`` or ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
  return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR", "")
                            or "~/tensorflow_datasets")


def base_name(tfds_name: str) -> str:
  """``"name/config:1.0.0"`` -> ``"name"``."""
  return tfds_name.split(":")[0].split("/")[0]


def find_prepared(tfds_name: str, data_dir: str) -> Tuple[Optional[str], str]:
  """Looks for prepared array_record data; filesystem calls only.

  Returns:
    ``(version_dir, "")`` if found, else ``(None, reason)``.
  """
  name, _, version = tfds_name.partition(":")
  root = os.path.join(data_dir, *name.split("/"))
  if not os.path.isdir(root):
    return None, f"no directory {root}"
  pattern = (os.path.join(root, version, "dataset_info.json") if version else
             None)
  infos = ([pattern] if pattern and os.path.isfile(pattern) else
           [] if pattern else
           glob.glob(os.path.join(root, "*", "dataset_info.json")) +
           glob.glob(os.path.join(root, "*", "*", "dataset_info.json")))
  if not infos:
    return None, (f"{root} exists but holds no <version>/dataset_info.json "
                  "(an incomplete or interrupted preparation?)")
  for info in sorted(infos, reverse=True):
    vdir = os.path.dirname(info)
    if glob.glob(os.path.join(vdir, "*.array_record*")):
      return vdir, ""
  return None, (f"{os.path.dirname(infos[0])} holds no *.array_record shards "
                "(prepared as tfrecord? tfds.data_source needs "
                "file_format='array_record')")


def not_prepared_message(tfds_name: str, data_dir: str, reason: str) -> str:
  base = base_name(tfds_name)
  msg = (
      f"tfds dataset {tfds_name!r} is not prepared under data_dir={data_dir!r} "
      f"({reason}). advinv_jax never downloads. To provide it: on a machine "
      "with network (and TensorFlow) run\n"
      f"  tfds.builder({base!r}, data_dir='DIR', file_format='array_record')"
      ".download_and_prepare()\n"
      f"then copy DIR/{base} here and set config.data.data_dir to the copy's "
      "parent (or $TFDS_DATA_DIR).")
  if base == "imagenet2012":
    msg += (" ImageNet also needs the ILSVRC2012 train/val tars in "
            "DIR/downloads/manual before preparing.")
  if base == "mnist":
    msg += (" For MNIST no tfds is needed: set config.data.name='mnist_idx' "
            "and config.data.data_dir to a folder with the four IDX files "
            "(train-images-idx3-ubyte[.gz], ...) of the MNIST distribution.")
  return msg


def assert_prepared(tfds_name: str, data_dir: str) -> str:
  """Returns the version dir, or raises :class:`DatasetNotPreparedError` fast."""
  vdir, reason = find_prepared(tfds_name, data_dir)
  if vdir is None:
    raise DatasetNotPreparedError(
        not_prepared_message(tfds_name, data_dir, reason))
  return vdir


def open_split(tfds_name: str, split: str, data_dir: str, decoders=None):
  """``tfds.data_source`` with downloads and GCS off."""
  import tensorflow_datasets as tfds  # lazy: 0.3 s import
  return tfds.data_source(tfds_name, split=split, data_dir=data_dir,
                          download=False, try_gcs=False, decoders=decoders)


def read_records(ds, idx) -> List[Dict]:
  """Records at ``idx``: batched ``__getitems__`` where it works, else one by one.

  (Under ``tfds.testing.mock_data`` the batched read raises a TypeError.)
  """
  keys = [int(i) for i in idx]
  if not keys:
    return []
  getitems = getattr(ds, "__getitems__", None)
  if getitems is not None:
    try:
      return list(getitems(keys))
    except TypeError:
      pass
  return [ds[i] for i in keys]


def resize_center_crop(img: np.ndarray, size: int,
                       crop_fraction: float = 0.875) -> np.ndarray:
  """``uint8[h, w, c]`` -> ``uint8[size, size, c]``.

  Resizes (Pillow bicubic) so the shorter side is ``round(size /
  crop_fraction)``, then takes the central ``size x size`` crop.
  """
  import PIL.Image
  img = np.asarray(img)
  h, w, c = img.shape
  short = max(size, int(round(size / crop_fraction)))
  s = short / min(h, w)
  nh, nw = max(size, int(round(h * s))), max(size, int(round(w * s)))
  if (nh, nw) != (h, w):
    planes = [img] if c in (3, 4) else [img[..., k] for k in range(c)]
    out = [np.asarray(PIL.Image.fromarray(p).resize((nw, nh),
                                                    PIL.Image.BICUBIC))
           for p in planes]
    img = out[0] if c in (3, 4) else np.stack(out, axis=-1)
  top, left = (nh - size) // 2, (nw - size) // 2
  return img[top:top + size, left:left + size]


class TFDSSource(Source):
  """A lazy split over ``tfds.data_source``: reads and decodes on ``get``."""

  def __init__(self, ds, image_shape, image_size: int = 0,
               crop_fraction: float = 0.875, image_key: str = "image",
               label_key: str = "label", label_ds=None):
    self._ds = ds
    self._label_ds = label_ds
    self._size = int(image_size)
    self._crop = float(crop_fraction)
    self._ik, self._lk = image_key, label_key
    self._labels = None
    self.image_shape = tuple(int(s) for s in image_shape)

  def __len__(self) -> int:
    return len(self._ds)

  def raw(self, indices) -> Tuple[np.ndarray, np.ndarray]:
    """Undecoded-dtype images (uint8 for image features) and int32 labels."""
    idx = as_indices(indices, len(self))
    recs = read_records(self._ds, idx)
    imgs = []
    for r in recs:
      im = np.asarray(r[self._ik])
      if im.ndim == 2:
        im = im[..., None]
      if self._size:
        im = resize_center_crop(im, self._size, self._crop)
      imgs.append(im)
    labels = np.asarray([int(r[self._lk]) for r in recs], np.int32)
    if not imgs:
      return np.zeros((0,) + self.image_shape, np.uint8), labels
    images = np.stack(imgs)
    if images.shape[1:] != self.image_shape:
      raise ValueError(f"tfds records have image shape {images.shape[1:]}, "
                       f"expected {self.image_shape}; set config.data."
                       "image_size to resize them.")
    return images, labels

  def get(self, indices) -> Batch:
    images, labels = self.raw(indices)
    img = images.astype(np.float32)
    if images.dtype == np.uint8:
      img *= np.float32(1.0 / 255.0)
    return {"image": img, "label": labels}

  def labels(self) -> np.ndarray:
    """All labels; reads records without decoding images where tfds allows."""
    if self._labels is None:
      n = len(self)
      out = np.zeros((n,), np.int32)
      ds = self._label_ds
      for start in range(0, n, _CHUNK):
        idx = np.arange(start, min(n, start + _CHUNK))
        recs = None
        if ds is not None:
          try:
            recs = read_records(ds, idx)
          except Exception:  # pylint: disable=broad-except
            ds = self._label_ds = None   # e.g. mock data: decode fully
        if recs is None:
          recs = read_records(self._ds, idx)
        out[idx] = [int(r[self._lk]) for r in recs]
      self._labels = out
    return self._labels.copy()


def tfds_info(tfds_name: str, data_dir: str, image_size: int,
              test_split: str = "", check: bool = True):
  """Opens both splits (cheap) and reads their metadata.

  Returns:
    ``dict(train=ds, test=ds, image_shape, num_classes, bounds, native_fixed)``.

  Raises:
    DatasetNotPreparedError: fast, when ``check`` and nothing is prepared.
    ValueError: features this loader cannot use.
  """
  data_dir = resolve_tfds_dir(data_dir)
  if check:
    assert_prepared(tfds_name, data_dir)
  train = open_split(tfds_name, "train", data_dir)
  info = train.dataset_info
  if not test_split:
    names = []
    try:
      names = list(info.splits.keys())
    except Exception:  # pylint: disable=broad-except  (mocked SplitDict)
      pass
    test_split = ("validation" if "test" not in names and "validation" in names
                  else "validation" if base_name(tfds_name) == "imagenet2012"
                  else "test")
  test = open_split(tfds_name, test_split, data_dir)
  feats = info.features
  if "image" not in feats or "label" not in feats:
    raise ValueError(f"tfds dataset {tfds_name!r} has features "
                     f"{list(feats.keys())}; advinv_jax needs 'image' and "
                     "'label'.")
  num_classes = getattr(feats["label"], "num_classes", None)
  if not num_classes:
    raise ValueError(f"tfds dataset {tfds_name!r}: 'label' is not a "
                     "ClassLabel feature, so the number of classes is unknown.")
  shape = tuple(feats["image"].shape)
  if len(shape) == 2:
    shape = shape + (1,)
  if len(shape) != 3 or shape[-1] is None:
    raise ValueError(f"tfds dataset {tfds_name!r}: image feature shape {shape} "
                     "is not (H, W, C) with a known C.")
  fixed = shape[0] is not None and shape[1] is not None
  size = image_size or (0 if fixed else DEFAULT_IMAGE_SIZE)
  if size:
    shape = (size, size, shape[2])
  dtype = np.dtype(getattr(feats["image"], "np_dtype", None) or np.uint8)
  bounds = (0.0, 1.0) if dtype == np.uint8 else None
  return dict(train=train, test=test, image_shape=tuple(int(s) for s in shape),
              num_classes=int(num_classes), bounds=bounds, image_size=size,
              test_split=test_split)


def to_memory(src: TFDSSource) -> ArraySource:
  """Reads a whole (small) split into a uint8-backed :class:`ArraySource`."""
  n = len(src)
  imgs, labs = [], []
  for start in range(0, n, _CHUNK):
    im, lb = src.raw(np.arange(start, min(n, start + _CHUNK)))
    imgs.append(im)
    labs.append(lb)
  images = np.concatenate(imgs) if imgs else np.zeros((0,) + src.image_shape)
  labels = np.concatenate(labs) if labs else np.zeros((0,), np.int32)
  scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
  return ArraySource(images, labels, scale=scale)


def load_tfds(tfds_name: str, data_dir: str, image_size: int = 0,
              crop_fraction: float = 0.875, test_split: str = "",
              in_memory: Optional[bool] = None, info=None):
  """Loads ``(train, test)`` sources of a prepared tfds dataset.

  Args:
    tfds_name: tfds name, optionally ``name/config:version``.
    data_dir: tfds data_dir ("" -> ``$TFDS_DATA_DIR`` or ~/tensorflow_datasets).
    image_size: 0: native size (224 for variable-size datasets); else resize
      + centre crop to ``image_size x image_size``.
    crop_fraction: resize shorter side to ``image_size / crop_fraction``.
    test_split: "" picks "test", or "validation" where there is no test split.
    in_memory: None: in memory for :data:`SMALL_DATASETS`, lazy otherwise.
    info: a :func:`tfds_info` result to reuse.
  """
  if info is None:
    info = tfds_info(tfds_name, data_dir, image_size, test_split)
  if in_memory is None:
    in_memory = base_name(tfds_name) in SMALL_DATASETS
  out = []
  for split in ("train", "test"):
    label_ds = None
    if not in_memory:
      import tensorflow_datasets as tfds
      try:
        label_ds = open_split(
            tfds_name, "train" if split == "train" else info["test_split"],
            resolve_tfds_dir(data_dir),
            decoders={"image": tfds.decode.SkipDecoding()})
      except Exception:  # pylint: disable=broad-except
        label_ds = None
    src = TFDSSource(info[split], info["image_shape"], info["image_size"],
                     crop_fraction, label_ds=label_ds)
    out.append(to_memory(src) if in_memory else src)
  return tuple(out)
