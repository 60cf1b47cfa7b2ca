"""Invertible 2x downsampling: Glow's squeeze and i-RevNet's psi."""
from __future__ import annotations

import dataclasses

from advinv_jax.layers._base import Layer, zeros_logdet


@dataclasses.dataclass(frozen=True)
class _Downsample(Layer):
  """Shared shape logic: ``[B, H, W, C] -> [B, H/2, W/2, 4C]``, logdet 0."""

  def check_shape(self, shape):
    super().check_shape(shape)
    if shape[1] % 2 or shape[2] % 2:
      raise ValueError(
          f"{type(self).__name__} needs even H and W, got shape "
          f"{tuple(shape)}; pad the images (config.data.pad_to) or use fewer "
          "levels/strides.")

  def output_shape(self, shape):
    self.check_shape(shape)
    b, h, w, c = shape
    return (b, h // 2, w // 2, 4 * c)

  def input_shape(self, shape):
    b, h, w, c = shape
    if c % 4:
      raise ValueError(f"{type(self).__name__}.inverse needs C divisible by 4, "
                       f"got shape {tuple(shape)}.")
    return (b, 2 * h, 2 * w, c // 4)

  # The transpose of x viewed as [B, H/2, 2 (di), W/2, 2 (dj), C] whose last
  # three axes, flattened, become the 4C output channels (their order is what
  # tells the subclasses apart; each subclass sets it).
  _PERM = None

  def apply(self, params, consts, x):
    del params, consts
    b, h, w, c = x.shape
    y = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(self._PERM)
    return y.reshape(b, h // 2, w // 2, 4 * c), zeros_logdet(x)

  def apply_inverse(self, params, consts, y):
    del params, consts
    b, h, w, c4 = y.shape
    c = c4 // 4
    size = {2: 2, 4: 2, 5: c}              # axis of the [.., di, .., dj, C] view
    inverse = tuple(self._PERM.index(a) for a in range(6))
    x = y.reshape(b, h, w, *(size[a] for a in self._PERM[3:]))
    return (x.transpose(inverse).reshape(b, 2 * h, 2 * w, c),
            zeros_logdet(y))


@dataclasses.dataclass(frozen=True)
class Squeeze(_Downsample):
  """Glow's squeeze (space-to-depth by 2), *channel-major* ordering.

  ``y[b, i, j, 4*c + 2*di + dj] = x[b, 2*i + di, 2*j + dj, c]``: the four
  pixels of each 2x2 block of input channel ``c`` are consecutive output
  channels (Glow's ``squeeze2d``: reshape to ``[B, H/2, 2, W/2, 2, C]``,
  transpose to ``[B, H/2, W/2, C, 2, 2]``).
  """

  _PERM = (0, 1, 3, 5, 2, 4)   # -> [B, H/2, W/2, C, di, dj]


@dataclasses.dataclass(frozen=True)
class Psi(_Downsample):
  """i-RevNet's psi (block size 2), *position-major* ordering.

  ``y[b, i, j, (2*di + dj)*C + c] = x[b, 2*i + di, 2*j + dj, c]``: output
  channels come in four groups of C, one per position ``(di, dj)`` in the
  2x2 block (row-major), each group holding all input channels — the order
  of i-RevNet's ``psi.forward`` (and of TensorFlow's ``space_to_depth``).
  """

  _PERM = (0, 1, 3, 2, 4, 5)   # -> [B, H/2, W/2, di, dj, C]
