"""MNIST 3 vs 7, small CNN trained with ce (Nar et al.'s binary study,
offline stand-in for CIFAR-10 airplane vs automobile).

  ADVINV_MNIST_DIR=../shared/data/mnist python -m advinv_jax.main \
      --config=configs/mnist_binary_ce.py --workdir=workdirs/mnist_binary_ce
Cost: ~2-4 min on a 2-core CPU (3 epochs of 12.4k images, report included).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from binary_ce import get_config as binary_config  # noqa: E402


def get_config():
  c = binary_config()
  c.data.name = "mnist"
  c.data.classes = (3, 7)
  c.model.features = (16, 32, 32)
  c.train.num_epochs = 3
  c.report.linf_eps = (0.02, 0.05, 0.1, 0.15, 0.2)
  c.report.l2_eps = (0.25, 0.5, 1.0, 1.5, 2.0)
  return c
