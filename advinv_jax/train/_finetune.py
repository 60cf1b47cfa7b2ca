"""Fine-tuning: an experiment started from another run's parameters
(``config.train.init_from``, ``train.reinit``; ``train.trainable`` freezes
the rest in the optimiser)."""
from __future__ import annotations

import re

import jax
import numpy as np

from advinv_jax._settings import ConfigError
from advinv_jax.train._experiment import Experiment, fresh_experiment
from advinv_jax.train._optim import param_paths
from advinv_jax.train._parallel import to_host
from advinv_jax.train._trained import load_trained


def build_experiment(config) -> Experiment:
  """Loads the data and builds model, objective, optimiser and initial state.

  Deterministic in ``config`` (ActNorm is initialised on the first global
  batch of epoch 0), so a checkpoint of the same config restores into it.
  With ``config.train.init_from`` the model parameters come from that run
  (:func:`params_from_workdir`) and the optimiser state starts afresh.
  """
  exp = fresh_experiment(config)
  if not config.train.init_from:
    return exp
  state = exp.state
  params = params_from_workdir(config, state.params)
  state = state.replace(params=params, opt_state=to_host(jax.jit(
      exp.optimizer.init)({"model": params, "loss": state.loss_params})))
  return exp._replace(state=state)


def params_from_workdir(config, fresh):
  """Model params from ``config.train.init_from``'s newest checkpoint.

  Parameters whose path matches ``config.train.reinit`` keep their fresh
  initialisation (e.g. a new head); every other one must exist in the source
  run with the same shape.

  Args:
    config: the config being trained.
    fresh: its freshly initialised model parameters (a pytree).

  Returns:
    A pytree like ``fresh``.
  """
  src_dir = config.train.init_from
  reinit = re.compile(config.train.reinit) if config.train.reinit else None
  _, _, src_state, _ = load_trained(src_dir, with_extras=False)
  src = dict(zip(param_paths(src_state.params),
                 jax.tree_util.tree_leaves(src_state.params)))
  leaves = []
  for path, leaf in zip(param_paths(fresh), jax.tree_util.tree_leaves(fresh)):
    if reinit is not None and reinit.search(path):
      leaves.append(leaf)
      continue
    if path not in src or np.shape(src[path]) != np.shape(leaf):
      got = "missing" if path not in src else f"shape {np.shape(src[path])}"
      raise ConfigError(
          f"config.train.init_from={src_dir!r}: parameter {path!r} "
          f"{np.shape(leaf)} is {got} there; add it to config.train.reinit "
          "to keep it freshly initialised.")
    leaves.append(np.asarray(src[path]))
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(fresh),
                                      leaves)
