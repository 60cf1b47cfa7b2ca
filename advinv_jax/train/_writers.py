"""Metric writers: JSON lines plus TensorBoard event files (tensorboardX)."""
from __future__ import annotations

import json
import math
import os
from typing import Dict, Optional

import jax


class MetricWriter:
  """Writes ``{step, **scalars}`` to ``metrics.jsonl`` and TensorBoard.

  Only process 0 writes. On resume, lines after ``resume_step`` (written by a
  run that died before its next checkpoint) are dropped so the file holds
  exactly one line per logged step.
  """

  def __init__(self, workdir: str, resume_step: Optional[int] = None):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not self.enabled:
      return
    if os.path.exists(self.path):
      keep = []
      with open(self.path) as f:
        for line in f:
          try:
            rec = json.loads(line)
          except json.JSONDecodeError:
            continue  # a line cut by a kill
          if resume_step is not None and rec.get("step", 0) <= resume_step:
            keep.append(line if line.endswith("\n") else line + "\n")
      with open(self.path, "w") as f:
        f.writelines(keep)
    try:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:  # optional
      self._tb = None

  def write(self, step: int, scalars: Dict[str, float], prefix: str = ""):
    if not self.enabled:
      return
    rec = {"step": int(step)}
    for k, v in scalars.items():
      v = float(v)
      rec[prefix + k] = v if math.isfinite(v) else str(v)
      if self._tb is not None:
        self._tb.add_scalar(prefix + k, v, int(step))
    with open(self.path, "a") as f:
      f.write(json.dumps(rec) + "\n")

  def close(self):
    if self._tb is not None:
      self._tb.close()
