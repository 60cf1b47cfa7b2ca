"""The ``config.data`` section: its defaults and the dataset names.

Its checks are :func:`advinv_jax.data.read_data_config` (field by field, no
I/O); those that need the dataset's metadata run in ``load_dataset`` before
any data are read.
"""
from __future__ import annotations

import ml_collections

# config.data.name: these, or "tfds:<name>" (any prepared tfds dataset).
DATASETS = ("digits", "mnist", "mnist_idx", "cifar10", "imagenet2012",
            "spheres")
# The built-in names read through tfds.
TFDS_NAMES = {"cifar10": "cifar10", "imagenet2012": "imagenet2012"}


def data_defaults() -> ml_collections.ConfigDict:
  """The ``config.data`` section."""
  d = ml_collections.ConfigDict()
  d.name = "digits"   # see DATASETS, or "tfds:<name>"
  d.data_dir = ""     # tfds data_dir, or the IDX folder for mnist
  d.pad_to = 0        # zero-pad images to pad_to x pad_to (0: off)
  d.classes = ()      # two class ids -> binary subset, labels 0/1
  d.num_train = 0     # 0: all; else a seeded training subset
  d.num_test = 0      # 0: all; else a subset of the test split
  d.image_size = 0    # large tfds sets: resize/crop to this (0: off)
  d.sphere_dim = 100  # spheres: dimension d
  d.sphere_num_train = 20000
  d.sphere_num_test = 2000
  d.sphere_radii = (1.0, 10.0)  # radius of label 0, of label 1
  d.sphere_layout = "square"  # square: (sqrt d, sqrt d, 1) | channels: (1, 1, d)
  d.crop_fraction = 0.875  # large tfds sets: resize to size/fraction, centre crop
  d.test_split = ""   # "" -> "test" (imagenet2012: "validation")
  # Zero channels put before the image's channels AS DATA: attacks may
  # perturb them and data.shift may plant its pixel there (the 3-channel
  # layout of public shiftMNIST code, channel 0 a zero channel). They carry
  # only the training dequantisation noise: the "input layout trap"
  # (docs/papers.md#the-input-layout-trap), see test_noise. The authors'
  # MNIST classifier input
  # (torch.cat((zeros, zeros, x)), train.py ~L47) is a fixed layer of the
  # model instead, out of an attacker's reach: model.firevnet.zero_channels.
  d.zero_channels = 0
  # U(0, test_noise) added to TEST images (all channels; fixed per example,
  # seeded). Remedy of the input layout trap: the same noise model at test
  # time as in training (= train.dequant_noise). The authors' test loader
  # adds none (train.py ~L43); 0 here is ours, 1/256 in the authors' variant.
  d.test_noise = 0.0
  d.shift = ml_collections.ConfigDict()  # shiftMNIST label shortcut
  d.shift.enabled = False
  # pixel: ONE pixel whose position encodes the class, pixel (row + c, col)
  # of channel `channel` for class c (public code following the paper's
  # final version: x[:, 0, i, 0] = 1; unverified: docs/papers.md#shiftmnist)
  # | code: a
  # k-bit binary code of the class along a row, on all channels (our own) |
  # texture: a grating per class (one orientation each) shown through the
  # background of `channel`, max(x, value * t_c) (our own; the paper names
  # "texture shifts" without saying which).
  d.shift.construction = "pixel"
  d.shift.channel = 0        # pixel / texture: the channel carrying it
  d.shift.code_size = 4      # code: k pixels, 2**k >= C
  d.shift.position = (0, 0)  # (row, col) of class 0's pixel / the code
  d.shift.value = 1.0        # planted pixel / 1-bit / texture peak
  d.shift.texture_frequency = 4.0  # texture: cycles per image side
  # random: the pixel / code / texture of a random class, independent of the label |
  # none: test images untouched (shortcut removed)
  d.shift.test_mode = "random"
  return d
