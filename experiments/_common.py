"""Shared plumbing of the experiment scripts (not an experiment itself).

Every experiment runs at one of three scales:
  * ``tiny``  — seconds, on the bundled digits (what the tests run);
  * ``cpu``   — the reduced scale run on a 2-core CPU for the README table;
  * ``paper`` — the papers' settings (GPU/TPU).
and writes ``results.json`` + ``results.md`` (a table with the paper's numbers
beside ours) into its workdir.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from absl import flags, logging

logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

SCALES = ("tiny", "cpu", "paper")

SET = flags.DEFINE_multi_string(
    "set", [], "config override applied to every model the experiment "
    "trains, as key=value (repeatable), e.g. --set=train.num_epochs=8")


def define_losses_flag():
  """Defines ``--losses`` for a script that honours it (via
  :func:`select_losses`); scripts that do not call this reject the flag
  instead of ignoring it."""
  return flags.DEFINE_list(
      "losses", [], "train only these of the experiment's models, e.g. "
      "--losses=ice (default: all of them)")


def select_losses(configs: Dict[str, Any], losses: Sequence[str]):
  """The entries of ``configs`` named in ``losses`` (all when empty).

  Raises SystemExit naming the choices when a name is not among them.
  """
  bad = [l for l in losses if l not in configs]
  if bad:
    raise SystemExit(f"--losses={','.join(losses)}: {bad} not among this "
                     f"experiment's models {sorted(configs)}.")
  return {k: v for k, v in configs.items() if not losses or k in losses}


def apply_overrides(config, overrides: Sequence[str]):
  """Applies ``key=value`` strings to ``config`` in place and returns it.

  Values are Python literals (``8``, ``1e-3``, ``(64, 64)``, ``True``) or
  else strings. Raises ValueError naming the key when it does not exist, and
  the config's own TypeError when the type does not match.
  """
  for item in overrides:
    key, sep, raw = item.partition("=")
    if not sep or not key:
      raise ValueError(f"--set={item!r}: expected key=value, e.g. "
                       "--set=train.num_epochs=8.")
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    *path, leaf = key.strip().split(".")
    node = config
    for part in path:
      if part not in node:
        raise ValueError(f"--set={item!r}: the config has no field "
                         f"{key!r} (no {part!r}).")
      node = node[part]
    if leaf not in node:
      raise ValueError(f"--set={item!r}: the config has no field {key!r}.")
    node[leaf] = value
  return config


def load_config(name: str, variant: Optional[str] = None):
  """``configs/<name>.py``'s ``get_config(variant)``."""
  path = os.path.join(ROOT, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"_cfg_{name}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(variant) if variant else mod.get_config()


def variant(scale: str, recipe: str = "ours"):
  """The config variant of an MNIST experiment at ``scale`` ('cpu' |
  'paper') for ``recipe`` ('ours' | 'authors')."""
  if recipe not in ("ours", "authors"):
    raise SystemExit(f"--recipe={recipe!r} is not 'ours' or 'authors'.")
  if recipe == "authors":
    return "authors_cpu" if scale == "cpu" else "authors"
  return "cpu" if scale == "cpu" else None


def tiny(config, *, model=True):
  """Shrinks a config to a seconds-long smoke run on the bundled digits."""
  c = config
  if c.data.name in ("mnist", "cifar10", "imagenet2012"):
    c.data.name = "digits"
    c.data.pad_to = 0
  if c.data.shift.enabled:
    c.data.shift.position = (0, 0)
  if model:
    c.model.depth = 1
    c.model.width = 8
    c.model.levels = min(c.model.levels, 3)
    c.model.features = (8, 8)
    c.model.hidden = (16,)
  c.loss.ice.nuisance_hidden = (32,)
  c.loss.ice.nuisance_steps = 2
  c.optimizer.schedule = "constant"
  c.optimizer.boundaries = ()
  c.optimizer.scales = ()
  c.train.batch_size = 64
  c.train.num_epochs = 0
  c.train.num_steps = 8
  c.train.log_every = 4
  c.train.checkpoint_every = 0
  c.train.progress_bar = False
  c.report.num_examples = 32
  c.report.pgd_steps = 3
  c.report.linf_eps = tuple(c.report.linf_eps)[:2]
  c.report.l2_eps = tuple(c.report.l2_eps)[:2]
  c.report.nuisance_classifier_steps = 20
  return c


def train_and_report(config, workdir: str) -> Dict[str, Any]:
  """Runs the main job (train, evaluate, report); returns its outputs."""
  from advinv_jax.job import run
  t = time.perf_counter()
  summary = run(config, workdir)
  out = {"summary": summary, "seconds": time.perf_counter() - t,
         "results": read_json(os.path.join(workdir, "results.json"))}
  rep = os.path.join(workdir, "report.json")
  out["report"] = read_json(rep) if os.path.exists(rep) else None
  return out


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def fmt(v, pct=False, digits=2):
  if v is None:
    return "n/a"
  if isinstance(v, str):
    return v
  return f"{100 * v:.{digits}f}" if pct else f"{v:.{digits}f}"


def write_results(workdir: str, name: str, header: Sequence[str],
                  rows: List[Sequence[Any]], data: Dict[str, Any],
                  notes: str = "") -> str:
  """Writes results.json and results.md (markdown table); prints the table."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(data, f, indent=1, default=str)
  if data.get("overrides"):
    name = f"{name}, --set {' '.join(data['overrides'])}"
  lines = [f"### {name}", "", "| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  if notes:
    lines += ["", notes]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(text)
  print(text)
  return text


def check_scale(scale: str):
  if scale not in SCALES:
    raise SystemExit(f"--scale={scale!r} is not one of {SCALES}.")
