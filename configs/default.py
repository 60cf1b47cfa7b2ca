"""Default config: a fiRevNet trained with cross-entropy on the bundled 8x8 digits.

This is the main job (``make demo``)::

  python -m advinv_jax.main --config=configs/default.py --workdir=workdirs/demo

Any field can be overridden on the command line, e.g.
``--config.train.num_epochs=3 --config.model.depth=2``.

Expected cost: under 3 minutes on a 2-core CPU (training, evaluation and the
robustness report included). Offline: the digits ship with scikit-learn.
"""
import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0

  # ---------------------------------------------------------------- data
  config.data = ml_collections.ConfigDict()
  config.data.name = "digits"   # digits | mnist | mnist_idx | cifar10 | imagenet2012 | tfds:<name>
  config.data.data_dir = ""     # tfds data_dir, or the IDX folder for mnist_idx
  config.data.pad_to = 0        # pad images with zeros to pad_to x pad_to (0: no padding)
  config.data.classes = ()      # two class ids -> binary subset with labels 0/1
  config.data.num_train = 0     # 0: all; else a seeded subset of the training split
  config.data.num_test = 0      # 0: all; else the first num_test test examples
  config.data.shift = ml_collections.ConfigDict()   # shiftMNIST code (off by default)
  config.data.shift.enabled = False
  config.data.shift.code_size = 4      # k pixels: a k-bit binary code (2**k >= classes)
  config.data.shift.position = (0, 0)  # (row, col) of the first code pixel
  config.data.shift.value = 1.0        # pixel value of a "1" bit

  # ---------------------------------------------------------------- model
  config.model = ml_collections.ConfigDict()
  config.model.name = "firevnet"
  config.model.levels = 3
  config.model.depth = 4               # coupling steps per level
  config.model.width = 32              # hidden channels of the coupling subnet
  config.model.coupling = "affine"     # additive | affine
  config.model.permutation = "shuffle"  # reverse | shuffle | conv1x1
  config.model.downsample = "squeeze"  # squeeze | psi
  config.model.reversible = False      # memory-saving reversible backprop
  config.model.conv1x1_as_matmul = True

  # ---------------------------------------------------------------- loss
  config.loss = ml_collections.ConfigDict()
  config.loss.name = "ce"              # ce | ice | differential
  config.loss.label_smoothing = 0.0

  # ---------------------------------------------------------------- optimiser
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"       # adam | adamw | adamax | sgd
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "constant"  # constant | cosine | piecewise
  config.optimizer.boundaries_and_scales = ()  # piecewise: ((step, scale), ...)
  config.optimizer.warmup_steps = 0
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip_norm = 0.0    # 0: off

  # ---------------------------------------------------------------- training
  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 128         # global batch, split over all devices
  config.train.num_epochs = 10
  config.train.num_steps = 0            # > 0 overrides num_epochs
  config.train.log_every = 20
  config.train.checkpoint_every = 200
  config.train.keep_checkpoints = 3
  config.train.dequant_noise = 0.0      # U(0, dequant_noise) added to training images
  config.train.on_nonfinite = "stop"    # stop | skip

  # ---------------------------------------------------------------- evaluation
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 512

  # ---------------------------------------------------------------- report
  config.report = ml_collections.ConfigDict()
  config.report.enabled = True
  config.report.num_examples = 256
  config.report.linf_eps = (0.01, 0.02, 0.05, 0.1)
  config.report.l2_eps = (0.1, 0.25, 0.5, 1.0)
  config.report.pgd_steps = 20
  config.report.nuisance_classifier_steps = 500
  return config
