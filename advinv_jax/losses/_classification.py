"""Cross-entropy and the scalar score of a two-logit classifier."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from advinv_jax import _checks

Array = jax.Array


def cross_entropy(logits: Array, labels: Array, label_smoothing: float = 0.0,
                  weights: Optional[Array] = None) -> Array:
  """Mean softmax cross-entropy over a batch, numerically stable.

  Per example ``l_i = -sum_c t_ic log softmax(logits_i)_c`` with targets
  ``t_i = (1 - eps) * onehot(labels_i) + eps / C`` (``eps = label_smoothing``).
  ``log_softmax`` subtracts the row maximum, so logits of magnitude 1e4 (and
  beyond) give finite losses and gradients.

  Args:
    logits: ``float[B, C]`` unnormalised class scores.
    labels: ``int[B]`` class ids in ``[0, C)``. Ids outside that range are not
      checked (they cannot be under ``jit``): their one-hot row is zero.
    label_smoothing: ``eps`` in ``[0, 1)``; a Python float is range-checked.
    weights: optional ``float[B]`` non-negative per-example weights (e.g. a 0/1
      padding mask). The result is then ``sum_i w_i l_i / sum_i w_i`` (0 when
      all weights are 0).

  Returns:
    A scalar of ``logits.dtype`` (float32 for float32 logits).

  Raises:
    ValueError: wrong ranks, mismatched batch sizes, non-integer labels,
      non-float logits, or ``label_smoothing`` outside ``[0, 1)``.
  """
  shape = _checks.check_rank(logits, 2, "logits", "[B, C]")
  _checks.check_floating(logits, "logits")
  lshape = _checks.check_rank(labels, 1, "labels", "[B]")
  _checks.check_integer_labels(labels)
  _checks.check_batch(shape, lshape, "logits", "labels")
  if isinstance(label_smoothing, (int, float)) and not (
      0.0 <= label_smoothing < 1.0):
    raise ValueError(f"label_smoothing must be in [0, 1), got "
                     f"{label_smoothing}.")
  if weights is not None:
    wshape = _checks.shape_of(weights)
    if wshape != (shape[0],):
      raise ValueError(f"weights must have shape [B]=({shape[0]},), got "
                       f"{wshape}; pass one weight per example.")

  logits = jnp.asarray(logits)
  num_classes = shape[1]
  log_p = jax.nn.log_softmax(logits, axis=-1)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=log_p.dtype)
  nll = -jnp.sum(onehot * log_p, axis=-1)
  if not (isinstance(label_smoothing, (int, float)) and label_smoothing == 0):
    eps = jnp.asarray(label_smoothing, log_p.dtype)
    smooth = -jnp.mean(log_p, axis=-1)
    nll = (1.0 - eps) * nll + eps * smooth
  if weights is None:
    return jnp.mean(nll)
  weights = jnp.asarray(weights, nll.dtype)
  total = jnp.sum(weights)
  safe = jnp.where(total > 0, total, 1.0)
  return jnp.where(total > 0, jnp.sum(weights * nll) / safe, 0.0)


def binary_scores(logits: Array) -> Array:
  """Scalar score ``s = logits[:, 1] - logits[:, 0]`` of a two-logit model.

  A two-class softmax classifier predicts class 1 iff ``s > 0``; the binary
  cross-entropy is ``softplus(-(2y - 1) s)``. Differential training learns
  ``s`` without a bias and sets one afterwards (:func:`midpoint_bias`): the
  prediction is then class 1 iff ``s + b > 0``, i.e. ``sign(s + b)``.

  Args:
    logits: ``float[B, 2]``.

  Returns:
    ``float[B]`` scores, same dtype as ``logits``.

  Raises:
    ValueError: ``logits`` not of shape ``[B, 2]``.
  """
  shape = _checks.check_rank(logits, 2, "logits", "[B, 2]")
  if shape[1] != 2:
    raise ValueError(f"binary_scores needs exactly 2 logits per example, got "
                     f"shape {shape}; use a two-class head.")
  _checks.check_floating(logits, "logits")
  logits = jnp.asarray(logits)
  return logits[:, 1] - logits[:, 0]
