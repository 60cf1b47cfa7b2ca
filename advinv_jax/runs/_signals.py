"""Signals: SIGINT and SIGTERM end a run with its cleanups and one line.

Inside the training loop :class:`StopOnSignal` stops at the next step
boundary (a checkpoint is saved); anywhere else :func:`signals_raise` turns
them into :class:`Interrupted` in the main thread, so that the lock is
released and no staging folder stays.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Optional

from advinv_jax.runs._errors import RunError


class Interrupted(KeyboardInterrupt):
  """SIGINT or SIGTERM outside the training loop (loading, evaluation, the
  report), raised in the main thread so that every cleanup runs (the lock
  is released, staging folders removed); ``exit_code`` is ``128 +
  signal``."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = int(signum)
    self.exit_code = 128 + int(signum)


@contextlib.contextmanager
def signals_raise():
  """While active (in the main thread; elsewhere it does nothing), SIGINT
  and SIGTERM raise :class:`Interrupted` instead of ending the process
  without cleanup (SIGTERM's default). The training loop's
  :class:`StopOnSignal` takes over inside it and gives it back after."""
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
    if threading.current_thread() is threading.main_thread():
      for s in (signal.SIGINT, signal.SIGTERM):
        self._old[s] = signal.signal(s, self._handle)
    return self

  def _now(self, signum: int, why: str) -> None:
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
    self._timer = threading.Timer(
        self.grace_s, self._now,
        (signum, f"no step boundary within {self.grace_s:.0f} s"))
    self._timer.daemon = True
    self._timer.start()

  def __exit__(self, *exc):
    if self._timer is not None:
      self._timer.cancel()
    for s, h in self._old.items():
      signal.signal(s, h)
    self._old = {}

  def interrupted(self, step: int, saved: str) -> RunInterrupted:
    return RunInterrupted(
        f"{signal.Signals(self.signum).name} at step {step}: {saved}; "
        "relaunch the same command to resume.", self.signum)
