"""Datasets that need no files: scikit-learn's 8x8 digits and adversarial spheres.

digits
  ``sklearn.datasets.load_digits``: 1797 real 8x8 grey images, integer values
  0..16, scaled by 1/16 to ``[0, 1]``; shape ``(8, 8, 1)``, 10 classes. The
  train/test split is fixed (independent of ``load_dataset``'s seed):
  stratified, 360 test / 1437 train, drawn with ``DIGITS_SPLIT_SEED = 0``
  (numpy ``default_rng``); per-class test counts are proportional to the class
  sizes (largest remainder), and both splits keep sklearn's original order.

spheres
  Gilmer et al.'s adversarial spheres: ``x`` uniform on the sphere of radius
  ``r0`` (label 0, inner) or ``r1`` (label 1, outer) in ``R^d`` (defaults
  ``d = 100``, radii 1 and 10), balanced classes in random order. Layout
  ``"square"`` (default) shapes a point as a ``(s, s, 1)`` image with
  ``s * s = d`` (100 -> 10x10x1: convolutional / invertible models can take
  it, ``pad_to`` works on it); ``"channels"`` shapes it as ``(1, 1, d)``. The
  flattened image (C order) is the point. Values are not in ``[0, 1]``: the
  Dataset's ``bounds`` is ``None``.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from advinv_jax.data._sources import ArraySource

DIGITS_SPLIT_SEED = 0
DIGITS_NUM_TEST = 360
DIGITS_SHAPE = (8, 8, 1)


def _stratified_split(labels: np.ndarray, num_test: int, seed: int):
  classes, counts = np.unique(labels, return_counts=True)
  exact = num_test * counts / counts.sum()
  per = np.floor(exact).astype(int)
  order = np.lexsort((classes, -(exact - per)))   # largest remainder first
  per[order[:num_test - per.sum()]] += 1
  rng = np.random.default_rng(seed)
  test = []
  for c, k in zip(classes, per):
    idx = np.flatnonzero(labels == c)
    test.append(rng.permutation(idx)[:k])
  test = np.sort(np.concatenate(test))
  train = np.setdiff1d(np.arange(labels.shape[0]), test)
  return train, test


def load_digits() -> Tuple[ArraySource, ArraySource]:
  """The fixed digits split: ``(train[1437], test[360])``, float32 in [0, 1]."""
  from sklearn.datasets import load_digits as _sk_load_digits  # lazy: slow import
  d = _sk_load_digits()
  images = (d.images.astype(np.float32) / 16.0)[..., None]   # [1797, 8, 8, 1]
  labels = d.target.astype(np.int32)
  train, test = _stratified_split(labels, DIGITS_NUM_TEST, DIGITS_SPLIT_SEED)
  return (ArraySource(images[train], labels[train]),
          ArraySource(images[test], labels[test]))


def sphere_shape(dim: int, layout: str) -> Tuple[int, int, int]:
  """Image shape of a ``dim``-dimensional sphere point under ``layout``."""
  if layout == "channels":
    return (1, 1, dim)
  side = math.isqrt(dim)
  if side * side != dim:
    raise ValueError(
        f"config.data.sphere_dim={dim} is not a perfect square, so the "
        "'square' layout cannot hold it; use a square dimension (e.g. 100) or "
        "set config.data.sphere_layout='channels' for a (1, 1, d) shape.")
  return (side, side, 1)


def sample_spheres(n: int, dim: int, radii, seed: int,
                   layout: str = "square") -> ArraySource:
  """``n`` points, half on each sphere, as an :class:`ArraySource`.

  Args:
    n: number of points (label ``i % 2`` before a seeded shuffle: balanced).
    dim: ambient dimension ``d``.
    radii: ``(r0, r1)``: label 0 lies on radius ``r0``, label 1 on ``r1``.
    seed: numpy seed (an int or a sequence of ints).
    layout: ``"square"`` or ``"channels"`` (see module docstring).
  """
  shape = sphere_shape(dim, layout)
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(n) % 2).astype(np.int32)
  g = rng.standard_normal((n, dim))
  g /= np.linalg.norm(g, axis=1, keepdims=True)
  r = np.asarray(radii, np.float64)[labels]
  x = (g * r[:, None]).astype(np.float32)
  return ArraySource(x.reshape((n,) + shape), labels)
