"""Atomic, checksummed checkpoints with orbax; resume from the newest good one.

Orbax writes each step into a temporary directory and renames it when the
write is complete, so a job killed mid-save never leaves a half-written step
that looks finished. Orbax itself does not verify the bytes it reads back
(OCDBT data files carry no checksum: a few overwritten bytes restore as
silently wrong numbers), so every saved step also gets a manifest,
``<step>/checksums.json``, with the size and SHA-256 of each of its files.

On restore, steps are tried newest first. A step is *damaged* when a file
is missing, has another size or another hash than its manifest, holds no
data, or fails to read; it is skipped with a warning naming the file and,
unless the checkpointer is read-only, moved to ``checkpoints_corrupt/``
(kept for inspection). A step whose arrays do not match the model (another
structure or shape) is not damaged: restoring refuses with
:class:`CheckpointMismatchError` and moves nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from advinv_jax.runs._errors import (CheckpointMismatchError,
                                     disk_full_error, is_disk_full)
from advinv_jax.runs._files import MIN_FREE_BYTES, write_atomic

MANIFEST = "checksums.json"


def _host_tree(tree):
  return jax.tree_util.tree_map(np.asarray, tree)


def _file_digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _files(step_dir: str) -> List[str]:
  out = []
  for root, _, names in os.walk(step_dir):
    for n in names:
      rel = os.path.relpath(os.path.join(root, n), step_dir)
      if rel != MANIFEST:
        out.append(rel)
  return sorted(out)


def _key_name(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _shapes_by_path(tree) -> Dict[str, Tuple[int, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(_key_name(k) for k in path): tuple(
      v.shape if hasattr(v, "shape") else np.shape(v)) for path, v in leaves}


class Checkpointer:
  """Saves/restores a pytree of arrays under ``<workdir>/checkpoints``.

  ``read_only=True`` (inspection tools): never creates, saves, moves or
  deletes anything; damaged steps are only skipped with a warning.
  """

  def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.read_only = read_only
    if read_only:
      options = ocp.CheckpointManagerOptions(
          read_only=True, create=False, max_to_keep=None,
          enable_async_checkpointing=False)
    else:
      # The caller holds the workdir's lock, so temporary folders left here
      # are from killed runs: orbax removes them.
      options = ocp.CheckpointManagerOptions(
          max_to_keep=keep, create=True, cleanup_tmp_directories=True,
          enable_async_checkpointing=False)
    # The handler is named so that item_metadata works before any save.
    self._mngr = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers=ocp.StandardCheckpointHandler())

  def steps(self):
    return sorted(self._mngr.all_steps())

  def save(self, step: int, tree: Any) -> None:
    """Saves ``tree`` (fetched to host) as ``step`` with its checksum
    manifest; blocks until written. A step already saved is kept as is."""
    if self.read_only:
      raise RuntimeError("this Checkpointer is read-only.")
    step = int(step)
    if step in self._mngr.all_steps():
      return
    try:
      self._mngr.save(step, args=ocp.args.StandardSave(_host_tree(tree)),
                      force=True)
      self._mngr.wait_until_finished()
      if jax.process_index() == 0:
        self._write_manifest(step)
    except Exception as e:  # pylint: disable=broad-except
      full = is_disk_full(e) or (
          shutil.disk_usage(self.directory).free < MIN_FREE_BYTES)
      if full:
        raise disk_full_error(self.directory,
                              f"saving checkpoint step {step}") from e
      raise

  def _write_manifest(self, step: int) -> None:
    d = os.path.join(self.directory, str(step))
    sums = {rel: [os.path.getsize(os.path.join(d, rel)),
                  _file_digest(os.path.join(d, rel))] for rel in _files(d)}
    write_atomic(os.path.join(d, MANIFEST),
                 json.dumps({"sha256": sums}, indent=0, sort_keys=True))

  def verify(self, step: int) -> Tuple[Optional[str], bool]:
    """``(problem, verified)``: the first damaged file of ``step`` (None if
    none) and whether a manifest was there to check against."""
    d = os.path.join(self.directory, str(step))
    try:
      with open(os.path.join(d, MANIFEST)) as f:
        sums = json.load(f)["sha256"]
    except (OSError, ValueError, KeyError):
      return None, False
    for rel, (size, digest) in sorted(sums.items()):
      path = os.path.join(d, rel)
      if not os.path.exists(path):
        return f"{path} is missing", True
      if os.path.getsize(path) != size:
        return (f"{path} has {os.path.getsize(path)} bytes, "
                f"{size} were written"), True
      if _file_digest(path) != digest:
        return f"{path} does not match its checksum", True
    return None, True

  def _check_structure(self, step: int, target) -> Optional[str]:
    """None if ``step``'s arrays match ``target``'s; raises
    :class:`CheckpointMismatchError` if they differ; a string when the step
    holds no readable array metadata (damaged)."""
    try:
      meta = self._mngr.item_metadata(step)
      tree = getattr(meta, "tree", None)
    except Exception as e:  # pylint: disable=broad-except
      return f"its metadata could not be read ({type(e).__name__}: {e})"
    if not tree:
      return f"{self.directory}/{step} holds no arrays"
    have, want = _shapes_by_path(tree), _shapes_by_path(target)
    diffs = [f"{k}: {have.get(k, 'missing')} on disk, {want.get(k, 'absent')}"
             " in the model" for k in sorted(set(have) | set(want))
             if have.get(k) != want.get(k)]
    if diffs:
      raise CheckpointMismatchError(
          f"checkpoint step {step} in {self.directory} does not match the "
          f"model being restored ({len(diffs)} arrays differ, e.g. "
          f"{'; '.join(diffs[:2])}): it was trained with another model or "
          "optimiser config; check the workdir's config.json, or use a new "
          "--workdir. Nothing was moved.")
    return None

  def restore_latest(self, template: Any,
                     attempts: int = 5) -> Tuple[Optional[int], Any]:
    """Restores the newest good step into the structure of ``template``.

    A step that disappears while it is read (a live run's rotation deleted
    it after it was listed) is not damaged: the steps are listed again and
    the newest is tried, up to ``attempts`` times.

    Returns:
      ``(step, tree)``, or ``(None, None)`` when there is no checkpoint.

    Raises:
      CheckpointMismatchError: a step's arrays differ from ``template``'s.
    """
    target = _host_tree(template)
    for _ in range(attempts):
      vanished = False
      for step in reversed(self.steps()):
        problem, verified = self.verify(step)
        if problem is None:
          problem = self._check_structure(step, target)
        if problem is None:
          try:
            tree = self._mngr.restore(step,
                                      args=ocp.args.StandardRestore(target))
          except Exception as e:  # pylint: disable=broad-except
            problem = (f"it could not be read ({type(e).__name__}: "
                       f"{str(e)[:200]})")
        if problem is not None:
          if not os.path.isdir(os.path.join(self.directory, str(step))):
            vanished = True   # rotated away meanwhile: list the steps again
            break
          self._skip_damaged(step, problem)
          continue
        if not verified:
          warnings.warn(f"checkpoint step {step} in {self.directory} has no "
                        f"{MANIFEST} (written by an older version, or the "
                        "run was killed right after saving it): restored "
                        "without verifying its bytes.")
        return step, tree
      if not vanished:
        return None, None
      self._mngr.reload()
    return None, None

  def _skip_damaged(self, step: int, problem: str) -> None:
    if self.read_only:
      warnings.warn(f"checkpoint step {step} is damaged: {problem}; using "
                    "the previous step (read-only: nothing moved).")
      return
    moved = self._quarantine(step)
    warnings.warn(f"checkpoint step {step} is damaged: {problem}; moved it "
                  f"to {moved} and using the previous step.")

  def _quarantine(self, step: int) -> str:
    """Moves a damaged step out of the way (kept for inspection)."""
    src = os.path.join(self.directory, str(step))
    dst_root = self.directory + "_corrupt"
    dst = os.path.join(dst_root, f"{step}-{int(time.time())}")
    if jax.process_index() == 0 and os.path.exists(src):
      os.makedirs(dst_root, exist_ok=True)
      shutil.move(src, dst)
    self._mngr.reload()
    return dst

  def close(self):
    self._mngr.close()
