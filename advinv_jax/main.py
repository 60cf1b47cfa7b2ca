"""The main job: train, evaluate and report, from a config file.

  python -m advinv_jax.main --config=configs/default.py --workdir=workdirs/demo \
      [--config.train.num_epochs=3 ...]

Several hosts: start one process per host with ``--coordinator=HOST:PORT
--num_processes=N --process_id=i`` (CPU hosts use gloo collectives). If a
process dies, the others stop within ``--peer_timeout_s`` with one line
naming it (``runs.watch_peers``); relaunch all of them.
"""
from __future__ import annotations

import json
import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from advinv_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_COORD = flags.DEFINE_string("coordinator", None,
                             "host:port of process 0 for jax.distributed.")
_NPROC = flags.DEFINE_integer("num_processes", 1, "Number of processes.")
_PID = flags.DEFINE_integer("process_id", 0, "This process's id.")
_PEER_TIMEOUT = flags.DEFINE_float(
    "peer_timeout_s", 30.0, "several processes: a peer silent this long is "
    "dead; the others stop with one line saying how to relaunch")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config = _CONFIG.value
  if config is None or not _WORKDIR.value:
    raise cli.UsageError("usage: python -m advinv_jax.main "
                         "--config=configs/<name>.py --workdir=<dir>")
  from advinv_jax.train import check_config
  check_config(config)   # a ConfigError: one line (cli.run)
  from advinv_jax import runs
  if _COORD.value:
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        _COORD.value, num_processes=_NPROC.value, process_id=_PID.value,
        heartbeat_timeout_seconds=int(max(100, 2 * _PEER_TIMEOUT.value)))
    runs.watch_peers(_PEER_TIMEOUT.value)   # a dead peer: one line, bounded
  from advinv_jax.job import run
  try:
    summary = run(config, _WORKDIR.value)
  except (Exception, KeyboardInterrupt) as e:  # pylint: disable=broad-except
    line, code = one_line_error(e)
    if line is None or cli.debug():
      raise
    print(line, file=sys.stderr, flush=True)
    runs.peer_done()
    sys.exit(code)
  runs.peer_done()     # done: this process's silence is not a death
  print(json.dumps(summary, indent=1, default=str))
  if "warnings" in summary:
    print(f"report: {os.path.abspath(summary['report'])} "
          f"({summary['warnings']} warning(s); also report.md, report.json)")
  if "report_error" in summary:
    print(summary["report_error"], file=sys.stderr, flush=True)
    sys.exit(1)


def one_line_error(e: BaseException):
  """``(line, exit code)`` of ``cli.one_line_error`` for this run's workdir
  (``(None, None)``: an error that keeps its traceback)."""
  parsed = flags.FLAGS.is_parsed()
  return cli.one_line_error(e, (_WORKDIR.value if parsed else None) or ".")


if __name__ == "__main__":
  cli.run(main)
