"""fiRevNet with CE or iCE on the bundled 8x8 digits (offline), 60 epochs.

Variant ``:ce`` (default) | ``:ice``.

  python -m advinv_jax.main --config=configs/digits.py:ice --workdir=workdirs/digits_ice
Cost: ~4 minutes per model on 2 CPU cores (60 epochs, 1320 steps), report
included.
"""
from advinv_jax.config import default_config
from configs._variants import parse_variant

VARIANTS = {"loss": ("ce", "ice")}


def get_config(variant=None):
  v = parse_variant(variant, "digits", VARIANTS)
  c = default_config()
  c.loss.name = v["loss"]
  c.train.num_epochs = 60
  c.train.batch_size = 64
  c.train.dequant_noise = 1.0 / 16
  c.loss.ice.nuisance_hidden = (128, 128)
  return c
