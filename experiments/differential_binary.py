"""Nar et al. 2019: cross-entropy vs differential training on a binary task.

For each model: clean accuracy, and the share of train and test images for
which PGD (linf and l2) finds an adversarial example within eps, swept over
eps, plus the median minimal (DeepFool) perturbation (Nar et al.'s metrics;
for AutoAttack's robust accuracy of a model run
``python -m experiments.robustness_report --workdir=<workdir>/<entry>``).
Writes results.json, results.md and attack_success.png (test-split success
vs eps) into --workdir.

  ADVINV_MNIST_DIR=/path/to/mnist python -m experiments.differential_binary \
      --scale=cpu --workdir=workdirs/differential_binary --seeds=0,1,2
Scales: tiny (digits 3 vs 8, ~1 min); cpu (MNIST 3 vs 7, ~10 min per seed on
2 cores);
paper (CIFAR-10 airplane vs automobile: needs prepared tfds data, pass
--config.data.data_dir, configs/binary.py).

Protocols (``--protocols``, any of them): ``end_to_end`` (the small CNN
trained with each loss), ``frozen_features`` (a fresh last layer per loss on
the end-to-end CE network's frozen features), ``linear`` (a linear classifier
on the pixels trained by plain SGD for 10k steps, configs' ``:linear``
variant: the setting of Nar et al.'s analysis; ~6 min per seed at cpu scale,
both models and their reports).

The differential model's decision bias follows
``config.loss.differential.bias`` (default ``max_accuracy``: the widest gap
among the accuracy-maximising thresholds on the training scores, which is Nar
et al.'s midpoint whenever those scores are separable; ``midpoint`` is the
paper's rule, which one misclassified training point per class can move
arbitrarily).
"""
from __future__ import annotations

import copy
import os
from typing import Sequence

import numpy as np
from absl import flags

from advinv_jax import cli
from experiments import _common as C

_SCALE = flags.DEFINE_string("scale", "cpu", "tiny | cpu | paper")
_CONFIG = C.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/differential_binary", "")
_NUM = flags.DEFINE_integer("num_examples", 512,
                            "images per split for the attack sweep")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "training seeds (one model per "
                           "loss and seed; results are means over seeds)")
_PROTOCOLS = flags.DEFINE_list(
    "protocols", ["end_to_end"], "end_to_end (whole CNN per loss), "
    "frozen_features (a new last layer per loss on the CE network's frozen "
    "features) and/or linear (a linear classifier on the pixels, plain SGD)")


def configs(scale, model="cnn"):
  """``{loss: config}`` for ``ce`` and ``differential`` at ``scale``;
  ``model`` is configs/binary.py's model variant (``'cnn'``, ``'linear'``)."""
  out = {}
  data = "cifar10" if scale == "paper" else "mnist"
  for loss in ("ce", "differential"):
    c = C.load_config("binary", f"{loss},{data},{model}")
    if scale == "tiny":
      # The linear model keeps its (empty) hidden layers.
      c = C.tiny(c, model=model != "linear")
      c.data.classes = (3, 8)
    out[loss] = c
  return out


def split_report(trained, workdir, split, num):
  """robustness_report on a seeded sample of ``num`` images of a split.

  ``trained``: ``load_trained(workdir)``'s tuple (loaded once per model).
  """
  import jax  # pylint: disable=g-import-not-at-top  (after the flags parse)
  from advinv_jax.report import robustness_report
  cfg, exp, state, extras = trained
  src = exp.dataset.split(split)
  n = min(num, len(src))
  # A fixed, seeded sample of the split (not the first n: they may be sorted).
  idx = np.sort(np.random.default_rng(0).choice(len(src), n, replace=False))
  got = src.get(idx)
  rcfg = cfg.report
  with rcfg.unlocked():
    rcfg.num_examples = n
    # The table is Nar et al.'s metric (PGD success, DeepFool): AutoAttack
    # is left to experiments.robustness_report on a workdir.
    rcfg.autoattack_num_examples = 0
  return robustness_report(
      exp.model, state.params, got["image"], got["label"], rcfg,
      os.path.join(workdir, f"report_{split}"), jax.random.PRNGKey(1),
      bias=extras.get("differential_bias"), bounds=exp.dataset.bounds)


def _one_seed(cfg, wd, num_examples):
  """Trains one model and attacks a sample of its train and test splits."""
  from advinv_jax.train import load_trained
  res = C.train_and_report(cfg, wd)
  entry = {"clean_test_accuracy": res["results"]["test"]["accuracy"],
           "clean_train_accuracy": res["results"]["train"]["accuracy"],
           "differential_bias": res["results"]["extras"].get(
               "differential_bias"),
           "seconds": res["seconds"]}
  trained = load_trained(wd)
  for split in ("train", "test"):
    rep = split_report(trained, wd, split, num_examples)
    entry[split] = {
        norm: {"eps": rep["pgd"][norm]["eps"],
               "attack_success_ratio": rep["pgd"][norm][
                   "attack_success_ratio_all"],
               "median_minimal_perturbation": rep["deepfool"][norm][
                   "median_norm"]}
        for norm in ("linf", "l2")}
  return entry


def _spread(values, pct=False, digits=2):
  """``mean`` or ``mean (min-max)`` over seeds."""
  v = np.asarray(values, np.float64)
  m = C.fmt(float(v.mean()), pct=pct, digits=digits)
  if len(v) == 1:
    return m
  return (f"{m} ({C.fmt(float(v.min()), pct=pct, digits=digits)}-"
          f"{C.fmt(float(v.max()), pct=pct, digits=digits)})")


PROTOCOLS = ("end_to_end", "frozen_features", "linear")


def _head_config(cfg, ce_workdir):
  """``cfg`` retrained as a new last layer on ``ce_workdir``'s frozen
  features (Nar et al.'s setting: a linear classifier on fixed features)."""
  c = copy.deepcopy(cfg)
  head = f"Dense_{len(tuple(c.model[c.model.name].hidden))}/"
  c.train.init_from = ce_workdir
  c.train.reinit = c.train.trainable = head
  return c


def _aggregate(per_seed, bias_rule):
  entry = {"bias_rule": bias_rule, "per_seed": per_seed}
  for k in ("clean_test_accuracy", "clean_train_accuracy", "seconds"):
    entry[k] = float(np.mean([e[k] for e in per_seed]))
  for split in ("train", "test"):
    entry[split] = {}
    for norm in ("linf", "l2"):
      succ = [e[split][norm]["attack_success_ratio"] for e in per_seed]
      med = [e[split][norm]["median_minimal_perturbation"] for e in per_seed]
      entry[split][norm] = {
          "eps": per_seed[0][split][norm]["eps"],
          "attack_success_ratio": np.mean(succ, axis=0).tolist(),
          "attack_success_ratio_per_seed": succ,
          "median_minimal_perturbation": float(np.mean(med)),
          "median_minimal_perturbation_per_seed": med}
  return entry


def run(scale: str, workdir: str, num_examples: int = 512,
        seeds: Sequence[int] = (0,),
        protocols: Sequence[str] = ("end_to_end",), overrides=None):
  """Trains CE and differential models (one per seed) and attacks them.

  Protocols: ``end_to_end`` trains the whole CNN with each loss (entries
  ``ce``, ``differential``); ``frozen_features`` takes each seed's end-to-end
  CE network and retrains only a fresh last layer on its frozen features with
  each loss (entries ``head_ce``, ``head_differential``); ``linear`` trains a
  linear classifier on the pixels with plain SGD (entries ``linear_ce``,
  ``linear_differential``) — the setting of Nar et al.'s analysis. Results
  per entry are means over seeds (``*_per_seed`` keep each seed). Workdirs:
  ``<workdir>/<entry>`` for seed 0, ``<workdir>/<entry>_seed<s>`` otherwise.
  """
  C.check_scale(scale)
  seeds = tuple(int(s) for s in seeds)
  if not seeds:
    raise cli.UsageError("--seeds is empty: give at least one seed, e.g. 0.")
  bad = [p for p in protocols if p not in PROTOCOLS]
  if bad or not protocols:
    raise cli.UsageError(f"--protocols={list(protocols)}: choose from "
                     f"{list(PROTOCOLS)}.")
  overrides = dict(overrides or {})
  data = {"scale": scale, "seeds": list(seeds), "protocols": list(protocols),
          "overrides": dict(overrides)}
  rows, eps = [], {}
  cfgs = configs(scale)
  linear = configs(scale, "linear")
  for c in list(cfgs.values()) + list(linear.values()):
    c.report.enabled = False
  C.prepare({**cfgs, **{f"linear_{k}": v for k, v in linear.items()}},
            overrides)

  def wd(entry, seed):
    return os.path.join(workdir, entry if seed == 0 else f"{entry}_seed{seed}")

  # (entry name, loss, base config, config maker); CE end to end comes first
  jobs = []
  if "end_to_end" in protocols:
    jobs += [(loss, loss, cfgs[loss], lambda c, seed: c)
             for loss in ("ce", "differential")]
  elif "frozen_features" in protocols:   # the heads need each seed's CE net
    for seed in seeds:
      c = copy.deepcopy(cfgs["ce"])
      c.seed = seed
      C.train_and_report(c, wd("ce", seed))
  if "frozen_features" in protocols:
    jobs += [(f"head_{loss}", loss, cfgs[loss],
              lambda c, seed: _head_config(c, wd("ce", seed)))
             for loss in ("ce", "differential")]
  if "linear" in protocols:
    jobs += [(f"linear_{loss}", loss, linear[loss], lambda c, seed: c)
             for loss in ("ce", "differential")]
  for name, loss, base, make in jobs:
    per_seed = []
    for seed in seeds:
      c = make(copy.deepcopy(base), seed)
      c.seed = seed
      per_seed.append(_one_seed(c, wd(name, seed), num_examples))
    entry = _aggregate(per_seed, base.loss.differential.bias
                       if loss == "differential" else None)
    data[name] = entry
    for norm in ("linf", "l2"):
      eps[norm] = entry["test"][norm]["eps"]
      for split in ("train", "test"):
        e = entry[split][norm]
        cols = np.asarray(e["attack_success_ratio_per_seed"])
        rows.append([name, norm, split,
                     _spread([x["clean_test_accuracy"] for x in per_seed],
                             pct=True),
                     " / ".join(_spread(cols[:, j], pct=True, digits=1)
                                for j in range(cols.shape[1])),
                     _spread(e["median_minimal_perturbation_per_seed"],
                             digits=3)])
  C.write_results(
      workdir, f"differential_binary (scale={scale}, seeds {list(seeds)}, "
      f"protocols {list(protocols)})",
      ["model", "norm", "split", "clean test acc %",
       "attack success % at eps " + "; ".join(
           f"{n}: {tuple(eps.get(n, ()))}" for n in ("linf", "l2")),
       "median minimal perturbation (DeepFool)"], rows, data,
      notes="Attack success = share of all images (correct or not) for which "
            "PGD finds a misclassified point within eps (Nar et al.'s "
            "metric). Cells: mean over seeds (min-max). head_*: a fresh last "
            "layer trained on the frozen features of the end-to-end CE "
            "network of the same seed. linear_*: a linear classifier on the "
            "pixels, plain SGD (lr 1, batch 1024, 10k steps). Differential "
            "bias rule: "
            f"{cfgs['differential'].loss.differential.bias}. Paper's CIFAR-10 "
            "numbers could not be verified.")
  plot_attack_success(data, os.path.join(workdir, "attack_success.png"))
  return data


def plot_attack_success(data, path):
  """``attack_success.png``: test-split attack success vs eps (linf, l2), one
  line per entry of ``data`` (``run``'s result), CE solid, differential
  dashed, the seeds' min-max shaded; one colour per protocol (end to end
  blue, frozen-feature heads orange, linear green), whichever were run."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  prefixes = ("", "head_", "linear_")     # PROTOCOLS' entry-name prefixes
  entries = [(p + loss, f"C{i}") for i, p in enumerate(prefixes)
             for loss in ("ce", "differential") if p + loss in data]
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
  for ax, norm in zip(axes, ("linf", "l2")):
    for name, color in entries:
      e = data[name]["test"][norm]
      eps = np.asarray(e["eps"])
      per_seed = 100 * np.asarray(e["attack_success_ratio_per_seed"])
      ls = "--" if name.endswith("differential") else "-"
      ax.plot(eps, per_seed.mean(0), ls, color=color, marker="o", ms=3,
              label=name)
      ax.fill_between(eps, per_seed.min(0), per_seed.max(0), color=color,
                      alpha=0.15)
    ax.set_xlabel(f"eps ({norm})")
    ax.set_ylabel("attack success, test images (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.suptitle(f"CE vs differential training (scale={data['scale']}, seeds "
               f"{data['seeds']}): PGD success within eps", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  run(_SCALE.value, _WORKDIR.value, _NUM.value,
      [int(v) for v in _SEEDS.value], _PROTOCOLS.value, C.overrides())


if __name__ == "__main__":
  cli.run(main)
