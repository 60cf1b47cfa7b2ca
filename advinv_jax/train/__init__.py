"""Training: objectives, the pure train step, data parallelism, the loop.

Public API::

  result = train_and_evaluate(config, workdir)      # the whole job
  step = make_train_step(model, objective, optimizer, axis_name=AXIS)
  state = init_train_state(model, objective, optimizer, rng, x)

Workdirs, their lock, relaunches and checkpoints are ``advinv_jax.runs``
(its checkpointer and the errors a training run raises are re-exported).
"""
from advinv_jax.runs import (Checkpointer, CheckpointMismatchError,
                             ConfigMismatchError, check_workdir)
from advinv_jax.train._loop import (Experiment, NonFiniteError,
                                    build_experiment, check_config,
                                    load_trained,
                                    differential_bias, evaluate, make_eval_fn,
                                    num_train_steps, train_and_evaluate,
                                    with_bias)
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
