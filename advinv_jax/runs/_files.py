"""Files that appear complete or not at all.

Every output of the library (config.json, results.json, checkpoint
manifests, the report's JSON, figures and pages) is written by
:func:`write_atomic`: into a temporary file in the target's folder, flushed
and fsynced, then ``os.replace``-d over the target. A failure (disk full, a
signal) leaves the old file, or none, and no temporary file. A set of files
(the report) is written into a staging folder and moved in when complete
(:func:`staged_dir`).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from typing import Union

from advinv_jax.runs._errors import (DiskFullError,  # noqa: F401  (raised)
                                     disk_full_error, is_disk_full)

MIN_FREE_BYTES = 50 * 2**20  # what a run needs free to start and checkpoint


def shorten(text: str, keep: int = 160) -> str:
  """``text`` for a one-line message: at most ~``keep`` characters (a
  4,000-character path is named by its two ends and its length)."""
  return text if len(text) <= keep else (
      f"{text[:keep // 2]}...{text[-keep // 2:]} ({len(text)} characters)")


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


def read_json_file(path: str, what: str):
  """``path``'s JSON, or None when it is missing or damaged (a damaged file
  is named in a warning saying what is done instead: ``what``)."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except ValueError as e:
    warnings.warn(f"{path} is damaged (not valid JSON: {e}); {what}.")
    return None
