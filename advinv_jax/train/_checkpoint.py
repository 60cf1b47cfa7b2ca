"""Atomic checkpoints with orbax, resume from the newest complete one.

Orbax writes each step into a temporary directory and renames it when the
write is complete, so a job killed mid-save never leaves a half-written step
that looks finished. On restore, a step that fails to load (truncated or
corrupted files) is reported with a warning and the previous step is used.
"""
from __future__ import annotations

import os
import shutil
import time
import warnings
from typing import Any, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp


def _host_tree(tree):
  return jax.tree_util.tree_map(np.asarray, tree)


class Checkpointer:
  """Saves/restores a pytree of arrays under ``<workdir>/checkpoints``."""

  def __init__(self, workdir: str, keep: int = 3):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True,
            enable_async_checkpointing=False))

  def steps(self):
    return sorted(self._mngr.all_steps())

  def save(self, step: int, tree: Any) -> None:
    """Saves ``tree`` (fetched to host) as ``step``; blocks until written."""
    self._mngr.save(int(step), args=ocp.args.StandardSave(_host_tree(tree)),
                    force=True)
    self._mngr.wait_until_finished()

  def restore_latest(self, template: Any) -> Tuple[Optional[int], Any]:
    """Restores the newest readable step into the structure of ``template``.

    Returns:
      ``(step, tree)``, or ``(None, None)`` when there is no checkpoint.
    """
    target = _host_tree(template)
    for step in reversed(self.steps()):
      try:
        tree = self._mngr.restore(step, args=ocp.args.StandardRestore(target))
      except Exception as e:  # pylint: disable=broad-except
        moved = self._quarantine(step)
        warnings.warn(
            f"checkpoint step {step} in {self.directory} could not be read "
            f"({type(e).__name__}: {str(e)[:200]}); moved it to {moved} and "
            "trying the previous one.")
        continue
      shapes_ok = jax.tree_util.tree_all(jax.tree_util.tree_map(
          lambda a, b: np.shape(a) == np.shape(b), tree, target))
      if not shapes_ok:
        moved = self._quarantine(step)
        warnings.warn(f"checkpoint step {step} does not match the model's "
                      f"shapes; moved it to {moved} and trying the previous "
                      "one.")
        continue
      return step, tree
    return None, None

  def _quarantine(self, step: int) -> str:
    """Moves an unreadable step out of the way (kept for inspection)."""
    src = os.path.join(self.directory, str(step))
    dst_root = self.directory + "_corrupt"
    os.makedirs(dst_root, exist_ok=True)
    dst = os.path.join(dst_root, f"{step}-{int(time.time())}")
    if jax.process_index() == 0 and os.path.exists(src):
      shutil.move(src, dst)
    self._mngr.reload()
    return dst

  def close(self):
    self._mngr.close()
