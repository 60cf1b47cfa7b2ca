"""fiRevNet with CE or iCE on shiftMNIST (Jacobsen et al. 2019, final
version): a label shortcut planted in the training images, randomised or
removed at test time. A model that latches onto the shortcut fails on the
test set.

Shift ``pixel`` (default): ONE pixel whose position encodes the class,
pixel (c, 0) of channel 0 for class c (public code following the paper's
final version, ``x[:, 0, i, 0] = 1``; unverified); at test time the pixel
of a random class (data.shift.test_mode='random'; 'none' removes it). With
the ``authors`` recipe the input is that code's 3-channel layout, the two
zero channels part of the data (data.zero_channels, U(0, 1/256) test noise
as the remedy of the input layout trap) and the pixel in channel 0, a zero
channel.
Shift ``code``: our former 4-bit binary code of the label (top-left row,
all channels).
Shift ``texture``: our own construction of the paper's "texture shifts"
(whose textures no public source gives): a grating per class, 4 cycles per
image side at orientation pi c / 10, shown through the background of
channel 0 at peak 0.5, ``max(x, 0.5 t_c)``, so the strokes (~1) stay above
it; at test time a random class's texture (advinv_jax/data/_derive.py).

Variants as configs/mnist.py plus the shift (``:<loss>,<scale>,<recipe>,
<shift>``): loss ``ce`` | ``ice``, scale ``paper`` | ``cpu``, recipe
``ours`` | ``authors``, shift ``pixel`` | ``code`` | ``texture``.

  ADVINV_MNIST_DIR=/path/to/mnist python -m advinv_jax.main \
      --config=configs/shiftmnist.py:ice,cpu --workdir=workdirs/shiftmnist_ice_cpu
Cost: as configs/mnist.py (``cpu`` ~15-25 min per model on 2 CPU cores).
"""
from configs._variants import parse_variant
from configs.mnist import VARIANTS as MNIST_VARIANTS, mnist_firevnet

VARIANTS = dict(MNIST_VARIANTS, shift=("pixel", "code", "texture"))


def get_config(variant=None):
  v = parse_variant(variant, "shiftmnist", VARIANTS)
  c = mnist_firevnet(v["scale"], v["loss"], v["recipe"])
  c.data.shift.enabled = True
  c.data.shift.construction = v["shift"]
  c.data.shift.channel = 0
  c.data.shift.code_size = 4
  c.data.shift.position = (0, 0)
  c.data.shift.value = 0.5 if v["shift"] == "texture" else 1.0
  if v["recipe"] == "authors":
    fr = c.model.firevnet
    fr.zero_channels, fr.zero_channel_noise, fr.zero_channel_fill = 0, 0.0, 0.0
    c.data.zero_channels = 2
    c.data.test_noise = 1.0 / 256
  return c
