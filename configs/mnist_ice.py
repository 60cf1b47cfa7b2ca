"""fiRevNet trained with ICE on MNIST (Jacobsen et al. 2019, Table 2 row 'ICE').

Paper scale (GPU; 200 epochs):
  python -m advinv_jax.main --config=configs/mnist_ice.py --workdir=workdirs/mnist_ice
Reduced scale on a 2-core CPU (depth 4, width 32, 2 epochs). Cost: ~15-25 min:
  ADVINV_MNIST_DIR=../shared/data/mnist python -m advinv_jax.main \
      --config=configs/mnist_ice.py:cpu --workdir=workdirs/mnist_ice_cpu
"""
from configs._mnist_firevnet import mnist_firevnet


def get_config(arg=None):
  return mnist_firevnet(arg, loss="ice")
