"""Datasets as random-access numpy sources, and deterministic sharded batches.

Public API::

  ds = load_dataset(config.data, seed=0)        # Dataset
  ds.train, ds.test                             # sources
  len(ds.train); ds.train.get(indices)          # {"image": f32[n,H,W,C],
                                                #  "label": i32[n]}
  ds.num_classes, ds.image_shape, ds.bounds, ds.name
  for batch in iterate_batches(ds.train, 128, seed=0, epoch=e):  # this host's
    ...                                         # share of each global batch
  steps_per_epoch(len(ds.train), 128)

Datasets (``config.data.name``):

* ``digits`` (default, offline): scikit-learn's 1797 8x8 digits, fixed
  stratified 1437/360 split (seed 0 in code).
* ``mnist_idx``: the four MNIST IDX files (raw or .gz) in ``data_dir`` (or
  ``$ADVINV_MNIST_DIR``), parsed with numpy; corrupted files raise a
  ValueError naming the file.
* ``mnist``: a tfds-prepared ``mnist`` in the tfds data_dir if there is one,
  else the IDX files in ``data_dir`` / ``$ADVINV_MNIST_DIR``.
* ``cifar10``, ``imagenet2012``, ``tfds:<name>``: prepared tfds data read with
  ``tfds.data_source`` (no TensorFlow, never a download; a missing dataset
  fails in milliseconds with instructions; see ``_tfds.py``). ImageNet stays
  lazy and is resized/centre-cropped to ``image_size`` (default 224).
* ``spheres``: Gilmer et al.'s adversarial spheres (``bounds`` is None).

Derived (pure functions of a base dataset and a seed, applied by
``load_dataset`` from the config): :func:`binary_subset` (``classes``),
:func:`subset_dataset` (``num_train``/``num_test``), :func:`pad_dataset`
(``pad_to``), :func:`shift_dataset` (``shift.*``, shiftMNIST).
"""
from advinv_jax.data._batching import (epoch_order, iterate_batches,
                                       steps_per_epoch)
from advinv_jax.data._builtin import (DIGITS_SPLIT_SEED, load_digits,
                                      sample_spheres)
from advinv_jax.data._derive import (binary_subset, decode_shift_code,
                                     pad_dataset, shift_dataset, subset_dataset)
from advinv_jax.data._idx import load_mnist_idx, read_idx
from advinv_jax.data._load import load_dataset, validate_data_config
from advinv_jax.data._sources import (ArraySource, Dataset, MapSource, Source,
                                      SubsetSource)
from advinv_jax.data._tfds import (DatasetNotPreparedError, TFDSSource,
                                   resize_center_crop)

__all__ = [
    "ArraySource", "DIGITS_SPLIT_SEED", "Dataset", "DatasetNotPreparedError",
    "MapSource", "Source", "SubsetSource", "TFDSSource", "binary_subset",
    "decode_shift_code", "epoch_order", "iterate_batches", "load_digits",
    "load_dataset", "load_mnist_idx", "pad_dataset", "read_idx",
    "resize_center_crop", "sample_spheres", "shift_dataset", "steps_per_epoch",
    "subset_dataset", "validate_data_config",
]
