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

from advinv_jax.models._base import Model, register_model


class _CNN(nn.Module):
  features: Sequence[int]
  hidden: Sequence[int]
  num_classes: int

  @nn.compact
  def __call__(self, x):
    for i, f in enumerate(self.features):
      # Strided convolutions instead of max-pooling: max-pool backward is slow
      # on XLA CPU (see shared/reference/cpu-performance.md).
      x = nn.Conv(f, (3, 3), strides=(1, 1) if i == 0 else (2, 2))(x)
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
  """Small CNN. Fields: ``features`` (conv widths), ``hidden`` (dense widths)."""
  features = tuple(cfg.get("features", (32, 64, 64)))
  hidden = cfg.get("hidden", (128,))
  hidden = (int(hidden),) if isinstance(hidden, int) else tuple(hidden)
  if not features or min(features) <= 0 or any(h <= 0 for h in hidden):
    raise ValueError(f"config.model.features={features} and "
                     f"config.model.hidden={hidden} must be positive.")
  return FlaxClassifier(input_shape, num_classes,
                        module=_CNN(features, hidden, num_classes))


@register_model("mlp")
def build_mlp(cfg, input_shape: Tuple[int, int, int], num_classes: int):
  """MLP on the flattened input. Field: ``hidden`` (tuple of widths)."""
  hidden = tuple(cfg.get("hidden", (512, 512)))
  if any(h <= 0 for h in hidden):
    raise ValueError(f"config.model.hidden={hidden} must be positive widths.")
  return FlaxClassifier(input_shape, num_classes,
                        module=_MLP(hidden, num_classes))
