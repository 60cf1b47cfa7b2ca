"""The fiRevNets' settings: ``config.model.firevnet`` (the coupling steps and
readout of both layouts, and the MNIST layout) and
``config.model.firevnet_imagenet`` (the ImageNet layout), with their
choices and checks. The builders are in ``_firevnet.py``.
"""
from __future__ import annotations

import ml_collections

from advinv_jax import _settings as S
from advinv_jax.layers import (AFFINE_SCALES, COUPLINGS, InvConv1x1, Psi,
                               Reverse, Shuffle, Squeeze)
from advinv_jax.models._settings import register_model_section

PERMUTATIONS = {"reverse": Reverse, "shuffle": Shuffle, "conv1x1": InvConv1x1}
DOWNSAMPLES = {"squeeze": Squeeze, "psi": Psi}
SPLIT_PRIORS = ("none", "conditional")
# The fixed input map, a layer of the model (attacks perturb pixels in
# [0, 1]): none (x -> 2x - 1) | logit (LogitTransform: the box onto R, so
# every inverse, metamers included, lies within alpha / (1 - 2 alpha) of the
# box by construction).
INPUT_TRANSFORMS = ("none", "logit")
# firevnet_imagenet: psi layers before the first stage -> the input's
# downsampling factor
INIT_SQUEEZES = {1: 0, 2: 1, 4: 2}


def firevnet_defaults() -> ml_collections.ConfigDict:
  """``config.model.firevnet``: the coupling steps and readout (both
  layouts) and the MNIST layout (levels, depth, width, downsample)."""
  fr = ml_collections.ConfigDict()
  fr.levels = 3
  fr.depth = 4                 # coupling steps per level
  fr.width = 32                # hidden channels of the coupling subnet
  # additive | affine (COUPLINGS). Additive (as the authors' MNIST code):
  # its inverse stays well conditioned off the data, so metamers
  # F^-1(z_s(A), z_n(B)) are valid; on the default digits run
  # affine-sigmoid gave 18% valid metamers (exp_tanh 86%), additive 100% at
  # the same test accuracy (benchmarks/metamer_validity.py, docs/report.md).
  fr.coupling = "additive"
  fr.affine_scale = "sigmoid"  # sigmoid | exp_tanh (affine only)
  fr.scale_floor = 1e-3        # affine scale >= this (no collapse)
  fr.permutation = "shuffle"   # reverse | shuffle | conv1x1
  fr.perm_seed = 0             # shuffle / 1x1-conv initial permutation
  fr.downsample = "squeeze"    # squeeze | psi
  # The input map (INPUT_TRANSFORMS) and, for 'logit', its alpha in (0, 0.5):
  # the inverse's image is the box widened by alpha / (1 - 2 alpha) per side
  # (layers.alpha_for_widening gives alpha from that widening).
  fr.input_transform = "none"
  fr.input_alpha = 0.05
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
  return fr


def validate_firevnet(model) -> None:
  """Checks ``config.model.firevnet`` (and its dropout against
  ``config.model.compute``); one ConfigError."""
  fr, p = model.firevnet, "model.firevnet"
  S.check_one_of(f"{p}.coupling", fr.coupling, COUPLINGS)
  S.check_one_of(f"{p}.affine_scale", fr.affine_scale, AFFINE_SCALES)
  S.check_one_of(f"{p}.permutation", fr.permutation, tuple(PERMUTATIONS))
  S.check_one_of(f"{p}.downsample", fr.downsample, tuple(DOWNSAMPLES))
  S.check_one_of(f"{p}.split_prior", fr.split_prior, SPLIT_PRIORS)
  S.check_one_of(f"{p}.input_transform", fr.input_transform, INPUT_TRANSFORMS)
  S.check_in(f"{p}.input_alpha", fr.input_alpha, 0.0, 0.5, "()")
  for field in ("levels", "width", "depth"):
    S.check_at_least(f"{p}.{field}", fr[field], 1)
  S.check_in(f"{p}.scale_floor", fr.scale_floor, 0.0, 1.0, "()")
  S.check_at_least(f"{p}.actnorm_std_floor", fr.actnorm_std_floor, 0,
                   " (0: no floor, the authors' init)")
  for field in ("actnorm_eps", "zero_channels", "zero_channel_noise"):
    S.check_at_least(f"{p}.{field}", fr[field], 0)
  S.check_in(f"{p}.logit_bn_momentum", fr.logit_bn_momentum, 0.0, 1.0, "(]")
  S.check_in(f"{p}.dropout", fr.dropout, 0.0, 1.0)
  cp = model.compute
  if fr.dropout and model.name.startswith("firevnet") and (
      cp.reversible or cp.reversible_loop == "scan"):
    raise S.ConfigError(
        f"config.{p}.dropout={fr.dropout} trains with a plain unrolled loop: "
        "set config.model.compute.reversible=False and "
        "config.model.compute.reversible_loop='unrolled' (or 'auto'), or "
        "dropout=0.")


def firevnet_imagenet_defaults() -> ml_collections.ConfigDict:
  """``config.model.firevnet_imagenet``: the ImageNet layout; replaces
  levels / depth / width / downsample; the steps' settings are
  ``config.model.firevnet``'s."""
  fi = ml_collections.ConfigDict()
  fi.init_squeeze = 2          # 1 | 2 | 4 (INIT_SQUEEZES)
  fi.blocks = (6, 16, 72, 6)
  fi.channels = (24, 96, 384, 1536)
  fi.strides = ()              # per stage, 1 or 2; empty: all 2
  return fi


def imagenet_layout(fi):
  """``(blocks, channels, strides, init_squeeze)`` of
  ``config.model.firevnet_imagenet`` (empty strides: all 2)."""
  blocks = tuple(int(b) for b in fi.blocks)
  channels = tuple(int(c) for c in fi.channels)
  strides = tuple(int(s) for s in (fi.strides or (2,) * len(blocks)))
  return blocks, channels, strides, int(fi.init_squeeze)


def validate_firevnet_imagenet(model) -> None:
  """Checks ``config.model.firevnet_imagenet``; one ConfigError."""
  fi, p = model.firevnet_imagenet, "model.firevnet_imagenet"
  S.check_one_of(f"{p}.init_squeeze", fi.init_squeeze, tuple(INIT_SQUEEZES))
  S.check_sizes(f"{p}.blocks", fi.blocks, 0)
  S.check_sizes(f"{p}.channels", fi.channels)
  S.check_sizes(f"{p}.strides", fi.strides)
  if set(fi.strides) - {1, 2}:
    raise S.ConfigError(f"config.{p}.strides={tuple(fi.strides)} must hold "
                        "1 or 2 per stage (or be empty: all 2).")
  blocks, channels, strides, _ = imagenet_layout(fi)
  if not (len(blocks) == len(strides) == len(channels)) or not blocks:
    raise S.ConfigError(f"config.{p}.blocks={blocks}, channels={channels} "
                        f"(and strides={strides}) must be non-empty and of "
                        "equal length.")


register_model_section("firevnet", firevnet_defaults, validate_firevnet)
register_model_section("firevnet_imagenet", firevnet_imagenet_defaults,
                       validate_firevnet_imagenet)
