"""Benchmark: metamer validity of the default model per coupling choice.

Not a test. Trains ``configs/default.py`` (fiRevNet, CE, bundled digits) once
per coupling variant, then builds a metamer ``F^-1(z_s(A), z_n(B))`` for
every test image A (B: the next test image of another digit) and checks it
with ``advinv_jax.invariance.metamer_validity`` (logit drift and round trip
<= 1e-3, finite). Prints a table and writes
``benchmarks/results/metamer_validity.json``::

  python benchmarks/metamer_validity.py                     # 3 variants
  python benchmarks/metamer_validity.py --variants additive --num_epochs 2

Columns: test accuracy, the share of valid metamers, the largest logit drift,
the share of metamer pixels outside [0, 1], the test-set reconstruction
error ``max |F^-1(F(x)) - x|`` and the training wall time (compile
included).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax import invariance as I
from advinv_jax.config import default_config
from advinv_jax.train import train_and_evaluate

VARIANTS = {
    "affine_sigmoid": dict(coupling="affine", affine_scale="sigmoid"),
    "affine_exp_tanh": dict(coupling="affine", affine_scale="exp_tanh"),
    "additive": dict(coupling="additive"),
}


def pair_up(labels):
  """For each i, the next index (cyclically) with a different label."""
  n = len(labels)
  out = np.empty(n, np.int64)
  for i in range(n):
    j = (i + 1) % n
    while labels[j] == labels[i] and j != i:
      j = (j + 1) % n
    out[i] = j
  return out


def train_with_test_split(cfg, workdir):
  """Trains ``cfg`` in ``workdir``: ``(train_and_evaluate's result, wall
  seconds, x_test f32[N, H, W, C], y_test int[N])``."""
  t = time.perf_counter()
  res = train_and_evaluate(cfg, workdir)
  train_s = time.perf_counter() - t
  test = res["dataset"].test.get(np.arange(len(res["dataset"].test)))
  return res, train_s, jnp.asarray(test["image"]), np.asarray(test["label"])


def measure(name, overrides, num_epochs, root):
  cfg = default_config()
  for k, v in overrides.items():
    cfg.model.firevnet[k] = v
  cfg.report.enabled = False
  cfg.train.progress_bar = False
  if num_epochs:
    cfg.train.num_epochs = num_epochs
  res, train_s, x, y = train_with_test_split(cfg, os.path.join(root, name))
  model, params, ds = res["model"], res["state"].params, res["dataset"]
  xb = x[pair_up(y)]

  @jax.jit
  def check(params, xa, xb):
    z = I.metamer_latent(model, params, xa, xb)
    v = I.metamer_validity(model, params, model.inverse(params, z), z,
                           bounds=ds.bounds)
    rec = model.inverse(params, model.forward(params, xa)[0])
    return v, jnp.max(jnp.abs(rec - xa))

  v, rec = check(params, x, xb)
  out = {"variant": name, "model": dict(overrides),
         "test_accuracy": float(res["eval"]["accuracy"]),
         "steps": int(res["steps"]), "train_seconds": train_s,
         "reconstruction_max_abs": float(rec),
         "metamers": I.summarize_validity(v)}
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--variants", default=",".join(VARIANTS),
                  help=f"comma-separated, of {list(VARIANTS)}")
  ap.add_argument("--num_epochs", type=int, default=0,
                  help="0: the default config's")
  ap.add_argument("--out", default=os.path.join(
      os.path.dirname(__file__), "results", "metamer_validity.json"))
  args = ap.parse_args()
  names = [v for v in args.variants.split(",") if v]
  bad = [v for v in names if v not in VARIANTS]
  if bad:
    raise SystemExit(f"--variants: {bad} not among {list(VARIANTS)}.")
  rows = []
  with tempfile.TemporaryDirectory() as root:
    for name in names:
      rows.append(measure(name, VARIANTS[name], args.num_epochs, root))
      print(json.dumps(rows[-1]), flush=True)
  print("\n| variant | test acc % | valid metamers % | max logit drift | "
        "out-of-bounds pixels % | reconstruction max abs | train s |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    m = r["metamers"]
    drift = m["logit_drift_max"]
    print(f"| {r['variant']} | {100 * r['test_accuracy']:.1f} | "
          f"{100 * m['valid_share']:.1f} | "
          f"{'inf/nan' if drift is None else f'{drift:.2g}'} | "
          f"{100 * (m['out_of_bounds_share'] or 0):.1f} | "
          f"{r['reconstruction_max_abs']:.2g} | {r['train_seconds']:.0f} |")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"platform": platform.processor() or platform.machine(),
               "jax": jax.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
