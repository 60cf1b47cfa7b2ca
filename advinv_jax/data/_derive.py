"""Derived datasets: pure functions of a base :class:`Dataset` (and a seed).

Each returns a new Dataset whose sources wrap the base ones (nothing is
copied, so they work on lazy sources too). ``load_dataset`` applies them in
this order: binary subset -> num_train/num_test subsets -> padding -> shift
code, so ``shift.position`` is in the coordinates of the padded image.

shiftMNIST single pixel (:func:`shift_dataset`, ``construction="pixel"``,
the default): class ``c`` is encoded by the POSITION of one pixel, pixel
``(row + c, col)`` of channel ``channel`` set to ``value`` (public code that
follows the paper's final version: ``x[:, 0, i, 0] = 1`` for class ``i``;
unverified, see docs/papers.md#shiftmnist). Test images
(``test_mode="random"``)
get the pixel of a random class (``"code_label"`` as below), or none
(``"none"``: the shortcut removed).

shiftMNIST code (``construction="code"``, our own construction): a ``k``-bit binary code of a class id
``c`` is written into ``k`` pixels of one row, starting at ``(row, col)``,
most significant bit first: pixel ``(row, col + j)`` gets ``value`` if bit
``k - 1 - j`` of ``c`` is 1, else 0. The code is written on *all channels*
(an RGB image gets a grey code) and overwrites what was there. Training
images carry the code of their own label; test images (``test_mode="random"``)
carry the code of a class drawn uniformly from ``[0, num_classes)``
independently of the label (seeded, fixed per test example), so the
shortcut points to the true class only by chance (rate ``1/num_classes``);
their batches carry the planted class as an extra key ``"code_label"``
(``int32``, same shape as ``"label"``), so diagnostics can tell predictions
that follow the digit from predictions that follow the code. Consumers that
read only ``"image"``/``"label"`` ignore it. ``test_mode="none"`` leaves test
images (and their batch keys) untouched.

shiftMNIST texture (``construction="texture"``, our own construction: the
paper's final version names "texture shifts" but no public text or code
gives the textures): class ``c`` is a sinusoidal grating over the whole
image, :func:`shift_textures`,

    t_c(i, j) = (1 + cos(2 pi f (i cos a_c + j sin a_c) / S)) / 2,
    a_c = pi c / C,

with ``f`` cycles per image side ``S = max(H, W)`` and one orientation per
class (``C`` orientations ``pi / C`` apart), shown through the background
of channel ``channel``: ``x' = max(x, value * t_c)`` (the digit's strokes,
where ``x >= value * t_c``, are untouched). Unlike the single pixel it is a
distributed cue that no one pixel carries. Test images get a random
class's texture (``code_label``) or none, as above.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence, Tuple

import numpy as np

from advinv_jax.data._sources import Dataset, MapSource, SubsetSource

# Stream tags: independent numpy streams per use of the same seed.
(_TAG_TRAIN_SUBSET, _TAG_TEST_SUBSET, _TAG_SHIFT, _TAG_TEST_NOISE,
 _TAG_TRAIN_EVAL_NOISE) = 11, 12, 13, 14, 15


SHIFT_CONSTRUCTIONS = ("pixel", "code", "texture")


def _rng(seed: int, tag: int) -> np.random.Generator:
  return np.random.default_rng([int(seed), tag])


def pad_dataset(ds: Dataset, pad_to: int) -> Dataset:
  """Zero-pads every image centrally to ``pad_to x pad_to``.

  An odd margin puts the extra row/column at the bottom/right.

  Raises:
    ValueError: ``pad_to`` smaller than the images.
  """
  h, w, c = ds.image_shape
  pad_to = int(pad_to)
  if pad_to < max(h, w):
    raise ValueError(f"config.data.pad_to={pad_to} is smaller than the "
                     f"{h}x{w} images; set pad_to >= {max(h, w)} or 0 for no "
                     "padding.")
  if pad_to == h == w:
    return ds
  top, left = (pad_to - h) // 2, (pad_to - w) // 2
  widths = ((0, 0), (top, pad_to - h - top), (left, pad_to - w - left), (0, 0))
  shape = (pad_to, pad_to, c)

  def fn(batch, idx):
    del idx
    return {**batch, "image": np.pad(batch["image"], widths)}

  return dataclasses.replace(
      ds, name=f"{ds.name}+pad{pad_to}", image_shape=shape,
      train=MapSource(ds.train, fn, shape), test=MapSource(ds.test, fn, shape))


def _subset(src, n: int, rng, field: str):
  if n < 0:
    raise ValueError(f"config.data.{field}={n} is negative; use 0 for all "
                     "examples or a positive count.")
  if n == 0 or n == len(src):
    return src
  if n > len(src):
    raise ValueError(f"config.data.{field}={n} exceeds the {len(src)} "
                     f"examples of the split; use at most {len(src)} (or 0 "
                     "for all).")
  return SubsetSource(src, np.sort(rng.choice(len(src), n, replace=False)))


def subset_dataset(ds: Dataset, *, num_train: int = 0, num_test: int = 0,
                   seed: int = 0) -> Dataset:
  """Seeded random subsets (in original order) of the train / test splits.

  Args:
    ds: base dataset.
    num_train: training examples to keep; 0 keeps all.
    num_test: test examples to keep; 0 keeps all.
    seed: numpy seed; train and test use independent streams.
  """
  train = _subset(ds.train, int(num_train), _rng(seed, _TAG_TRAIN_SUBSET),
                  "num_train")
  test = _subset(ds.test, int(num_test), _rng(seed, _TAG_TEST_SUBSET),
                 "num_test")
  if train is ds.train and test is ds.test:
    return ds
  return dataclasses.replace(
      ds, name=f"{ds.name}+n{len(train)}/{len(test)}", train=train, test=test)


def binary_subset(ds: Dataset, classes: Sequence[int]) -> Dataset:
  """Keeps the examples of two classes ``(a, b)``, relabelled ``a -> 0, b -> 1``.

  Reads all labels of both splits (free in memory; for lazy tfds sources one
  pass over the records without decoding images).

  Raises:
    ValueError: ``classes`` not two distinct ids in ``[0, num_classes)``.
  """
  classes = tuple(int(c) for c in classes)
  if (len(classes) != 2 or classes[0] == classes[1]
      or min(classes) < 0 or max(classes) >= ds.num_classes):
    raise ValueError(f"config.data.classes={classes} must be two distinct "
                     f"class ids in [0, {ds.num_classes}), e.g. (3, 8); use () "
                     "for all classes.")
  label_map = np.full((ds.num_classes,), -1, np.int32)
  label_map[classes[0]], label_map[classes[1]] = 0, 1
  srcs = []
  for src in (ds.train, ds.test):
    keep = np.flatnonzero(np.isin(src.labels(), classes))
    srcs.append(SubsetSource(src, keep, label_map))
  return dataclasses.replace(
      ds, name=f"{ds.name}+cls{classes[0]}v{classes[1]}", train=srcs[0],
      test=srcs[1], num_classes=2)


def code_bits(codes: np.ndarray, code_size: int) -> np.ndarray:
  """``int[n]`` -> ``int32[n, code_size]`` bits, most significant first."""
  shifts = np.arange(code_size - 1, -1, -1)
  return ((np.asarray(codes)[:, None] >> shifts) & 1).astype(np.int32)


def plant_code(images: np.ndarray, codes: np.ndarray, code_size: int,
               position: Tuple[int, int], value: float) -> np.ndarray:
  """Writes ``codes`` into ``images`` ``f32[n, H, W, C]`` in place; returns it."""
  r, c = position
  bits = code_bits(codes, code_size).astype(images.dtype) * images.dtype.type(
      value)
  images[:, r, c:c + code_size, :] = bits[:, :, None]
  return images


def decode_shift_code(images, *, code_size: int, position: Tuple[int, int],
                      value: float = 1.0) -> np.ndarray:
  """Reads the planted code back: ``f32[n, H, W, C]`` -> ``int32[n]``.

  A pixel (channel 0) counts as a 1-bit when it is nearer ``value`` than 0.
  """
  images = np.asarray(images)
  r, c = position
  px = images[:, r, c:c + code_size, 0]
  bits = (np.abs(px - value) < np.abs(px)).astype(np.int64)
  weights = 1 << np.arange(code_size - 1, -1, -1)
  return (bits @ weights).astype(np.int32)


def check_shift(image_shape, num_classes: int, code_size: int, position,
                value: float, bounds=None) -> Tuple[int, int]:
  """Validates shift settings against the final image shape; returns position."""
  h, w, _ = image_shape
  code_size = int(code_size)
  if code_size < 1:
    raise ValueError(f"config.data.shift.code_size={code_size} must be >= 1.")
  if 2 ** code_size < num_classes:
    need = int(np.ceil(np.log2(num_classes)))
    raise ValueError(f"config.data.shift.code_size={code_size} gives only "
                     f"{2 ** code_size} codes for {num_classes} classes; set "
                     f"code_size >= {need}.")
  try:
    r, c = (int(p) for p in position)
  except (TypeError, ValueError):
    raise ValueError(f"config.data.shift.position={position!r} must be a "
                     "(row, col) pair of ints.") from None
  if not (0 <= r < h and 0 <= c and c + code_size <= w):
    raise ValueError(
        f"config.data.shift.position={(r, c)} with code_size={code_size} "
        f"does not fit the {h}x{w} images (pixels ({r}, {c})..({r}, "
        f"{c + code_size - 1})); use 0 <= row < {h} and 0 <= col <= "
        f"{w - code_size}.")
  if bounds is not None and not bounds[0] <= float(value) <= bounds[1]:
    raise ValueError(f"config.data.shift.value={value} lies outside the "
                     f"data bounds {bounds}; pick a value inside them.")
  if float(value) == 0.0:
    raise ValueError("config.data.shift.value=0 makes 1-bits and 0-bits "
                     "identical; use a non-zero value (e.g. 1.0).")
  return r, c


def zero_channels_dataset(ds: Dataset, n: int) -> Dataset:
  """Puts ``n`` all-zero channels before the image's channels.

  The authors' MNIST input (train.py ~L47, ``torch.cat((zeros, zeros, x))``):
  ``n = 2``, the digit in the last of 3 channels.
  """
  n = int(n)
  if n == 0:
    return ds
  h, w, c = ds.image_shape
  shape = (h, w, c + n)

  def fn(batch, idx):
    del idx
    img = batch["image"]
    zeros = np.zeros(img.shape[:-1] + (n,), img.dtype)
    return {**batch, "image": np.concatenate([zeros, img], axis=-1)}

  return dataclasses.replace(
      ds, name=f"{ds.name}+zc{n}", image_shape=shape,
      train=MapSource(ds.train, fn, shape), test=MapSource(ds.test, fn, shape))


def test_noise_dataset(ds: Dataset, amplitude: float, seed: int = 0) -> Dataset:
  """Adds ``U(0, amplitude)`` to every test image entry (all channels).

  The noise of test example ``i`` is fixed: drawn from the numpy stream
  ``(seed, tag, i)``, so any index order gives the same images. The remedy
  of the input layout trap (docs/papers.md#the-input-layout-trap): test
  images then follow the
  training noise model (``amplitude = train.dequant_noise``), so channels
  that carry only that noise in training do not fall off the training
  distribution at test time. Training images are untouched (the train step
  draws their noise); ``train_eval`` is the training images with their own
  fixed draw, for evaluating and probing a trained model on them (a probe
  fitted on noise-free training images and tested on noisy test images
  would measure the shift, not the information). The upper data bound grows
  by ``amplitude`` (attacks clip to the bounds, which must contain the test
  images).
  """
  a = float(amplitude)
  if a == 0.0:
    return ds
  if a < 0:
    raise ValueError(f"config.data.test_noise={a} must be >= 0.")
  shape = ds.image_shape

  def noisy(tag):
    def fn(batch, idx):
      noise = np.stack([np.random.default_rng([int(seed), tag, int(i)])
                        .uniform(0.0, a, shape)
                        for i in np.asarray(idx).reshape(-1)]).reshape(
                            batch["image"].shape)
      return {**batch, "image": (batch["image"] + noise).astype(np.float32)}
    return fn

  bounds = None if ds.bounds is None else (ds.bounds[0], ds.bounds[1] + a)
  return dataclasses.replace(
      ds, name=f"{ds.name}+tn", bounds=bounds,
      test=MapSource(ds.test, noisy(_TAG_TEST_NOISE), shape),
      train_eval=MapSource(ds.train, noisy(_TAG_TRAIN_EVAL_NOISE), shape))


def plant_pixel(images: np.ndarray, classes: np.ndarray,
                position: Tuple[int, int], channel: int,
                value: float) -> np.ndarray:
  """Sets pixel ``(row + classes[n], col)`` of channel ``channel`` of image
  ``n`` to ``value``, in place: ``f32[n, H, W, C]``; returns it."""
  r, c = position
  n = np.arange(images.shape[0])
  images[n, r + np.asarray(classes), c, channel] = value
  return images


def shift_textures(image_hw: Tuple[int, int], num_classes: int,
                   frequency: float) -> np.ndarray:
  """The class textures of ``construction="texture"`` (module docstring):
  ``f32[num_classes, H, W]`` in [0, 1], class ``c`` a grating of
  ``frequency`` cycles per image side at orientation ``pi c / num_classes``."""
  h, w = (int(v) for v in image_hw)
  i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  a = np.pi * np.arange(num_classes) / num_classes
  phase = (2 * np.pi * float(frequency) / max(h, w)) * (
      i[None] * np.cos(a)[:, None, None] + j[None] * np.sin(a)[:, None, None])
  return (0.5 * (1.0 + np.cos(phase))).astype(np.float32)


def plant_texture(images: np.ndarray, classes: np.ndarray,
                  textures: np.ndarray, channel: int,
                  value: float) -> np.ndarray:
  """``images[n, ..., channel] = max(images[n, ..., channel], value *
  textures[classes[n]])``, in place: ``f32[n, H, W, C]``; returns it."""
  x = images[..., channel]
  images[..., channel] = np.maximum(
      x, float(value) * textures[np.asarray(classes)])
  return images


def _check_channel(channel: int, num_channels: int):
  if not 0 <= int(channel) < num_channels:
    raise ValueError(f"config.data.shift.channel={channel} is not a channel "
                     f"of the {num_channels}-channel images; use "
                     f"0..{num_channels - 1}.")


def check_texture_shift(image_shape, channel: int, value: float,
                        frequency: float, bounds=None):
  """Validates texture shift settings."""
  _check_channel(channel, image_shape[-1])
  if not float(frequency) > 0:
    raise ValueError(f"config.data.shift.texture_frequency={frequency} must "
                     "be > 0 (cycles per image side).")
  if float(frequency) > max(image_shape[:2]) / 2:
    raise ValueError(
        f"config.data.shift.texture_frequency={frequency} exceeds the "
        f"Nyquist limit {max(image_shape[:2]) / 2} of the "
        f"{image_shape[0]}x{image_shape[1]} images; use a lower frequency.")
  if not 0 < float(value) or (bounds is not None and
                              not bounds[0] <= float(value) <= bounds[1]):
    raise ValueError(f"config.data.shift.value={value} must be > 0 and inside "
                     f"the data bounds {bounds} (the texture's peak).")


def check_pixel_shift(image_shape, num_classes: int, position, channel: int,
                      value: float, bounds=None) -> Tuple[int, int]:
  """Validates single-pixel shift settings; returns ``(row, col)``."""
  h, w, ch = image_shape
  try:
    r, c = (int(p) for p in position)
  except (TypeError, ValueError):
    raise ValueError(f"config.data.shift.position={position!r} must be a "
                     "(row, col) pair of ints.") from None
  if not (0 <= r and r + num_classes <= h and 0 <= c < w):
    raise ValueError(
        f"config.data.shift.position={(r, c)}: the pixels of the "
        f"{num_classes} classes, ({r}, {c})..({r + num_classes - 1}, {c}), "
        f"do not fit the {h}x{w} images; use 0 <= row <= "
        f"{h - num_classes} and 0 <= col < {w}.")
  _check_channel(channel, ch)
  if bounds is not None and not bounds[0] <= float(value) <= bounds[1]:
    raise ValueError(f"config.data.shift.value={value} lies outside the "
                     f"data bounds {bounds}; pick a value inside them.")
  return r, c


def shift_dataset(ds: Dataset, *, construction: str,
                  position: Tuple[int, int], code_size: int = 4,
                  value: float = 1.0, seed: int = 0,
                  test_mode: str = "random", channel: int = 0,
                  texture_frequency: float = 4.0) -> Dataset:
  """shiftMNIST: plants a label code in training images (see module docstring).

  Args:
    ds: base dataset (any image shape, any number of channels).
    construction: ``"pixel"`` (one pixel at ``(row + class, col)`` of
      ``channel``), ``"code"`` (a k-bit code on all channels) or
      ``"texture"`` (a class grating in the background of ``channel``); see
      the module docstring. (config.data.shift.construction, default
      ``"pixel"``.)
    channel: ``"pixel"`` / ``"texture"``: the channel that carries it.
    code_size: ``k`` bits; needs ``2**k >= num_classes``.
    position: ``(row, col)`` of the first code pixel; the code runs along the
      row to ``col + k - 1``.
    value: pixel value of a 1-bit (0-bits are 0) / the planted pixel / the
      texture's peak.
    seed: seed of the test codes.
    test_mode: ``"random"`` (label-independent random class code per test
      example) or ``"none"`` (test images untouched).
    texture_frequency: ``"texture"``: cycles per image side.

  Returns:
    The shifted Dataset. Training batches are ``{"image", "label"}`` (code
    = label). With ``test_mode="random"`` test batches are ``{"image":
    f32[n, H, W, C], "label": i32[n], "code_label": i32[n]}``, where
    ``code_label`` is the class whose code is planted in each image
    (independent of ``label``; it decodes back with
    :func:`decode_shift_code`).
  """
  if test_mode not in ("random", "none"):
    raise ValueError(f"config.data.shift.test_mode={test_mode!r} must be "
                     "'random' or 'none'.")
  if construction not in SHIFT_CONSTRUCTIONS:
    raise ValueError(f"config.data.shift.construction={construction!r} must "
                     f"be one of {SHIFT_CONSTRUCTIONS}.")
  v = float(value)
  if construction == "texture":
    check_texture_shift(ds.image_shape, channel, v, texture_frequency,
                        ds.bounds)
    textures = shift_textures(ds.image_shape[:2], ds.num_classes,
                              texture_frequency)
    k = f"tx{int(channel)}"

    def plant(img, classes):
      return plant_texture(img, classes, textures, int(channel), v)
  elif construction == "pixel":
    pos = check_pixel_shift(ds.image_shape, ds.num_classes, position, channel,
                            v, ds.bounds)
    k = f"px{int(channel)}"

    def plant(img, classes):
      return plant_pixel(img, classes, pos, int(channel), v)
  else:
    pos = check_shift(ds.image_shape, ds.num_classes, code_size, position,
                      value, ds.bounds)
    k = int(code_size)

    def plant(img, classes):
      return plant_code(img, classes, k, pos, v)

  def train_fn(batch, idx):
    del idx
    return {**batch, "image": plant(batch["image"], batch["label"])}

  train = MapSource(ds.train, train_fn, ds.image_shape)
  test = ds.test
  if test_mode == "random":
    test_codes = _rng(seed, _TAG_SHIFT).integers(
        0, ds.num_classes, size=len(ds.test)).astype(np.int32)

    def test_fn(batch, idx):
      codes = test_codes[idx]
      img = plant(batch["image"], codes)
      return {**batch, "image": img,
              "code_label": codes.reshape(np.shape(batch["label"]))}

    test = MapSource(ds.test, test_fn, ds.image_shape)
  return dataclasses.replace(ds, name=f"{ds.name}+shift{k}", train=train,
                             test=test)
