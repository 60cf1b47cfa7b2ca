"""Binary task, small CNN trained with ce (Nar et al. 2019).

Default: CIFAR-10 airplane (0) vs automobile (1) through tensorflow-datasets
(prepared data in --config.data.data_dir; not available offline here). Any
dataset and class pair by override; the offline MNIST 3-vs-7 pair is
configs/mnist_binary_ce.py.

  python -m advinv_jax.main --config=configs/binary_ce.py --workdir=workdirs/binary_ce \
      --config.data.data_dir=/path/to/tensorflow_datasets
Cost: 10 epochs of 10k images, ~5-10 min on a 2-core CPU.
Variant ``:linear``: a linear classifier on the pixels, plain SGD for 10k
steps (the setting of Nar et al.'s analysis). Variant ``:nar_precursor``:
Nar et al.'s precursor pair, horse vs airplane, with a LeNet-style network
(84-d penultimate features).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _binary import binary_config  # noqa: E402


def get_config(arg=None):
  return binary_config("ce", "cifar10", arg)
