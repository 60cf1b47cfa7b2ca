"""Reversible backprop benchmark: temp memory and step time of a fiRevNet.

Measures one training step (cross-entropy on the logits + a logdet term,
gradient, Adam update) of a fiRevNet, with plain autodiff and with
reversible backprop (``config.model.reversible``; both loop forms), for
several depths, plus the authors' MNIST configuration (3 levels x 16 additive
steps, width 128, 3x32x32 input) at batch 128 and 32.

Memory: XLA's temporary buffers of the compiled step
(``jax.jit(step).lower(...).compile().memory_analysis().temp_size_in_bytes``;
arguments/outputs are not included). Time: median wall time of ``--repeats``
steps after one warm-up call.

Usage (defaults run in a few minutes on a 2-core CPU)::

  python benchmarks/reversible.py
  python benchmarks/reversible.py --depths=8,16 --skip_authors   # quicker

Writes benchmarks/results/reversible.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import optax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from advinv_jax.models import build_model  # noqa: E402

MiB = 2.0 ** 20


def make_model(levels, depth, width, coupling, permutation, reversible, loop,
               size, channels, num_classes=10):
  cfg = ml_collections.ConfigDict(dict(
      name="firevnet", levels=levels, depth=depth, width=width,
      coupling=coupling, permutation=permutation, downsample="squeeze",
      reversible=reversible, reversible_loop=loop, conv1x1_as_matmul=True))
  return build_model(cfg, (size, size, channels), num_classes)


def measure(model, batch, repeats, seed=0):
  """Returns dict(temp_mib, compile_s, step_s, steps)."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  x = jax.random.uniform(k1, (batch,) + model.input_shape)
  y = jax.random.randint(k2, (batch,), 0, model.num_classes)
  params = model.init(k3, x)
  opt = optax.adam(1e-3)
  opt_state = opt.init(params)
  d = model.latent_dim

  def loss_fn(p, x, y):
    z, logdet = model.forward(p, x)
    logits = z[:, :model.num_classes]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    nll = (0.5 * jnp.sum(z[:, model.num_classes:] ** 2, axis=1) - logdet)
    return ce + jnp.mean(nll) / d

  def step(p, s, x, y):
    loss, g = jax.value_and_grad(loss_fn)(p, x, y)
    upd, s = opt.update(g, s, p)
    return optax.apply_updates(p, upd), s, loss

  t0 = time.perf_counter()
  compiled = jax.jit(step).lower(params, opt_state, x, y).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  temp = mem.temp_size_in_bytes / MiB
  out = compiled(params, opt_state, x, y)
  jax.block_until_ready(out)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = compiled(params, opt_state, x, y)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
  return dict(temp_mib=temp, compile_s=compile_s,
              step_s=statistics.median(times), steps=len(times))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--depths", default="8,16,32,64")
  ap.add_argument("--levels", type=int, default=1)
  ap.add_argument("--width", type=int, default=32)
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--size", type=int, default=32)
  ap.add_argument("--channels", type=int, default=3)
  ap.add_argument("--coupling", default="additive")
  ap.add_argument("--permutation", default="reverse")
  ap.add_argument("--loops", default="unrolled,scan")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--authors_batches", default="128,32")
  ap.add_argument("--authors_repeats", type=int, default=3)
  ap.add_argument("--skip_authors", action="store_true")
  ap.add_argument("--skip_depths", action="store_true")
  ap.add_argument("--out", default=os.path.join(
      os.path.dirname(__file__), "results", "reversible.json"))
  args = ap.parse_args(argv)
  loops = [l for l in args.loops.split(",") if l]
  rows = []

  def run(tag, levels, depth, width, batch, repeats):
    variants = [("plain", False, "unrolled")] + [
        (f"rev-{l}", True, l) for l in loops]
    for name, rev, loop in variants:
      m = make_model(levels, depth, width, args.coupling, args.permutation,
                     rev, loop, args.size, args.channels)
      r = measure(m, batch, repeats)
      r.update(tag=tag, mode=name, levels=levels, depth=depth, width=width,
               batch=batch, params=m.param_count(),
               device=jax.devices()[0].device_kind)
      rows.append(r)
      print(f"{tag:8s} {name:13s} L={levels} depth={depth:3d} w={width:4d} "
            f"B={batch:4d}  temp {r['temp_mib']:9.1f} MiB  step "
            f"{r['step_s']:7.3f} s  compile {r['compile_s']:6.1f} s",
            flush=True)

  if not args.skip_depths:
    for depth in [int(d) for d in args.depths.split(",") if d]:
      run("depth", args.levels, depth, args.width, args.batch, args.repeats)
  if not args.skip_authors:
    for b in [int(b) for b in args.authors_batches.split(",") if b]:
      run("authors", 3, 16, 128, b, args.authors_repeats)

  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(dict(args=vars(args), rows=rows), f, indent=1)

  print("\n| tag | mode | levels x depth | width | batch | temp MiB | step s | "
        "vs plain (mem / time) | compile s |")
  print("|---|---|---|---|---|---|---|---|---|")
  base = {}
  for r in rows:
    key = (r["tag"], r["levels"], r["depth"], r["width"], r["batch"])
    if r["mode"] == "plain":
      base[key] = r
    b = base.get(key)
    rel = (f"{r['temp_mib'] / b['temp_mib']:.2f}x / "
           f"{r['step_s'] / b['step_s']:.2f}x") if b else "-"
    print(f"| {r['tag']} | {r['mode']} | {r['levels']} x {r['depth']} | "
          f"{r['width']} | {r['batch']} | {r['temp_mib']:.1f} | "
          f"{r['step_s']:.3f} | {rel} | {r['compile_s']:.1f} |")
  print(f"\nwrote {args.out}")


if __name__ == "__main__":
  main()
