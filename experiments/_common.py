"""Shared plumbing of the experiment scripts (not an experiment itself).

Every experiment runs at one of three scales:
  * ``tiny``  — seconds, on the bundled digits (what the tests run);
  * ``cpu``   — the reduced scale run on 2 CPU cores for the README table;
  * ``paper`` — the papers' settings (GPU/TPU).
and writes ``results.json`` + ``results.md`` (a table with the paper's numbers
beside ours) into its workdir.
"""
from __future__ import annotations

import importlib
import json
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from absl import flags, logging

from advinv_jax import cli
from advinv_jax.config import default_config

logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO

SCALES = ("tiny", "cpu", "paper")



def define_config_flag():
  """Defines ``--config.<field>=<value>`` for a script: the schema's defaults
  type the values (a misspelt field is one line, before anything runs), and
  :func:`overrides` hands them to :func:`prepare`, which applies them to
  every model the experiment trains."""
  return cli.define_config(
      "config", default_config(),
      "overrides applied to every model the experiment trains, e.g. "
      "--config.train.num_epochs=8 (fields: advinv_jax/config.py)")


def define_losses_flag():
  """Defines ``--losses`` for a script that honours it (via
  :func:`select_losses`); scripts that do not call this reject the flag
  instead of ignoring it."""
  return flags.DEFINE_list(
      "losses", [], "train only these of the experiment's models, e.g. "
      "--losses=ice (default: all of them)")


def define_recipe_flag():
  """Defines ``--recipe``: ``ours`` (the configs' defaults) or ``authors``
  (their ``authors`` variant: the authors' code as they ran it,
  configs/mnist.py ``authors_recipe``)."""
  return flags.DEFINE_enum(
      "recipe", "ours", ["ours", "authors"],
      "ours: our MNIST recipe; authors: the authors' code as they ran it "
      "(configs/mnist.py:authors)")


def select_losses(configs: Dict[str, Any], losses: Sequence[str]):
  """The entries of ``configs`` named in ``losses`` (all when empty).

  Raises ``cli.UsageError`` naming the choices when a name is not among them.
  """
  bad = [l for l in losses if l not in configs]
  if bad:
    raise cli.UsageError(f"--losses={','.join(losses)}: {bad} not among this "
                         f"experiment's models {sorted(configs)}.")
  return {k: v for k, v in configs.items() if not losses or k in losses}


def scale_main(run, scale, workdir, losses=None, *more):
  """The absl ``main`` of a script whose ``run(scale, workdir, overrides[,
  losses, *more])`` takes the values of its ``--scale``, ``--workdir`` (and
  ``--losses``, and further) flag holders and the ``--config.*``
  overrides."""

  def main(argv):
    del argv
    extra = (losses.value,) if losses is not None else ()
    run(scale.value, workdir.value, overrides(), *extra,
        *(m.value for m in more))

  return main


def overrides() -> Dict[str, Any]:
  """``{dotted field: value}`` of the ``--config.<field>=<value>`` flags."""
  return cli.override_values("config")


def prepare(configs: Mapping[str, Any], overrides: Mapping[str, Any]):
  """Applies ``overrides`` to each config and checks it
  (``train.check_config``: types, finite numbers, ranges, ``init_from``),
  all before any training (a bad value is one line naming the field, not a
  failure after the first model has trained). Returns ``configs``."""
  from advinv_jax.train import check_config  # after the flags: imports jax
  for c in configs.values():
    cli.apply_overrides(c, overrides)
    check_config(c)
  return configs


def load_config(name: str, variant: Optional[str] = None):
  """``configs/<name>.py``'s ``get_config(variant)`` (e.g. ``("mnist",
  "ice,cpu")``)."""
  mod = importlib.import_module(f"configs.{name}")
  return mod.get_config(variant) if variant else mod.get_config()


def tiny(config, *, model=True):
  """Shrinks a config to a seconds-long smoke run on the bundled digits."""
  c = config
  if c.data.name in ("mnist", "cifar10", "imagenet2012"):
    c.data.name = "digits"
    c.data.pad_to = 0
  if c.data.shift.enabled:
    c.data.shift.position = (0, 0)
  if model:
    c.model.firevnet.depth = 1
    c.model.firevnet.width = 8
    c.model.firevnet.levels = min(c.model.firevnet.levels, 3)
    c.model.cnn.features = (8, 8)
    c.model.cnn.hidden = c.model.mlp.hidden = (16,)
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
  c.report.autoattack_num_examples = 16
  c.report.autoattack_l2_eps = ()       # one norm: the tests' compile time
  c.report.autoattack_steps = 3
  c.report.autoattack_num_targets = 1
  c.report.autoattack_queries = 20
  c.report.autoattack_fab_steps = 3
  c.report.autoattack_fmn_steps = 3
  c.report.invariance_pairs = 4         # the search and the oracle: run,
  c.report.invariance_steps = 20        # at the smallest sizes
  c.report.oracle_steps = 30
  c.report.oracle_num_train = 512
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
    name = f"{name}, " + " ".join(f"--config.{k}={v}"
                                  for k, v in data["overrides"].items())
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


def check_scale(scale: str, scales: Sequence[str] = SCALES):
  if scale not in scales:
    raise cli.UsageError(f"--scale={scale!r} is not one of {tuple(scales)}.")
