"""What a config builds before training: data, model, objective, optimiser
and the freshly initialised state (:func:`fresh_experiment`)."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from advinv_jax import data as data_lib
from advinv_jax._settings import ConfigError
from advinv_jax.models import build_model
from advinv_jax.train._objectives import make_objective
from advinv_jax.train._optim import freeze_model_params, make_optimizer
from advinv_jax.train._parallel import to_host
from advinv_jax.train._step import init_train_state


class Experiment(NamedTuple):
  """What a config builds before training (see ``build_experiment``)."""
  dataset: Any
  model: Any
  objective: Any
  optimizer: Any
  total_steps: int
  state: Any      # initialised TrainState, host numpy
  step_rng: jax.Array


def num_train_steps(config, num_train: int) -> int:
  """``train.num_steps`` if > 0, else ``train.num_epochs`` epochs of
  ``num_train // train.batch_size`` (at least 1) steps."""
  spe = max(1, num_train // config.train.batch_size)
  if config.train.num_steps > 0:
    return int(config.train.num_steps)
  return int(config.train.num_epochs) * spe


def first_global_batch(source, config):
  """The data-dependent init batch: the first global training batch, or
  ``train.init_batch_size`` images (same shuffle); with ``train.init_noise``
  plus ``U(0, train.dequant_noise)`` (seeded), as the authors' init on 512
  noisy images (train.py ~L80)."""
  bs = config.train.init_batch_size or config.train.batch_size
  if bs > len(source):
    raise ConfigError(f"config.train.init_batch_size={bs} exceeds the "
                     f"{len(source)} training examples; lower it.")
  it = data_lib.iterate_batches(source, bs,
                                seed=config.seed, epoch=0, shuffle=True,
                                drop_remainder=True, process_index=0,
                                process_count=1)
  batch = next(iter(it))
  if config.train.init_noise and config.train.dequant_noise > 0:
    rng = np.random.default_rng([int(config.seed), 21])
    noise = rng.uniform(0.0, config.train.dequant_noise, batch["image"].shape)
    batch = dict(batch, image=(batch["image"] + noise).astype(np.float32))
  return batch


def fresh_experiment(config) -> Experiment:
  """Loads the data and builds model, objective, optimiser and initial state
  (``config.train.init_from`` aside: see ``build_experiment``).

  Deterministic in ``config`` (ActNorm is initialised on the first global
  batch of epoch 0), so a checkpoint of the same config restores into it.
  """
  dataset = data_lib.load_dataset(config.data, seed=config.seed)
  if len(dataset.train) < config.train.batch_size:
    raise ConfigError(
        f"config.train.batch_size={config.train.batch_size} is larger than the "
        f"{len(dataset.train)} training examples; lower it.")
  model = build_model(config.model, dataset.image_shape, dataset.num_classes)
  objective = make_objective(config)
  total = num_train_steps(config, len(dataset.train))
  optimizer = make_optimizer(config.optimizer, total)
  first = first_global_batch(dataset.train, config)
  model.check_input(first["image"])
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  if config.train.trainable:
    shapes = jax.eval_shape(model.init, init_rng, first["image"])
    optimizer = freeze_model_params(optimizer, shapes, config.train.trainable)
  state = jax.jit(lambda r, x: init_train_state(model, objective, optimizer,
                                                r, x))(init_rng,
                                                       first["image"])
  return Experiment(dataset, model, objective, optimizer, total,
                    to_host(state), step_rng)
