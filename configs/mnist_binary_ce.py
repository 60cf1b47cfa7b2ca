"""MNIST 3 vs 7, small CNN trained with ce (Nar et al.'s binary study;
the offline stand-in for CIFAR-10 airplane vs automobile).

  ADVINV_MNIST_DIR=../shared/data/mnist python -m advinv_jax.main \
      --config=configs/mnist_binary_ce.py --workdir=workdirs/mnist_binary_ce
Cost: ~2-4 min on a 2-core CPU (3 epochs of 12.4k images, report included).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _binary import binary_cnn  # noqa: E402


def get_config():
  return binary_cnn("ce", "mnist")
