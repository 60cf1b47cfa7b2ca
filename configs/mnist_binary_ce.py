"""MNIST 3 vs 7, small CNN trained with ce (Nar et al.'s binary study;
the offline stand-in for CIFAR-10 airplane vs automobile).

  ADVINV_MNIST_DIR=../shared/data/mnist python -m advinv_jax.main \
      --config=configs/mnist_binary_ce.py --workdir=workdirs/mnist_binary_ce
Cost: ~2-4 min on a 2-core CPU (3 epochs of 12.4k images, report included).
Variant ``:linear`` (``--config=configs/mnist_binary_ce.py:linear``): a linear classifier on
the pixels, plain SGD for 10k steps (the setting of Nar et al.'s analysis);
~1 min (ce) / ~3 min (differential) of training on 2 cores.
"""
from configs._binary import binary_config


def get_config(arg=None):
  return binary_config("ce", "mnist", arg)
