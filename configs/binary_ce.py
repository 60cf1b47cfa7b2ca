"""Binary task, small CNN trained with ce (Nar et al. 2019).

Default: CIFAR-10 airplane (0) vs automobile (1) through tensorflow-datasets
(needs prepared data in --config.data.data_dir; not available offline here).
Any dataset and class pair by override; the offline MNIST 3-vs-7 pair is
configs/mnist_binary_ce.py.

  python -m advinv_jax.main --config=configs/binary_ce.py --workdir=workdirs/binary_ce \
      --config.data.data_dir=/path/to/tensorflow_datasets
Cost: ~10 epochs of 10k images; ~5-10 min on a 2-core CPU.
"""
from advinv_jax.config import default_config


def get_config():
  c = default_config()
  c.data.name = "cifar10"
  c.data.classes = (0, 1)
  c.model.name = "cnn"
  c.model.features = (32, 64, 128)
  c.model.hidden = (128,)
  c.loss.name = "ce"
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.train.batch_size = 128
  c.train.num_epochs = 10
  c.report.linf_eps = (0.002, 0.004, 0.008, 0.016, 0.031)
  c.report.l2_eps = (0.05, 0.1, 0.25, 0.5, 1.0)
  return c
