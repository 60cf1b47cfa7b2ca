"""Peak process memory (RSS) of one training step: ours vs PyTorch.

``benchmarks/reversible.py`` reports XLA's temporary buffers of the compiled
step; this script measures what the operating system sees, the same way for
both frameworks, so the reversible step can be compared with PyTorch's stored
activations (the authors' code peaked at ~4.9 GiB at batch 128). Each variant
runs in its own process on the authors' MNIST configuration (3 levels x 16
additive steps, width 128, 3x32x32 input, iCE objective with 5
nuisance-classifier updates)::

  python -m benchmarks.train_step_rss                       # ~6 min, B=128
  python -m benchmarks.train_step_rss --variants jax-rev --batch 32
  python -m benchmarks.train_step_rss --variants jax-rev,jax-rev-scan \
      --out benchmarks/results/train_step_rss_scan.json
  python -m benchmarks.train_step_rss --variants jax-rev-chunk32 \
      --out benchmarks/results/train_step_rss_chunk32.json
  python -m benchmarks.train_step_rss --variants jax-rev-scan16,jax-rev-scan16-bf16 \
      --out benchmarks/results/train_step_rss.json    # -bf16: compute_dtype

Per variant: build and compile (JAX) or build (PyTorch); ``malloc_trim``
returns the heap the compiler freed to the OS; the peak-RSS counter is reset
(``/proc/self/clear_refs``, Linux); then one warm-up step and ``--steps``
steps run. Reported: ``rss_after_build_mib`` (before the trim: what a
training process holds after compiling), ``rss_before_mib`` (after it:
interpreter, libraries, parameters, optimiser state, JAX's compiled program),
``peak_mib`` (``VmHWM`` during the steps) and ``step_working_mib`` = peak -
before, the steps' own memory (activations, gradients, allocator caches).
PyTorch processes import JAX too (the parameters come from our model), so
compare the working memory. Writes
``benchmarks/results/train_step_rss.json`` and prints a table. Needs torch for
the ``torch`` variant. Linux only.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time

VARIANTS = ("jax-rev-chunk16", "jax-rev-chunk32", "jax-rev", "jax-rev-scan",
            "jax-rev-scan32", "jax-rev-scan16", "jax-rev-scan16-bf16",
            "jax-plain", "torch")
DEFAULT_VARIANTS = ("jax-rev-chunk16", "jax-rev", "jax-plain", "torch")


def _status_mib(field):
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1024.0   # kB -> MiB
  raise RuntimeError(f"{field} not in /proc/self/status (Linux only).")


def _reset_peak():
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")


def _run_variant(variant, batch, steps):
  """Runs in the child process; returns the result dict."""
  import jax
  name = variant
  from benchmarks.reversible import (  # pylint: disable=g-import-not-at-top
      authors_train_config, build_train_step, torch_ice_step)

  cfg = authors_train_config("ice", variant != "jax-plain", "xla_gemm_grad")
  if variant.endswith("-bf16"):   # the subnets' 1x1 convs on bf16 operands
    cfg.model.compute.dtype = "bfloat16_1x1"
    variant = variant[:-len("-bf16")]
  cfg.model.compute.batch_chunk = (int(variant.rsplit("chunk", 1)[1])
                          if "-chunk" in variant else 0)
  if "-scan" in variant:   # lax.scan over steps, stacked params; -scanK:
    cfg.model.compute.reversible_loop = "scan"   # each step on chunks of K
    cfg.model.compute.scan_batch_chunk = int(variant.rsplit("-scan", 1)[1] or 0)
  model, state, step, args, x, y = build_train_step(cfg, batch)
  t0 = time.perf_counter()
  if variant == "torch":
    run = torch_ice_step(cfg, model, state, x, y)
  else:
    compiled = step.lower(*args).compile()

    def run():
      # Every step starts from the same state (no donation), like the
      # timing benchmark.
      return jax.block_until_ready(compiled(*args))
  build_s = time.perf_counter() - t0
  peak_build = _status_mib("VmHWM")
  rss_built = _status_mib("VmRSS")
  # Return the compiler's freed heap to the OS, so that the baseline is what
  # is live (glibc keeps freed memory mapped otherwise).
  ctypes.CDLL("libc.so.6").malloc_trim(0)
  _reset_peak()
  before = _status_mib("VmRSS")
  times = []
  for _ in range(steps + 1):               # the first is the warm-up
    t0 = time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
  peak = _status_mib("VmHWM")
  return {"variant": name, "batch": batch, "steps": steps,
          "build_or_compile_s": build_s, "peak_during_build_mib": peak_build,
          "rss_after_build_mib": rss_built, "rss_before_mib": before,
          "peak_mib": peak, "step_working_mib": peak - before,
          "step_s_median": sorted(times[1:])[steps // 2]}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--child", default="", help=argparse.SUPPRESS)
  ap.add_argument("--out", default=os.path.join(
      os.path.dirname(__file__), "results", "train_step_rss.json"))
  args = ap.parse_args(argv)
  if args.child:
    print("RESULT " + json.dumps(_run_variant(args.child, args.batch,
                                              args.steps)), flush=True)
    return
  variants = [v for v in args.variants.split(",") if v]
  bad = [v for v in variants if v not in VARIANTS]
  if bad:
    raise SystemExit(f"--variants: unknown {bad}; choose from {VARIANTS}.")
  rows = []
  for v in variants:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.train_step_rss", "--child", v,
         "--batch", str(args.batch), "--steps", str(args.steps)],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
      raise SystemExit(f"variant {v} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(lines[-1][len("RESULT "):])
    rows.append(r)
    print(f"{v:16s} B={r['batch']:4d}  RSS after build "
          f"{r['rss_after_build_mib']:8.1f} MiB, trimmed "
          f"{r['rss_before_mib']:8.1f} "
          f"MiB  peak {r['peak_mib']:8.1f} MiB  step working "
          f"{r['step_working_mib']:8.1f} MiB  (peak while building "
          f"{r['peak_during_build_mib']:.1f} MiB)  step "
          f"{r['step_s_median']:.3f} s", flush=True)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"rows": rows, "argv": sys.argv[1:]}, f, indent=1)
  print("\n| variant | batch | RSS after build MiB | after malloc_trim MiB "
        "| peak RSS in steps MiB | step working MiB | peak while building MiB "
        "| step s |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['variant']} | {r['batch']} | {r['rss_after_build_mib']:.0f} "
          f"| {r['rss_before_mib']:.0f} | "
          f"{r['peak_mib']:.0f} | {r['step_working_mib']:.0f} | "
          f"{r['peak_during_build_mib']:.0f} | {r['step_s_median']:.3f} |")
  print(f"\nwrote {args.out}")


if __name__ == "__main__":
  main()
