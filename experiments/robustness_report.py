"""Any trained checkpoint -> the robustness report (sensitivity beside
invariance, docs/report.md): AutoAttack headline, PGD robust accuracy vs eps
(linf, l2), DeepFool minimal perturbations, and for invertible models the
metamer grid with its validity, nuisance interpolations and the post-hoc
z_n classifier.

  python -m experiments.robustness_report --workdir=workdirs/demo \
      [--split=test --num_examples=512] [--full] [--out=DIR] [--quiet]
Writes report.html, report.md, report.json, source.json (which checkpoint
step of which run, and whether the run had finished) and PNGs into --out,
by default <workdir>/report_<split>; with --out nothing is written into the
workdir (a read-only run folder works). The checkpoints are only read, so a
run that is still training can be reported on: the newest complete step is
used, and one that the run's rotation deletes while it is read is retried.
--full: the paper-grade settings (config.REPORT_FULL: AutoAttack standard at
every eps, PGD-100 x 5 restarts, 1000 inputs).
Cost: ~1-2 min for 256 digits on the default fiRevNet with the fast
settings; --full is GPU work (or an hour or more on a CPU).
"""
from __future__ import annotations

import json
import os

import numpy as np
from absl import flags

from advinv_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "workdir of a trained run")
_SPLIT = flags.DEFINE_string("split", "test", "train | test")
_NUM = flags.DEFINE_integer("num_examples", 0, "0: config.report.num_examples")
_FULL = flags.DEFINE_bool("full", False, "paper-grade settings "
                          "(config.report.full=True)")
_QUIET = flags.DEFINE_bool("quiet", False, "no progress lines on stderr")
_OUT = flags.DEFINE_string("out", "", "folder for the report (default: "
                           "<workdir>/report_<split>; otherwise nothing is "
                           "written into the workdir)")


def _check_workdir(workdir: str) -> None:
  """A missing or unreadable run folder: one line (before jax loads)."""
  if not os.path.isdir(workdir):
    raise cli.UsageError(f"--workdir={workdir!r} is not a folder; give the "
                         "--workdir of a run of advinv_jax.main.")
  if not os.access(workdir, os.R_OK | os.X_OK):
    raise cli.UsageError(f"--workdir={workdir!r} cannot be read (permission "
                         "denied); run as its owner, or copy it.")


def _prepare_out(out_dir: str, given: bool):
  """Creates ``out_dir`` and checks that it can be written (one line if not;
  nothing left behind); returns the folders it created."""
  # pylint: disable-next=g-import-not-at-top  (after the flags parse)
  from advinv_jax.runs import make_writable_dir, shorten
  try:
    created = make_writable_dir(out_dir)
  except OSError as e:
    fix = ("pass another --out" if given else "the run folder is read-only: "
           "pass --out=<a folder you can write to>")
    raise cli.UsageError(f"cannot write the report into "
                         f"{shorten(repr(out_dir))} "
                         f"({e.strerror}); {fix}.") from None
  return created


def run(workdir: str, split: str = "test", num_examples: int = 0,
        full: bool = False, out: str = "", quiet: bool = False):
  if split not in ("train", "test"):
    raise cli.UsageError(f"--split={split!r} must be train or test.")
  _check_workdir(workdir)
  import jax  # pylint: disable=g-import-not-at-top  (after the flags parse)
  from advinv_jax.report import (print_progress, provenance_from_config,
                                 report_settings, robustness_report)
  from advinv_jax.runs import (clean_stale_staging, read_json_file,
                               remove_if_created, staged_dir, write_atomic)
  from advinv_jax.train import load_trained
  out_dir = out or os.path.join(workdir, f"report_{split}")
  created = _prepare_out(out_dir, bool(out))
  try:
    cfg, exp, state, extras = load_trained(workdir)
  except BaseException:
    remove_if_created(created)
    raise
  step, total = int(state.step), int(exp.total_steps)
  finished = step >= total and read_json_file(
      os.path.join(workdir, "results.json"),
      "the run counts as unfinished") is not None
  source = {"workdir": os.path.abspath(workdir), "checkpoint_step": step,
            "total_steps": total, "finished": finished}
  print(f"{workdir}: checkpoint step {step} of {total}, "
        + ("a finished run" if finished else
           "an unfinished run (still training, or stopped before its end)"),
        flush=True)
  src = exp.dataset.split(split)
  rcfg = cfg.report
  with rcfg.unlocked():
    rcfg.full = bool(full or rcfg.get("full", False))
  n = min(num_examples or report_settings(rcfg)["num_examples"], len(src))
  idx = np.sort(np.random.default_rng(0).choice(len(src), n, replace=False))
  got = src.get(idx)
  with rcfg.unlocked():
    rcfg.num_examples = n
  # Training images: the nuisance classifier's (invertible models) and the
  # oracle's that judges the metamers (every model).
  ntr = min(len(exp.dataset.train), 10000)
  nuisance = (exp.dataset.split("train").get(np.arange(ntr)), got)
  clean_stale_staging(out_dir)
  # Staged: the report's files appear complete or not at all.
  with staged_dir(out_dir) as stage:
    rep = robustness_report(
        exp.model, state.params, got["image"], got["label"], rcfg, stage,
        jax.random.PRNGKey(1), nuisance_data=nuisance,
        bias=extras.get("differential_bias"), bounds=exp.dataset.bounds,
        progress=None if quiet else print_progress,
        provenance=provenance_from_config(
            cfg, checkpoint_step=step, split=split, indices=idx,
            split_size=len(src)))
    write_atomic(os.path.join(stage, "source.json"),
                 json.dumps(source, indent=1))
  print(json.dumps({"source": source, **{
      k: v for k, v in rep.items()
      if k in ("warnings", "headline", "clean_accuracy")}},
                   indent=1, default=str))
  print("report: " + os.path.abspath(os.path.join(out_dir, "report.html")))
  return rep


def main(argv):
  del argv
  if not _WORKDIR.value:
    raise cli.UsageError("--workdir=<a workdir of advinv_jax.main> is required.")
  run(_WORKDIR.value, _SPLIT.value, _NUM.value, _FULL.value, _OUT.value,
      _QUIET.value)


if __name__ == "__main__":
  cli.run(main)
