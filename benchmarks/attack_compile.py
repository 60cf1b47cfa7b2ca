"""Benchmark: compile time of PGD vs its step count and loop form.

Not a test. Shows why every attack's default loop is the rolled ``'fori'``:
an unrolled loop compiles one copy of the step per iteration. Prints a table
and writes ``benchmarks/results/attack_compile.json``::

  python -m benchmarks.attack_compile                      # mlp 64
  python -m benchmarks.attack_compile --models mlp cnn --timeout 600

Each (model, loop, steps) runs in a subprocess killed after ``--timeout``
seconds (reported as a miss), on the 8x8 digits shape, batch 8; it prints
the compile time and the run time of the compiled attack.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

_CHILD = r"""
import functools, sys, time
import jax, jax.numpy as jnp, ml_collections
from advinv_jax import attacks
from advinv_jax.models import build_model
cfg = ml_collections.ConfigDict({{"name": {model!r}}})
if {model!r} == "mlp":
  cfg.mlp = {{"hidden": (64,)}}
model = build_model(cfg, input_shape=(8, 8, 1), num_classes=10)
x = jax.random.uniform(jax.random.PRNGKey(0), (8, 8, 8, 1))
y = jnp.arange(8) % 10
params = model.init(jax.random.PRNGKey(1), x)
run = jax.jit(lambda p, x, y, k: attacks.pgd(
    functools.partial(model.logits, p), x, y, eps=0.1, steps={steps},
    loop={loop!r}, rng=k).success)
t = time.perf_counter()
compiled = run.lower(params, x, y, jax.random.PRNGKey(2)).compile()
first = time.perf_counter() - t
t = time.perf_counter()
compiled(params, x, y, jax.random.PRNGKey(2)).block_until_ready()
print(first, time.perf_counter() - t)
"""


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--models", nargs="+", default=["mlp"])
  ap.add_argument("--steps", nargs="+", type=int, default=[20, 200])
  ap.add_argument("--loops", nargs="+", default=["fori", "unrolled"])
  ap.add_argument("--timeout", type=float, default=300.0)
  args = ap.parse_args()
  root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
  rows = []
  for model in args.models:
    for steps in args.steps:
      for loop in args.loops:
        code = _CHILD.format(model=model, steps=steps, loop=loop)
        try:
          out = subprocess.run([sys.executable, "-c", code], check=True,
                               cwd=root,   # the child imports advinv_jax
                               capture_output=True, text=True,
                               timeout=args.timeout).stdout.split()
          first, run = float(out[-2]), float(out[-1])
        except subprocess.TimeoutExpired:
          first, run = None, None
        rows.append(dict(model=model, steps=steps, loop=loop,
                         compile_s=first, run_s=run))
        f = "timeout" if first is None else f"{first:8.2f}"
        r = "-" if run is None else f"{run:8.3f}"
        print(f"{model:5s} PGD-{steps:<4d} {loop:9s} compile {f} s   "
              f"run {r} s", flush=True)
  out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                     "attack_compile.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as fh:
    json.dump({"machine": platform.processor() or platform.machine(),
               "timeout_s": args.timeout, "rows": rows}, fh, indent=1)
  print("wrote", out)


if __name__ == "__main__":
  main()
