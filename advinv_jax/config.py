"""The full set of config fields, their defaults, and config validation.

``default_config()`` is the single schema of the project: every experiment
config in ``configs/`` starts from it and only changes values. A field that is
not in it (a misspelling, say) is rejected by :func:`validate_config` with one
clear line, before any data is loaded or anything is compiled.
"""
from __future__ import annotations

import re
from typing import Iterable

import ml_collections

DATASETS = ("digits", "mnist", "mnist_idx", "cifar10", "imagenet2012",
            "spheres")
LOSSES = ("ce", "ice", "differential")
OPTIMIZERS = ("adam", "adamw", "adamax", "sgd")
SCHEDULES = ("constant", "cosine", "piecewise")


def default_config() -> ml_collections.ConfigDict:
  """Returns the default config (the main job's): fiRevNet + CE on digits."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  # ---------------------------------------------------------------- data
  config.data = ml_collections.ConfigDict()
  config.data.name = "digits"   # see DATASETS, or "tfds:<name>"
  config.data.data_dir = ""     # tfds data_dir, or the IDX folder for mnist
  config.data.pad_to = 0        # zero-pad images to pad_to x pad_to (0: off)
  config.data.classes = ()      # two class ids -> binary subset, labels 0/1
  config.data.num_train = 0     # 0: all; else a seeded training subset
  config.data.num_test = 0      # 0: all; else a subset of the test split
  config.data.image_size = 0    # large tfds sets: resize/crop to this (0: off)
  config.data.sphere_dim = 100  # spheres: dimension d
  config.data.sphere_num_train = 20000
  config.data.sphere_num_test = 2000
  config.data.sphere_radii = (1.0, 10.0)  # radius of label 0, of label 1
  config.data.sphere_layout = "square"  # square: (sqrt d, sqrt d, 1) | channels: (1, 1, d)
  config.data.crop_fraction = 0.875  # large tfds sets: resize to size/fraction, centre crop
  config.data.test_split = ""   # "" -> "test" (imagenet2012: "validation")
  # Zero channels put before the image's channels AS DATA: attacks may
  # perturb them and data.shift may plant its pixel there (the 3-channel
  # layout of public shiftMNIST code, channel 0 a zero channel). They carry
  # only the training dequantisation noise: the "input layout trap"
  # (docs/papers.md#the-input-layout-trap), see test_noise. The authors'
  # MNIST classifier input
  # (torch.cat((zeros, zeros, x)), train.py ~L47) is a fixed layer of the
  # model instead, out of an attacker's reach: model.firevnet.zero_channels.
  config.data.zero_channels = 0
  # U(0, test_noise) added to TEST images (all channels; fixed per example,
  # seeded). Remedy of the input layout trap: the same noise model at test
  # time as in training (= train.dequant_noise). The authors' test loader
  # adds none (train.py ~L43); 0 here is ours, 1/256 in the authors' variant.
  config.data.test_noise = 0.0
  config.data.shift = ml_collections.ConfigDict()  # shiftMNIST label shortcut
  config.data.shift.enabled = False
  # pixel: ONE pixel whose position encodes the class, pixel (row + c, col)
  # of channel `channel` for class c (public code following the paper's
  # final version: x[:, 0, i, 0] = 1; unverified: docs/papers.md#shiftmnist)
  # | code: a
  # k-bit binary code of the class along a row, on all channels (our own) |
  # texture: a grating per class (one orientation each) shown through the
  # background of `channel`, max(x, value * t_c) (our own; the paper names
  # "texture shifts" without saying which).
  config.data.shift.construction = "pixel"
  config.data.shift.channel = 0        # pixel / texture: the channel carrying it
  config.data.shift.code_size = 4      # code: k pixels, 2**k >= C
  config.data.shift.position = (0, 0)  # (row, col) of class 0's pixel / the code
  config.data.shift.value = 1.0        # planted pixel / 1-bit / texture peak
  config.data.shift.texture_frequency = 4.0  # texture: cycles per image side
  # random: the pixel / code / texture of a random class, independent of the label |
  # none: test images untouched (shortcut removed)
  config.data.shift.test_mode = "random"

  # ---------------------------------------------------------------- model
  # config.model.name picks the architecture; each architecture reads its
  # own sub-section (MODEL_SECTIONS), and every model the compute knobs of
  # config.model.compute (how it runs: the same function for every value).
  config.model = ml_collections.ConfigDict()
  config.model.name = "firevnet"       # firevnet | firevnet_imagenet | cnn | mlp

  # The fiRevNet: its coupling steps and readout (used by both layouts) and
  # the MNIST layout (levels, depth, downsample).
  fr = config.model.firevnet = ml_collections.ConfigDict()
  fr.levels = 3
  fr.depth = 4                 # coupling steps per level
  fr.width = 32                # hidden channels of the coupling subnet
  # additive | affine. Additive (as the authors' MNIST code): its inverse
  # stays well conditioned off the data, so metamers F^-1(z_s(A), z_n(B))
  # are valid; on the default digits run affine-sigmoid gave 18% valid
  # metamers (exp_tanh 86%), additive 100% at the same test accuracy
  # (benchmarks/metamer_validity.py, docs/report.md).
  fr.coupling = "additive"
  fr.affine_scale = "sigmoid"  # sigmoid | exp_tanh (affine only)
  fr.scale_floor = 1e-3        # affine scale >= this (no collapse)
  fr.permutation = "shuffle"   # reverse | shuffle | conv1x1
  fr.perm_seed = 0             # shuffle / 1x1-conv initial permutation
  fr.downsample = "squeeze"    # squeeze | psi
  # ActNorm's data-dependent init amplifies a channel at most 1 / floor
  # times (0: no floor, the authors').
  fr.actnorm_std_floor = 0.3
  # ActNorm y = (x + b) * (exp(s) + actnorm_eps) in steps and subnets; the
  # authors': 1e-3 (invertible_layers.py ActNorm.forward_, their log-det
  # omits it; ours is exact). 0: Glow's exp(s).
  fr.actnorm_eps = 0.0
  # Prior of the split-off halves: none (the model's prior is N(0, 1) on all
  # of z; what loss.ice.likelihood='factorial_zn' ignores) | conditional
  # (Glow's Split: mean and log-scale from a zero-initialised conv3x3 of the
  # kept half, invertible_layers.py Split.split2d_prior; the final tensor
  # N(0, 1), logit entries included, GaussianPrior without learntop).
  fr.split_prior = "none"
  # BatchNorm1d on the logits (train.py ~L63, L137): batch statistics over
  # all devices in training, running statistics (part of the bijection) in
  # eval. Its momentum in PyTorch's convention (weight of the batch): 0.9.
  fr.logit_bn = False
  fr.logit_bn_momentum = 0.9
  # Dropout in every coupling subnet after its second ReLU (layers.py NN:
  # 0.1), train mode only (forward/inverse are eval mode: exact). Needs
  # compute.reversible=False and an unrolled loop.
  fr.dropout = 0.0
  # Fixed input channels (a layer of the model, not of the data: attacks
  # perturb the image only): zero_channels channels put before the image's,
  # U(0, zero_channel_noise) in training (the dequantisation noise of the
  # authors' zeros: torch.cat((zeros, zeros, x)), train.py ~L47, then noise
  # on all channels), zero_channel_fill in eval. Authors: 2, 1/256, and
  # exact zeros at test (their test loader: no noise), the input layout trap
  # (docs/papers.md#the-input-layout-trap); the authors' variant here fills
  # with the noise's mean.
  fr.zero_channels = 0
  fr.zero_channel_noise = 0.0
  fr.zero_channel_fill = 0.0

  # The ImageNet layout (firevnet_imagenet): replaces levels / depth /
  # width / downsample; the steps' settings are config.model.firevnet's.
  fi = config.model.firevnet_imagenet = ml_collections.ConfigDict()
  fi.init_squeeze = 2
  fi.blocks = (6, 16, 72, 6)
  fi.channels = (24, 96, 384, 1536)
  fi.strides = ()              # per stage, 1 or 2; empty: all 2

  # Ordinary classifiers.
  config.model.cnn = ml_collections.ConfigDict()
  # 3x3 convs, all but the first of stride 2
  config.model.cnn.features = (32, 64, 64)
  config.model.cnn.hidden = (128,)          # dense widths after the convs
  config.model.mlp = ml_collections.ConfigDict()
  config.model.mlp.hidden = (128,)          # dense widths
  config.model.mlp.dropout = 0.0            # after each hidden ReLU, train mode

  # How the model runs (same function for every value). A value "" / -1 /
  # "auto" is a *platform default*, resolved per backend (cpu | gpu | tpu)
  # in advinv_jax/platform.py, which gives each choice and its reason;
  # platform.resolve_config(config, "tpu") fills them for a named platform.
  cp = config.model.compute = ml_collections.ConfigDict()
  # Memory-saving reversible backprop (fiRevNet): activations recomputed
  # from the outputs instead of stored.
  cp.reversible = False
  # auto (platform default: unrolled) | scan | unrolled. scan: each level's
  # steps run as one lax.scan and their params are stored stacked (small
  # program, fast compile; with scan_batch_chunk=16 the authors' iCE step
  # at batch 128 on CPU ran faster than unrolled whole-batch steps, in
  # < 1 GiB: benchmarks/README.md).
  cp.reversible_loop = "auto"
  # with reversible_loop=scan: run each scanned step on chunks of at most
  # this many examples (0 = whole batch); 16 is the fastest measured on CPU
  # at batch 128 (benchmarks/README.md). batch_chunk (below) chunks the
  # whole model instead.
  cp.scan_batch_chunk = 0
  # Run the model on batch chunks of at most this many examples, unrolled
  # in one program (0 = whole batch; -1 = platform default: 32 on CPU, off
  # elsewhere). CPU: fiRevNet train steps at batch 128 run 12-17% faster
  # with 32 (16: a bit faster, 2x the compile time).
  cp.batch_chunk = 0
  # How 3x3 convs run (fiRevNet subnets, cnn): "" = platform default (CPU:
  # xla_gemm_grad, else xla) | xla | xla_gemm_grad | im2col | outshift | auto
  cp.conv3x3_impl = ""
  cp.conv1x1_as_matmul = True  # the invertible 1x1 conv as a matmul
  # Mixed precision of the coupling subnets: "" = platform default (TPU:
  # bfloat16, else float32) | float32 | bfloat16 (all three subnet convs on
  # bfloat16 operands) | bfloat16_1x1 (only the 1x1 conv: bfloat16
  # operands, float32 accumulation). Parameters, ActNorm, the coupling
  # arithmetic and the log-dets stay float32 and the network exactly
  # invertible (the inverse recomputes the same subnet output); values and
  # gradients carry bfloat16 rounding (~1e-2 relative on gradients). On a CPU
  # with bfloat16 matrix instructions, bfloat16_1x1 ran the authors' iCE step
  # at batch 128 in 0.80x the time of float32 (benchmarks/README.md);
  # bfloat16 is for accelerators.
  cp.dtype = ""

  # ---------------------------------------------------------------- loss
  config.loss = ml_collections.ConfigDict()
  config.loss.name = "ce"              # ce | ice | differential
  config.loss.label_smoothing = 0.0
  config.loss.ice = ml_collections.ConfigDict()
  config.loss.ice.semantic_weight = 1.0    # CE on the logits z_s
  # The network's loss has  - nuisance_weight * CE(D(z_n), y'): a negative
  # weight flips the sign. Authors: 0.05 with shuffled y' (train.py ~L182,
  # b3de7d9: "- 0.05 * CE(ac(zn), label[randperm])"); their first commit
  # 1774b31 had + 0.05, i.e. nuisance_weight = -0.05.
  config.loss.ice.nuisance_weight = 0.05
  # y' of that term: true (Definition 7 as written: the network raises D's
  # CE on the true labels; our default, because it is the paper's stated
  # objective and its Barber-Agakov argument, and the authors' code changed
  # sign between commits) | shuffled (in-batch permuted labels, train.py
  # ~L142 label[torch.randperm(B)], the authors' code). D itself always
  # trains on the true labels.
  config.loss.ice.nuisance_labels = "true"
  config.loss.ice.mle_weight = 1.0         # weight of the likelihood term
  config.loss.ice.mle_bits_per_dim = True  # NLL in bits/dim as the authors
  # The likelihood term: factorial_zn (Definition 7: learned factorial
  # Gaussian on z_n, minus log|det J|; ours) | glow (the authors' code: the
  # model's own prior, config.model.split_prior, i.e. conditional split
  # priors + N(0, 1) on the final tensor incl. the logits, minus log|det J|,
  # plus the dequantisation constant d log(n_bins), train.py ~L128).
  config.loss.ice.likelihood = "factorial_zn"
  config.loss.ice.n_bins = 256             # glow: dequantisation bins
  config.loss.ice.minmax = "alternating"   # alternating | gradient_reversal
  config.loss.ice.nuisance_steps = 5       # classifier steps per network step
  config.loss.ice.nuisance_hidden = (512, 512)
  config.loss.ice.nuisance_dropout = 0.0   # authors: 0.1 (train.py ~L66), train mode in all its uses
  config.loss.ice.nuisance_optimizer = "adamax"
  config.loss.ice.nuisance_learning_rate = 1e-3
  config.loss.differential = ml_collections.ConfigDict()
  config.loss.differential.pairs = "global"  # global | per_device
  # Decision bias set after training: max_accuracy (widest gap among the
  # accuracy-maximising thresholds; = Nar et al.'s midpoint when the training
  # scores are separable) | midpoint (min s+ / max s- midpoint, the paper's).
  config.loss.differential.bias = "max_accuracy"

  # ---------------------------------------------------------------- optimiser
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"       # adam | adamw | adamax | sgd
  config.optimizer.learning_rate = 1e-3
  config.optimizer.momentum = 0.9      # sgd only
  config.optimizer.schedule = "constant"  # constant | cosine | piecewise
  config.optimizer.boundaries = ()     # piecewise: step boundaries
  config.optimizer.scales = ()         # piecewise: lr factor at each boundary
  config.optimizer.warmup_steps = 0
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip_norm = 0.0  # 0: off

  # ---------------------------------------------------------------- training
  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 128        # global batch, split over all devices
  config.train.num_epochs = 10
  config.train.num_steps = 0           # > 0 overrides num_epochs
  config.train.log_every = 20
  config.train.checkpoint_every = 200  # 0: only the final checkpoint
  config.train.keep_checkpoints = 3
  config.train.dequant_noise = 0.0     # U(0, dequant_noise) on train images
  # Data-dependent init (ActNorm) on one batch of this many training images
  # (0: the first global training batch); with init_noise the batch gets
  # the training dequantisation noise. Authors: 512 noisy images
  # (train.py ~L80 init_loader, batch_size=512, transform with noise).
  config.train.init_batch_size = 0
  config.train.init_noise = False
  config.train.on_nonfinite = "stop"   # stop | skip
  config.train.progress_bar = True
  # Relaunching a workdir with a config that changes the computation (model,
  # loss, data, optimiser, batch size, seed, ...): refuse (listing the
  # fields) | allow (resume anyway; the change goes to config_history.jsonl).
  config.train.resume_mismatch = "refuse"
  # Fine-tuning / linear probes: initialise the model from another run's
  # newest checkpoint (its workdir), keep params whose path matches the regex
  # `reinit` freshly initialised, and train only those matching `trainable`
  # (regex; "" = all). E.g. a new head on frozen features:
  # init_from=<workdir>, reinit=trainable="Dense_1/".
  config.train.init_from = ""
  config.train.reinit = ""
  config.train.trainable = ""

  # ---------------------------------------------------------------- evaluation
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 500

  # ---------------------------------------------------------------- report
  config.report = ml_collections.ConfigDict()
  config.report.enabled = True
  config.report.num_examples = 256
  config.report.linf_eps = (0.01, 0.02, 0.05, 0.1)
  config.report.l2_eps = (0.1, 0.25, 0.5, 1.0)
  config.report.pgd_steps = 20
  config.report.pgd_restarts = 1
  config.report.pgd_loss = "ce"          # ce | margin
  config.report.attack_loop = "fori"     # fori | unrolled | scan | "" (platform default)
  config.report.deepfool_steps = 50
  config.report.deepfool_candidates = 9
  config.report.fmn_steps = 0            # > 0: also FMN minimal perturbations
  config.report.num_metamers = 8
  config.report.interpolation_steps = 8
  config.report.interpolation_pairs = 4
  config.report.nuisance_classifier_steps = 500
  config.report.nuisance_classifier_hidden = (256,)
  config.report.nuisance_classifier_lr = 1e-3
  config.report.nuisance_classifier_batch_size = 128
  # AutoAttack (the report's robust-accuracy headline) with AutoAttack's
  # own member settings, on the first autoattack_num_examples report images
  # at these eps (empty: skip a norm); report.full=True adds inputs and
  # every eps of linf_eps / l2_eps (REPORT_FULL). Rolled loops: the step
  # counts cost run time only, not compile time.
  config.report.autoattack_version = "standard"  # standard | plus
  config.report.autoattack_num_examples = 256
  config.report.autoattack_linf_eps = (0.05,)
  config.report.autoattack_l2_eps = ()
  config.report.autoattack_steps = 100     # APGD iterations
  config.report.autoattack_num_targets = 9  # APGD-T / FMN-T targets
  config.report.autoattack_queries = 5000   # Square's budget
  config.report.autoattack_fmn_steps = 100  # FMN-T iterations
  # Metamer validity: a metamer is valid when finite and its logits (and,
  # relative to |z_n|, its nuisance) round-trip within metamer_tol; the
  # report warns below metamer_min_valid valid or above
  # metamer_max_out_of_bounds of the metamer pixels outside the bounds.
  config.report.metamer_tol = 1e-3
  config.report.metamer_min_valid = 0.99
  # (the default model's valid metamers have ~61% of pixels out of [0, 1]:
  # a CE-trained z_n does not confine them to the box; 94% with the old
  # affine-sigmoid coupling)
  config.report.metamer_max_out_of_bounds = 0.75
  config.report.full = False
  return config


# report.full=True: these values replace the report's fast settings (and
# AutoAttack runs at every eps of report.linf_eps / report.l2_eps).
REPORT_FULL = dict(
    num_examples=1000, pgd_steps=100, pgd_restarts=5, deepfool_steps=100,
    fmn_steps=100, num_metamers=16, nuisance_classifier_steps=2000,
    autoattack_num_examples=1000, autoattack_steps=100,
    autoattack_num_targets=9, autoattack_queries=5000,
    autoattack_fmn_steps=100)


class ConfigError(ValueError):
  """A config field is unknown, of the wrong type or out of range."""


def _set_fields(node: ml_collections.ConfigDict, given, prefix: str) -> None:
  """Sets the fields of the mapping ``given`` (nested for sub-sections) in
  ``node``; an unknown field or a value of the wrong type is a ConfigError."""
  for key in given.keys():
    value, path = given[key], f"{prefix}{key}"
    if key not in node:
      hint = closest_field(key, [p for p, _ in _walk(node)])
      raise ConfigError(
          f"unknown config field config.{path}"
          + (f"; did you mean config.{prefix}{hint}?" if hint else
             f"; the fields of config.{prefix[:-1]} are {sorted(node.keys())}."))
    ref = node[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not hasattr(value, "keys"):
        raise ConfigError(f"config.{path}={value!r}: a section, set its "
                          f"fields (e.g. config.{path}.{next(iter(ref))}).")
      _set_fields(ref, value, path + ".")
      continue
    if isinstance(ref, tuple) and isinstance(value, list):
      value = tuple(value)            # JSON has no tuples
    elif isinstance(ref, float) and isinstance(value, int) and not isinstance(
        value, bool):
      value = float(value)
    if ref is not None and value is not None and type(value) is not type(ref):
      raise ConfigError(
          f"config.{path}={value!r} has type {type(value).__name__}; expected "
          f"{type(ref).__name__} (like the default {ref!r}).")
    node[key] = value


def config_section(name: str, fields=None, /,
                   **kwargs) -> ml_collections.ConfigDict:
  """The schema's section ``name`` (``"model"``, ``"data"``, ...) with the
  fields of ``fields`` (a mapping or ConfigDict, possibly partial) and of
  ``kwargs`` set; every other field keeps its one default (above).

  This is how builders get a complete section from a partial one, e.g.
  ``build_model(config_section("model", name="mlp", hidden=(64,)), ...)``.
  An unknown field or a value of the wrong type raises ConfigError.
  """
  section = default_config()[name]
  given = dict(fields.items()) if fields is not None else {}
  given.update(kwargs)
  _set_fields(section, given, f"{name}.")
  section.lock()
  return section


# The sub-sections of config.model each architecture reads (besides
# config.model.compute, which every model reads).
MODEL_SECTIONS = {
    "firevnet": ("firevnet",),
    "firevnet_imagenet": ("firevnet", "firevnet_imagenet"),
    "cnn": ("cnn",),
    "mlp": ("mlp",),
}

# Fields added to the schema after workdirs were first written, whose
# behaviour before they existed differs from today's default: the value that
# reproduces such a run. Every other missing field gets its schema default
# (the behaviour it had before it became a field).
_VALUE_BEFORE_FIELD_EXISTED = {
    "loss.differential.bias": "midpoint",
    "model.compute.dtype": "float32",
}

# Renamed fields: old path -> (new path, {old value: new value}), in the
# flat model schema (nest_model_fields then moves the new name).
_RENAMED_FIELDS = {
    "model.matmul_dtype": ("model.compute_dtype",
                           {"bfloat16": "bfloat16_1x1"}),
}

# The flat config.model of older workdirs (and the flat shorthand of
# nest_model_fields, which also takes fields added since, such as
# zero_channels): field -> its sub-section now (hidden and dropout: the
# section of the architecture the run used).
_FLAT_MODEL_FIELDS = {
    **{f: "firevnet" for f in (
        "levels", "depth", "width", "coupling", "affine_scale", "scale_floor",
        "permutation", "perm_seed", "downsample", "actnorm_std_floor",
        "actnorm_eps", "split_prior", "logit_bn", "logit_bn_momentum",
        "zero_channels", "zero_channel_noise", "zero_channel_fill")},
    **{f: "firevnet_imagenet" for f in (
        "init_squeeze", "blocks", "channels", "strides")},
    "features": "cnn",
    **{f: "compute" for f in (
        "reversible", "reversible_loop", "scan_batch_chunk", "batch_chunk",
        "conv3x3_impl", "conv1x1_as_matmul")},
    "compute_dtype": ("compute", "dtype"),
}


def nest_model_fields(fields, name: str = "firevnet") -> dict:
  """``{field: value}`` of the flat ``config.model`` (older workdirs, or
  shorthand such as ``levels=2, batch_chunk=0``) as the nested section:
  each field in its sub-section (``{"firevnet": {"levels": 2}, "compute":
  {"batch_chunk": 0}}``). ``hidden`` / ``dropout`` go to the section of the
  architecture ``name`` (the cnn's or the mlp's hidden; the fiRevNet's or
  the mlp's dropout). Sub-sections and ``name`` pass through; unknown
  fields are kept as they are (validation names them)."""
  out: dict = {}
  name = fields.get("name", name)
  for key, value in fields.items():
    if key in ("hidden", "dropout"):
      home = {"hidden": ("cnn" if name == "cnn" else "mlp"),
              "dropout": ("mlp" if name == "mlp" else "firevnet")}[key]
      path = (home, key)
    else:
      home = _FLAT_MODEL_FIELDS.get(key)
      path = None if home is None else (
          home if isinstance(home, tuple) else (home, key))
    if path is None:
      if hasattr(value, "keys") and key in out:
        out[key].update(dict(value.items()))
      else:
        out[key] = dict(value.items()) if hasattr(value, "keys") else value
    else:
      out.setdefault(path[0], {})[path[1]] = value
  return out


def migrate_config(raw) -> ml_collections.ConfigDict:
  """A config read from an older workdir's ``config.json`` (a nested dict),
  in today's schema: renamed fields take their new names, the flat
  ``config.model`` moves into its sub-sections (:func:`nest_model_fields`),
  fields it lacks are filled (the schema default, or the value in
  ``_VALUE_BEFORE_FIELD_EXISTED``), JSON lists become tuples. A field the
  schema does not know raises ConfigError naming it."""
  raw = _nested_copy(raw)
  for old, (new, values) in _RENAMED_FIELDS.items():
    *parents, leaf = old.split(".")
    node = raw
    for part in parents:
      node = node.get(part, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict) and leaf in node:
      value = node.pop(leaf)
      node.setdefault(new.split(".")[-1], values.get(value, value))
  if isinstance(raw.get("model"), dict):
    raw["model"] = nest_model_fields(raw["model"])
  for path, value in _VALUE_BEFORE_FIELD_EXISTED.items():
    *parents, leaf = path.split(".")
    node = raw
    for part in parents:
      node = node.setdefault(part, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
      node.setdefault(leaf, value)
  config = default_config()
  _set_fields(config, raw, "")
  return config


def _nested_copy(d):
  if hasattr(d, "keys"):
    return {k: _nested_copy(d[k]) for k in d.keys()}
  return d


def _walk(cfg, prefix=""):
  for key in cfg.keys():
    value = cfg[key]
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      yield from _walk(value, path + ".")
    else:
      yield path, value


def _get(cfg, path):
  for part in path.split("."):
    cfg = cfg[part]
  return cfg


def closest_field(path: str, known: Iterable[str]) -> str | None:
  """The known dotted field ``path`` most likely meant: the field of the
  same name in a sub-section of the same section (``model.levels`` ->
  ``model.firevnet.levels``, the schema's older flat form), else the closest
  spelling of the path, else of its last name within the same section
  (``model.widht`` -> ``model.firevnet.width``); None if nothing is
  close."""
  import difflib
  known = list(known)
  head, _, leaf = path.rpartition(".")
  moved = [k for k in known
           if k.endswith("." + leaf) and k.startswith(head + ".")
           and k.count(".") == path.count(".") + 1]
  if moved:
    return moved[0]
  close = difflib.get_close_matches(path, known, n=1)
  if close:
    return close[0]
  under = {k.rpartition(".")[2]: k for k in reversed(known)
           if not head or k.startswith(head + ".")}
  close = difflib.get_close_matches(leaf, list(under), n=1)
  return under[close[0]] if close else None


def validate_config(config: ml_collections.ConfigDict,
                    schema: ml_collections.ConfigDict | None = None) -> None:
  """Checks a config against the schema; raises one clear ConfigError.

  Checks: every field is known (with a "did you mean" for misspellings), has
  the schema's type, sizes are positive, names are known.
  """
  schema = default_config() if schema is None else schema
  known = dict(_walk(schema))
  for path, value in _walk(config):
    if path not in known:
      hint = closest_field(path, known)
      raise ConfigError(
          f"unknown config field config.{path}"
          + (f"; did you mean config.{hint}?" if hint else
             "; see advinv_jax/config.py for the fields."))
    ref = known[path]
    if ref is None or value is None:
      continue
    ok = (isinstance(value, type(ref))
          or (isinstance(ref, float) and isinstance(value, int)
              and not isinstance(value, bool))
          or (isinstance(ref, (tuple, list)) and isinstance(value,
                                                            (tuple, list))))
    if isinstance(ref, int) and not isinstance(ref, bool) and isinstance(
        value, bool):
      ok = False
    if not ok:
      raise ConfigError(
          f"config.{path}={value!r} has type {type(value).__name__}; expected "
          f"{type(ref).__name__} (like the default {ref!r}).")

  def positive(path, allow_zero=False):
    v = _get(config, path)
    if v < 0 or (v == 0 and not allow_zero):
      raise ConfigError(f"config.{path}={v!r} must be "
                        f"{'>= 0' if allow_zero else '> 0'}.")

  for p in ("train.batch_size", "eval.batch_size", "optimizer.learning_rate",
            "train.keep_checkpoints", "train.log_every",
            "data.crop_fraction", "loss.ice.nuisance_learning_rate",
            "report.pgd_restarts", "report.deepfool_candidates",
            "report.nuisance_classifier_lr",
            "report.nuisance_classifier_batch_size"):
    positive(p)
  for p in ("loss.ice.nuisance_hidden",
            "report.nuisance_classifier_hidden", "optimizer.boundaries"):
    if any(v < 1 for v in _get(config, p)):
      raise ConfigError(f"config.{p}={tuple(_get(config, p))} must hold "
                        "sizes >= 1.")
  for p, lo, hi in (("loss.label_smoothing", 0.0, 1.0),
                    ("optimizer.momentum", 0.0, 1.0)):
    if not lo <= _get(config, p) < hi:
      raise ConfigError(f"config.{p}={_get(config, p)!r} must lie in "
                        f"[{lo:g}, {hi:g}).")
  if config.data.crop_fraction > 1:
    raise ConfigError(f"config.data.crop_fraction={config.data.crop_fraction}"
                      " must lie in (0, 1].")
  if config.report.enabled:
    for p in ("report.num_examples", "report.pgd_steps",
              "report.deepfool_steps"):
      positive(p)
    for p in ("report.linf_eps", "report.l2_eps"):
      if not _get(config, p):
        raise ConfigError(f"config.{p} is empty: give at least one attack "
                          "budget, or set config.report.enabled=False.")
    if config.report.num_metamers < 1 or (
        config.report.interpolation_steps < 2) or (
            config.report.interpolation_pairs < 1):
      raise ConfigError(
          "config.report.num_metamers and interpolation_pairs must be >= 1 "
          "and interpolation_steps >= 2 (got "
          f"{config.report.num_metamers}, {config.report.interpolation_pairs}"
          f", {config.report.interpolation_steps}).")
  for p in ("train.num_epochs", "train.num_steps", "train.checkpoint_every",
            "train.dequant_noise", "optimizer.warmup_steps",
            "optimizer.weight_decay", "optimizer.grad_clip_norm",
            "data.num_train", "data.num_test", "data.pad_to",
            "loss.label_smoothing", "report.num_examples",
            "report.pgd_steps", "report.fmn_steps",
            "report.autoattack_num_examples", "loss.ice.nuisance_steps",
            "data.zero_channels", "data.test_noise", "train.init_batch_size"):
    positive(p, allow_zero=True)
  positive("loss.ice.n_bins")
  for p in ("report.autoattack_steps", "report.autoattack_num_targets",
            "report.autoattack_queries", "report.autoattack_fmn_steps",
            "report.metamer_tol", "report.num_metamers",
            "report.interpolation_pairs", "report.nuisance_classifier_steps"):
    positive(p)
  if config.report.interpolation_steps < 2:
    raise ConfigError(f"config.report.interpolation_steps="
                      f"{config.report.interpolation_steps} must be >= 2.")
  for p in ("report.metamer_min_valid", "report.metamer_max_out_of_bounds"):
    if not 0.0 <= _get(config, p) <= 1.0:
      raise ConfigError(f"config.{p}={_get(config, p)!r} is a share: it must "
                        "be in [0, 1].")
  if config.train.num_epochs == 0 and config.train.num_steps == 0:
    raise ConfigError("config.train.num_epochs and config.train.num_steps "
                      "are both 0: set one of them > 0.")
  for p in ("report.linf_eps", "report.l2_eps", "report.autoattack_linf_eps",
            "report.autoattack_l2_eps"):
    if any(e < 0 for e in _get(config, p)):
      raise ConfigError(f"config.{p}={_get(config, p)} has a negative eps; "
                        "attack budgets must be >= 0.")

  def one_of(path, choices):
    v = _get(config, path)
    if v not in choices:
      raise ConfigError(f"config.{path}={v!r} is not one of {list(choices)}.")

  for p in ("train.reinit", "train.trainable"):
    try:
      re.compile(_get(config, p))
    except re.error as e:
      raise ConfigError(f"config.{p}={_get(config, p)!r} is not a valid "
                        f"regular expression: {e}.") from None
  if config.train.reinit and not config.train.init_from:
    raise ConfigError("config.train.reinit is set but config.train.init_from "
                      "is empty: reinit only applies when initialising from "
                      "another run's workdir.")

  name = config.data.name
  if not (name in DATASETS or name.startswith("tfds:")):
    raise ConfigError(f"config.data.name={name!r} is not a known dataset; "
                      f"choose one of {list(DATASETS)} or 'tfds:<name>'.")
  one_of("loss.name", LOSSES)
  one_of("optimizer.name", OPTIMIZERS)
  one_of("optimizer.schedule", SCHEDULES)
  one_of("train.on_nonfinite", ("stop", "skip"))
  one_of("train.resume_mismatch", ("refuse", "allow"))
  one_of("report.pgd_loss", ("ce", "margin"))
  one_of("report.attack_loop", ("fori", "unrolled", "scan", ""))
  one_of("loss.ice.minmax", ("alternating", "gradient_reversal"))
  one_of("loss.ice.nuisance_labels", ("true", "shuffled"))
  one_of("loss.ice.likelihood", ("factorial_zn", "glow"))
  from advinv_jax.data._derive import SHIFT_CONSTRUCTIONS  # late: light
  one_of("data.shift.construction", SHIFT_CONSTRUCTIONS)
  if not 0.0 <= config.loss.ice.nuisance_dropout < 1.0:
    raise ConfigError(f"config.loss.ice.nuisance_dropout="
                      f"{config.loss.ice.nuisance_dropout!r} must be in "
                      "[0, 1).")
  if (config.loss.name == "ice" and config.loss.ice.nuisance_labels ==
      "shuffled" and config.loss.ice.minmax != "alternating"):
    raise ConfigError("config.loss.ice.nuisance_labels='shuffled' needs "
                      "config.loss.ice.minmax='alternating' (gradient "
                      "reversal trains D and the network on one label set).")
  one_of("loss.differential.pairs", ("global", "per_device"))
  one_of("loss.differential.bias", ("max_accuracy", "midpoint"))
  one_of("report.autoattack_version", ("standard", "plus"))
  if config.optimizer.schedule == "piecewise" and len(
      config.optimizer.boundaries) != len(config.optimizer.scales):
    raise ConfigError("config.optimizer.boundaries and config.optimizer.scales "
                      "must have the same length for the piecewise schedule.")
  if config.data.classes and len(config.data.classes) != 2:
    raise ConfigError(f"config.data.classes={tuple(config.data.classes)} must "
                      "name exactly two classes (or be empty).")
  if config.loss.name == "differential" and len(config.data.classes) != 2:
    raise ConfigError("config.loss.name='differential' is a binary loss: set "
                      "config.data.classes to two class ids, e.g. (3, 7).")
  validate_model_config(config.model)
  if config.loss.name == "ice" and config.model.name in ("cnn", "mlp"):
    raise ConfigError("config.loss.name='ice' needs an invertible model "
                      "(config.model.name='firevnet'); "
                      f"{config.model.name!r} has no nuisance z_n.")


def validate_model_config(model: ml_collections.ConfigDict) -> None:
  """Checks a complete ``config.model`` section (every sub-section, names
  among the choices, sizes in range); raises one clear ConfigError. Shape
  checks that need the input (divisibility by the downsampling) stay with
  the builders."""
  from advinv_jax.layers import COMPUTE_DTYPES, CONV3X3_IMPLS  # late: light
  from advinv_jax.models import model_names  # late: keeps config import light
  if model.name not in model_names():
    raise ConfigError(f"config.model.name={model.name!r} is not a known "
                      f"model; choose one of {model_names()}.")
  fr, cp = model.firevnet, model.compute

  def one_of(section, field, choices):
    v = model[section][field]
    if v not in choices:
      raise ConfigError(f"config.model.{section}.{field}={v!r}; choose one "
                        f"of {list(choices)}.")

  def at_least(section, field, low, note=""):
    v = model[section][field]
    if v < low:
      raise ConfigError(f"config.model.{section}.{field}={v!r} must be >= "
                        f"{low}{note}.")

  def sizes(section, field, low=1):
    v = tuple(model[section][field])
    if any(isinstance(n, bool) or not isinstance(n, int) or n < low
           for n in v):
      raise ConfigError(f"config.model.{section}.{field}={v} must be a tuple "
                        f"of ints >= {low}.")

  one_of("firevnet", "coupling", ("additive", "affine"))
  one_of("firevnet", "affine_scale", ("sigmoid", "exp_tanh"))
  one_of("firevnet", "permutation", ("reverse", "shuffle", "conv1x1"))
  one_of("firevnet", "downsample", ("squeeze", "psi"))
  one_of("firevnet", "split_prior", ("none", "conditional"))
  for field in ("levels", "width", "depth"):
    at_least("firevnet", field, 1)
  if fr.scale_floor <= 0:
    raise ConfigError(f"config.model.firevnet.scale_floor={fr.scale_floor} "
                      "must be > 0.")
  at_least("firevnet", "actnorm_std_floor", 0, " (0: no floor, the authors' "
           "init)")
  at_least("firevnet", "actnorm_eps", 0)
  for field in ("zero_channels", "zero_channel_noise"):
    at_least("firevnet", field, 0)
  if not 0.0 < fr.logit_bn_momentum <= 1.0:
    raise ConfigError(f"config.model.firevnet.logit_bn_momentum="
                      f"{fr.logit_bn_momentum} must be in (0, 1] (PyTorch's "
                      "convention: the batch's weight).")
  for section in ("firevnet", "mlp"):
    if not 0.0 <= model[section].dropout < 1.0:
      raise ConfigError(f"config.model.{section}.dropout="
                        f"{model[section].dropout} must be in [0, 1).")
  at_least("firevnet_imagenet", "init_squeeze", 1)
  sizes("firevnet_imagenet", "blocks", 0)
  sizes("firevnet_imagenet", "channels")
  sizes("firevnet_imagenet", "strides")
  sizes("cnn", "features")
  sizes("cnn", "hidden")
  sizes("mlp", "hidden")

  one_of("compute", "reversible_loop", ("auto", "unrolled", "scan"))
  one_of("compute", "dtype", ("",) + tuple(COMPUTE_DTYPES))
  one_of("compute", "conv3x3_impl", ("",) + tuple(CONV3X3_IMPLS))
  at_least("compute", "scan_batch_chunk", 0, " (0: whole batch)")
  chunk = cp.batch_chunk
  if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < -1:
    raise ConfigError(f"config.model.compute.batch_chunk={chunk!r} must be "
                      "an int >= 0 (0: run the whole batch at once) or -1 "
                      "(platform default).")
  if fr.dropout and model.name.startswith("firevnet") and (
      cp.reversible or cp.reversible_loop == "scan"):
    raise ConfigError(
        f"config.model.firevnet.dropout={fr.dropout} trains with a plain "
        "unrolled loop: set config.model.compute.reversible=False and "
        "config.model.compute.reversible_loop='unrolled' (or 'auto'), or "
        "dropout=0.")
