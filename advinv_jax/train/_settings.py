"""Training's settings: ``config.seed``, ``config.optimizer``,
``config.train`` and ``config.eval``, with their choices and checks.

The optimiser is built by ``_optim.make_optimizer``, the run by
``_loop.train_and_evaluate``. Training checks the whole config it is given
(:func:`advinv_jax._settings.validate`), so it imports every section below
it: the report's (``attacks/_settings.py``) included.
"""
from __future__ import annotations

import ml_collections

from advinv_jax import _settings as S
from advinv_jax import data, losses, models  # noqa: F401  (their sections)
from advinv_jax.attacks import _settings as _report  # noqa: F401  (config.report)

OPTIMIZERS = ("adam", "adamw", "adamax", "sgd")
SCHEDULES = ("constant", "cosine", "piecewise")


def optimizer_defaults() -> ml_collections.ConfigDict:
  """The ``config.optimizer`` section."""
  o = ml_collections.ConfigDict()
  o.name = "adam"       # one of OPTIMIZERS
  o.learning_rate = 1e-3
  o.momentum = 0.9      # sgd only
  o.schedule = "constant"  # one of SCHEDULES
  o.boundaries = ()     # piecewise: step boundaries
  o.scales = ()         # piecewise: lr factor at each boundary
  o.warmup_steps = 0
  o.weight_decay = 0.0
  o.grad_clip_norm = 0.0  # 0: off
  return o


def validate_optimizer(o) -> None:
  """Checks ``config.optimizer``; one ConfigError."""
  S.check_one_of("optimizer.name", o.name, OPTIMIZERS)
  S.check_one_of("optimizer.schedule", o.schedule, SCHEDULES)
  S.check_positive("optimizer.learning_rate", o.learning_rate)
  S.check_in("optimizer.momentum", o.momentum, 0.0, 1.0)
  for f in ("warmup_steps", "weight_decay", "grad_clip_norm"):
    S.check_at_least(f"optimizer.{f}", o[f], 0)
  S.check_sizes("optimizer.boundaries", o.boundaries)
  if o.schedule == "piecewise" and len(o.boundaries) != len(o.scales):
    raise S.ConfigError("config.optimizer.boundaries and "
                        "config.optimizer.scales must have the same length "
                        "for the piecewise schedule.")


def train_defaults() -> ml_collections.ConfigDict:
  """The ``config.train`` section."""
  t = ml_collections.ConfigDict()
  t.batch_size = 128        # global batch, split over all devices
  t.num_epochs = 10
  t.num_steps = 0           # > 0 overrides num_epochs
  t.log_every = 20
  t.checkpoint_every = 200  # 0: only the final checkpoint
  t.keep_checkpoints = 3
  t.dequant_noise = 0.0     # U(0, dequant_noise) on train images
  # Data-dependent init (ActNorm) on one batch of this many training images
  # (0: the first global training batch); with init_noise the batch gets
  # the training dequantisation noise. Authors: 512 noisy images
  # (train.py ~L80 init_loader, batch_size=512, transform with noise).
  t.init_batch_size = 0
  t.init_noise = False
  t.on_nonfinite = "stop"   # stop | skip
  t.progress_bar = True
  # Relaunching a workdir with a config that changes the computation (model,
  # loss, data, optimiser, batch size, seed, ...): refuse (listing the
  # fields) | allow (resume anyway; the change goes to config_history.jsonl).
  t.resume_mismatch = "refuse"
  # Fine-tuning / linear probes: initialise the model from another run's
  # newest checkpoint (its workdir), keep params whose path matches the regex
  # `reinit` freshly initialised, and train only those matching `trainable`
  # (regex; "" = all). E.g. a new head on frozen features:
  # init_from=<workdir>, reinit=trainable="Dense_1/".
  t.init_from = ""
  t.reinit = ""
  t.trainable = ""
  return t


def validate_train(t) -> None:
  """Checks ``config.train``; one ConfigError."""
  for f in ("batch_size", "keep_checkpoints", "log_every"):
    S.check_positive(f"train.{f}", t[f])
  for f in ("num_epochs", "num_steps", "checkpoint_every", "dequant_noise",
            "init_batch_size"):
    S.check_at_least(f"train.{f}", t[f], 0)
  if t.num_epochs == 0 and t.num_steps == 0:
    raise S.ConfigError("config.train.num_epochs and config.train.num_steps "
                        "are both 0: set one of them > 0.")
  S.check_one_of("train.on_nonfinite", t.on_nonfinite, ("stop", "skip"))
  S.check_one_of("train.resume_mismatch", t.resume_mismatch,
                 ("refuse", "allow"))
  for f in ("reinit", "trainable"):
    S.check_regex(f"train.{f}", t[f])
  if t.reinit and not t.init_from:
    raise S.ConfigError("config.train.reinit is set but config.train."
                        "init_from is empty: reinit only applies when "
                        "initialising from another run's workdir.")


def eval_defaults() -> ml_collections.ConfigDict:
  """The ``config.eval`` section."""
  e = ml_collections.ConfigDict()
  e.batch_size = 500
  return e


def validate_eval(e) -> None:
  S.check_positive("eval.batch_size", e.batch_size)


S.register_section(S.Section("seed", 0))
S.register_section(S.Section("optimizer", optimizer_defaults,
                             validate_optimizer))
S.register_section(S.Section("train", train_defaults, validate_train))
S.register_section(S.Section("eval", eval_defaults, validate_eval))
