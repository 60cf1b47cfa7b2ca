"""fiRevNet with ICE on the bundled 8x8 digits (offline).

  python -m advinv_jax.main --config=configs/digits_ice.py --workdir=workdirs/digits_ice
Cost: ~4 minutes on a 2-core CPU (60 epochs, 1320 steps), report included.
"""
from advinv_jax.config import default_config


def get_config():
  c = default_config()
  c.loss.name = "ice"
  c.train.num_epochs = 60
  c.train.batch_size = 64
  c.train.dequant_noise = 1.0 / 16
  c.loss.ice.nuisance_hidden = (128, 128)
  return c
