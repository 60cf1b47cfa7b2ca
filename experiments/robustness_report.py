"""Any trained checkpoint -> the full robustness report (sensitivity beside
invariance): clean accuracy, PGD robust accuracy vs eps (linf, l2), attack
success ratio, DeepFool minimal perturbations, and for invertible models the
metamer grid, nuisance interpolations and the post-hoc z_n classifier.

  python -m experiments.robustness_report --workdir=workdirs/demo \
      [--split=test --num_examples=512]
Writes <workdir>/report_<split>/report.json and PNGs.
Cost: ~1 min for 256 digits on a small fiRevNet; scales with the model.
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


def run(workdir: str, split: str = "test", num_examples: int = 0):
  import jax  # pylint: disable=g-import-not-at-top  (after the flags parse)
  from advinv_jax.report import robustness_report
  from advinv_jax.train import load_trained
  if split not in ("train", "test"):
    raise cli.UsageError(f"--split={split!r} must be train or test.")
  cfg, exp, state, extras = load_trained(workdir)
  src = getattr(exp.dataset, split)
  n = min(num_examples or cfg.report.num_examples, len(src))
  idx = np.sort(np.random.default_rng(0).choice(len(src), n, replace=False))
  got = src.get(idx)
  rcfg = cfg.report
  with rcfg.unlocked():
    rcfg.num_examples = n
  nuisance = None
  if exp.model.invertible:
    ntr = min(len(exp.dataset.train), 10000)
    nuisance = (exp.dataset.train.get(np.arange(ntr)), got)
  rep = robustness_report(
      exp.model, state.params, got["image"], got["label"], rcfg,
      os.path.join(workdir, f"report_{split}"), jax.random.PRNGKey(1),
      nuisance_data=nuisance, bias=extras.get("differential_bias"),
      bounds=exp.dataset.bounds)
  print(json.dumps({k: v for k, v in rep.items()
                    if k in ("clean_accuracy", "pgd", "deepfool")},
                   indent=1, default=str))
  return rep


def main(argv):
  del argv
  if not _WORKDIR.value:
    raise cli.UsageError("--workdir=<a workdir of advinv_jax.main> is required.")
  run(_WORKDIR.value, _SPLIT.value, _NUM.value)


if __name__ == "__main__":
  cli.run(main)
