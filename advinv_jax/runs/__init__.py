"""Runs: everything about a workdir that is not training.

A workdir belongs to one run at a time. This package holds, in one place:

* :class:`Run`: the workdir held from start to end (entered once per job:
  the checks before a start, the lock, signals, a failed start that leaves
  no trace);
* :class:`WorkdirLock`: ``.lock``, naming its holder by host, boot id and
  process start time, with an atomic takeover of a stale one;
* the relaunch check (:func:`relaunch_plan`, :func:`commit_relaunch`):
  ``config.json`` written once, accepted changes recorded in
  ``config_history.jsonl``;
* :class:`Checkpointer`: orbax checkpoints with SHA-256 manifests, resumed
  from the newest good step;
* :func:`write_atomic` and :func:`staged_dir`: files and folders that
  appear complete or not at all; the disk-full error; signals
  (:class:`StopOnSignal`, :func:`signals_raise`);
* the errors a run explains in one line (:class:`RunError` and its kinds),
  and :func:`watch_peers`: a multi-process run whose peer dies stops in
  bounded time with one line.

Training (``advinv_jax.train``) uses it; so do the report, the job and the
command lines. File formats are those of every earlier version: old
workdirs load as they are (docs/runs.md).
"""
from advinv_jax.runs._checkpoint import MANIFEST, Checkpointer
from advinv_jax.runs._errors import (CheckpointMismatchError,
                                     ConfigMismatchError, DiskFullError,
                                     NotAWorkdirError, RunError,
                                     WorkdirBusyError, WorkdirError,
                                     disk_full_error, is_disk_full)
from advinv_jax.runs._files import (MIN_FREE_BYTES, read_json_file, shorten,
                                    staged_dir, write_atomic)
from advinv_jax.runs._lock import (LOCK, WorkdirLock, holder_is_gone,
                                   on_process_0)
from advinv_jax.runs._peers import PEER_TIMEOUT_S, peer_done, watch_peers
from advinv_jax.runs._relaunch import (CONFIG, HISTORY, commit_relaunch,
                                       config_changes, read_config_json,
                                       read_history, record_history,
                                       relaunch_plan)
from advinv_jax.runs._run import Run
from advinv_jax.runs._signals import (SIGNAL_GRACE_S, Interrupted,
                                      RunInterrupted, StopOnSignal,
                                      signals_raise)
from advinv_jax.runs._start import (check_values, check_workdir,
                                    clean_stale_staging, make_writable_dir,
                                    remove_if_created)

__all__ = [
    "CONFIG", "CheckpointMismatchError", "Checkpointer", "ConfigMismatchError",
    "DiskFullError", "HISTORY", "Interrupted", "LOCK", "MANIFEST",
    "MIN_FREE_BYTES", "NotAWorkdirError", "PEER_TIMEOUT_S", "Run",
    "RunError",
    "RunInterrupted", "SIGNAL_GRACE_S", "StopOnSignal", "WorkdirBusyError",
    "WorkdirError", "WorkdirLock", "check_values", "check_workdir",
    "clean_stale_staging", "commit_relaunch", "config_changes",
    "disk_full_error", "holder_is_gone", "is_disk_full", "make_writable_dir",
    "on_process_0",
    "peer_done",
    "read_config_json", "read_history", "read_json_file", "record_history",
    "relaunch_plan", "remove_if_created", "shorten", "signals_raise",
    "staged_dir", "watch_peers", "write_atomic",
]
