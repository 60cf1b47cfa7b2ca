"""Ordinary (non-invertible) classifiers: a small CNN and an MLP.

The CNN is the small convolutional network of the binary / differential
training experiments and of the attack benchmarks; the MLP is the nuisance
classifier of iCE (it flattens its input, so it takes ``z_n`` vectors too).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from advinv_jax import _settings as S
from advinv_jax.layers import Compute, conv3x3
from advinv_jax.models._base import Model, register_model
from advinv_jax.models._settings import register_model_section


def _cnn_defaults() -> ml_collections.ConfigDict:
  cnn = ml_collections.ConfigDict()
  cnn.features = (32, 64, 64)  # 3x3 convs, all but the first of stride 2
  cnn.hidden = (128,)          # dense widths after the convs
  return cnn


def _validate_cnn(model) -> None:
  S.check_sizes("model.cnn.features", model.cnn.features)
  S.check_sizes("model.cnn.hidden", model.cnn.hidden)


def _mlp_defaults() -> ml_collections.ConfigDict:
  mlp = ml_collections.ConfigDict()
  mlp.hidden = (128,)          # dense widths
  mlp.dropout = 0.0            # after each hidden ReLU, train mode
  return mlp


def _validate_mlp(model) -> None:
  S.check_sizes("model.mlp.hidden", model.mlp.hidden)
  S.check_in("model.mlp.dropout", model.mlp.dropout, 0.0, 1.0)


register_model_section("cnn", _cnn_defaults, _validate_cnn)
register_model_section("mlp", _mlp_defaults, _validate_mlp)


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


class MLP(nn.Module):
  """``Dense -> ReLU [-> Dropout]`` per hidden width, then ``Dense`` to
  ``num_classes``; flattens its input ``[B, ...]``. The one MLP of the
  project: the ``mlp`` model, iCE's nuisance classifier D (the authors'
  3072 -> 512 -> 512 -> 10 with dropout 0.1, train.py ~L66) and the post-hoc
  z_n probes. Dropout acts only with ``train=True`` (key in
  ``rngs={"dropout": key}``)."""
  hidden: Sequence[int]
  num_classes: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape((x.shape[0], -1))
    for h in self.hidden:
      x = nn.relu(nn.Dense(h)(x))
      if self.dropout:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
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

  def logits_train(self, params, x, rng=None, axis_name=None):
    """Dropout on (when the module has it and ``rng`` is given)."""
    del axis_name
    if rng is None or not getattr(self.module, "dropout", 0.0):
      return self.logits(params, x), {}
    return self.module.apply({"params": params}, x, train=True,
                             rngs={"dropout": rng}), {}


@register_model("cnn")
def build_cnn(cfg, input_shape: Tuple[int, int, int], num_classes: int):
  """Small CNN. Reads ``config.model.cnn``: ``features`` (conv widths; 3x3,
  the first stride 1, the others stride 2), ``hidden`` (dense widths); and
  ``config.model.compute.conv3x3_impl`` (how the convs run, see
  :func:`advinv_jax.layers.conv3x3`; same function and parameters for every
  value)."""
  features, hidden = tuple(cfg.cnn.features), tuple(cfg.cnn.hidden)
  if not features:
    raise ValueError("config.model.cnn.features=() must name at least one "
                     "conv width.")
  impl = Compute.from_config(cfg.compute).conv3x3_impl
  return FlaxClassifier(input_shape, num_classes,
                        module=_CNN(features, hidden, num_classes, impl))


@register_model("mlp")
def build_mlp(cfg, input_shape: Tuple[int, int, int], num_classes: int):
  """:class:`MLP` on the flattened input. Reads ``config.model.mlp``:
  ``hidden`` (tuple of widths), ``dropout`` (rate after each hidden ReLU,
  train mode only)."""
  return FlaxClassifier(input_shape, num_classes,
                        module=MLP(tuple(cfg.mlp.hidden), num_classes,
                                   float(cfg.mlp.dropout)))


def mlp_classifier(input_dim: int, hidden: Sequence[int], num_classes: int,
                   dropout: float = 0.0) -> FlaxClassifier:
  """The :class:`MLP` as a :class:`FlaxClassifier` on vectors
  ``f32[B, input_dim]`` (for callers without a model config: iCE's nuisance
  classifier, the post-hoc z_n probes)."""
  hidden = tuple(int(h) for h in hidden)
  if int(input_dim) < 1 or any(h <= 0 for h in hidden) or not (
      0.0 <= dropout < 1.0):
    raise ValueError(f"mlp_classifier: input_dim={input_dim} and hidden="
                     f"{hidden} must be positive, dropout={dropout} in "
                     "[0, 1).")
  return FlaxClassifier((int(input_dim), 1, 1), int(num_classes),
                        module=MLP(hidden, int(num_classes), float(dropout)))
