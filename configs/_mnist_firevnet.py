"""Shared base of the MNIST fiRevNet configs (not a config itself).

The paper's setting (Jacobsen et al., authors' MNIST code): MNIST padded to
32x32, dequantisation noise U(0, 1/256), 3 levels x 16 additive coupling steps
of width 128, reverse permutation, Adamax 1e-3, batch 128, 200 epochs with the
rate x0.2 after epochs 60, 120, 160. We use a single input channel: the
authors' 3-channel layout only adds two all-zero channels that carry nothing
but noise (the "input layout trap" of shared/reference/papers.md).

``arg='cpu'`` gives the reduced scale run on a 2-core CPU.

``arg='authors'``: the authors' recipe as their code ran it
(jhjacobsen/fully-invertible-revnet train.py / invertible_layers.py /
layers.py; docs/results_authors.md lists each field with the line it
mirrors): 3-channel input (digit in channel 2, d = 3072), ActNorm
``(x + b)(exp(s) + 1e-3)`` initialised on 512 noisy images without a std
floor, conditional split priors + N(0, 1) final prior + dequantisation
constant, BatchNorm1d(10) on the logits, dropout 0.1 in every coupling
subnet and in D, nuisance term ``-0.05 CE(D(z_n), y[randperm])``, main lr
x0.2 when epoch > 60 / 120 / 160. One deviation, the remedy of the input
layout trap: test images get the training noise U(0, 1/256)
(config.data.test_noise; 0 reproduces their test loader).
``arg='authors_cpu'``: that recipe at the reduced CPU scale (depth 4,
width 32, 2 epochs, constant lr).
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
  if arg in ("authors", "authors_cpu"):
    authors_recipe(c)
  if arg in ("cpu", "authors_cpu"):
    c.model.depth = 4
    c.model.width = 32
    c.train.num_epochs = 2
    c.optimizer.schedule = "constant"
    c.optimizer.boundaries = ()
    c.optimizer.scales = ()
    c.train.checkpoint_every = 200
  elif arg not in (None, "", "authors"):
    raise ValueError(f"unknown config variant {arg!r}; use '', 'cpu', "
                     "'authors' or 'authors_cpu'.")
  return c


def authors_recipe(c):
  """Sets the authors'-code fields on an MNIST fiRevNet config, in place."""
  c.data.zero_channels = 2               # train.py ~L47 cat((0, 0, x))
  c.data.test_noise = 1.0 / 256          # our remedy (their test loader: 0)
  c.model.actnorm_std_floor = 0.0        # invertible_layers.py ActNorm init
  c.model.actnorm_eps = 1e-3             # ... (exp(logs) + 0.001)
  c.model.split_prior = "conditional"    # Split.split2d_prior
  c.model.logit_bn = True                # train.py ~L63 BatchNorm1d(10, 0.9)
  c.model.logit_bn_momentum = 0.9
  c.model.dropout = 0.1                  # layers.py NN: Dropout(0.1)
  c.loss.ice.likelihood = "glow"         # train.py ~L128-L182 objective
  c.loss.ice.n_bins = 256
  c.loss.ice.nuisance_labels = "shuffled"  # train.py ~L142 label[randperm]
  c.loss.ice.nuisance_weight = 0.05      # ~L182 (b3de7d9): - 0.05 * CE
  c.loss.ice.nuisance_dropout = 0.1      # ~L66 ac: Dropout(0.1) x2
  c.loss.ice.nuisance_hidden = (512, 512)
  c.train.init_batch_size = 512          # ~L80 init_loader batch 512
  c.train.init_noise = True              # ... with the noise transform
  # lr x0.2 when epoch > 60, 120, 160 (learning_rate(), 0-based epochs)
  c.optimizer.boundaries = tuple(e * STEPS_PER_EPOCH for e in (61, 121, 161))
  return c


def shiftmnist(arg=None, loss="ce"):
  """shiftMNIST (Jacobsen et al. 2019, final version) with ``loss``.

  Default: the single-pixel construction (the class is encoded by the
  POSITION of one bright pixel: pixel (c, 0) of channel 0 for class c, as
  public code following the paper's final version; unverified); at test
  time the pixel of a random class (data.shift.test_mode='random'; 'none'
  removes it). A model that latches onto the shortcut fails on the test set.
  Variants: '' (paper scale), 'cpu', 'authors', 'authors_cpu' (the authors'
  recipe; channel 0 is then one of the two zero channels, as their
  ``x[:, 0, i, 0] = 1``), and 'code' / 'code_cpu': our former 4-bit binary
  code of the label (top-left row, all channels).
  """
  code = bool(arg) and arg.startswith("code")
  if code:
    arg = arg[len("code"):].lstrip("_") or None
  c = mnist_firevnet(arg, loss=loss)
  c.data.shift.enabled = True
  c.data.shift.construction = "code" if code else "pixel"
  c.data.shift.channel = 0
  c.data.shift.code_size = 4
  c.data.shift.position = (0, 0)
  c.data.shift.value = 1.0
  return c
