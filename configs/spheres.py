"""Adversarial spheres (Gilmer et al.; Jacobsen et al. Sec. 5): d = 100,
radii 1 and 10, a fiRevNet on the 10x10x1 layout.

  python -m advinv_jax.main --config=configs/spheres.py --workdir=workdirs/spheres
Cost: ~1-2 min on 2 CPU cores.
"""
from advinv_jax.config import default_config


def get_config():
  c = default_config()
  c.data.name = "spheres"
  c.data.pad_to = 0
  c.model.firevnet.levels = 1
  c.model.firevnet.depth = 4
  c.model.firevnet.width = 32
  c.train.batch_size = 128
  c.train.num_epochs = 3
  c.report.linf_eps = (0.1, 0.5, 1.0)
  c.report.l2_eps = (1.0, 2.0, 4.0)
  return c
