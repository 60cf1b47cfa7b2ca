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
from advinv_jax._files import (DiskFullError, Interrupted,  # noqa: F401
                               RunError, disk_full_error, is_disk_full,
                               shorten, signals_raise, write_atomic)
from advinv_jax._settings import migrate_config
from advinv_jax.models import MODEL_SECTIONS

MIN_FREE_BYTES = 50 * 2**20  # what a run needs free to start and checkpoint
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


class WorkdirError(RunError, OSError):
  """The workdir cannot hold a run (unwritable, a file, too little space)."""


class NotAWorkdirError(RunError, FileNotFoundError):
  """A folder holds no run (no ``config.json``) or no readable checkpoint."""


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


# --------------------------------------------------------------- pre-flight


def _leaves(cfg, prefix: str = ""):
  for key in cfg.keys():
    value = cfg[key]
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def _number(v) -> bool:
  return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


def check_values(config: ml_collections.ConfigDict) -> None:
  """What ``validate_config`` leaves to the run: the elements of tuple fields
  have the type of the default's elements (numbers, or strings), and every
  number is finite (``learning_rate=nan`` is refused here, not after
  compiling). Raises one ``ConfigError`` naming the field and the fix."""
  from advinv_jax._settings import ConfigError, default_config
  ref = dict(_leaves(default_config()))
  for path, value in _leaves(config):
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    want = ref.get(path)
    if isinstance(want, (tuple, list)) and want:
      kind = "number" if all(_number(v) for v in want) else "string"
      ok = _number if kind == "number" else (lambda v: isinstance(v, str))
      bad = [v for v in values if not ok(v)]
      if bad:
        example = repr(tuple(want)).replace(" ", "")
        raise ConfigError(
            f"config.{path}={value!r}: {bad[0]!r} is not a {kind}; give a "
            f"tuple of {kind}s like the default, e.g. "
            f"--config.{path}={example}")
    for v in values:
      if _number(v) and not np.isfinite(v):
        raise ConfigError(f"config.{path}={value!r} must be a finite number "
                          f"(the default is {want!r}).")


def check_workdir(workdir: str) -> bool:
  """Fails at start, in one line (:class:`WorkdirError`), on a workdir that
  cannot hold a run: an empty or over-long path, a file, unwritable, or
  short of free space. Creates the folder; returns whether it was created
  (a start that fails then removes it, :func:`remove_if_created`)."""
  if not workdir:
    raise WorkdirError("the workdir is empty: pass --workdir=<a folder>.")
  created = not os.path.isdir(workdir)
  try:
    if os.path.exists(workdir) and not os.path.isdir(workdir):
      raise WorkdirError(f"workdir {workdir!r} is a file, not a folder; pass "
                         "another --workdir.")
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except WorkdirError:
    raise
  except OSError as e:
    raise WorkdirError(
        f"workdir {shorten(repr(workdir))} is not writable ({e.strerror}); "
        "pass a --workdir you can write to.") from e
  free = shutil.disk_usage(workdir).free
  if free < MIN_FREE_BYTES:
    remove_if_created(workdir, created)
    raise WorkdirError(
        f"workdir {workdir!r} has only {free / 2**20:.1f} MiB free; "
        f"checkpoints need at least {MIN_FREE_BYTES // 2**20} MiB. Free some "
        "space or choose another --workdir.")
  return created


def remove_if_created(workdir: str, created: bool) -> None:
  """Removes ``workdir`` if this start created it and it holds nothing but
  what a refused start leaves (so a failed start leaves no trace)."""
  if not created:
    return
  with contextlib.suppress(OSError):
    os.rmdir(workdir)


def clean_stale_staging(folder: str, everyone: bool = False) -> None:
  """Removes ``.staging-<pid>`` folders (and write probes) of processes that
  are gone (``everyone=True``: of every other process; for a run that holds
  the workdir's lock). An interrupted report or a killed run leaves them."""
  if not os.path.isdir(folder):
    return
  for name in os.listdir(folder):
    for prefix in (".staging-", ".write_probe_"):
      if not name.startswith(prefix):
        continue
      pid = name[len(prefix):]
      if pid == str(os.getpid()) or not (
          everyone or (pid.isdigit() and not _pid_alive(int(pid)))):
        continue
      path = os.path.join(folder, name)
      if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        with contextlib.suppress(OSError):
          os.remove(path)


def read_json_file(path: str, what: str):
  """``path``'s JSON, or None when it is missing or damaged (a damaged file
  is named in a warning saying what is done instead: ``what``)."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except ValueError as e:
    import warnings
    warnings.warn(f"{path} is damaged (not valid JSON: {e}); {what}.")
    return None


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


def _read_text(path: str) -> Optional[str]:
  try:
    with open(path) as f:
      return f.read().strip()
  except OSError:
    return None


def _start_ticks(pid: int) -> Optional[int]:
  """The start time of process ``pid`` (clock ticks after boot, field 22 of
  ``/proc/<pid>/stat``); None where there is no such process or no /proc."""
  stat = _read_text(f"/proc/{pid}/stat")
  if not stat:
    return None
  # The command name (field 2) is in parentheses and may hold spaces.
  return int(stat.rsplit(")", 1)[1].split()[19])


def _identity() -> Dict[str, Any]:
  """What names this process beyond its PID: host, boot id, PID namespace
  and start time (a PID is reused after a restart, a boot id or start time
  is not)."""
  pid = os.getpid()
  pidns = None
  with contextlib.suppress(OSError):
    pidns = os.readlink("/proc/self/ns/pid")
  return {"pid": pid, "host": socket.gethostname(),
          "boot_id": _read_text("/proc/sys/kernel/random/boot_id"),
          "pid_ns": pidns, "start_ticks": _start_ticks(pid),
          "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def holder_is_gone(holder: Dict[str, Any]) -> bool:
  """Whether the process that wrote ``holder`` (a lock file's content) is
  certainly gone.

  On the same machine (same boot id; for older lock files, the same host
  name) it is gone when its PID does not exist, names this very process
  (which does not hold the lock: a PID reused after a container restart),
  or names a process started at another time. A holder whose boot id
  differs on the same host went down with a reboot. A holder on another
  machine cannot be checked from here and is never called gone.
  """
  if not holder:
    return True   # unreadable: written by a process killed mid-write
  me = _identity()
  boot = holder.get("boot_id")
  if boot and me["boot_id"] and boot != me["boot_id"]:
    return holder.get("host") == me["host"]   # rebooted, or another machine
  if not boot and holder.get("host") != me["host"]:
    return False
  pid = int(holder.get("pid", -1))
  if pid == me["pid"] or not _pid_alive(pid):
    return True
  ticks = holder.get("start_ticks")
  return ticks is not None and _start_ticks(pid) not in (None, ticks)


class WorkdirLock:
  """``<workdir>/.lock`` for the life of a run (held by process 0; a refusal
  stops every process, :func:`on_process_0`).

  The lock file names the holder (:func:`_identity`: pid, host, boot id,
  PID namespace, start time). A lock whose holder is gone
  (:func:`holder_is_gone`) is stale and is taken over with a warning; a live
  holder, or one on another machine, makes :meth:`acquire` raise
  :class:`WorkdirBusyError` naming it.

  Taking the lock is atomic (``os.link`` fails when a lock exists), and so
  is taking over a stale one: the takeover runs under an exclusive
  ``flock`` of ``<workdir>/.lock.takeover`` (released by the kernel if the
  process dies) and replaces the lock only if it still holds the stale
  holder's bytes, so that two relaunches never both hold the workdir.
  Re-entrant within one process.
  """

  def __init__(self, workdir: str):
    self.path = os.path.abspath(os.path.join(workdir, LOCK))
    self._held = False

  def _read(self) -> Optional[str]:
    try:
      with open(self.path) as f:
        return f.read()
    except FileNotFoundError:
      return None
    except OSError:
      return ""

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
    me = _identity()
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    tmp = f"{self.path}.{me['pid']}"
    with open(tmp, "w") as f:
      json.dump(me, f)
    try:
      for _ in range(20):
        try:
          os.link(tmp, self.path)  # atomic: fails if a lock exists
          break
        except FileExistsError:
          pass
        text = self._read()
        if text is None:
          continue            # released meanwhile: try again
        holder = _parse_holder(text)
        if not holder_is_gone(holder):
          raise WorkdirBusyError(
              f"workdir {os.path.dirname(self.path)} is in use by "
              f"{_describe(holder)}; wait for it to finish, or use another "
              "--workdir (if that process is gone, delete "
              f"{self.path}).")
        if self._take_over(text, tmp):
          import warnings
          warnings.warn(f"took over the stale lock {self.path} of a "
                        f"process that is gone ({_describe(holder)}).")
          break
      else:
        raise WorkdirBusyError(f"could not take the lock {self.path}; "
                               "another run is starting there.")
    finally:
      with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    _HELD[self.path] = 1
    self._held = True

  def _take_over(self, stale_text: str, tmp: str) -> bool:
    """Replaces the lock by ours if it still holds ``stale_text``, under the
    takeover flock; False when another process changed it first."""
    import fcntl
    fd = os.open(self.path + ".takeover", os.O_CREAT | os.O_RDWR, 0o666)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
      if self._read() != stale_text:
        return False            # taken over (or released) by another run
      with contextlib.suppress(FileNotFoundError):
        os.remove(self.path)
      try:
        os.link(tmp, self.path)
      except FileExistsError:
        return False            # a fresh start linked first
      return True
    finally:
      os.close(fd)              # releases the flock

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


def _parse_holder(text: str) -> Dict[str, Any]:
  try:
    holder = json.loads(text)
  except ValueError:
    return {}
  return holder if isinstance(holder, dict) else {}


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
  """The entries of ``config_history.jsonl`` in order; a line that is not a
  JSON object (cut by a killed write) is skipped with a warning naming it."""
  path = os.path.join(workdir, HISTORY)
  if not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        entry = json.loads(line)
        if not isinstance(entry, dict):
          raise ValueError("not an object")
      except ValueError:
        import warnings
        warnings.warn(f"{path}:{number} is damaged (a cut line); skipping "
                      "it: the config changes it recorded are not applied.")
        continue
      out.append(entry)
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
  """Checks a start or relaunch against the workdir's recorded config;
  writes nothing (:func:`commit_relaunch` does, once the run has started).

  Args:
    config: this run's (validated) config.
    workdir: the workdir (locked by this run).

  Returns:
    On process 0 a plan: ``config_json`` (the text of ``config.json`` for a
    new workdir, else None), ``entry`` (the history entry of accepted
    changes other than the report's, else None) and ``report_changes``
    (``{field: [old, new]}`` of ``report.*``: recorded by whoever writes the
    report with them, never before). None on other processes.

  Raises:
    ConfigMismatchError: the config differs from the recorded one in a field
      that changes the computation and ``config.train.resume_mismatch`` is
      not ``'allow'``; the message lists the fields and the way out.
    RunError: ``config.json`` is unreadable (the message names it).
  """
  return on_process_0(lambda: _relaunch_plan(config, workdir))


def _relaunch_plan(config, workdir):
  new = json.loads(config.to_json_best_effort())
  plan = {"config_json": None, "entry": None, "report_changes": {}}
  old = read_config_json(workdir)
  if old is None:
    plan["config_json"] = json.dumps(new, indent=1, sort_keys=True)
    return plan
  # Fields added to the schema since the run started take their values from
  # before they existed (config.migrate_config), not a spurious change.
  old = json.loads(migrate_config(old).to_json_best_effort())
  changes = config_changes(old, new)
  plan["report_changes"] = {f: list(v) for f, v in changes.items()
                            if f.startswith("report.")}
  changes = {f: v for f, v in changes.items() if not f.startswith("report.")}
  if not changes:
    return plan
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
  plan["entry"] = {"event": "mismatch_allowed" if compute else (
                       "extend" if "extend" in kinds.values() else "change"),
                   "changes": {f: list(v) for f, v in changes.items()}}
  return plan


def commit_relaunch(workdir: str, plan: Optional[Dict[str, Any]],
                    step: Optional[int]) -> None:
  """Once a run has started (data, model and checkpoint loaded): writes the
  new workdir's ``config.json``, or records the accepted changes of
  ``plan`` (:func:`relaunch_plan`) in the history. A start that fails before
  this leaves the workdir's records as they were."""
  if plan is None or jax.process_index() != 0:
    return
  if plan["config_json"] is not None:
    write_atomic(os.path.join(workdir, CONFIG), plan["config_json"])
  record_history(workdir, plan["entry"], step)


def record_history(workdir: str, entry: Optional[Dict[str, Any]],
                   step: Optional[int]) -> None:
  """Appends ``entry`` to the history, with the time and the step the run
  resumed from. The line starts on a new line even when the file ends in a
  cut one (a write killed half-way), so that no entry is lost with it."""
  if entry is None or jax.process_index() != 0:
    return
  entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "resumed_at_step": step, **entry}
  hist = os.path.join(workdir, HISTORY)
  try:
    with open(hist, "ab+") as f:
      f.seek(0, os.SEEK_END)
      lead = b""
      if f.tell():
        f.seek(-1, os.SEEK_END)
        lead = b"" if f.read(1) == b"\n" else b"\n"
      f.write(lead + (json.dumps(entry) + "\n").encode())
      f.flush()
      os.fsync(f.fileno())
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
