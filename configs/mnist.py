"""fiRevNet on MNIST trained with CE or iCE (Jacobsen et al. 2019, Table 2).

The paper's setting (authors' MNIST code): MNIST padded to 32x32,
dequantisation noise U(0, 1/256), 3 levels x 16 additive coupling steps of
width 128, reverse permutation, Adamax 1e-3, batch 128, 200 epochs with the
rate x0.2 after epochs 60, 120, 160. We use a single input channel: the
authors' 3-channel layout only adds two all-zero channels that carry nothing
but noise (the "input layout trap").

Variants (``:<loss>,<scale>,<recipe>``, any order, see configs/_variants.py):
loss ``ce`` (default) | ``ice``; scale ``paper`` (default; GPU) | ``cpu``
(depth 4, width 32, 2 epochs, constant lr); recipe ``ours`` (default) |
``authors``: the authors' recipe as their code ran it
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

  ADVINV_MNIST_DIR=/path/to/mnist python -m advinv_jax.main \
      --config=configs/mnist.py:ice,cpu --workdir=workdirs/mnist_ice_cpu
Cost: paper scale is GPU work (200 epochs); ``cpu`` ~15-25 min per model on
2 CPU cores. MNIST comes as the four IDX files of the MNIST distribution in
``$ADVINV_MNIST_DIR`` (or prepared tfds data in config.data.data_dir).
"""
from advinv_jax.config import default_config
from configs._variants import parse_variant

VARIANTS = {"loss": ("ce", "ice"), "scale": ("paper", "cpu"),
            "recipe": ("ours", "authors")}
STEPS_PER_EPOCH = 60000 // 128


def mnist_firevnet(scale: str = "paper", loss: str = "ce",
                   recipe: str = "ours"):
  """The MNIST fiRevNet config at ``scale`` trained with ``loss``, by
  ``recipe`` (``'ours'`` | ``'authors'``: :func:`authors_recipe`)."""
  c = default_config()
  c.data.name = "mnist"          # tfds-prepared, or IDX files in data_dir /
  c.data.pad_to = 32             # $ADVINV_MNIST_DIR
  c.model.name = "firevnet"
  c.model.firevnet.levels = 3
  c.model.firevnet.depth = 16
  c.model.firevnet.width = 128
  c.model.firevnet.coupling = "additive"
  c.model.firevnet.permutation = "reverse"
  c.model.compute.batch_chunk = -1       # CPU: chunks of 32 (12-17% faster steps,
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
  if recipe == "authors":
    authors_recipe(c)
  if scale == "cpu":
    c.model.firevnet.depth = 4
    c.model.firevnet.width = 32
    c.train.num_epochs = 2
    c.optimizer.schedule = "constant"
    c.optimizer.boundaries = ()
    c.optimizer.scales = ()
    c.train.checkpoint_every = 200
  return c


def authors_recipe(c):
  """Sets the authors'-code fields on an MNIST fiRevNet config, in place."""
  fr = c.model.firevnet
  # train.py ~L47 cat((0, 0, x)) inside the model, with the training noise
  # U(0, 1/256) on the zeros; at test the noise's mean, our remedy of the
  # input layout trap (their test loader: exact zeros).
  fr.zero_channels = 2
  fr.zero_channel_noise = 1.0 / 256
  fr.zero_channel_fill = 0.5 / 256
  fr.actnorm_std_floor = 0.0             # invertible_layers.py ActNorm init
  fr.actnorm_eps = 1e-3                  # ... (exp(logs) + 0.001)
  fr.split_prior = "conditional"         # Split.split2d_prior
  fr.logit_bn = True                     # train.py ~L63 BatchNorm1d(10, 0.9)
  fr.logit_bn_momentum = 0.9
  fr.dropout = 0.1                       # layers.py NN: Dropout(0.1)
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


def get_config(variant=None):
  v = parse_variant(variant, "mnist", VARIANTS)
  return mnist_firevnet(v["scale"], v["loss"], v["recipe"])
