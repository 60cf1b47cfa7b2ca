"""fiRevNet with ICE on shiftMNIST: a 4-bit binary code of the label is
planted in the training images (top-left row of the padded 32x32 image); at
test time the code is random. A model that latches onto the shortcut fails on
the test set.

  ADVINV_MNIST_DIR=../shared/data/mnist python -m advinv_jax.main \
      --config=configs/shiftmnist_ice.py:cpu --workdir=workdirs/shiftmnist_ice_cpu
Cost: as configs/mnist_ice.py (reduced scale ~15-25 min on 2 CPU cores).
"""
from configs._mnist_firevnet import mnist_firevnet


def get_config(arg=None):
  c = mnist_firevnet(arg, loss="ice")
  c.data.shift.enabled = True
  c.data.shift.code_size = 4
  c.data.shift.position = (0, 0)
  c.data.shift.value = 1.0
  return c
