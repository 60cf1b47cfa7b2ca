"""Shared base of the binary-task configs (Nar et al.; not a config itself)."""
from advinv_jax.config import default_config


def binary_cnn(loss: str, dataset: str = "cifar10"):
  """Small CNN on a two-class subset, trained with ``loss``.

  ``dataset='cifar10'``: airplane (0) vs automobile (1), 10 epochs.
  ``dataset='mnist'``: 3 vs 7, narrower CNN, 3 epochs (offline here).
  """
  c = default_config()
  c.data.name = dataset
  c.model.name = "cnn"
  c.model.hidden = (128,)
  c.loss.name = loss
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.train.batch_size = 128
  if dataset == "mnist":
    c.data.classes = (3, 7)
    c.model.features = (16, 32, 32)
    c.train.num_epochs = 3
    c.report.linf_eps = (0.02, 0.05, 0.1, 0.15, 0.2)
    c.report.l2_eps = (0.25, 0.5, 1.0, 1.5, 2.0)
  else:
    c.data.classes = (0, 1)
    c.model.features = (32, 64, 128)
    c.train.num_epochs = 10
    c.report.linf_eps = (0.002, 0.004, 0.008, 0.016, 0.031)
    c.report.l2_eps = (0.05, 0.1, 0.25, 0.5, 1.0)
  return c
