"""Random-access sources and the :class:`Dataset` container.

A *source* is one split of a dataset with random access::

  len(src)                  # number of examples
  src.get(indices)          # {"image": f32[n, H, W, C], "label": i32[n]}
  src.labels()              # i32[len(src)], all labels (cheap where possible)
  src.image_shape           # (H, W, C)

Sources are immutable. Derived datasets (subsets, padding, planted codes) wrap
a base source instead of copying it, so they also work on lazy sources.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

Batch = Dict[str, np.ndarray]


def as_indices(indices, n: int) -> np.ndarray:
  """Validates ``indices`` (ints in ``[0, n)``, 1-D) and returns ``i64[k]``."""
  idx = np.asarray(indices)
  if idx.ndim == 0:
    idx = idx.reshape(1)
  if idx.ndim != 1:
    raise ValueError(f"indices must be 1-D, got shape {idx.shape}; flatten "
                     "them first.")
  if idx.size == 0:
    return np.zeros((0,), np.int64)
  if not np.issubdtype(idx.dtype, np.integer):
    raise ValueError(f"indices must be integers, got dtype {idx.dtype}.")
  lo, hi = int(idx.min()), int(idx.max())
  if lo < 0 or hi >= n:
    raise ValueError(f"indices must lie in [0, {n}) for a source of {n} "
                     f"examples, got values in [{lo}, {hi}].")
  return idx.astype(np.int64)


class Source:
  """Base class of all sources (see the module docstring)."""

  image_shape: Tuple[int, int, int]

  def __len__(self) -> int:
    raise NotImplementedError

  def get(self, indices) -> Batch:
    """``indices: int[k]`` -> ``{"image": f32[k, H, W, C], "label": i32[k]}``."""
    raise NotImplementedError

  def labels(self) -> np.ndarray:
    """All labels, ``i32[len(self)]``."""
    raise NotImplementedError

  def _empty(self) -> Batch:
    return {"image": np.zeros((0,) + tuple(self.image_shape), np.float32),
            "label": np.zeros((0,), np.int32)}


class ArraySource(Source):
  """An in-memory split: ``images[N, H, W, C]`` (uint8 or float) and labels.

  ``get`` returns ``images[idx].astype(float32) * scale``; storing uint8 with
  ``scale=1/255`` keeps MNIST/CIFAR at a quarter of the float32 memory.
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray,
               scale: float = 1.0):
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4:
      raise ValueError(f"images must be [N, H, W, C], got shape "
                       f"{images.shape}.")
    if labels.shape != (images.shape[0],):
      raise ValueError(f"labels must be [N] with N={images.shape[0]}, got "
                       f"shape {labels.shape}.")
    self._images = images
    self._labels = labels.astype(np.int32)
    self._scale = float(scale)
    self.image_shape = tuple(int(s) for s in images.shape[1:])

  def __len__(self) -> int:
    return int(self._labels.shape[0])

  def get(self, indices) -> Batch:
    idx = as_indices(indices, len(self))
    img = self._images[idx].astype(np.float32)
    if self._scale != 1.0:
      img *= np.float32(self._scale)
    return {"image": img, "label": self._labels[idx]}

  def labels(self) -> np.ndarray:
    return self._labels.copy()


class SubsetSource(Source):
  """``base`` restricted to ``indices`` (in that order), labels remapped.

  ``label_map`` (optional, ``int[num_base_classes]``) maps base labels to new
  labels (``-1`` entries must not be selected).
  """

  def __init__(self, base: Source, indices, label_map=None):
    self._base = base
    self._idx = as_indices(indices, len(base))
    self._map = None if label_map is None else np.asarray(label_map, np.int32)
    self.image_shape = base.image_shape

  def __len__(self) -> int:
    return int(self._idx.shape[0])

  def _remap(self, y):
    return y if self._map is None else self._map[y]

  def get(self, indices) -> Batch:
    idx = as_indices(indices, len(self))
    out = dict(self._base.get(self._idx[idx]))
    out["label"] = self._remap(out["label"]).astype(np.int32)
    return out

  def labels(self) -> np.ndarray:
    return self._remap(self._base.labels()[self._idx]).astype(np.int32)


class MapSource(Source):
  """Applies ``fn(batch, indices) -> batch`` to every batch of ``base``.

  ``fn`` receives the batch and the indices it was read at (into this
  source), so per-example randomness can be looked up by index and stays
  deterministic. It must keep labels unchanged and return images of
  ``image_shape``.
  """

  def __init__(self, base: Source, fn: Callable[[Batch, np.ndarray], Batch],
               image_shape: Sequence[int]):
    self._base = base
    self._fn = fn
    self.image_shape = tuple(int(s) for s in image_shape)

  def __len__(self) -> int:
    return len(self._base)

  def get(self, indices) -> Batch:
    idx = as_indices(indices, len(self))
    return self._fn(self._base.get(idx), idx)

  def labels(self) -> np.ndarray:
    return self._base.labels()


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A dataset: two random-access splits plus metadata.

  Attributes:
    name: ``config.data.name`` it was loaded from (derivations append tags,
      e.g. ``"digits+pad16"``).
    train: training :class:`Source`.
    test: test :class:`Source`.
    num_classes: number of classes (labels lie in ``[0, num_classes)``).
    image_shape: ``(H, W, C)`` of one image as ``get`` returns it.
    bounds: ``(lo, hi)`` box the inputs live in (``(0., 1.)`` for images), or
      ``None`` where there is none (adversarial spheres).
    train_eval: the training images as test images are presented, where a
      test-time transformation exists (``config.data.test_noise``: the
      training images with their own fixed noise draw); None: ``train``.
      What a trained model is evaluated or probed on (train accuracy,
      post-hoc probes), never what it trains on (the train step draws its
      own noise).
  """

  name: str
  train: Source
  test: Source
  num_classes: int
  image_shape: Tuple[int, int, int]
  bounds: Optional[Tuple[float, float]] = (0.0, 1.0)
  train_eval: Optional[Source] = None

  def split(self, which: str) -> Source:
    """``"train"`` or ``"test"`` -> that source as evaluation sees it
    (``train_eval`` for ``"train"`` where set)."""
    if which not in ("train", "test"):
      raise ValueError(f"split must be 'train' or 'test', got {which!r}.")
    if which == "test":
      return self.test
    return self.train if self.train_eval is None else self.train_eval
