"""Benchmark: do the demo model's CE metamers show excessive invariance?

Not a test. Trains the demo's model once per candidate change of the model
or its training, then builds metamers ``x = F^-1(z_s(A), z_n(B))`` for 256 random
pairs (A, B) of test images of different classes (seeded) and measures:

* validity (``advinv_jax.invariance.metamer_validity``): logit drift and
  round trip within 1e-3;
* bounds: the share of metamer pixels inside [0, 1], strictly and within
  half an 8-bit grey level (0.5 / 255; a perfect round trip of a real digit
  already puts ~27% of its pixels a few 1e-7 below 0, its exact-zero
  background), and the largest overshoot;
* what they look like: the library's oracle (``invariance.train_oracle``,
  a small CNN trained on the digits' training split, cached in the run
  folder) reads each metamer as B's class, A's class or another
  (``judge_metamers``);
* the clean test accuracy and the training wall time (compile included).

Each candidate changes the schema's defaults
(``advinv_jax.config.default_config()``: a fiRevNet of 3 levels x 4
additive steps, width 32, plain CE, Adam 1e-3, 10 epochs of batch 128 on
the digits: candidate ``ce``); the table marks the candidate that
``configs/default.py`` (``make demo``) trains.

The goal (the demo shows the phenomenon): valid, >= 95% of pixels in
bounds with overshoot <= 0.1, read as B's class on a clear majority.
Prints a table and writes ``benchmarks/results/demo_metamers.json`` (rows
of candidates not run this time, already in that file, are kept)::

  python -m benchmarks.demo_metamers                       # every candidate
  python -m benchmarks.demo_metamers --candidates default,ce_nll

"logit" candidates put RealNVP's logit input layer first
(``model.firevnet.input_transform='logit'``, ``layers.LogitTransform``),
with ``alpha`` from a stated widening of the box its inverse may reach:
half a grey level of the digits' 17 levels (1/32: alpha 1/34), half an
8-bit grey level (1/510: alpha 1/512), or RealNVP's 0.05 (1/18).

"CE + likelihood" candidates run through the iCE objective with its
nuisance term switched off (``loss.ice.nuisance_weight=0``,
``nuisance_steps=0``): the network's loss is then exactly
``CE(z_s, y) + mle_weight * NLL`` (``losses.ice_network_loss``).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax import invariance as I
from advinv_jax import platform as advinv_platform
from advinv_jax.config import default_config
from benchmarks.metamer_validity import train_with_test_split
from configs import default as demo_config_file

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CE_NLL = {"loss.name": "ice", "loss.ice.nuisance_weight": 0.0,
           "loss.ice.nuisance_steps": 0}
# The logit input layer (layers.LogitTransform) with alpha from the widening
# of the box its inverse may reach: half a grey level of the digits' 17
# levels (1/32: alpha 1/34), half an 8-bit grey level (1/510: alpha 1/512),
# or RealNVP's alpha 0.05 (widening 1/18).
_LOGIT_ALPHAS = {"": 1 / 34, "_8bit": 1 / 512, "_a0.05": 0.05}
_ALPHA_NAMES = {"": ("alpha 1/34", "box widened by 1/32, half a digit grey "
                    "level"),
                "_8bit": ("alpha 1/512", "widened by 1/510, half an 8-bit "
                          "grey level"),
                "_a0.05": ("alpha 0.05", "RealNVP's; widened by 1/18")}


def _logit(tag):
  return {"model.firevnet.input_transform": "logit",
          "model.firevnet.input_alpha": _LOGIT_ALPHAS[tag]}


def _logit_candidates():
  """The logit input alone, with label smoothing 0.1 / 0.5 and with the
  flow's NLL, for each alpha."""
  out = {}
  for tag, (alpha, why) in _ALPHA_NAMES.items():
    base = _logit(tag)
    out[f"logit{tag}"] = (f"logit input, {alpha} ({why})", base)
    for eps in (0.1, 0.5):
      name = f"logit{tag}_smooth" + ("" if eps == 0.1 else "0.5")
      out[name] = (f"logit input {alpha}, label smoothing {eps}",
                   dict(base, **{"loss.label_smoothing": eps}))
    out[f"logit{tag}_ce_nll"] = (f"logit input {alpha}, + NLL (factorial)",
                                 dict(_CE_NLL, **base))
  return out


# name: (what it changes, {dotted config field: value}) on configs/default.py.
CANDIDATES = {
    "ce": ("plain CE (the schema's defaults)", {}),
    "ce_nll": ("+ the flow's NLL: factorial Gaussian on z_n, weight 1 "
               "(bits/dim)", dict(_CE_NLL)),
    "ce_nll_w0.1": ("+ the same NLL, weight 0.1",
                    dict(_CE_NLL, **{"loss.ice.mle_weight": 0.1})),
    "ce_nll_glow": ("+ the authors' NLL: N(0, 1) on all of z (logits "
                    "included), weight 1",
                    dict(_CE_NLL, **{"loss.ice.likelihood": "glow"})),
    "ce_nll_glow_bn": ("+ the authors' NLL and logit BatchNorm",
                       dict(_CE_NLL, **{"loss.ice.likelihood": "glow",
                                        "model.firevnet.logit_bn": True})),
    "ce_nll_dequant": ("+ NLL (factorial) + dequantisation noise U(0, 1/16)",
                       dict(_CE_NLL, **{"train.dequant_noise": 1 / 16})),
    "ce_nll_glow_dequant": ("+ the authors' NLL + dequantisation noise",
                            dict(_CE_NLL, **{"loss.ice.likelihood": "glow",
                                             "train.dequant_noise": 1 / 16})),
    "ce_nll_smooth": ("+ NLL (factorial) + label smoothing 0.1",
                      dict(_CE_NLL, **{"loss.label_smoothing": 0.1})),
    "ce_nll_levels1": ("+ NLL (factorial), 1 level (logits from a 4x4x4 "
                       "map)", dict(_CE_NLL, **{"model.firevnet.levels": 1})),
    "ce_nll_levels2": ("+ NLL (factorial), 2 levels",
                       dict(_CE_NLL, **{"model.firevnet.levels": 2})),
    "logit_bn": ("logit BatchNorm", {"model.firevnet.logit_bn": True}),
    "smooth": ("label smoothing 0.1", {"loss.label_smoothing": 0.1}),
    "smooth0.5": ("label smoothing 0.5", {"loss.label_smoothing": 0.5}),
    "smooth_dequant": ("label smoothing 0.1 + dequantisation noise",
                       {"loss.label_smoothing": 0.1,
                        "train.dequant_noise": 1 / 16}),
    "smooth_levels1": ("label smoothing 0.1, 1 level",
                       {"loss.label_smoothing": 0.1,
                        "model.firevnet.levels": 1}),
    "ce_nll_smooth_levels1": ("+ NLL (factorial) + label smoothing 0.1, 1 "
                              "level",
                              dict(_CE_NLL, **{"loss.label_smoothing": 0.1,
                                               "model.firevnet.levels": 1})),
    "smooth_epochs30": ("label smoothing 0.1, 30 epochs",
                        {"loss.label_smoothing": 0.1,
                         "train.num_epochs": 30}),
    "dequant": ("dequantisation noise U(0, 1/16)",
                {"train.dequant_noise": 1 / 16}),
    "epochs30": ("30 epochs instead of 10", {"train.num_epochs": 30}),
    "epochs2": ("2 epochs", {"train.num_epochs": 2}),
    "epochs4": ("4 epochs", {"train.num_epochs": 4}),
    "weight_decay": ("AdamW, weight decay 0.01",
                     {"optimizer.name": "adamw",
                      "optimizer.weight_decay": 0.01}),
    "levels1": ("1 level", {"model.firevnet.levels": 1}),
    "levels2": ("2 levels", {"model.firevnet.levels": 2}),
    "affine_exp_tanh": ("affine couplings, exp(tanh) scale in [1/e, e]",
                        {"model.firevnet.coupling": "affine",
                         "model.firevnet.affine_scale": "exp_tanh"}),
    **_logit_candidates(),
}
NUM_PAIRS = 256
HALF_GREY_LEVEL = 0.5 / 255


def candidate_config(overrides):
  """The schema's defaults with ``overrides`` (dotted path: value) set and
  the report off."""
  cfg = default_config()
  for path, value in overrides.items():
    *parents, leaf = path.split(".")
    node = cfg
    for p in parents:
      node = node[p]
    node[leaf] = value
  cfg.report.enabled = False
  cfg.train.progress_bar = False
  return cfg


def random_pairs(labels, n, seed=0):
  """``n`` index pairs (a, b) drawn uniformly with different labels."""
  rng = np.random.default_rng(seed)
  ia, ib = [], []
  while len(ia) < n:
    a, b = rng.integers(len(labels), size=2)
    if labels[a] != labels[b]:
      ia.append(a)
      ib.append(b)
  return np.asarray(ia), np.asarray(ib)


def measure(name, overrides, root):
  res, train_s, x, y = train_with_test_split(candidate_config(overrides),
                                             os.path.join(root, name))
  model, params, ds = res["model"], res["state"].params, res["dataset"]
  ia, ib = random_pairs(y, NUM_PAIRS)
  xa, xb = x[ia], x[ib]

  @jax.jit
  def metamers(params):
    z = I.metamer_latent(model, params, xa, xb)
    met = model.inverse(params, z)
    v = I.metamer_validity(model, params, met, z, bounds=ds.bounds)
    lo, hi = ds.bounds
    flat = met.reshape((met.shape[0], -1))
    inside_q = jnp.mean((flat >= lo - HALF_GREY_LEVEL)
                        & (flat <= hi + HALF_GREY_LEVEL))
    return met, v, inside_q

  met, v, inside_q = metamers(params)
  train = ds.train.get(np.arange(len(ds.train)))
  oracle = I.train_oracle(train["image"], train["label"],
                          cache_dir=os.path.join(root, "oracle"),
                          rng=jax.random.PRNGKey(0), x_test=x, y_test=y)
  judged = I.summarize_judgement(I.judge_metamers(
      jax.jit(oracle.logits), met, xa, xb, y[ia], y[ib], bounds=ds.bounds))
  validity = I.summarize_validity(v)
  return {"candidate": name, "changes": CANDIDATES[name][0],
          "trained_before": bool(res["finished_before"]),
          "overrides": overrides,
          "test_accuracy": float(res["eval"]["accuracy"]),
          "steps": int(res["steps"]), "train_seconds": train_s,
          "valid_share": validity["valid_share"],
          "logit_drift_max": validity["logit_drift_max"],
          "in_bounds_share": judged["in_bounds_share"],
          "in_bounds_share_half_grey_level": float(inside_q),
          "overshoot_max": judged["overshoot_max"],
          "overshoot_p95": float(np.percentile(np.asarray(v.overshoot), 95)),
          "oracle_as_nuisance_source": judged["as_nuisance_source"],
          "oracle_as_logits_source": judged["as_logits_source"],
          "oracle_as_other": judged["as_other"],
          "l2_to_nuisance_source_median":
              judged["l2_to_nuisance_source_median"],
          "l2_to_logits_source_median": judged["l2_to_logits_source_median"],
          "oracle_test_accuracy": oracle.test_accuracy,
          "num_pairs": NUM_PAIRS}


def demo_candidate():
  """The candidate ``configs/default.py`` trains (None if none is)."""
  want = demo_config_file.get_config()
  want.report.enabled, want.train.progress_bar = False, False
  for name, (_, overrides) in CANDIDATES.items():
    if candidate_config(overrides).to_dict() == want.to_dict():
      return name
  return None


def _pct(v):
  return "—" if v is None else f"{100 * v:.1f}"


def _overshoot(v):
  return f"{v:.2f}" if v >= 0.1 else f"{v:.3f}"


def table(rows):
  lines = ["| candidate | test acc % | valid % | max logit drift | in bounds % "
           "(±½ grey level) | max overshoot | oracle: B / A / other % | "
           "train s |", "|---|---|---|---|---|---|---|---|"]
  demo = demo_candidate()
  for r in rows:
    drift = r["logit_drift_max"]
    mark = " **(configs/default.py)**" if r["candidate"] == demo else ""
    lines.append(
        f"| `{r['candidate']}`{mark}: {r['changes']} | "
        f"{_pct(r['test_accuracy'])} "
        f"| {_pct(r['valid_share'])} | "
        f"{'inf/nan' if drift is None else f'{drift:.1e}'} | "
        f"{_pct(r['in_bounds_share'])} "
        f"({_pct(r['in_bounds_share_half_grey_level'])}) | "
        f"{_overshoot(r['overshoot_max'])} | "
        f"{_pct(r['oracle_as_nuisance_source'])} / "
        f"{_pct(r['oracle_as_logits_source'])} / "
        f"{_pct(r['oracle_as_other'])} | {r['train_seconds']:.0f} |")
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--candidates", default=",".join(CANDIDATES),
                  help=f"comma-separated, of {list(CANDIDATES)}")
  ap.add_argument("--workdir", default="",
                  help="folder for the runs and the oracle (default: a "
                       "temporary one); finished runs found there are "
                       "judged again without training")
  ap.add_argument("--out", default=os.path.join(
      _ROOT, "benchmarks", "results", "demo_metamers.json"))
  args = ap.parse_args()
  names = [c for c in args.candidates.split(",") if c]
  bad = [c for c in names if c not in CANDIDATES]
  if bad:
    raise SystemExit(f"--candidates: {bad} not among {list(CANDIDATES)}.")
  rows, before = [], {}
  if os.path.exists(args.out):                # keep the other candidates
    with open(args.out) as f:
      before = {r["candidate"]: r for r in json.load(f)["rows"]}
    rows = [r for n, r in before.items() if n not in names]
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    root = args.workdir or tmp
    for name in names:
      row = measure(name, CANDIDATES[name][1], root)
      if row["trained_before"] and name in before:
        # A finished run in --workdir is judged again, not retrained: keep
        # the training time of the run that trained it.
        row["train_seconds"] = before[name]["train_seconds"]
      rows.append(row)
      print(json.dumps(rows[-1]), flush=True)
      with open(args.out, "w") as f:     # after every candidate
        json.dump({"cpu": advinv_platform.cpu_model(),
                   "cores": os.cpu_count(), "jax": jax.__version__, "num_pairs": NUM_PAIRS,
                   "rows": rows}, f, indent=1)
  print()
  print(table(sorted(rows, key=lambda r: list(CANDIDATES).index(
      r["candidate"]))))


if __name__ == "__main__":
  main()
