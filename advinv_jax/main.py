"""The main job: train, evaluate and report, from a config file.

  python -m advinv_jax.main --config=configs/default.py --workdir=workdirs/demo \
      [--config.train.num_epochs=3 ...]

Several hosts: start one process per host with ``--coordinator=HOST:PORT
--num_processes=N --process_id=i`` (CPU hosts use gloo collectives).
"""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_COORD = flags.DEFINE_string("coordinator", None,
                             "host:port of process 0 for jax.distributed.")
_NPROC = flags.DEFINE_integer("num_processes", 1, "Number of processes.")
_PID = flags.DEFINE_integer("process_id", 0, "This process's id.")


def run(config, workdir: str) -> dict:
  """Trains, evaluates and (if enabled) writes the robustness report."""
  from advinv_jax.train import train_and_evaluate
  result = train_and_evaluate(config, workdir)
  summary = {"test_accuracy": result["eval"]["accuracy"],
             "train_accuracy": result["train_eval"]["accuracy"],
             "steps": result["steps"]}
  if config.report.enabled:
    import jax
    from advinv_jax.report import robustness_report
    ds = result["dataset"]
    n = min(config.report.num_examples, len(ds.test))
    test = ds.test.get(list(range(n)))
    model, params = result["model"], result["state"].params
    report = robustness_report(
        model, params, test["image"], test["label"], config.report, workdir,
        jax.random.PRNGKey(config.seed + 1),
        nuisance_data=_nuisance_data(ds, config) if model.invertible else None,
        bias=result["extras"].get("differential_bias"),
        bounds=ds.bounds)
    summary["report"] = os.path.join(workdir, "report.json")
    summary.update({k: v for k, v in report.items()
                    if isinstance(v, (int, float))})
  return summary


def _nuisance_data(ds, config):
  """Train/test images for the post-hoc nuisance classifier (capped)."""
  n_tr = min(len(ds.train), 10000)
  n_te = min(len(ds.test), 2000)
  return (ds.train.get(list(range(n_tr))), ds.test.get(list(range(n_te))))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config = _CONFIG.value
  if config is None or _WORKDIR.value is None:
    sys.exit("usage: python -m advinv_jax.main --config=configs/<name>.py "
             "--workdir=<dir>")
  if _COORD.value:
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(_COORD.value, num_processes=_NPROC.value,
                               process_id=_PID.value)
  from advinv_jax.config import ConfigError, validate_config
  try:
    validate_config(config)
  except ConfigError as e:
    sys.exit(f"config error: {e}")
  summary = run(config, _WORKDIR.value)
  print(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
  app.run(main)
