"""Any trained checkpoint -> the robustness report (sensitivity beside
invariance, docs/report.md): AutoAttack headline, PGD robust accuracy vs eps
(linf, l2), DeepFool minimal perturbations, and for invertible models the
metamer grid with its validity, nuisance interpolations and the post-hoc
z_n classifier.

  python -m experiments.robustness_report --workdir=workdirs/demo \
      [--split=test --num_examples=512] [--full]
Writes <workdir>/report_<split>/report.html, report.md, report.json, PNGs
(nothing else in the workdir is touched: the checkpoints are only read).
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


def run(workdir: str, split: str = "test", num_examples: int = 0,
        full: bool = False):
  import jax  # pylint: disable=g-import-not-at-top  (after the flags parse)
  from advinv_jax.report import report_settings, robustness_report
  from advinv_jax.train import load_trained
  from advinv_jax.train._workdir import staged_dir
  if split not in ("train", "test"):
    raise cli.UsageError(f"--split={split!r} must be train or test.")
  cfg, exp, state, extras = load_trained(workdir)
  src = exp.dataset.split(split)
  rcfg = cfg.report
  with rcfg.unlocked():
    rcfg.full = bool(full or rcfg.get("full", False))
  n = min(num_examples or report_settings(rcfg)["num_examples"], len(src))
  idx = np.sort(np.random.default_rng(0).choice(len(src), n, replace=False))
  got = src.get(idx)
  with rcfg.unlocked():
    rcfg.num_examples = n
  nuisance = None
  if exp.model.invertible:
    ntr = min(len(exp.dataset.train), 10000)
    nuisance = (exp.dataset.split("train").get(np.arange(ntr)), got)
  # Staged: the report's files appear complete or not at all.
  with staged_dir(os.path.join(workdir, f"report_{split}")) as out_dir:
    rep = robustness_report(
        exp.model, state.params, got["image"], got["label"], rcfg, out_dir,
        jax.random.PRNGKey(1), nuisance_data=nuisance,
        bias=extras.get("differential_bias"), bounds=exp.dataset.bounds)
  print(json.dumps({k: v for k, v in rep.items()
                    if k in ("warnings", "headline", "clean_accuracy")},
                   indent=1, default=str))
  print("report: " + os.path.abspath(
      os.path.join(workdir, f"report_{split}", "report.html")))
  return rep


def main(argv):
  del argv
  if not _WORKDIR.value:
    raise cli.UsageError("--workdir=<a workdir of advinv_jax.main> is required.")
  run(_WORKDIR.value, _SPLIT.value, _NUM.value, _FULL.value)


if __name__ == "__main__":
  cli.run(main)
