"""Optimisers and learning-rate schedules from ``config.optimizer``."""
from __future__ import annotations

import optax


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
                     "constant | cosine | piecewise.")
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
                     "adam | adamw | adamax | sgd.")
  chain = []
  if float(opt_cfg.grad_clip_norm) > 0:
    chain.append(optax.clip_by_global_norm(float(opt_cfg.grad_clip_norm)))
  if name != "adamw" and float(opt_cfg.weight_decay) > 0:
    chain.append(optax.add_decayed_weights(float(opt_cfg.weight_decay)))
  return optax.chain(*chain, opt) if chain else opt
