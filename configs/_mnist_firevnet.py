"""Shared base of the MNIST fiRevNet configs (not a config itself).

The paper's setting (Jacobsen et al., authors' MNIST code): MNIST padded to
32x32, dequantisation noise U(0, 1/256), 3 levels x 16 additive coupling steps
of width 128, reverse permutation, Adamax 1e-3, batch 128, 200 epochs with the
rate x0.2 after epochs 60, 120, 160. We use a single input channel: the
authors' 3-channel layout only adds two all-zero channels that carry nothing
but noise (the "input layout trap" of shared/reference/papers.md).

``arg='cpu'`` gives the reduced scale run on a 2-core CPU.
"""
from advinv_jax.config import default_config

STEPS_PER_EPOCH = 60000 // 128


def mnist_firevnet(arg=None, loss="ce"):
  c = default_config()
  c.data.name = "mnist"          # tfds-prepared, or IDX files in data_dir /
  c.data.pad_to = 32             # $ADVINV_MNIST_DIR (see README)
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
  if arg == "cpu":
    c.model.depth = 4
    c.model.width = 32
    c.train.num_epochs = 2
    c.optimizer.schedule = "constant"
    c.optimizer.boundaries = ()
    c.optimizer.scales = ()
    c.train.checkpoint_every = 200
  elif arg not in (None, ""):
    raise ValueError(f"unknown config variant {arg!r}; use '' or 'cpu'.")
  return c
