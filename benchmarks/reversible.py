"""Reversible backprop benchmark: temp memory and step time of a fiRevNet.

Measures one training step (cross-entropy on the logits + a logdet term,
gradient, Adam update) of a fiRevNet, with plain autodiff and with
reversible backprop (``config.model.compute.reversible``; both loop forms), for
several depths, plus the authors' MNIST configuration (3 levels x 16 additive
steps, width 128, 3x32x32 input) at batch 128 and 32.

Memory: XLA's temporary buffers of the compiled step
(``jax.jit(step).lower(...).compile().memory_analysis().temp_size_in_bytes``;
arguments/outputs are not included). Time: median wall time of ``--repeats``
steps after one warm-up call.

Usage (defaults run in a few minutes on 2 CPU cores)::

  python -m benchmarks.reversible
  python -m benchmarks.reversible --depths=8,16 --skip_authors   # quicker

``--torch_train_step`` adds a ``torch-ice-train-step`` row next to the iCE
train-step rows: the same step in PyTorch (benchmarks/_torch_train_step.py,
same parameters, batch and config), timed in the same interleaved rounds as
ours, so a drift in the host's speed hits both alike (``vs_torch`` in our
rows: PyTorch's median step time / ours). Needs torch (imported only then).

Writes benchmarks/results/reversible.json and prints a table.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from advinv_jax.models import build_model

MiB = 2.0 ** 20


def make_model(levels, depth, width, coupling, permutation, reversible, loop,
               size, channels, num_classes=10, conv3x3_impl="xla"):
  cfg = {"name": "firevnet",
         "firevnet": dict(levels=levels, depth=depth, width=width,
                          coupling=coupling, permutation=permutation,
                          downsample="squeeze"),
         "compute": dict(reversible=reversible, reversible_loop=loop,
                         conv1x1_as_matmul=True, conv3x3_impl=conv3x3_impl)}
  return build_model(cfg, (size, size, channels), num_classes)


def measure(model, batch, repeats, microbatch=0, seed=0):
  """Returns dict(temp_mib, compile_s, step_s, step_min_s, steps).

  ``microbatch > 0``: the step accumulates gradients over ``batch //
  microbatch`` chunks (a Python loop over one compiled chunk gradient), then
  applies one Adam update; the memory is the chunk gradient's temp.
  """
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  x = jax.random.uniform(k1, (batch,) + model.input_shape)
  y = jax.random.randint(k2, (batch,), 0, model.num_classes)
  params = model.init(k3, x[:min(batch, 64)])
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
  if microbatch:
    n = batch // microbatch
    xs = x.reshape((n, microbatch) + x.shape[1:])
    ys = y.reshape(n, microbatch)
    grad = jax.jit(jax.value_and_grad(loss_fn)).lower(
        params, xs[0], ys[0]).compile()
    add = jax.jit(lambda a, b: jax.tree_util.tree_map(jnp.add, a, b))

    @jax.jit
    def update(p, s, g):
      g = jax.tree_util.tree_map(lambda a: a / n, g)
      upd, s = opt.update(g, s, p)
      return optax.apply_updates(p, upd), s

    def compiled(p, s, x, y):
      loss, g = grad(p, xs[0], ys[0])
      for i in range(1, n):
        l, gi = grad(p, xs[i], ys[i])
        g = add(g, gi)
        loss = loss + l
      p, s = update(p, s, g)
      return p, s, loss / n

    mem = grad.memory_analysis()
  else:
    compiled = jax.jit(step).lower(params, opt_state, x, y).compile()
    mem = compiled.memory_analysis()
  compile_s = time.perf_counter() - t0
  return _time_calls(compiled, (params, opt_state, x, y), repeats,
                     temp_mib=mem.temp_size_in_bytes / MiB,
                     compile_s=compile_s)


def _time_calls(fn, args, repeats, **info):
  """One warm-up call, then ``repeats`` timed calls of ``fn(*args)``.

  Returns ``info`` plus step_s (median), step_min_s and steps.
  """
  return _time_interleaved([(fn, args, info)], repeats)[0]


def _time_interleaved(calls, repeats):
  """Times several ``(fn, args, info)`` in rounds: each round calls every
  ``fn`` once, so a drift in the host's speed hits all of them alike.

  Returns one ``info`` dict per call, plus step_s (median), step_min_s and
  steps.
  """
  for fn, args, _ in calls:
    jax.block_until_ready(fn(*args))
  times = [[] for _ in calls]
  for _ in range(repeats):
    for (fn, args, _), t in zip(calls, times):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      t.append(time.perf_counter() - t0)
  return [dict(info, step_s=statistics.median(t), step_min_s=min(t),
               steps=len(t)) for (_, _, info), t in zip(calls, times)]


def authors_train_config(loss, reversible, conv3x3_impl):
  """The library config of the authors' MNIST model with a 3x32x32 input."""
  from configs.mnist import mnist_firevnet  # pylint: disable=g-import-not-at-top
  c = mnist_firevnet(loss=loss)
  c.model.compute.reversible = reversible
  c.model.compute.conv3x3_impl = conv3x3_impl
  return c


def build_train_step(cfg, batch, channels=3, size=32, seed=0):
  """The library's jitted training step for ``cfg`` on a random batch.

  Returns ``(model, state, step, args, x, y)``: ``step(*args)`` runs one
  step (``args = (state, batch dict, rng)``); ``x`` (NHWC) and ``y`` are the
  batch. Parameters come from ``init`` with a fixed key on ``x[:64]``, so
  configs that differ only in how the model computes (``batch_chunk``,
  ``conv3x3_impl``, ``reversible``) get the same ones.
  """
  from advinv_jax import train
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  x = jax.random.uniform(k1, (batch, size, size, channels))
  y = jax.random.randint(k2, (batch,), 0, 10)
  model = build_model(cfg.model, (size, size, channels), 10)
  objective = train.make_objective(cfg)
  opt = train.make_optimizer(cfg.optimizer, 1000)
  # Jitted in a throwaway function, as training does (advinv_jax/train/
  # _experiment.py): its executable is freed with it, and no op-by-op
  # executables stay cached.
  state = jax.jit(lambda r, v: train.init_train_state(model, objective, opt,
                                                      r, v))(k3, x[:64])
  step = jax.jit(train.make_train_step(
      model, objective, opt, dequant_noise=float(cfg.train.dequant_noise)))
  args = (state, {"image": x, "label": y}, jax.random.PRNGKey(1))
  return model, state, step, args, x, y


def torch_ice_step(cfg, model, state, x, y):
  """The PyTorch iCE step (benchmarks/_torch_train_step.py) starting from
  our ``state``: same network parameters, prior, nuisance classifier and
  batch. Imports torch."""
  from benchmarks._torch_train_step import make_torch_ice_step  # pylint: disable=g-import-not-at-top
  return make_torch_ice_step(cfg, model, state.params, x=x, y=y,
                             loss_params=state.loss_params,
                             nc_params=state.aux["params"])


def measure_train_steps(cfgs, batch, repeats, channels=3, size=32, seed=0,
                        torch_step=False):
  """Times the library's own jitted step (``train.make_train_step``).

  Unlike :func:`measure`, this is the whole training step a run takes:
  dequantisation noise, the objective of ``cfg.loss`` (iCE: the
  ``loss.ice.nuisance_steps`` nuisance-classifier updates, then the network
  update on CE + NLL - weight * nuisance CE), Adamax, the finiteness guard.
  The steps of all ``cfgs`` (same model parameters; they may differ in
  settings such as ``model.compute.batch_chunk``) are compiled, then timed
  interleaved (:func:`_time_interleaved`). Returns one dict per config.

  ``torch_step``: also time the PyTorch iCE step of ``cfgs[0]``
  (:func:`torch_ice_step`) in the same rounds; its dict comes last
  (``temp_mib`` and ``compile_s`` None, ``build_s`` the time to copy the
  parameters into torch).
  """
  calls, built = [], []
  for cfg in cfgs:
    model, state, step, args, x, y = build_train_step(
        cfg, batch, channels=channels, size=size, seed=seed)
    built.append((model, state, x, y))
    t0 = time.perf_counter()
    compiled = step.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    calls.append((compiled, args, dict(
        temp_mib=compiled.memory_analysis().temp_size_in_bytes / MiB,
        compile_s=compile_s, params=model.param_count(),
        batch_chunk=int(cfg.model.compute.batch_chunk),
        reversible_loop=str(cfg.model.compute.reversible_loop),
        compute_dtype=str(cfg.model.compute.dtype))))
  if torch_step:
    calls.append(_torch_ice_call(cfgs[0], *built[0]))
  return _time_interleaved(calls, repeats)


def _torch_ice_call(cfg, model, state, x, y):
  """``(fn, (), info)`` of :func:`torch_ice_step` (imports torch)."""
  import torch  # pylint: disable=import-outside-toplevel
  t0 = time.perf_counter()
  step = torch_ice_step(cfg, model, state, x, y)
  build_s = time.perf_counter() - t0
  return (step, (), dict(
      temp_mib=None, compile_s=None, build_s=build_s,
      params=sum(p.numel() for p in step.net.parameters()), batch_chunk=0,
      torch_version=torch.__version__, torch_threads=torch.get_num_threads()))


def _fmt(v, spec):
  return "-" if v is None else format(v, spec)


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
  ap.add_argument("--authors_loops", default="unrolled",
                  help="reversible loop forms for the authors' config (scan "
                  "is ~10x slower there)")
  ap.add_argument("--authors_repeats", type=int, default=3)
  ap.add_argument("--authors_microbatch", type=int, default=32,
                  help="also run the authors' config at batch 128 as "
                  "reversible + gradient accumulation over chunks of this "
                  "size (0: off)")
  ap.add_argument("--conv3x3_impls", default="xla,xla_gemm_grad",
                  help="config.model.compute.conv3x3_impl values to time (e.g. "
                       "xla,xla_gemm_grad); 'vs plain' is against xla")
  ap.add_argument("--authors_train_steps", default="ice",
                  help="also time the library's whole train step "
                       "(train.make_train_step) on the authors' config for "
                       "these losses, e.g. ice,ce (iCE includes the 5 "
                       "nuisance-classifier updates, like the PyTorch "
                       "reference); '' = off")
  ap.add_argument("--authors_batch_chunks", default="0",
                  help="config.model.compute.batch_chunk values for the train-step "
                       "rows, timed interleaved, e.g. 0,32,16 (0: whole "
                       "batch)")
  ap.add_argument("--authors_train_loops", default="unrolled",
                  help="config.model.compute.reversible_loop values for the "
                       "train-step rows (each with every batch chunk), "
                       "timed interleaved, e.g. unrolled,scan,scan32 "
                       "(scanK: scan with model.compute.scan_batch_chunk=K)")
  ap.add_argument("--authors_compute_dtypes", default="float32",
                  help="config.model.compute.dtype values for the train-step "
                       "rows (each with every loop and chunk), e.g. "
                       "float32,bfloat16_1x1 (bfloat16_1x1: the subnets' 1x1 "
                       "convs take bfloat16 operands; bfloat16: all their "
                       "convs; rows '+bf16')")
  ap.add_argument("--torch_train_step", action="store_true",
                  help="with the iCE train-step rows, also time the same step "
                  "in PyTorch (benchmarks/_torch_train_step.py; needs torch) "
                  "in the same interleaved rounds: row torch-ice-train-step")
  ap.add_argument("--torch_threads", type=int, default=0,
                  help="torch.set_num_threads for --torch_train_step (0: "
                  "os.cpu_count())")
  ap.add_argument("--skip_authors", action="store_true")
  ap.add_argument("--skip_authors_grad_rows", action="store_true",
                  help="only the train-step rows of the authors' config "
                       "(no plain / rev / accum gradient-step rows)")
  ap.add_argument("--skip_depths", action="store_true")
  ap.add_argument("--out", default=os.path.join(
      os.path.dirname(__file__), "results", "reversible.json"))
  args = ap.parse_args(argv)
  if args.torch_train_step:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(args.torch_threads or os.cpu_count() or 1)
  loops = [l for l in args.loops.split(",") if l]
  impls = [i for i in args.conv3x3_impls.split(",") if i]
  rows = []

  def run(tag, levels, depth, width, batch, repeats, microbatch=0,
          loops=loops):
    variants = []
    for impl in impls:
      sfx = "" if impl == "xla" else f"[{impl}]"
      if microbatch:
        variants.append((f"rev-unrolled+accum{microbatch}{sfx}", True,
                         "unrolled", impl))
      else:
        variants += [(f"plain{sfx}", False, "unrolled", impl)] + [
            (f"rev-{l}{sfx}", True, l, impl) for l in loops]
    for name, rev, loop, impl in variants:
      m = make_model(levels, depth, width, args.coupling, args.permutation,
                     rev, loop, args.size, args.channels, conv3x3_impl=impl)
      r = measure(m, batch, repeats, microbatch=microbatch)
      r.update(tag=tag, mode=name, levels=levels, depth=depth, width=width,
               batch=batch, params=m.param_count(),
               device=jax.devices()[0].device_kind)
      rows.append(r)
      print(f"{tag:8s} {name:13s} L={levels} depth={depth:3d} w={width:4d} "
            f"B={batch:4d}  temp {r['temp_mib']:9.1f} MiB  step "
            f"{r['step_s']:7.3f} s (min {r['step_min_s']:.3f})  compile "
            f"{r['compile_s']:6.1f} s",
            flush=True)

  if not args.skip_depths:
    for depth in [int(d) for d in args.depths.split(",") if d]:
      run("depth", args.levels, depth, args.width, args.batch, args.repeats)
  if not args.skip_authors:
    batches = [int(b) for b in args.authors_batches.split(",") if b]
    for b in batches if not args.skip_authors_grad_rows else ():
      run("authors", 3, 16, 128, b, args.authors_repeats,
          loops=[l for l in args.authors_loops.split(",") if l])
    if (args.authors_microbatch and batches and not args.skip_authors_grad_rows
        and max(batches) > args.authors_microbatch):
      run("authors", 3, 16, 128, max(batches), args.authors_repeats,
          microbatch=args.authors_microbatch)
    chunks = [int(c) for c in args.authors_batch_chunks.split(",") if c]
    train_loops = [l for l in args.authors_train_loops.split(",") if l]
    matmul_dtypes = [d for d in args.authors_compute_dtypes.split(",") if d]
    for loss in [l for l in args.authors_train_steps.split(",") if l]:
      for b in batches:
        for impl in impls:
          cfgs, names = [], []
          for loop, c, md in itertools.product(train_loops, chunks,
                                               matmul_dtypes):
            cfgs.append(authors_train_config(loss, True, impl))
            cfgs[-1].model.compute.batch_chunk = c
            cfgs[-1].model.compute.dtype = md
            # 'scanK': reversible_loop='scan' with scan_batch_chunk=K
            scan_chunk = int(loop[4:] or 0) if loop.startswith("scan") else 0
            cfgs[-1].model.compute.reversible_loop = loop[:4] if scan_chunk else loop
            cfgs[-1].model.compute.scan_batch_chunk = scan_chunk
            sfx = "" if impl == "xla" else f"[{impl}]"
            sfx += f"+chunk{c}" if c else ""
            sfx += f"+{loop}" if loop.startswith("scan") else ""
            sfx += "+bf16" if md == "bfloat16" else ""
            names.append(f"{loss}-train-step-rev{sfx}")
          with_torch = args.torch_train_step and loss == "ice"
          results = measure_train_steps(
              cfgs, b, args.authors_repeats, channels=args.channels,
              size=args.size, torch_step=with_torch)
          devices = [jax.devices()[0].device_kind] * len(cfgs)
          if with_torch:
            names.append("torch-ice-train-step")
            devices.append(f"cpu (torch {results[-1]['torch_version']}, "
                           f"{results[-1]['torch_threads']} threads; timed "
                           f"with the {impl} rows)")
            for r in results[:-1]:
              r["vs_torch"] = results[-1]["step_s"] / r["step_s"]
          for name, device, r in zip(names, devices, results):
            r.update(tag="authors", mode=name, levels=3, depth=16,
                     width=128, batch=b, device=device)
            rows.append(r)
            vs = (f"  vs torch {r['vs_torch']:.2f}x" if "vs_torch" in r
                  else "")
            print(f"authors  {name:13s} B={b:4d}  temp "
                  f"{_fmt(r['temp_mib'], '9.1f')} MiB  step "
                  f"{r['step_s']:7.3f} s (min {r['step_min_s']:.3f})  "
                  f"compile {_fmt(r['compile_s'], '6.1f')} s{vs}",
                  flush=True)

  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(dict(args=vars(args), rows=rows), f, indent=1)

  print("\n| tag | mode | levels x depth | width | batch | temp MiB | "
        "step s (median / min) | vs plain (mem / time) | compile s |")
  print("|---|---|---|---|---|---|---|---|---|")
  base = {}
  for r in rows:
    key = (r["tag"], r["levels"], r["depth"], r["width"], r["batch"])
    if r["mode"] == "plain":
      base[key] = r
    b = base.get(key)
    mem = (f"{r['temp_mib'] / b['temp_mib']:.2f}x"
           if b and r["temp_mib"] is not None else "-")
    rel = f"{mem} / {r['step_s'] / b['step_s']:.2f}x" if b else "-"
    print(f"| {r['tag']} | {r['mode']} | {r['levels']} x {r['depth']} | "
          f"{r['width']} | {r['batch']} | {_fmt(r['temp_mib'], '.1f')} | "
          f"{r['step_s']:.3f} / {r['step_min_s']:.3f} | {rel} | "
          f"{_fmt(r['compile_s'], '.1f')} |")
  print(f"\nwrote {args.out}")


if __name__ == "__main__":
  main()
