"""Training: objectives, the pure train step, data parallelism, the loop.

Public API::

  result = train_and_evaluate(config, workdir)      # the whole job
  step = make_train_step(model, objective, optimizer, axis_name=AXIS)
  state = init_train_state(model, objective, optimizer, rng, x)

A run read back: ``load_trained(workdir)``; started from another run's
parameters: ``config.train.init_from`` (``_finetune.py``). The decision bias
of differential training (``differential_bias``, ``with_bias``) is
``advinv_jax.losses``'s, re-exported here.

Workdirs, their lock, relaunches and checkpoints are ``advinv_jax.runs``
(its checkpointer and the errors a training run raises are re-exported).
"""
from advinv_jax.runs import (Checkpointer, CheckpointMismatchError,
                             ConfigMismatchError, check_workdir)
from advinv_jax.losses import differential_bias, with_bias
from advinv_jax.train._experiment import Experiment, num_train_steps
from advinv_jax.train._finetune import build_experiment
from advinv_jax.train._loop import (NonFiniteError, check_config, evaluate,
                                    make_eval_fn, train_and_evaluate)
from advinv_jax.train._trained import load_trained
from advinv_jax.train._objectives import (Objective, make_objective,
                                          nuisance_classifier)
from advinv_jax.train._optim import make_optimizer, make_schedule
from advinv_jax.train._parallel import (AXIS, data_parallel, make_mesh,
                                        replicate, shard_batch, to_host)
from advinv_jax.train._step import (TrainState, init_train_state,
                                    make_train_step)

__all__ = [
    "AXIS", "Checkpointer", "CheckpointMismatchError", "ConfigMismatchError",
    "Experiment", "NonFiniteError", "check_config",
    "build_experiment", "load_trained", "Objective", "TrainState",
    "check_workdir", "data_parallel", "differential_bias", "evaluate",
    "init_train_state", "make_eval_fn", "make_mesh", "make_objective",
    "make_optimizer", "make_schedule", "make_train_step", "nuisance_classifier",
    "num_train_steps", "replicate", "shard_batch", "to_host",
    "train_and_evaluate", "with_bias",
]
