"""Config of Nar et al.'s low-rank linear margin study.

Run by ``experiments/lowrank_margin.py``.

Command::

  python -m experiments.lowrank_margin --workdir=workdirs/lowrank_margin

Override any field, e.g. ``--config.d=50 --config.seeds='(0,)'``.

Expected cost: about 1 minute on 2 CPU cores (six jit compilations, then
14 (k, seed) cells x 2 step rules x 3 GD runs + one exact SVM each).
Writes ``results.json`` and ``margin_vs_k.png`` into ``--workdir``.

Data (see ``advinv_jax.lowrank.make_lowrank_data``): ``n`` points on a
``k``-dimensional affine subspace of ``R^d`` whose offset has norm ``offset``,
classes separated along one subspace direction at ``shift`` with a gap of
``margin_gap``. Choices of ours (the paper's exact setup is unverified):
the sizes, the offset/shift (they echo the 2-D toy with ``s=2, h=1``), the
initial weight norms and normalised GD (``lr * grad / loss``), which reaches
the directional limit much faster than plain GD.
"""
import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.d = 100                       # ambient dimension
  config.n = 100                       # points (balanced classes)
  config.ks = (1, 2, 5, 10, 20, 50, 99)  # subspace dimensions swept (< d)
  config.offset = 1.0                  # norm of the subspace offset (h)
  config.shift = 2.0                   # class boundary position (s)
  config.margin_gap = 1.0              # class gap (SVM margin >= gap / 2)
  config.spread = 1.0                  # within-class spread
  config.seeds = (0, 1)
  config.small_init = 1e-3             # ||w0|| of the small-init runs
  config.large_init = 20.0             # ||w0|| of the large-init CE run
  config.step_rules = ("gd", "normalized")
  # Plain GD, as in the paper's analysis: ||w|| grows like log(t), so the
  # initial weights (large init) persist and directions converge slowly.
  config.gd = ml_collections.ConfigDict()
  config.gd.steps = 10000
  config.gd.lr = 0.5
  # Normalised GD (our addition): step lr * grad / loss, ||w|| grows linearly,
  # the direction approaches its limit much faster.
  config.normalized = ml_collections.ConfigDict()
  config.normalized.steps = 3000
  config.normalized.lr = 0.05
  return config
