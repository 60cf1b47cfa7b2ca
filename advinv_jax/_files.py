"""Files that appear complete or not at all, the disk-full error, and
signals that end a run with its cleanups.

Every output of the library (config.json, results.json, checkpoint
manifests, the report's JSON, figures and pages) is written by
:func:`write_atomic`: into a temporary file in the target's folder, flushed
and fsynced, then ``os.replace``-d over the target. A failure (disk full, a
signal) leaves the old file, or none, and no temporary file.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from typing import Union


class RunError(RuntimeError):
  """A run refused or stopped for a reason the message explains in one line
  (``advinv_jax.main`` prints it without a traceback)."""


class DiskFullError(RunError, OSError):
  """No space left on the workdir's device."""


def shorten(text: str, keep: int = 160) -> str:
  """``text`` for a one-line message: at most ~``keep`` characters (a
  4,000-character path is named by its two ends and its length)."""
  return text if len(text) <= keep else (
      f"{text[:keep // 2]}...{text[-keep // 2:]} ({len(text)} characters)")


def is_disk_full(exc: BaseException) -> bool:
  """True when ``exc`` or an exception it was raised from is ENOSPC."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    if isinstance(exc, DiskFullError) or getattr(exc, "errno", None) == (
        errno.ENOSPC) or "No space left on device" in str(exc):
      return True
    exc = exc.__cause__ or exc.__context__
  return False


def disk_full_error(path: str, what: str) -> DiskFullError:
  return DiskFullError(
      f"disk full: no space left on the device of {path} while {what}; free "
      "space there (or choose another --workdir) and relaunch the same "
      "command: the run resumes from its last checkpoint.")


def write_atomic(path: str, data: Union[str, bytes]) -> str:
  """Writes ``data`` (str: UTF-8, or bytes) to ``path`` atomically; returns
  ``path``.

  The temporary file lives in the same folder (``os.replace`` is atomic only
  within one file system) and gets the permissions of an ordinary new file.
  On any failure it is removed and ``path`` is untouched; a full disk raises
  :class:`DiskFullError` naming the file and the fix.
  """
  d = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path),
                             suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode() if isinstance(data, str) else data)
      f.flush()
      os.fsync(f.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)     # mkstemp's 0600 -> an ordinary file
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(e, OSError) and is_disk_full(e):
      raise disk_full_error(path, f"writing {os.path.basename(path)}") from e
    raise
  return path


class Interrupted(KeyboardInterrupt):
  """SIGINT or SIGTERM outside the training loop (loading, evaluation, the
  report), raised in the main thread so that every cleanup runs (the lock
  is released, staging folders removed); ``exit_code`` is ``128 +
  signal``."""

  def __init__(self, signum: int):
    import signal
    super().__init__(signal.Signals(signum).name)
    self.signum = int(signum)
    self.exit_code = 128 + int(signum)


@contextlib.contextmanager
def signals_raise():
  """While active (in the main thread; elsewhere it does nothing), SIGINT
  and SIGTERM raise :class:`Interrupted` instead of ending the process
  without cleanup (SIGTERM's default). The training loop's
  :class:`StopOnSignal` takes over inside it and gives it back after."""
  import signal
  import threading
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handle(signum, frame):
    del frame
    raise Interrupted(signum)

  old = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield
  finally:
    for s, h in old.items():
      signal.signal(s, h)
