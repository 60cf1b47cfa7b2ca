"""The relaunch check: a workdir's ``config.json`` is written once, by the run
that creates it; a relaunch is compared with it (plus the changes recorded
in ``config_history.jsonl``) by :func:`relaunch_plan`, which refuses
changes of the computation unless ``config.train.resume_mismatch='allow'``
and records every accepted change in the history, never by rewriting
``config.json``.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import jax
import ml_collections

from advinv_jax._settings import default_config, migrate_config
from advinv_jax.runs._errors import (ConfigMismatchError, RunError,
                                     disk_full_error, is_disk_full)
from advinv_jax.runs._files import write_atomic
from advinv_jax.runs._lock import on_process_0

CONFIG = "config.json"
HISTORY = "config_history.jsonl"

# Fields that only extend a run: accepted and recorded when they grow.
EXTEND_FIELDS = ("train.num_steps", "train.num_epochs")
# Fields that do not change the trained parameters (logging, checkpoint
# cadence, where the same data lives, evaluation batching, the report):
# accepted and recorded.
_HARMLESS_PREFIXES = ("report.", "eval.")
_HARMLESS_FIELDS = ("train.progress_bar", "train.log_every",
                    "train.checkpoint_every", "train.keep_checkpoints",
                    "data.data_dir")
_IGNORED = ("train.resume_mismatch",)  # how to relaunch, not what was run


def _flat(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
  return out


def _set(d: Dict[str, Any], path: str, value) -> None:
  *parents, leaf = path.split(".")
  for p in parents:
    d = d.setdefault(p, {})
  d[leaf] = value


def read_config_json(workdir: str) -> Optional[Dict[str, Any]]:
  """The workdir's config as recorded: ``config.json`` with the changes of
  ``config_history.jsonl`` applied in order; None when there is none."""
  path = os.path.join(workdir, CONFIG)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      raw = json.load(f)
  except ValueError as e:
    raise RunError(
        f"{path} is not valid JSON ({e}); it records the run's config: "
        "restore it from a copy (e.g. the same command's --config), or move "
        "the workdir aside and start in a new --workdir.") from None
  for entry in read_history(workdir):
    for field, (_, new) in entry.get("changes", {}).items():
      _set(raw, field, new)
  return raw


def read_history(workdir: str) -> List[Dict[str, Any]]:
  """The entries of ``config_history.jsonl`` in order; a line that is not a
  JSON object (cut by a killed write) is skipped with a warning naming it."""
  path = os.path.join(workdir, HISTORY)
  if not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        entry = json.loads(line)
        if not isinstance(entry, dict):
          raise ValueError("not an object")
      except ValueError:
        warnings.warn(f"{path}:{number} is damaged (a cut line); skipping "
                      "it: the config changes it recorded are not applied.")
        continue
      out.append(entry)
  return out


def config_changes(old: Dict[str, Any], new: Dict[str, Any]
                   ) -> Dict[str, Tuple[Any, Any]]:
  """``{field: (old, new)}`` for every field that differs (flat names)."""
  defaults = _flat(json.loads(default_config().to_json_best_effort()))
  # Fields newer than the workdir take their default there.
  a, b = {**defaults, **_flat(old)}, _flat(new)
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
          if a.get(k) != b.get(k) and k not in _IGNORED}


def _kind(field: str, old, new, model_name: str,
          model_sections: Mapping[str, Iterable[str]]) -> str:
  if field in EXTEND_FIELDS:
    grows = isinstance(old, int) and isinstance(new, int) and (
        new >= old or new == 0)  # num_steps=0: num_epochs decides
    return "extend" if grows else "compute"
  if field in _HARMLESS_FIELDS or field.startswith(_HARMLESS_PREFIXES):
    return "other"
  # The sub-sections of config.model that belong to one architecture: a
  # change in one that the run's model does not read is accepted.
  arch_sections = {s for v in model_sections.values() for s in v}
  part = field.split(".")
  if (part[0] == "model" and len(part) > 2 and part[1] in arch_sections
      and part[1] not in model_sections.get(model_name, (part[1],))):
    return "other"          # another architecture's section: not this model
  return "compute"


def relaunch_plan(config: ml_collections.ConfigDict, workdir: str,
                  model_sections: Mapping[str, Iterable[str]]
                  ) -> Optional[Dict[str, Any]]:
  """Checks a start or relaunch against the workdir's recorded config;
  writes nothing (:func:`commit_relaunch` does, once the run has started).

  Args:
    config: this run's (validated) config.
    workdir: the workdir (locked by this run).
    model_sections: ``{model name: the config.model sub-sections it
      reads}`` (``models.MODEL_SECTIONS``): a change in a sub-section the
      run's model does not read does not change the computation.

  Returns:
    On process 0 a plan: ``config_json`` (the text of ``config.json`` for a
    new workdir, else None), ``entry`` (the history entry of accepted
    changes other than the report's, else None) and ``report_changes``
    (``{field: [old, new]}`` of ``report.*``: recorded by whoever writes the
    report with them, never before). None on other processes.

  Raises:
    ConfigMismatchError: the config differs from the recorded one in a field
      that changes the computation and ``config.train.resume_mismatch`` is
      not ``'allow'``; the message lists the fields and the way out.
    RunError: ``config.json`` is unreadable (the message names it).
  """
  return on_process_0(lambda: _relaunch_plan(config, workdir,
                                             model_sections))


def _relaunch_plan(config, workdir, model_sections):
  new = json.loads(config.to_json_best_effort())
  plan = {"config_json": None, "entry": None, "report_changes": {}}
  old = read_config_json(workdir)
  if old is None:
    plan["config_json"] = json.dumps(new, indent=1, sort_keys=True)
    return plan
  # Fields added to the schema since the run started take their values from
  # before they existed (config.migrate_config), not a spurious change.
  old = json.loads(migrate_config(old).to_json_best_effort())
  changes = config_changes(old, new)
  plan["report_changes"] = {f: list(v) for f, v in changes.items()
                            if f.startswith("report.")}
  changes = {f: v for f, v in changes.items() if not f.startswith("report.")}
  if not changes:
    return plan
  kinds = {f: _kind(f, *v, config.model.name, model_sections)
           for f, v in changes.items()}
  compute = [f for f, k in kinds.items() if k == "compute"]
  if compute and config.train.resume_mismatch != "allow":
    listed = "; ".join(f"config.{f}: {changes[f][0]!r} -> {changes[f][1]!r}"
                       for f in compute)
    raise ConfigMismatchError(
        f"{workdir} was trained with another config ({listed}); use a new "
        "--workdir, or pass --config.train.resume_mismatch=allow to resume "
        f"anyway (the change is recorded in {HISTORY}).")
  plan["entry"] = {"event": "mismatch_allowed" if compute else (
                       "extend" if "extend" in kinds.values() else "change"),
                   "changes": {f: list(v) for f, v in changes.items()}}
  return plan


def commit_relaunch(workdir: str, plan: Optional[Dict[str, Any]],
                    step: Optional[int]) -> None:
  """Once a run has started (data, model and checkpoint loaded): writes the
  new workdir's ``config.json``, or records the accepted changes of
  ``plan`` (:func:`relaunch_plan`) in the history. A start that fails before
  this leaves the workdir's records as they were."""
  if plan is None or jax.process_index() != 0:
    return
  if plan["config_json"] is not None:
    write_atomic(os.path.join(workdir, CONFIG), plan["config_json"])
  record_history(workdir, plan["entry"], step)


def record_history(workdir: str, entry: Optional[Dict[str, Any]],
                   step: Optional[int]) -> None:
  """Appends ``entry`` to the history, with the time and the step the run
  resumed from. The line starts on a new line even when the file ends in a
  cut one (a write killed half-way), so that no entry is lost with it."""
  if entry is None or jax.process_index() != 0:
    return
  entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "resumed_at_step": step, **entry}
  hist = os.path.join(workdir, HISTORY)
  try:
    with open(hist, "ab+") as f:
      f.seek(0, os.SEEK_END)
      lead = b""
      if f.tell():
        f.seek(-1, os.SEEK_END)
        lead = b"" if f.read(1) == b"\n" else b"\n"
      f.write(lead + (json.dumps(entry) + "\n").encode())
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    if is_disk_full(e):
      raise disk_full_error(hist, "recording the config change") from e
    raise
