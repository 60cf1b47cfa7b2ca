"""A workdir held by one run, from its start to its end."""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional

from advinv_jax.runs._lock import WorkdirLock
from advinv_jax.runs._relaunch import commit_relaunch, relaunch_plan
from advinv_jax.runs._signals import signals_raise
from advinv_jax.runs._start import (check_workdir, clean_stale_staging,
                                    remove_if_created)


class Run:
  """``with Run(workdir) as run:`` holds ``workdir`` for one run.

  Entering checks that the workdir can hold a run (:func:`check_workdir`:
  creates it), takes its lock once (:class:`WorkdirLock`), removes staging
  folders of runs that are gone, and makes SIGINT/SIGTERM raise
  :class:`Interrupted` (so that the lock is released and nothing half
  written stays). Leaving releases the lock; a run that fails before it
  started (:meth:`start`) leaves the workdir as it found it (a folder it
  created is removed again).

  ``advinv_jax.job.run`` enters it once for training and the report;
  ``train.train_and_evaluate`` enters its own when it is not given one.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.created = ()
    self._lock = WorkdirLock(workdir)
    self._signals = signals_raise()

  def __enter__(self) -> "Run":
    self._signals.__enter__()
    try:
      self.created = check_workdir(self.workdir)
      self._lock.acquire()
    except BaseException as e:
      self._leave(e)
      raise
    clean_stale_staging(self.workdir, everyone=True)
    return self

  def __exit__(self, exc_type, exc, tb):
    self._leave(exc)

  def _leave(self, exc: Optional[BaseException]) -> None:
    try:
      self._lock.release()
      if exc is not None:
        remove_if_created(self.created)  # empty: no trace
    finally:
      self._signals.__exit__(None, None, None)

  def plan(self, config, model_sections: Mapping[str, Iterable[str]]
           ) -> Optional[Dict[str, Any]]:
    """The relaunch check of ``config`` (:func:`relaunch_plan`): raises
    before anything is written when the workdir's run is another one."""
    return relaunch_plan(config, self.workdir, model_sections)

  def start(self, plan: Optional[Dict[str, Any]],
            step: Optional[int]) -> None:
    """The run has started (data, model and checkpoint loaded): writes a new
    workdir's ``config.json`` or records the accepted changes
    (:func:`commit_relaunch`)."""
    commit_relaunch(self.workdir, plan, step)
