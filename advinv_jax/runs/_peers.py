"""A multi-process run whose peer dies stops in bounded time, in one line.

Without this, a process whose peer was killed waits in its next collective
until the coordination service's heartbeat timeout, then aborts with tens of
lines of gloo and heartbeat errors.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, Optional

import jax

PEER_TIMEOUT_S = 30.0   # a peer silent this long is dead
_BEAT = "advinv_runs/beat/{}"
_DONE = "advinv_runs/done/{}"


def watch_peers(timeout_s: float = PEER_TIMEOUT_S, period_s: float = 1.0,
                exit_fn: Callable[[int], None] = os._exit
                ) -> Optional[threading.Thread]:
  """Starts a daemon thread that beats for this process and watches the
  others (through ``jax.distributed``'s key-value store); None with one
  process.

  Every ``period_s`` seconds the thread raises this process's counter and
  reads the others'. A peer whose counter has not moved for ``timeout_s``
  seconds (and that did not end normally, :func:`peer_done`) is dead: this
  process prints one line naming it and how to relaunch, and exits with
  code 1 (``exit_fn``). A coordinator that no longer answers (process 0
  died) ends it the same way. Choose ``timeout_s`` below
  ``jax.distributed.initialize``'s ``heartbeat_timeout_seconds``, so that
  this line comes before its abort.
  """
  n, me = jax.process_count(), jax.process_index()
  if n == 1:
    return None
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  client = distributed.global_state.client

  def stop(line: str) -> None:
    print(f"error: {line}; stopping this process ({me}) too. Relaunch all {n} "
          "processes with the same command: the run resumes from its last "
          "checkpoint.", file=sys.stderr, flush=True)
    exit_fn(1)

  def loop():
    seen = {j: (None, time.monotonic()) for j in range(n) if j != me}
    while True:
      try:
        client.key_value_increment(_BEAT.format(me), 1)
        for j, (value, since) in list(seen.items()):
          if _get(client, _DONE.format(j)) is not None:
            del seen[j]
            continue
          now_value = _get(client, _BEAT.format(j))
          if now_value != value:
            seen[j] = (now_value, time.monotonic())
          elif time.monotonic() - since > timeout_s:
            return stop(f"process {j} of {n} stopped (no heartbeat for "
                        f"{timeout_s:.0f} s)")
      except Exception as e:  # pylint: disable=broad-except
        return stop("the coordinator (process 0) no longer answers "
                    f"({type(e).__name__})")
      time.sleep(period_s)

  thread = threading.Thread(target=loop, name="watch_peers", daemon=True)
  thread.start()
  return thread


def peer_done() -> None:
  """Marks this process as ended normally (its silence is not a death)."""
  if jax.process_count() > 1:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    distributed.global_state.client.key_value_set(
        _DONE.format(jax.process_index()), "1", allow_overwrite=True)


def _get(client, key: str) -> Optional[str]:
  try:
    return client.key_value_try_get(key)
  except Exception as e:  # pylint: disable=broad-except
    if "NOT_FOUND" in str(e) or "not found" in str(e).lower():
      return None
    raise
