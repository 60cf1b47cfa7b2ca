"""fiRevNet48-style ImageNet model (Jacobsen et al. 2019; i-RevNet layout).

i-RevNet's bijective ImageNet configuration: an initial psi (space-to-depth
by 2), then 4 stages of (6, 16, 72, 6) steps, each stage starting with a psi
(strides 2, 2, 2, 2), i-RevNet nChannels (24, 96, 384, 1536) (subnet width
nChannels // 4), additive coupling, reverse permutation; a 224x224x3 image
becomes a 7x7x3072 map whose orthonormal 2-D DCT is z, with the logits read
from the low-pass (DC) coefficients of the first 1000 channels. Reversible
backprop is on (activation memory independent of depth). This is
configs/default.py's ``get_config()`` (``default_config()``) with data and
model changed; the other sections keep their defaults.

Command (needs the tfds ImageNet 2012 data prepared in config.data.data_dir:
``tfds build imagenet2012`` where the data are, then copy the folder)::

  python -m advinv_jax.main --config=configs/firevnet48_imagenet.py \
      --workdir=workdirs/firevnet48_imagenet

Cost: full-scale training is accelerator work (days on several GPUs); it is
not expected to run on 2 CPU cores. The model builds and inverts on small
inputs in tests/test_models.py.
"""
from advinv_jax.config import default_config


def get_config():
  c = default_config()
  c.data.name = "imagenet2012"
  c.data.image_size = 224
  c.model.name = "firevnet_imagenet"
  c.model.firevnet_imagenet.init_squeeze = 2
  c.model.firevnet_imagenet.blocks = (6, 16, 72, 6)
  c.model.firevnet_imagenet.channels = (24, 96, 384, 1536)
  c.model.firevnet.coupling = "additive"
  c.model.firevnet.permutation = "reverse"
  c.model.compute.reversible = True
  c.model.compute.reversible_loop = "auto"
  return c
