"""fiRevNet trained with CE on MNIST (Jacobsen et al. 2019, Table 2 row 'CE').

Paper scale (GPU; 200 epochs):
  python -m advinv_jax.main --config=configs/mnist_ce.py --workdir=workdirs/mnist_ce
Reduced scale on a 2-core CPU (depth 4, width 32, 2 epochs). Cost: ~15-25 min:
  ADVINV_MNIST_DIR=../shared/data/mnist python -m advinv_jax.main \
      --config=configs/mnist_ce.py:cpu --workdir=workdirs/mnist_ce_cpu
"""
from configs._mnist_firevnet import mnist_firevnet


def get_config(arg=None):
  return mnist_firevnet(arg, loss="ce")
