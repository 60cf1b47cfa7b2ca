"""Ownership and history of a workdir: the run lock, config.json and its
append-only history, atomic file writes, one-line run errors.

A workdir belongs to one run at a time (:class:`WorkdirLock`). Its
``config.json`` is written once, by the run that creates it; a relaunch is
compared with it (plus the changes recorded in ``config_history.jsonl``) by
:func:`relaunch_plan`, which refuses changes of the computation unless
``config.train.resume_mismatch='allow'`` and records every accepted change in
the history, never by rewriting ``config.json``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from typing import Any, Dict, List, Optional, Tuple

import jax
import ml_collections
import numpy as np

# Re-exported here for the train package; their one home is _files.
from advinv_jax._files import (DiskFullError, RunError,  # noqa: F401
                               disk_full_error, is_disk_full, write_atomic)
from advinv_jax._settings import migrate_config
from advinv_jax.models import MODEL_SECTIONS

CONFIG = "config.json"
HISTORY = "config_history.jsonl"
LOCK = ".lock"

# Fields that only extend a run: accepted and recorded when they grow.
EXTEND_FIELDS = ("train.num_steps", "train.num_epochs")
# Fields that do not change the trained parameters (logging, checkpoint
# cadence, where the same data lives, evaluation batching, the report):
# accepted and recorded.
_HARMLESS_PREFIXES = ("report.", "eval.")
_HARMLESS_FIELDS = ("train.progress_bar", "train.log_every",
                    "train.checkpoint_every", "train.keep_checkpoints",
                    "data.data_dir")
_IGNORED = ("train.resume_mismatch",)  # how to relaunch, not what was run
# The sub-sections of config.model that belong to one architecture: a
# change in one the run's model does not read is accepted and recorded.
_ARCH_SECTIONS = frozenset(s for v in MODEL_SECTIONS.values() for s in v)


class WorkdirBusyError(RunError):
  """Another live run holds the workdir's lock."""


class ConfigMismatchError(RunError):
  """A relaunch's config differs from the workdir's in the computation."""


@contextlib.contextmanager
def staged_dir(final_dir: str):
  """Yields a staging folder; on success its files move into ``final_dir``
  (one atomic rename each, ``*.json`` last, with paths into the staging
  folder in them rewritten to ``final_dir``), on failure it is removed, so
  that outputs appear complete or not at all."""
  os.makedirs(final_dir, exist_ok=True)
  stage = os.path.join(final_dir, f".staging-{os.getpid()}")
  shutil.rmtree(stage, ignore_errors=True)
  os.makedirs(stage)
  try:
    yield stage
    names = sorted(os.listdir(stage), key=lambda n: (n.endswith(".json"), n))
    for name in names:
      src, dst = os.path.join(stage, name), os.path.join(final_dir, name)
      if name.endswith(".json"):
        with open(src) as f:
          text = f.read()
        write_atomic(dst, text.replace(
            os.path.abspath(stage), os.path.abspath(final_dir)).replace(
                stage, final_dir))
      else:
        os.replace(src, dst)
  finally:
    shutil.rmtree(stage, ignore_errors=True)


# --------------------------------------------------------------------- lock


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


_HELD: Dict[str, int] = {}  # lock paths this process holds -> depth


_AGREE_BYTES = 4096


def on_process_0(fn):
  """``fn()`` on process 0 only, its refusal shared by every process.

  A workdir decision (the lock, a relaunch check) is made once, by process
  0; in a multi-process run the outcome is broadcast, so that a
  :class:`RunError` raised there is raised, with the same message, by every
  process instead of leaving the others waiting in their first collective.
  Returns ``fn()``'s result on process 0 and None elsewhere.
  """
  if jax.process_count() == 1:
    return fn()
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  result, error, kind = None, None, ""
  if jax.process_index() == 0:
    try:
      result = fn()
    except RunError as e:
      error, kind = e, type(e).__name__
  text = f"{kind}\n{error}".encode()[:_AGREE_BYTES] if error else b""
  buf = np.zeros(_AGREE_BYTES, np.uint8)
  buf[:len(text)] = np.frombuffer(text, np.uint8)
  got = bytes(np.asarray(multihost_utils.broadcast_one_to_all(buf)))
  got = got.rstrip(b"\0").decode(errors="replace")
  if error is not None:
    raise error
  if got:
    kind, _, message = got.partition("\n")
    cls = {c.__name__: c for c in (WorkdirBusyError, ConfigMismatchError,
                                   DiskFullError)}.get(kind, RunError)
    raise cls(message)
  return result


class WorkdirLock:
  """``<workdir>/.lock`` for the life of a run (held by process 0; a refusal
  stops every process, :func:`on_process_0`).

  The lock file names the holder (``pid``, ``host``, start time). A lock
  left by a killed process on this host (its PID is gone) is stale and is
  taken over with a warning; a live holder, or one on another host (whose
  PID cannot be checked from here), makes :meth:`acquire` raise
  :class:`WorkdirBusyError` naming it. Re-entrant within one process.
  """

  def __init__(self, workdir: str):
    self.path = os.path.abspath(os.path.join(workdir, LOCK))
    self._held = False

  def _holder(self) -> Optional[Dict[str, Any]]:
    try:
      with open(self.path) as f:
        return json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      return {}  # unreadable: written by a process killed mid-write

  def acquire(self) -> "WorkdirLock":
    if self._held:
      return self
    on_process_0(self._acquire)
    return self

  def _acquire(self) -> None:
    if _HELD.get(self.path):
      _HELD[self.path] += 1
      self._held = True
      return
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    tmp = f"{self.path}.{me['pid']}"
    with open(tmp, "w") as f:
      json.dump(me, f)
    try:
      for _ in range(3):
        try:
          os.link(tmp, self.path)  # atomic: fails if a lock exists
          break
        except FileExistsError:
          holder = self._holder()
          if holder is None:
            continue
          if self._stale(holder):
            import warnings
            warnings.warn(f"taking over the stale lock {self.path} of a "
                          f"process that is gone ({_describe(holder)}).")
            with contextlib.suppress(FileNotFoundError):
              os.remove(self.path)
            continue
          raise WorkdirBusyError(
              f"workdir {os.path.dirname(self.path)} is in use by "
              f"{_describe(holder)}; wait for it to finish, or use another "
              "--workdir (if that process is gone, delete "
              f"{self.path}).")
      else:
        raise WorkdirBusyError(f"could not take the lock {self.path}; "
                               "another run is starting there.")
    finally:
      os.remove(tmp)
    _HELD[self.path] = 1
    self._held = True

  @staticmethod
  def _stale(holder: Dict[str, Any]) -> bool:
    if not holder:
      return True
    if holder.get("host") != socket.gethostname():
      return False
    return not _pid_alive(int(holder.get("pid", -1)))

  def release(self) -> None:
    if not self._held:
      return
    self._held = False
    _HELD[self.path] -= 1
    if _HELD[self.path] == 0:
      del _HELD[self.path]
      with contextlib.suppress(FileNotFoundError):
        os.remove(self.path)

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def _describe(holder: Dict[str, Any]) -> str:
  if not holder:
    return "an unreadable lock file"
  return (f"pid {holder.get('pid')} on host {holder.get('host')} (started "
          f"{holder.get('started')})")


# ------------------------------------------------------------ config history


def _flat(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
  return out


def _set(d: Dict[str, Any], path: str, value) -> None:
  *parents, leaf = path.split(".")
  for p in parents:
    d = d.setdefault(p, {})
  d[leaf] = value


def read_config_json(workdir: str) -> Optional[Dict[str, Any]]:
  """The workdir's config as recorded: ``config.json`` with the changes of
  ``config_history.jsonl`` applied in order; None when there is none."""
  path = os.path.join(workdir, CONFIG)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      raw = json.load(f)
  except ValueError as e:
    raise RunError(
        f"{path} is not valid JSON ({e}); it records the run's config: "
        "restore it from a copy (e.g. the same command's --config), or move "
        "the workdir aside and start in a new --workdir.") from None
  for entry in read_history(workdir):
    for field, (_, new) in entry.get("changes", {}).items():
      _set(raw, field, new)
  return raw


def read_history(workdir: str) -> List[Dict[str, Any]]:
  path = os.path.join(workdir, HISTORY)
  if not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      with contextlib.suppress(ValueError):
        out.append(json.loads(line))
  return out


def config_changes(old: Dict[str, Any], new: Dict[str, Any]
                   ) -> Dict[str, Tuple[Any, Any]]:
  """``{field: (old, new)}`` for every field that differs (flat names)."""
  from advinv_jax._settings import default_config
  defaults = _flat(json.loads(default_config().to_json_best_effort()))
  # Fields newer than the workdir take their default there.
  a, b = {**defaults, **_flat(old)}, _flat(new)
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
          if a.get(k) != b.get(k) and k not in _IGNORED}


def _kind(field: str, old, new, model_name: str = "") -> str:
  if field in EXTEND_FIELDS:
    grows = isinstance(old, int) and isinstance(new, int) and (
        new >= old or new == 0)  # num_steps=0: num_epochs decides
    return "extend" if grows else "compute"
  if field in _HARMLESS_FIELDS or field.startswith(_HARMLESS_PREFIXES):
    return "other"
  part = field.split(".")
  if (part[0] == "model" and len(part) > 2 and part[1] in _ARCH_SECTIONS
      and part[1] not in MODEL_SECTIONS.get(model_name, (part[1],))):
    return "other"          # another architecture's section: not this model
  return "compute"


def relaunch_plan(config: ml_collections.ConfigDict, workdir: str
                  ) -> Optional[Dict[str, Any]]:
  """Writes ``config.json`` for a new workdir, or checks a relaunch.

  Args:
    config: this run's (validated) config.
    workdir: the workdir (locked by this run).

  Returns:
    The history entry to record (:func:`record_history`) once the run has
    resumed, when the config differs in accepted fields; else None.

  Raises:
    ConfigMismatchError: the config differs from the recorded one in a field
      that changes the computation and ``config.train.resume_mismatch`` is
      not ``'allow'``; the message lists the fields and the way out.
    RunError: ``config.json`` is unreadable (the message names it).
  """
  return on_process_0(lambda: _relaunch_plan(config, workdir))


def _relaunch_plan(config, workdir):
  new = json.loads(config.to_json_best_effort())
  old = read_config_json(workdir)
  if old is None:
    write_atomic(os.path.join(workdir, CONFIG),
                 json.dumps(new, indent=1, sort_keys=True))
    return None
  # Fields added to the schema since the run started take their values from
  # before they existed (config.migrate_config), not a spurious change.
  old = json.loads(migrate_config(old).to_json_best_effort())
  changes = config_changes(old, new)
  if not changes:
    return None
  kinds = {f: _kind(f, *v, model_name=config.model.name)
           for f, v in changes.items()}
  compute = [f for f, k in kinds.items() if k == "compute"]
  if compute and config.train.resume_mismatch != "allow":
    listed = "; ".join(f"config.{f}: {changes[f][0]!r} -> {changes[f][1]!r}"
                       for f in compute)
    raise ConfigMismatchError(
        f"{workdir} was trained with another config ({listed}); use a new "
        "--workdir, or pass --config.train.resume_mismatch=allow to resume "
        f"anyway (the change is recorded in {HISTORY}).")
  return {"event": "mismatch_allowed" if compute else (
              "extend" if "extend" in kinds.values() else "change"),
          "changes": {f: list(v) for f, v in changes.items()}}


def record_history(workdir: str, entry: Optional[Dict[str, Any]],
                   step: Optional[int]) -> None:
  """Appends ``entry`` (from :func:`relaunch_plan`) to the history, with
  the time and the step the run resumed from."""
  if entry is None or jax.process_index() != 0:
    return
  entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "resumed_at_step": step, **entry}
  hist = os.path.join(workdir, HISTORY)
  try:
    with open(hist, "a") as f:
      f.write(json.dumps(entry) + "\n")
  except OSError as e:
    if is_disk_full(e):
      raise disk_full_error(hist, "recording the config change") from e
    raise


# ------------------------------------------------------------------ signals

SIGNAL_GRACE_S = 120.0  # longest wait for the next step boundary


class RunInterrupted(RunError):
  """SIGINT/SIGTERM stopped the run at a step boundary (checkpoint saved);
  ``exit_code`` is the shell's ``128 + signal``."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + int(signum)


class StopOnSignal:
  """While active, SIGINT and SIGTERM ask the run to stop at the next step
  boundary (:attr:`signum` is set; the loop saves and raises
  :class:`RunInterrupted`). A second signal, or no step boundary within
  ``grace_s`` seconds, exits the process at once with one line on stderr
  (the newest checkpoint on disk is kept). Outside the main thread (where
  Python cannot install handlers) it does nothing."""

  def __init__(self, grace_s: float = SIGNAL_GRACE_S):
    self.grace_s = grace_s
    self.signum: Optional[int] = None
    self._old = {}
    self._timer = None
    self._exit = os._exit

  def __enter__(self):
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
      for s in (signal.SIGINT, signal.SIGTERM):
        self._old[s] = signal.signal(s, self._handle)
    return self

  def _now(self, signum: int, why: str) -> None:
    import signal
    import sys
    print(f"{signal.Signals(signum).name}: {why}; exiting now (the newest "
          "checkpoint on disk is kept; relaunch the same command to resume).",
          file=sys.stderr, flush=True)
    self._exit(128 + signum)

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      self._now(signum, "second signal")
      return
    self.signum = signum
    import threading
    self._timer = threading.Timer(
        self.grace_s, self._now,
        (signum, f"no step boundary within {self.grace_s:.0f} s"))
    self._timer.daemon = True
    self._timer.start()

  def __exit__(self, *exc):
    import signal
    if self._timer is not None:
      self._timer.cancel()
    for s, h in self._old.items():
      signal.signal(s, h)
    self._old = {}

  def interrupted(self, step: int, saved: str) -> RunInterrupted:
    import signal
    return RunInterrupted(
        f"{signal.Signals(self.signum).name} at step {step}: {saved}; "
        "relaunch the same command to resume.", self.signum)
