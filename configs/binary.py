"""Binary task, small CNN (or linear model) trained with CE or differential
training (Nar et al. 2019).

Variants (``:<loss>,<data>,<model>``, any order, see configs/_variants.py):
loss ``ce`` (default) | ``differential``; data ``cifar10`` (default: airplane
(0) vs automobile (1), 10 epochs, tensorflow-datasets prepared in
--config.data.data_dir) | ``mnist`` (3 vs 7, a narrower CNN, 3 epochs, IDX
files in ``$ADVINV_MNIST_DIR``); model ``cnn`` (default) | ``linear`` (a
linear classifier on the pixels, plain SGD for 10k steps: the setting of Nar
et al.'s analysis) | ``nar_precursor`` (Nar et al.'s precursor: CIFAR-10
horse vs airplane, a LeNet-style network with 84-d penultimate features).
Any class pair by override (--config.data.classes).

  ADVINV_MNIST_DIR=/path/to/mnist python -m advinv_jax.main \
      --config=configs/binary.py:mnist,differential --workdir=workdirs/mnist_binary_differential
Cost on 2 CPU cores: mnist ~2-4 min (report included); mnist,linear ~1 min
(ce) / ~3 min (differential) of training; cifar10 ~5-10 min.
"""
from advinv_jax.config import default_config
from configs._variants import parse_variant

VARIANTS = {"loss": ("ce", "differential"), "data": ("cifar10", "mnist"),
            "model": ("cnn", "linear", "nar_precursor")}


def binary_cnn(loss: str, dataset: str = "cifar10"):
  """Small CNN on a two-class subset of ``dataset``, trained with ``loss``."""
  c = default_config()
  c.data.name = dataset
  c.model.name = "cnn"
  c.model.cnn.hidden = (128,)
  c.loss.name = loss
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.train.batch_size = 128
  if dataset == "mnist":
    c.data.classes = (3, 7)
    c.model.cnn.features = (16, 32, 32)
    c.train.num_epochs = 3
    c.report.linf_eps = (0.02, 0.05, 0.1, 0.15, 0.2)
    c.report.l2_eps = (0.25, 0.5, 1.0, 1.5, 2.0)
  else:
    c.data.classes = (0, 1)
    c.model.cnn.features = (32, 64, 128)
    c.train.num_epochs = 10
    c.report.linf_eps = (0.002, 0.004, 0.008, 0.016, 0.031)
    c.report.l2_eps = (0.05, 0.1, 0.25, 0.5, 1.0)
  return c


def binary_linear(loss: str, dataset: str = "cifar10"):
  """A linear classifier on raw pixels trained by plain SGD: the setting of
  Nar et al.'s analysis (a linear model on low-rank features; images fill a
  low-dimensional affine subspace of pixel space, e.g. MNIST's always-black
  border pixels).

  Model ``mlp`` with no hidden layer (two logits, score = their difference),
  SGD without momentum, learning rate 1.0, batch 1024, 10,000 steps (~830
  MNIST 3-vs-7 epochs): close to gradient descent run long enough for its
  implicit bias to show. Attack budgets as in :func:`binary_cnn`.
  """
  c = binary_cnn(loss, dataset)
  c.model.name = "mlp"
  c.model.mlp.hidden = ()
  c.optimizer.name = "sgd"
  c.optimizer.momentum = 0.0
  c.optimizer.learning_rate = 1.0
  c.train.batch_size = 1024
  c.train.num_epochs = 0
  c.train.num_steps = 10_000
  c.train.checkpoint_every = 0
  return c


def nar_precursor(loss: str, dataset: str = "cifar10"):
  """Nar et al.'s precursor submission (docs/papers.md#the-binary-experiment):
  CIFAR-10 *horse
  (7) vs airplane (0)* with a LeNet-style network whose penultimate layer
  has 84 features: convs of 6 and 16 channels (3x3, the second stride 2;
  our strided convs stand in for LeNet's 5x5 convs + pooling), dense 120 ->
  84 -> 2. Labels: airplane 0, horse 1. Their attack numbers were not
  reported; budgets as :func:`binary_cnn`. With ``dataset='mnist'``: 3 vs 7
  with the same network.
  """
  c = binary_cnn(loss, dataset)
  if dataset != "mnist":
    c.data.classes = (0, 7)
  c.model.cnn.features = (6, 16)
  c.model.cnn.hidden = (120, 84)
  return c


def get_config(variant=None):
  v = parse_variant(variant, "binary", VARIANTS)
  build = {"cnn": binary_cnn, "linear": binary_linear,
           "nar_precursor": nar_precursor}[v["model"]]
  return build(v["loss"], v["data"])
