"""Nar et al. 2019: cross-entropy vs differential training on a binary task.

For each model: clean accuracy, and the share of train and test images for
which PGD (linf and l2) finds an adversarial example within eps, swept over
eps, plus the median minimal (DeepFool) perturbation.

  ADVINV_MNIST_DIR=../shared/data/mnist python experiments/differential_binary.py \
      --scale=cpu --workdir=workdirs/differential_binary
Scales: tiny (digits 3 vs 8, ~1 min); cpu (MNIST 3 vs 7, ~10 min on 2 cores);
paper (CIFAR-10 airplane vs automobile: needs prepared tfds data, pass
--config.data.data_dir through configs/binary_*.py).
"""
from __future__ import annotations

import os

import jax
import numpy as np
from absl import app, flags

import _common as C

_SCALE = flags.DEFINE_string("scale", "cpu", "tiny | cpu | paper")
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/differential_binary", "")
_NUM = flags.DEFINE_integer("num_examples", 512,
                            "images per split for the attack sweep")


def configs(scale):
  out = {}
  for loss in ("ce", "differential"):
    if scale == "tiny":
      c = C.tiny(C.load_config(f"mnist_binary_{loss}"))
      c.data.classes = (3, 8)
    elif scale == "cpu":
      c = C.load_config(f"mnist_binary_{loss}")
    else:
      c = C.load_config(f"binary_{loss}")
    out[loss] = c
  return out


def split_report(workdir, split, num):
  """robustness_report on the first ``num`` images of a split."""
  from advinv_jax.report import robustness_report
  from advinv_jax.train import load_trained
  cfg, exp, state, extras = load_trained(workdir)
  src = getattr(exp.dataset, split)
  n = min(num, len(src))
  # A fixed, seeded sample of the split (not the first n: they may be sorted).
  idx = np.sort(np.random.default_rng(0).choice(len(src), n, replace=False))
  got = src.get(idx)
  rcfg = cfg.report
  with rcfg.unlocked():
    rcfg.num_examples = n
  return robustness_report(
      exp.model, state.params, got["image"], got["label"], rcfg,
      os.path.join(workdir, f"report_{split}"), jax.random.PRNGKey(1),
      bias=extras.get("differential_bias"), bounds=exp.dataset.bounds)


def run(scale: str, workdir: str, num_examples: int = 512):
  C.check_scale(scale)
  data, rows = {"scale": scale}, []
  eps = {}
  for loss, cfg in configs(scale).items():
    cfg.report.enabled = False
    wd = os.path.join(workdir, loss)
    res = C.train_and_report(cfg, wd)
    entry = {"clean_test_accuracy": res["results"]["test"]["accuracy"],
             "seconds": res["seconds"]}
    for split in ("train", "test"):
      rep = split_report(wd, split, num_examples)
      entry[split] = {
          norm: {"eps": rep["pgd"][norm]["eps"],
                 "attack_success_ratio": rep["pgd"][norm][
                     "attack_success_ratio_all"],
                 "median_minimal_perturbation": rep["deepfool"][norm][
                     "median_norm"]}
          for norm in ("linf", "l2")}
    data[loss] = entry
    for norm in ("linf", "l2"):
      eps[norm] = entry["test"][norm]["eps"]
      for split in ("train", "test"):
        e = entry[split][norm]
        rows.append([loss, norm, split,
                     C.fmt(entry["clean_test_accuracy"], pct=True),
                     " / ".join(C.fmt(v, pct=True, digits=1)
                                for v in e["attack_success_ratio"]),
                     C.fmt(e["median_minimal_perturbation"], digits=3)])
  C.write_results(
      workdir, f"differential_binary (scale={scale})",
      ["loss", "norm", "split", "clean test acc %",
       "attack success % at eps " + "; ".join(
           f"{n}: {tuple(eps.get(n, ()))}" for n in ("linf", "l2")),
       "median minimal perturbation (DeepFool)"], rows, data,
      notes="Attack success = share of all images (correct or not) for which "
            "PGD finds a misclassified point within eps (Nar et al.'s "
            "metric). Paper's CIFAR-10 numbers could not be verified.")
  return data


def main(argv):
  del argv
  run(_SCALE.value, _WORKDIR.value, _NUM.value)


if __name__ == "__main__":
  app.run(main)
