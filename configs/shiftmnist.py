"""fiRevNet with CE or iCE on shiftMNIST: a 4-bit binary code of the label
is planted in the training images (top-left row of the padded 32x32 image);
at test time the code is random. A model that latches onto the shortcut
fails on the test set.

Variants as configs/mnist.py (``:<loss>,<scale>``): loss ``ce`` | ``ice``,
scale ``paper`` | ``cpu``.

  ADVINV_MNIST_DIR=/path/to/mnist python -m advinv_jax.main \
      --config=configs/shiftmnist.py:ice,cpu --workdir=workdirs/shiftmnist_ice_cpu
Cost: as configs/mnist.py (``cpu`` ~15-25 min per model on 2 CPU cores).
"""
from configs._variants import parse_variant
from configs.mnist import VARIANTS, mnist_firevnet


def get_config(variant=None):
  v = parse_variant(variant, "shiftmnist", VARIANTS)
  c = mnist_firevnet(v["scale"], v["loss"])
  c.data.shift.enabled = True
  c.data.shift.code_size = 4
  c.data.shift.position = (0, 0)
  c.data.shift.value = 1.0
  return c
