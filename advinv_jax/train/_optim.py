"""Optimisers and learning-rate schedules from ``config.optimizer``."""
from __future__ import annotations

import re

import jax
import optax

from advinv_jax.train._settings import OPTIMIZERS, SCHEDULES


def make_schedule(opt_cfg, total_steps: int) -> optax.Schedule:
  """Learning-rate schedule: constant | cosine | piecewise, with linear warmup.

  ``piecewise`` multiplies the rate by ``scales[i]`` at ``boundaries[i]``
  (the authors' iCE schedule: x0.2 after epochs 60, 120, 160).
  """
  lr = float(opt_cfg.learning_rate)
  warmup = int(opt_cfg.warmup_steps)
  name = opt_cfg.schedule
  if name == "constant":
    sched = optax.constant_schedule(lr)
  elif name == "cosine":
    sched = optax.cosine_decay_schedule(lr, max(1, total_steps - warmup))
  elif name == "piecewise":
    sched = optax.piecewise_constant_schedule(
        lr, {int(b) - warmup: float(s) for b, s in zip(opt_cfg.boundaries,
                                                       opt_cfg.scales)})
  else:
    raise ValueError(f"config.optimizer.schedule={name!r} is not one of "
                     f"{list(SCHEDULES)}.")
  if warmup > 0:
    sched = optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), sched], [warmup])
  return sched


def make_optimizer(opt_cfg, total_steps: int) -> optax.GradientTransformation:
  """Builds the optax optimiser named by ``config.optimizer.name``."""
  sched = make_schedule(opt_cfg, total_steps)
  name = opt_cfg.name
  if name == "adam":
    opt = optax.adam(sched)
  elif name == "adamw":
    opt = optax.adamw(sched, weight_decay=float(opt_cfg.weight_decay))
  elif name == "adamax":
    opt = optax.adamax(sched)
  elif name == "sgd":
    opt = optax.sgd(sched, momentum=float(opt_cfg.momentum) or None)
  else:
    raise ValueError(f"config.optimizer.name={name!r} is not one of "
                     f"{list(OPTIMIZERS)}.")
  chain = []
  if float(opt_cfg.grad_clip_norm) > 0:
    chain.append(optax.clip_by_global_norm(float(opt_cfg.grad_clip_norm)))
  if name != "adamw" and float(opt_cfg.weight_decay) > 0:
    chain.append(optax.add_decayed_weights(float(opt_cfg.weight_decay)))
  return optax.chain(*chain, opt) if chain else opt


def param_paths(tree) -> list:
  """``'a/b/c'`` path strings of a pytree's leaves (dict keys joined by /)."""
  out = []
  for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
    out.append("/".join(str(getattr(k, "key", getattr(k, "idx", k)))
                        for k in path))
  return out


def freeze_model_params(optimizer: optax.GradientTransformation,
                        model_params, trainable: str
                        ) -> optax.GradientTransformation:
  """Trains only the model parameters whose path matches ``trainable``.

  Args:
    optimizer: a transformation over ``{"model": params, "loss": ...}``.
    model_params: the model's parameter pytree (for its paths).
    trainable: a regular expression searched in each model parameter's path
      (``'Dense_1/kernel'``, ``'stage_0/...'``); the others get zero updates
      (frozen). Loss parameters (iCE prior) always train.

  Returns:
    The wrapped transformation (``optax.multi_transform``).

  Raises:
    ValueError: an invalid expression, or one that matches no parameter.
  """
  try:
    pattern = re.compile(trainable)
  except re.error as e:
    raise ValueError(f"config.train.trainable={trainable!r} is not a valid "
                     f"regular expression: {e}.") from None
  paths = param_paths(model_params)
  if not any(pattern.search(p) for p in paths):
    raise ValueError(f"config.train.trainable={trainable!r} matches no model "
                     f"parameter; paths are e.g. {paths[:6]}.")

  def labels(tree):
    model_labels = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(tree["model"]),
        ["train" if pattern.search(p) else "freeze"
         for p in param_paths(tree["model"])])
    return {"model": model_labels,
            "loss": jax.tree_util.tree_map(lambda _: "train", tree["loss"])}

  return optax.multi_transform({"train": optimizer,
                                "freeze": optax.set_to_zero()}, labels)
