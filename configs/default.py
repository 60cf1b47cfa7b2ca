"""Default config, the main job: a fiRevNet trained with cross-entropy on the
bundled 8x8 digits (scikit-learn's 1797 real images; offline), then evaluated
and reported (clean accuracy, PGD robust accuracy, minimal perturbations,
metamers, nuisance classifier).

Command (``make demo`` runs it)::

  python -m advinv_jax.main --config=configs/default.py --workdir=workdirs/demo

Any field can be overridden: ``--config.train.num_epochs=3``.
All fields and their meaning: ``advinv_jax/config.py``.

Expected cost: ~2-3 minutes on 2 CPU cores, everything included.
"""
from advinv_jax.config import default_config


def get_config():
  return default_config()
