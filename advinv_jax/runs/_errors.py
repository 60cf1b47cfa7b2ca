"""The errors of run handling: each says in one line what is wrong and the
way out (``advinv_jax.main`` and every script print it without a
traceback, ``cli.one_line_error``)."""
from __future__ import annotations

import errno


class RunError(RuntimeError):
  """A run refused or stopped for a reason the message explains in one line
  (``advinv_jax.main`` prints it without a traceback)."""


class DiskFullError(RunError, OSError):
  """No space left on the workdir's device."""


class WorkdirError(RunError, OSError):
  """The workdir cannot hold a run (unwritable, a file, too little space)."""


class NotAWorkdirError(RunError, FileNotFoundError):
  """A folder holds no run (no ``config.json``) or no readable checkpoint."""


class WorkdirBusyError(RunError):
  """Another live run holds the workdir's lock."""


class ConfigMismatchError(RunError):
  """A relaunch's config differs from the workdir's in the computation."""


class CheckpointMismatchError(RunError):
  """A checkpoint's arrays do not match the model/optimiser being restored."""


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
