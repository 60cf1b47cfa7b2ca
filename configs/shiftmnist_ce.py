"""fiRevNet with CE on shiftMNIST; construction and variants:
configs/_mnist_firevnet.py ``shiftmnist``.

  ADVINV_MNIST_DIR=... python -m advinv_jax.main \
      --config=configs/shiftmnist_ce.py:cpu --workdir=workdirs/shiftmnist_ce_cpu
Cost: as configs/mnist_ce.py (reduced scale ~15-25 min on 2 CPU cores).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _mnist_firevnet import shiftmnist  # noqa: E402


def get_config(arg=None):
  return shiftmnist(arg, loss="ce")
