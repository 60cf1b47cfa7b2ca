"""Differential training (Nar et al. 2019): a pairwise loss on score gaps.

For a binary model with scalar score ``s(x)`` (``w^T phi(x)``, or
:func:`binary_scores` of a two-logit head) the loss over positives ``x_i`` and
negatives ``y_j`` is ``mean_ij softplus(-(s(x_i) - s(y_j)))``. Any bias cancels
in the differences, so it is set after training by :func:`decision_bias`
(:func:`midpoint_bias`, Nar et al.'s rule, or :func:`max_accuracy_bias`);
the prediction is ``sign(s(x) + b)``. For a linear model, gradient descent on
this loss converges in direction to the hard-margin SVM.

The decision bias lives here, start to end: :func:`decision_bias` places it
from scores, :func:`differential_bias` from a model over a whole (training)
split, :func:`with_bias` applies it to a model's or a ``logits_fn``'s
logits (:func:`add_binary_bias`). Training, the report and the experiments
call these.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax import _checks
from advinv_jax.losses._classification import binary_scores

Array = jax.Array


def _check_scores(scores, name, layout="[B]"):
  shape = _checks.check_rank(scores, 1, name, layout)
  _checks.check_floating(scores, name)
  if shape[0] == 0:
    raise ValueError(f"{name} is empty: pass at least one example of each "
                     "class (or use differential_loss_from_batch, which "
                     "handles single-class batches).")
  return shape


def differential_loss(scores_pos: Array, scores_neg: Array) -> Array:
  """Mean over all ``P*N`` pairs of ``softplus(-(s_i^+ - s_j^-))``.

  Invariant to adding one constant to every score (so a bias has no effect).

  Args:
    scores_pos: ``float[P]`` scores of positive examples (P >= 1).
    scores_neg: ``float[N]`` scores of negative examples (N >= 1).

  Returns:
    Scalar, dtype of the scores.

  Raises:
    ValueError: ranks other than 1, empty inputs, or non-float scores.
  """
  _check_scores(scores_pos, "scores_pos", "[P]")
  _check_scores(scores_neg, "scores_neg", "[N]")
  diff = jnp.asarray(scores_pos)[:, None] - jnp.asarray(scores_neg)[None, :]
  return jnp.mean(jax.nn.softplus(-diff))


def differential_loss_from_batch(scores: Array, labels: Array, *,
                                 axis_name: Optional[str] = None
                                 ) -> Tuple[Array, Dict[str, Array]]:
  """:func:`differential_loss` over a mixed batch, via a pair mask.

  Positives are ``labels == 1``, negatives ``labels == 0``; any other label
  (e.g. ``-1`` for padding) is ignored. A batch with no positive/negative pair
  (one class only) gives loss ``0`` with zero, finite gradients, and
  ``metrics["single_class_batch"] = 1`` so training can count such batches.

  With ``axis_name`` (under ``shard_map``/``pmap``, batch split over that
  axis) the pairs are formed over the *global* batch: every device's
  positives against every device's negatives. The returned value is then a
  per-device surrogate whose gradients, averaged with ``lax.pmean`` over the
  axis, equal the gradient of the global loss (so training on N devices
  matches one device); ``metrics["loss"]`` is the global loss itself.

  Args:
    scores: ``float[B]`` scalar scores.
    labels: ``int[B]`` (or bool) labels in ``{0, 1}``.
    axis_name: optional mapped batch axis (see above).

  Returns:
    ``(loss, metrics)``; metrics are float32 scalars: ``loss``,
    ``single_class_batch`` (0/1), ``num_pos``, ``num_neg``, ``num_pairs`` and
    ``pair_accuracy`` (fraction of pairs with ``s^+ > s^-``; 0 when no pairs).

  Raises:
    ValueError: bad ranks, mismatched batch sizes or dtypes.
  """
  shape = _check_scores(scores, "scores")
  lshape = _checks.check_rank(labels, 1, "labels", "[B]")
  _checks.check_integer_labels(labels)
  _checks.check_batch(shape, lshape, "scores", "labels")
  scores = jnp.asarray(scores)
  labels = jnp.asarray(labels).astype(jnp.int32)
  return _pairs(scores, labels, axis_name)


def _pairs(scores, labels, axis_name):
  """All positive/negative pairs of the (global, with ``axis_name``) batch.

  Without ``axis_name`` the "global" batch is the local one (one device).
  """
  if axis_name is None:
    n_dev, all_s, all_y = 1, jax.lax.stop_gradient(scores), labels
  else:
    n_dev = jax.lax.axis_size(axis_name)
    all_s = jax.lax.stop_gradient(
        jax.lax.all_gather(scores, axis_name, tiled=True))
    all_y = jax.lax.all_gather(labels, axis_name, tiled=True)
  pos, neg = labels == 1, labels == 0
  all_pos, all_neg = all_y == 1, all_y == 0
  num_pairs = jnp.sum(all_pos) * jnp.sum(all_neg)
  has_pairs = num_pairs > 0
  denom = jnp.maximum(num_pairs, 1).astype(scores.dtype)

  def pair_sum(s_p, s_n, mask):
    diff = jnp.where(mask, s_p[:, None] - s_n[None, :], 0.0)
    return jnp.sum(jnp.where(mask, jax.nn.softplus(-diff), 0.0))

  # d/dθ of the global mean = Σ_devices d/dθ of (local positives vs all
  # negatives + all positives vs local negatives), the other side held fixed.
  surrogate = (pair_sum(scores, all_s, pos[:, None] & all_neg[None, :])
               + pair_sum(all_s, scores, all_pos[:, None] & neg[None, :]))
  surrogate = jnp.where(has_pairs, n_dev * surrogate / denom, 0.0)
  full_mask = all_pos[:, None] & all_neg[None, :]
  value = jnp.where(has_pairs, pair_sum(all_s, all_s, full_mask) / denom, 0.0)
  diff = all_s[:, None] - all_s[None, :]
  correct = jnp.sum(jnp.where(full_mask, diff > 0, False))
  metrics = {
      "loss": value,
      "single_class_batch": (~has_pairs).astype(jnp.float32),
      "num_pos": jnp.sum(all_pos).astype(jnp.float32),
      "num_neg": jnp.sum(all_neg).astype(jnp.float32),
      "num_pairs": num_pairs.astype(jnp.float32),
      "pair_accuracy": (correct / jnp.maximum(num_pairs, 1)).astype(
          jnp.float32),
  }
  # Forward value equals the global loss; gradients are the surrogate's.
  loss = surrogate + jax.lax.stop_gradient(value - surrogate)
  return loss, metrics


def midpoint_bias(scores_pos: Array, scores_neg: Array) -> Array:
  """Bias ``b = -(min_i s_i^+ + max_j s_j^-) / 2`` for differential training.

  Puts the decision threshold (``s + b = 0``) halfway between the lowest
  positive and the highest negative score; call it on the training set's
  scores after training. Prediction: class 1 iff ``s + b > 0``.

  Args:
    scores_pos: ``float[P]``, P >= 1.
    scores_neg: ``float[N]``, N >= 1.

  Returns:
    Scalar bias.
  """
  _check_scores(scores_pos, "scores_pos", "[P]")
  _check_scores(scores_neg, "scores_neg", "[N]")
  return -0.5 * (jnp.min(jnp.asarray(scores_pos)) +
                 jnp.max(jnp.asarray(scores_neg)))


def max_accuracy_bias(scores: Array, labels: Array) -> Array:
  """Bias at the widest gap among the accuracy-maximising thresholds.

  Sorts the scores and considers every threshold between two consecutive
  distinct scores; among those with the highest accuracy of
  ``(s + b > 0) == (label == 1)`` it takes the widest gap and returns minus
  its midpoint. On separable scores the only 100%-accurate gap is
  ``(max s^-, min s^+)``, so this equals :func:`midpoint_bias` (Nar et al.'s
  rule). On non-separable scores the midpoint rule is set by the two worst
  outliers (one misclassified training point of each class can move the
  threshold arbitrarily far); this rule is not, which is why it is the
  training default (``config.loss.differential.bias``).

  Args:
    scores: ``float[B]`` scalar scores, ``B >= 2``.
    labels: ``int[B]`` in ``{0, 1}``, both classes present (checked in
      Python when ``labels`` is concrete).

  Returns:
    Scalar bias, dtype of the scores.
  """
  shape = _check_scores(scores, "scores")
  lshape = _checks.check_rank(labels, 1, "labels", "[B]")
  _checks.check_integer_labels(labels)
  _checks.check_batch(shape, lshape, "scores", "labels")
  if shape[0] < 2:
    raise ValueError(f"scores has {shape[0]} entries: pass at least one "
                     "example of each class.")
  if _checks.is_concrete(labels):
    lab = np.asarray(labels)
    if not (np.any(lab == 1) and np.any(lab == 0)):
      raise ValueError("labels must contain both classes 0 and 1 to place a "
                       "decision threshold.")
  s = jnp.asarray(scores)
  order = jnp.argsort(s)
  s_sorted = s[order]
  pos = (jnp.asarray(labels)[order] == 1).astype(jnp.int32)
  # Threshold in gap k (between sorted entries k and k+1): entries 0..k are
  # predicted negative, k+1.. positive.
  neg_below = jnp.cumsum(1 - pos)[:-1]
  pos_above = jnp.sum(pos) - jnp.cumsum(pos)[:-1]
  correct = neg_below + pos_above
  width = s_sorted[1:] - s_sorted[:-1]
  best = correct == jnp.max(jnp.where(width > 0, correct, -1))
  k = jnp.argmax(jnp.where(best & (width > 0), width, -jnp.inf))
  return -0.5 * (s_sorted[k] + s_sorted[k + 1])


def decision_bias(scores: Array, labels: Array, rule: str = "max_accuracy"
                  ) -> Array:
  """The bias of a differentially trained model by ``rule``.

  Args:
    scores: ``float[B]`` training-set scores.
    labels: ``int[B]`` in ``{0, 1}``.
    rule: ``"max_accuracy"`` (:func:`max_accuracy_bias`) or ``"midpoint"``
      (:func:`midpoint_bias`, Nar et al.'s rule; set by outliers when the
      scores are not separable).

  Returns:
    Scalar bias.
  """
  if rule == "max_accuracy":
    return max_accuracy_bias(scores, labels)
  if rule == "midpoint":
    y = np.asarray(labels)
    s = jnp.asarray(scores)
    return midpoint_bias(s[y == 1], s[y == 0])
  raise ValueError(f"config.loss.differential.bias={rule!r} is not one of "
                   "max_accuracy | midpoint.")


def add_binary_bias(logits: Array, bias) -> Array:
  """Applies a decision bias ``b`` to a two-logit head: score ``s + b``.

  Adds ``b`` to logit 1, so that ``argmax`` predicts class 1 iff
  ``binary_scores(logits) + b > 0`` (the rule of :func:`midpoint_bias`).

  Args:
    logits: ``float[B, 2]``.
    bias: scalar (e.g. from :func:`midpoint_bias`).

  Returns:
    ``float[B, 2]``.
  """
  return logits + jnp.stack([jnp.zeros_like(jnp.asarray(bias, logits.dtype)),
                             jnp.asarray(bias, logits.dtype)])


@dataclasses.dataclass(frozen=True)
class BiasedLogits:
  """``logits(params, x) + [0, b]``: a two-logit head with the decision bias
  ``b`` on class 1 (Nar et al.: the classifier is ``sign(z_1 - z_0 + b)``);
  ``bias=None`` leaves the logits as they are.

  ``fn`` is a model (its ``.logits`` is called) or a plain
  ``logits_fn(params, x)``. Frozen: equal (and hashing equal) for equal
  models and biases, so inside a ``jax.tree_util.Partial`` with the
  parameters it keys jit's cache, and a second report on another split,
  seed or parameter value compiles nothing new.

  Call: ``params`` the model's, ``x: f32[B, H, W, C]`` -> ``f32[B, 2]``.
  """
  fn: Any
  bias: Optional[float] = None

  def __call__(self, params, x):
    z = getattr(self.fn, "logits", self.fn)(params, x)
    return z if self.bias is None else add_binary_bias(z, self.bias)


def with_bias(fn, bias: Optional[float]) -> BiasedLogits:
  """The logits of ``fn`` (a model or a ``logits_fn(params, x)``) with the
  decision bias ``bias`` applied (:class:`BiasedLogits`).

  Args:
    fn: a model with ``.logits(params, x)`` or a ``logits_fn(params, x)``.
    bias: scalar ``b`` (e.g. from :func:`differential_bias`) or None.

  Returns:
    A hashable ``logits_fn(params, x) -> f32[B, 2]``.

  Raises:
    ValueError: a bias for a model whose ``num_classes`` is not 2.
  """
  classes = getattr(fn, "num_classes", 2)
  if bias is not None and classes != 2:
    raise ValueError(f"bias is only meaningful for a binary model (2 "
                     f"logits), got num_classes={classes}.")
  return BiasedLogits(fn, None if bias is None else float(bias))


def differential_bias(fn, params, source, batch_size: int,
                      rule: str = "max_accuracy") -> float:
  """The decision bias of a differentially trained model over a whole
  (training) split: :func:`decision_bias` of the scores
  ``binary_scores(logits)`` of every example of ``source``.

  Args:
    fn: a model with ``.logits(params, x)`` or a ``logits_fn(params, x)``
      giving ``f32[B, 2]``.
    params: its parameters.
    source: a split with ``len(source)`` and ``source.get(indices) ->
      {"image": f32[b, ...], "label": int[b]}`` (labels in ``{0, 1}``).
    batch_size: examples per forward pass.
    rule: see :func:`decision_bias`.

  Returns:
    The bias ``b`` as a Python float.
  """
  logits_fn = getattr(fn, "logits", fn)
  score = jax.jit(lambda p, x: binary_scores(logits_fn(p, x)))
  scores, labels = [], []
  for start in range(0, len(source), batch_size):
    got = source.get(np.arange(start, min(start + batch_size, len(source))))
    scores.append(np.asarray(score(params, got["image"])))
    labels.append(got["label"])
  s, y = np.concatenate(scores), np.concatenate(labels)
  return float(decision_bias(s, y, rule))
