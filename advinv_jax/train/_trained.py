"""A trained run read back from its workdir (:func:`load_trained`), and the
extras evaluated from its final parameters (:func:`run_extras`)."""
from __future__ import annotations

import os
from typing import Any, Dict

from advinv_jax import losses
from advinv_jax._settings import migrate_config, validate_config
from advinv_jax.runs import Checkpointer, NotAWorkdirError, read_config_json
from advinv_jax.train._experiment import fresh_experiment


def run_extras(config, model, params, train_source) -> Dict[str, Any]:
  """What a run computes from its final parameters besides its metrics: for
  ``config.loss.name == 'differential'``, ``{"differential_bias": b}`` by
  the rule ``config.loss.differential.bias`` over ``train_source``
  (:func:`advinv_jax.losses.differential_bias`); ``{}`` otherwise."""
  if config.loss.name != "differential":
    return {}
  return {"differential_bias": losses.differential_bias(
      model, params, train_source, config.eval.batch_size,
      rule=config.loss.differential.bias)}


def load_trained(workdir: str, *, with_extras: bool = True):
  """Restores a finished (or interrupted) run from its workdir (read-only:
  nothing there is moved, deleted or rewritten; a damaged step is skipped
  with a warning, a checkpoint that does not match the config raises
  :class:`CheckpointMismatchError`). A run started from another run's
  parameters (``train.init_from``) loads without that run: its checkpoint
  holds every parameter.

  Args:
    workdir: a workdir of :func:`train_and_evaluate`.
    with_extras: also compute the extras (:func:`run_extras`: the
      differential bias, one pass over the training set); False returns
      ``{}`` for them.

  Returns:
    ``(config, experiment, state, extras)``: the run's config (from
    ``config.json`` and the changes in ``config_history.jsonl``), the
    rebuilt :class:`Experiment` (freshly initialised), the newest good
    checkpoint's TrainState (host numpy) and extras.
  """
  raw = read_config_json(workdir)
  if raw is None:
    raise NotAWorkdirError(
        f"{os.path.join(workdir, 'config.json')} not found: {workdir!r} is "
        "not a workdir of advinv_jax.main (train a model there first).")
  config = migrate_config(raw)   # older workdirs: fields added since
  validate_config(config)
  exp = fresh_experiment(config)
  ckpt = Checkpointer(workdir, read_only=True)
  try:
    _, state = ckpt.restore_latest(exp.state)
  finally:
    ckpt.close()
  if state is None:
    raise NotAWorkdirError(
        f"no readable checkpoint in {workdir}/checkpoints: the run saved "
        "none yet (wait for its first checkpoint), or all are damaged.")
  extras = (run_extras(config, exp.model, state.params, exp.dataset.train)
            if with_extras else {})
  return config, exp, state, extras
