"""Low-rank margin study (Nar et al. 2019): CE vs differential training vs SVM.

Sweeps the subspace dimension ``k`` of the data (ambient ``d`` fixed) and
trains, for each step rule (plain GD, normalised GD ``lr * grad / loss``),
three linear classifiers per (k, seed), and solves the SVM:

* ``ce_small``: logistic/CE loss with a trained bias, ``||w0|| = small_init``;
* ``ce_large``: the same from ``||w0|| = large_init`` (the component of ``w``
  orthogonal to the data's span never moves, so the margin shrinks as ``k``
  falls);
* ``differential``: differential training + midpoint bias, small init;
* ``svm``: the exact hard-margin SVM (the maximum).

Reports the geometric margin of each and its ratio to the SVM margin, writes
``results.json`` and ``margin_vs_k.png`` into ``--workdir`` and prints one
results line. Usage::

  python -m experiments.lowrank_margin --workdir=workdirs/lowrank_margin
"""
from __future__ import annotations

import json
import os
import time

from absl import flags
import numpy as np

from advinv_jax import cli
from advinv_jax.config import ConfigError
from configs import lowrank_margin as lowrank_margin_config

_CONFIG = cli.define_config(
    "config", lowrank_margin_config.get_config(),
    "configs/lowrank_margin.py; override fields with --config.<field>=<value>, "
    "e.g. --config.d=50")
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/lowrank_margin",
                               "Output folder for results.json and the plot.")

METHODS = ("ce_small", "ce_large", "differential")


def run(config, workdir: str) -> dict:
  """Runs the sweep; returns the results dict (also written to workdir)."""
  ks = tuple(int(k) for k in config.ks)
  for rule in config.step_rules:
    if rule not in ("gd", "normalized"):
      raise ConfigError(f"config.step_rules entries must be 'gd' or "
                       f"'normalized', got {rule!r}.")
  if any(k < 1 or k >= config.d for k in ks) and config.offset != 0:
    raise ConfigError(f"config.ks={ks} must lie in [1, d-1]={config.d - 1} "
                     "when config.offset != 0.")
  import jax  # pylint: disable=g-import-not-at-top  (after the flags parse)
  from advinv_jax import lowrank  # pylint: disable=g-import-not-at-top
  start = time.time()
  cells = []
  for k in ks:
    for seed in config.seeds:
      k_data, k_init = jax.random.split(jax.random.PRNGKey(seed))
      data = lowrank.make_lowrank_data(
          k_data, config.n, config.d, k, offset=config.offset,
          shift=config.shift, margin_gap=config.margin_gap,
          spread=config.spread)
      _, _, svm_margin = lowrank.hard_margin_svm(data.x, data.y)
      cell = {"k": k, "seed": int(seed), "svm": svm_margin}
      for rule in config.step_rules:
        gd = config[rule]
        common = dict(steps=gd.steps, lr=gd.lr, normalized=rule == "normalized",
                      key=k_init)
        for method in METHODS:
          loss = "ce" if method.startswith("ce") else "differential"
          scale = config.large_init if method == "ce_large" else (
              config.small_init)
          fit = lowrank.train_linear(data.x, data.y, loss, init_scale=scale,
                                     **common)
          margin = float(lowrank.geometric_margin(fit.w, fit.b, data.x,
                                                  data.y))
          name = f"{rule}/{method}"
          cell[name] = margin
          cell[name + "_ratio"] = margin / svm_margin
          cell[name + "_final_loss"] = float(fit.losses[-1])
      cells.append(cell)

  summary = {}
  for k in ks:
    rows = [c for c in cells if c["k"] == k]
    summary[str(k)] = {
        name + "_ratio": {
            "mean": float(np.mean([r[name + "_ratio"] for r in rows])),
            "std": float(np.std([r[name + "_ratio"] for r in rows]))}
        for name in _names(config)}
    summary[str(k)]["svm_margin_mean"] = float(
        np.mean([r["svm"] for r in rows]))
  results = {
      "config": config.to_dict(),
      "toy_2d_ce_ratio_closed_form": lowrank.toy_2d_ce_margin_ratio(
          config.shift, config.offset),
      "cells": cells,
      "summary": summary,
      "seconds": time.time() - start,
  }
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  _plot(results, ks, os.path.join(workdir, "margin_vs_k.png"))
  return results


def _names(config):
  return [f"{rule}/{method}" for rule in config["step_rules"]
          for method in METHODS]


def _plot(results, ks, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  cfg = results["config"]
  rules = list(cfg["step_rules"])
  fig, axes = plt.subplots(1, len(rules), figsize=(5.0 * len(rules), 3.8),
                           squeeze=False)
  labels = {"ce_small": "CE, small init", "ce_large": "CE, large init",
            "differential": "differential + midpoint bias"}
  for ax, rule in zip(axes[0], rules):
    for method in METHODS:
      name = f"{rule}/{method}_ratio"
      mean = [results["summary"][str(k)][name]["mean"] for k in ks]
      std = [results["summary"][str(k)][name]["std"] for k in ks]
      ax.errorbar(ks, mean, yerr=std, marker="o", capsize=3,
                  label=labels[method])
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="hard-margin SVM")
    ax.set_xscale("log")
    ax.set_xlabel(f"subspace dimension k (d = {cfg['d']})")
    ax.set_ylabel("margin / SVM margin")
    ax.set_ylim(0, 1.1)
    title = "plain GD" if rule == "gd" else "normalised GD (lr * grad / loss)"
    ax.set_title(f"{title}: {cfg[rule]['steps']} steps, lr {cfg[rule]['lr']}",
                 fontsize=9)
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def results_line(results) -> str:
  parts = []
  for k, row in results["summary"].items():
    parts.append(f"k={k}: " + " ".join(
        f"{name}={row[name + '_ratio']['mean']:.3f}"
        for name in _names(results["config"])))
  return ("lowrank_margin (margin / SVM margin, mean over seeds) | " +
          " | ".join(parts) + f" | {results['seconds']:.1f}s")


def main(argv):
  del argv
  config = _CONFIG.value
  results = run(config, _WORKDIR.value)
  print(results_line(results))


if __name__ == "__main__":
  cli.run(main)
