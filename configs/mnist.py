"""fiRevNet on MNIST trained with CE or iCE (Jacobsen et al. 2019, Table 2).

The paper's setting (authors' MNIST code): MNIST padded to 32x32,
dequantisation noise U(0, 1/256), 3 levels x 16 additive coupling steps of
width 128, reverse permutation, Adamax 1e-3, batch 128, 200 epochs with the
rate x0.2 after epochs 60, 120, 160. We use a single input channel: the
authors' 3-channel layout only adds two all-zero channels that carry nothing
but noise.

Variants (``:<loss>,<scale>``, any order, see configs/_variants.py):
loss ``ce`` (default) | ``ice``; scale ``paper`` (default; GPU) | ``cpu``
(depth 4, width 32, 2 epochs).

  ADVINV_MNIST_DIR=/path/to/mnist python -m advinv_jax.main \
      --config=configs/mnist.py:ice,cpu --workdir=workdirs/mnist_ice_cpu
Cost: paper scale is GPU work (200 epochs); ``cpu`` ~15-25 min per model on
2 CPU cores. MNIST comes as the four IDX files of the MNIST distribution in
``$ADVINV_MNIST_DIR`` (or prepared tfds data in config.data.data_dir).
"""
from advinv_jax.config import default_config
from configs._variants import parse_variant

VARIANTS = {"loss": ("ce", "ice"), "scale": ("paper", "cpu")}
STEPS_PER_EPOCH = 60000 // 128


def mnist_firevnet(scale: str = "paper", loss: str = "ce"):
  """The MNIST fiRevNet config at ``scale`` trained with ``loss``."""
  c = default_config()
  c.data.name = "mnist"          # tfds-prepared, or IDX files in data_dir /
  c.data.pad_to = 32             # $ADVINV_MNIST_DIR
  c.model.name = "firevnet"
  c.model.levels = 3
  c.model.depth = 16
  c.model.width = 128
  c.model.coupling = "additive"
  c.model.permutation = "reverse"
  c.model.batch_chunk = -1       # CPU: chunks of 32 (12-17% faster steps,
                                 # ~2x compile time and program memory)
  c.loss.name = loss
  c.optimizer.name = "adamax"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "piecewise"
  c.optimizer.boundaries = tuple(e * STEPS_PER_EPOCH for e in (60, 120, 160))
  c.optimizer.scales = (0.2, 0.2, 0.2)
  c.train.batch_size = 128
  c.train.num_epochs = 200
  c.train.dequant_noise = 1.0 / 256
  c.train.checkpoint_every = 1000
  c.train.log_every = 50
  c.report.linf_eps = (0.05, 0.1, 0.2, 0.3)
  c.report.l2_eps = (0.5, 1.0, 2.0, 3.0)
  if scale == "cpu":
    c.model.depth = 4
    c.model.width = 32
    c.train.num_epochs = 2
    c.optimizer.schedule = "constant"
    c.optimizer.boundaries = ()
    c.optimizer.scales = ()
    c.train.checkpoint_every = 200
  return c


def get_config(variant=None):
  v = parse_variant(variant, "mnist", VARIANTS)
  return mnist_firevnet(v["scale"], v["loss"])
