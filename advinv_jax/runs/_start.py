"""Before a run starts: a workdir that can hold it, every config value typed
and finite, no staging folder of a run that is gone; and a start that
fails leaves no trace."""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Tuple

import ml_collections
import numpy as np

from advinv_jax._settings import ConfigError, default_config, walk
from advinv_jax.runs._errors import WorkdirError
from advinv_jax.runs._files import MIN_FREE_BYTES, shorten
from advinv_jax.runs._lock import pid_alive


def _number(v) -> bool:
  return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


def check_values(config: ml_collections.ConfigDict) -> None:
  """What ``validate_config`` leaves to the run: the elements of tuple fields
  have the type of the default's elements (numbers, or strings), and every
  number is finite (``learning_rate=nan`` is refused here, not after
  compiling). Raises one ``ConfigError`` naming the field and the fix."""
  ref = dict(walk(default_config()))
  for path, value in walk(config):
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


def make_writable_dir(path: str) -> Tuple[str, ...]:
  """Creates ``path`` (with its parents) and checks that a file can be
  written there; returns the folders it created, outermost first (empty when
  it existed). On failure it removes them all and re-raises the ``OSError``:
  on an over-long path ``os.makedirs`` fails only after creating the parents
  that fit, which would stay behind."""
  missing, p = [], os.path.abspath(path)
  while not os.path.isdir(p):
    missing.append(p)
    parent = os.path.dirname(p)
    if parent == p:
      break
    p = parent
  created = []
  try:
    for d in reversed(missing):
      try:
        os.mkdir(d)
      except FileExistsError:
        if not os.path.isdir(d):
          raise
        continue
      created.append(d)
    probe = os.path.join(path, f".write_probe_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError:
    remove_if_created(tuple(created))
    raise
  return tuple(created)


def check_workdir(workdir: str) -> Tuple[str, ...]:
  """Fails at start, in one line (:class:`WorkdirError`), on a workdir that
  cannot hold a run: an empty or over-long path, a file, unwritable, or
  short of free space. Creates the folder; returns the folders it created,
  outermost first (empty when it existed: a start that fails then removes
  them, :func:`remove_if_created`). A refusal leaves none behind."""
  if not workdir:
    raise WorkdirError("the workdir is empty: pass --workdir=<a folder>.")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"workdir {workdir!r} is a file, not a folder; pass "
                       "another --workdir.")
  try:
    created = make_writable_dir(workdir)
  except OSError as e:
    raise WorkdirError(
        f"workdir {shorten(repr(workdir))} is not writable ({e.strerror}); "
        "pass a --workdir you can write to.") from e
  free = shutil.disk_usage(workdir).free
  if free < MIN_FREE_BYTES:
    remove_if_created(created)
    raise WorkdirError(
        f"workdir {workdir!r} has only {free / 2**20:.1f} MiB free; "
        f"checkpoints need at least {MIN_FREE_BYTES // 2**20} MiB. Free some "
        "space or choose another --workdir.")
  return created


def remove_if_created(created: Tuple[str, ...]) -> None:
  """Removes the folders a start created (:func:`make_writable_dir`'s,
  innermost first), each only if empty, so a failed start leaves no
  trace."""
  for d in reversed(created):
    with contextlib.suppress(OSError):
      os.rmdir(d)


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
          everyone or (pid.isdigit() and not pid_alive(int(pid)))):
        continue
      path = os.path.join(folder, name)
      if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        with contextlib.suppress(OSError):
          os.remove(path)
