"""Default config, the main job: a fiRevNet (3 levels x 4 additive coupling
steps, width 32) trained with cross-entropy on the bundled 8x8 digits
(scikit-learn's 1797 real images; offline), then evaluated and reported
(report.html / report.md / report.json: AutoAttack headline, PGD sweep,
minimal perturbations, metamers with their validity, nuisance classifier).

Command (``make demo`` runs it)::

  python -m advinv_jax.main --config=configs/default.py --workdir=workdirs/demo

Any field can be overridden: ``--config.train.num_epochs=3``;
``--config.report.full=True`` gives the paper-grade report settings.
All fields and their meaning: ``advinv_jax/config.py``.

Expected cost: ~2 minutes on 2 CPU cores, everything included (AutoAttack
on 256 inputs about half of it; docs/report.md gives the measurement).
"""
from advinv_jax.config import default_config


def get_config():
  return default_config()
