"""One run per workdir: ``<workdir>/.lock``, and decisions made once by
process 0 of a multi-process run."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import warnings
from typing import Any, Dict, Optional, Set

import jax
import numpy as np

from advinv_jax.runs._errors import (ConfigMismatchError, DiskFullError,
                                     RunError, WorkdirBusyError)

LOCK = ".lock"
_HELD: Set[str] = set()  # lock paths this process holds (a second is refused)


def pid_alive(pid: int) -> bool:
  """Whether a process ``pid`` exists (on the calling host, in its PID
  namespace)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


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
  (which, asking, does not hold the lock: a PID reused after a container
  restart), or names a process started at another time. A holder whose boot id
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
  if pid == me["pid"] or not pid_alive(pid):
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
  A run takes it once (:class:`advinv_jax.runs.Run`); a second
  :class:`WorkdirLock` of the same workdir in the same process is refused.
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
    if self.path in _HELD:
      raise WorkdirBusyError(
          f"workdir {os.path.dirname(self.path)} is already held by this "
          "process; a run takes its lock once (advinv_jax.runs.Run).")
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
          warnings.warn(f"took over the stale lock {self.path} of a "
                        f"process that is gone ({_describe(holder)}).")
          break
      else:
        raise WorkdirBusyError(f"could not take the lock {self.path}; "
                               "another run is starting there.")
    finally:
      with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    _HELD.add(self.path)
    self._held = True

  def _take_over(self, stale_text: str, tmp: str) -> bool:
    """Replaces the lock by ours if it still holds ``stale_text``, under the
    takeover flock; False when another process changed it first."""
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
    _HELD.discard(self.path)
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
