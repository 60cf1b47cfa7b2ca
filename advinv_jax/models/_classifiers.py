"""Ordinary (non-invertible) classifiers: a small CNN and an MLP.

The CNN is the small convolutional network of the binary / differential
training experiments and of the attack benchmarks; the MLP is the nuisance
classifier of iCE (it flattens its input, so it takes ``z_n`` vectors too).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from advinv_jax.layers import conv3x3, resolve_conv3x3_impl
from advinv_jax.models._base import Model, register_model


class _Conv3x3(nn.Module):
  """``nn.Conv(features, (3, 3), strides)`` (same parameters, names and
  initialisation) computed by :func:`advinv_jax.layers.conv3x3` with
  ``impl``."""
  features: int
  stride: int
  impl: str

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (3, 3, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,),
                      jnp.float32)
    return conv3x3(x, kernel, self.impl, self.stride) + bias


class _CNN(nn.Module):
  features: Sequence[int]
  hidden: Sequence[int]
  num_classes: int
  conv3x3_impl: str = "xla"

  @nn.compact
  def __call__(self, x):
    for i, f in enumerate(self.features):
      # Strided convolutions instead of max-pooling: max-pool backward is slow
      # on XLA CPU.
      x = _Conv3x3(f, 1 if i == 0 else 2, self.conv3x3_impl,
                   name=f"Conv_{i}")(x)
      x = nn.relu(x)
    x = x.reshape((x.shape[0], -1))
    for h in self.hidden:
      x = nn.relu(nn.Dense(h)(x))
    return nn.Dense(self.num_classes)(x)


class _MLP(nn.Module):
  hidden: Sequence[int]
  num_classes: int

  @nn.compact
  def __call__(self, x):
    x = x.reshape((x.shape[0], -1))
    for h in self.hidden:
      x = nn.relu(nn.Dense(h)(x))
    return nn.Dense(self.num_classes)(x)


@dataclasses.dataclass(frozen=True)
class FlaxClassifier(Model):
  """Wraps a flax.linen module as a pure ``init``/``logits`` pair."""

  module: nn.Module = None

  def init(self, rng, x):
    self.check_input(x)
    return self.module.init(rng, x[:1])["params"]

  def logits(self, params, x):
    return self.module.apply({"params": params}, x)


@register_model("cnn")
def build_cnn(cfg, input_shape: Tuple[int, int, int], num_classes: int):
  """Small CNN. Fields: ``features`` (conv widths; 3x3, the first stride 1,
  the others stride 2), ``hidden`` (dense widths), ``conv3x3_impl`` (how the
  convs run, see :func:`advinv_jax.layers.conv3x3`; same function and
  parameters for every value)."""
  features, hidden = tuple(cfg.features), tuple(cfg.hidden)
  if not features:
    raise ValueError("config.model.features=() must name at least one conv "
                     "width for the cnn.")
  impl = resolve_conv3x3_impl(cfg.conv3x3_impl)
  return FlaxClassifier(input_shape, num_classes,
                        module=_CNN(features, hidden, num_classes, impl))


@register_model("mlp")
def build_mlp(cfg, input_shape: Tuple[int, int, int], num_classes: int):
  """MLP on the flattened input. Field: ``hidden`` (tuple of widths)."""
  return FlaxClassifier(input_shape, num_classes,
                        module=_MLP(tuple(cfg.hidden), num_classes))
