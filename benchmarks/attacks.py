"""Benchmark: PGD (linf, l2) in advinv_jax vs torchattacks 3.5.1 and Foolbox 3.3.4.

Not a test. Prints a table and writes ``benchmarks/results/attacks.json``::

  python -m benchmarks.attacks                 # full run (several minutes)
  python -m benchmarks.attacks --steps 10 --batch 64 --no-firevnet   # quick

For every model and norm it times (median of ``--repeats`` runs after a
compile/warm-up call):

* ours, PGD-``steps`` as one jitted function, for each loop form
  (``fori``, ``unrolled``, ``scan``), first call (compile + run) separately;
* the floor: ``steps x`` one jitted forward + input-gradient of the loss,
  and the ratio ``attack_time / floor``;
* torchattacks ``PGD`` / ``PGDL2`` on the same network in PyTorch, with the
  same weights: for the CNN a PyTorch copy (same architecture and padding),
  for the fiRevNet our port ``benchmarks/_torch_firevnet.py`` (same layers,
  channel orderings and readout); the torch-vs-JAX logits max |diff| (and
  its ratio to max |logit|) is printed and reported in the table and JSON;
* Foolbox 3.3.4 ``LinfPGD`` / ``L2PGD`` on the same JAX function.

Peers are optional (``benchmarks/requirements-peers.txt``); a missing peer is
reported as skipped. The fiRevNet runs only if ``advinv_jax.models`` has
``'firevnet'`` (on 32x32x1: MNIST padded, as the authors do). Its parameters
are freshly initialised (identity couplings, as in earlier runs) unless
``--firevnet-perturb S`` adds N(0, S^2) noise to every leaf, which makes the
logits check meaningful (a fresh coupling is the identity).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from advinv_jax import attacks
from advinv_jax.models import build_model, model_names

EPS = {"linf": 0.1, "l2": 1.0}


def _median_time(fn, repeats):
  ts = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t)
  return statistics.median(ts)


def _block(tree):
  return jax.tree_util.tree_map(lambda a: a.block_until_ready(), tree)


def bench_ours(model, params, x, y, norm, steps, loops, repeats):
  rows = {}
  key = jax.random.PRNGKey(0)
  for loop in loops:
    @jax.jit
    def run(params, x, y, key, loop=loop):
      return attacks.pgd(functools.partial(model.logits, params), x, y,
                         eps=EPS[norm], norm=norm, steps=steps, loop=loop,
                         rng=key)
    t = time.perf_counter()
    res = _block(run(params, x, y, key))
    first = time.perf_counter() - t
    med = _median_time(lambda: _block(run(params, x, y, key)), repeats)
    rows[loop] = {"first_call_s": first, "time_s": med,
                  "success": float(np.mean(res.success))}
    print(f"    ours[{loop:8s}] {norm}: {med:7.3f} s (first call {first:.1f} s)"
          f", success {rows[loop]['success']:.3f}", flush=True)
  return rows


def bench_floor(model, params, x, y, repeats):
  def loss(x):
    logits = model.logits(params, x)
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=-1))

  g = jax.jit(jax.grad(loss))
  _block(g(x))
  return _median_time(lambda: _block(g(x)), repeats)


def torch_dense_layers(params, n):
  """``torch.nn.ModuleList`` of the flax ``Dense_0 .. Dense_{n-1}`` layers
  (kernels transposed to torch's ``[out, in]``)."""
  import torch
  fcs = torch.nn.ModuleList()
  for i in range(n):
    k = np.asarray(params[f"Dense_{i}"]["kernel"])
    fc = torch.nn.Linear(k.shape[0], k.shape[1])
    fc.weight.data = torch.tensor(k.T.copy())
    fc.bias.data = torch.tensor(np.asarray(params[f"Dense_{i}"]["bias"]))
    fcs.append(fc)
  return fcs


def make_torch_cnn(params):
  """The 'cnn' model (features (32, 64, 64), hidden 128) in PyTorch, with
  the flax weights and flax's SAME padding (asymmetric for stride 2)."""
  import torch
  import torch.nn.functional as F

  class TorchCNN(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.convs = torch.nn.ModuleList()
      for i in range(3):
        k = np.asarray(params[f"Conv_{i}"]["kernel"])          # HWIO
        conv = torch.nn.Conv2d(k.shape[2], k.shape[3], 3,
                               stride=1 if i == 0 else 2, padding=0)
        conv.weight.data = torch.tensor(k.transpose(3, 2, 0, 1).copy())
        conv.bias.data = torch.tensor(np.asarray(params[f"Conv_{i}"]["bias"]))
        self.convs.append(conv)
      self.fcs = torch_dense_layers(params, 2)

    def forward(self, x):                                   # NCHW
      for i, conv in enumerate(self.convs):
        x = F.pad(x, (1, 1, 1, 1) if i == 0 else (0, 1, 0, 1))
        x = F.relu(conv(x))
      x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)     # flax's order
      return self.fcs[1](F.relu(self.fcs[0](x)))

  return TorchCNN().eval()


FIREVNET_ARCHS = {
    "small": (dict(levels=3, depth=4, width=32), (32, 32, 1)),
    "authors": (dict(levels=3, depth=16, width=128, coupling="additive",
                     permutation="reverse"), (32, 32, 3)),
}


def make_torch_firevnet(model, params):
  """Our fiRevNet in PyTorch (``benchmarks/_torch_firevnet.py``)."""
  from benchmarks._torch_firevnet import make_torch_firevnet as make  # pylint: disable=g-import-not-at-top
  return make(model, params)


def bench_torchattacks(net, x, y, norm, steps, repeats, jax_logits):
  """torchattacks PGD / PGDL2 on ``net`` (a torch module taking NCHW
  images); ``jax_logits``: our logits on ``x`` (NHWC) for the check."""
  try:
    import torch
    import torchattacks
  except ImportError as e:
    return {"skipped": f"not installed ({e}); see requirements-peers.txt"}
  torch.set_num_threads(os.cpu_count() or 1)
  xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy())
  yt = torch.tensor(np.asarray(y), dtype=torch.long)
  with torch.no_grad():
    jl = np.asarray(jax_logits)
    diff = float(np.max(np.abs(net(xt).numpy() - jl)))
    rel = diff / max(float(np.max(np.abs(jl))), 1e-30)
  if norm == "linf":
    atk = torchattacks.PGD(net, eps=EPS[norm], alpha=2.5 * EPS[norm] / steps,
                           steps=steps, random_start=True)
  else:
    atk = torchattacks.PGDL2(net, eps=EPS[norm],
                             alpha=max(2.5 / steps, 0.25) * EPS[norm],
                             steps=steps, random_start=True)
  adv = atk(xt, yt)
  t = _median_time(lambda: atk(xt, yt), repeats)
  with torch.no_grad():
    succ = float((net(adv).argmax(1) != yt).float().mean())
  print(f"    torchattacks {norm}: {t:7.3f} s, success {succ:.3f} "
        f"(torch-vs-jax logits max diff {diff:.1e}, {rel:.1e} of max |logit|)",
        flush=True)
  return {"time_s": t, "success": succ, "logits_max_abs_diff": diff,
          "logits_max_rel_diff": rel,
          "torch_threads": torch.get_num_threads()}


def bench_foolbox(logits_fn, x, y, norm, steps, repeats, label):
  try:
    import foolbox as fb
  except ImportError as e:
    return {"skipped": f"not installed ({e}); pip install foolbox==3.3.4"}
  fmodel = fb.JAXModel(logits_fn, bounds=(0.0, 1.0))
  if norm == "linf":
    atk = fb.attacks.LinfPGD(rel_stepsize=2.5 / steps, steps=steps,
                             random_start=True)
  else:
    atk = fb.attacks.L2PGD(rel_stepsize=max(2.5 / steps, 0.25), steps=steps,
                           random_start=True)

  def run():
    _, adv, succ = atk(fmodel, x, y, epsilons=EPS[norm])
    jax.block_until_ready(adv)
    return succ

  succ = run()
  t = _median_time(run, repeats)
  s = float(np.mean(np.asarray(succ)))
  print(f"    foolbox-jax[{label}] {norm}: {t:7.3f} s, success {s:.3f}",
        flush=True)
  return {"time_s": t, "success": s}


def bench_model(name, model, params, x, y, args, make_torch_net=None):
  """``make_torch_net``: builds the PyTorch copy of the model for
  torchattacks (None: no torch peer)."""
  print(f"== {name}: batch {x.shape[0]}, input {x.shape[1:]}, "
        f"PGD-{args.steps}", flush=True)
  out = {}
  net = None
  if make_torch_net is not None and not args.no_torch:
    try:
      net = make_torch_net()
    except ImportError as e:
      net = {"skipped": f"not installed ({e}); see requirements-peers.txt"}
  floor1 = bench_floor(model, params, x, y, args.repeats)
  print(f"    one jitted fwd+bwd: {floor1 * 1e3:.1f} ms -> floor "
        f"{args.steps} x = {floor1 * args.steps:.3f} s", flush=True)
  logits_fn = jax.jit(functools.partial(model.logits, params))
  for norm in ("linf", "l2"):
    r = {"ours": bench_ours(model, params, x, y, norm, args.steps,
                            args.loops, args.repeats),
         "fwd_bwd_s": floor1, "floor_s": floor1 * args.steps}
    for loop, v in r["ours"].items():
      v["ratio_to_floor"] = v["time_s"] / r["floor_s"]
    if isinstance(net, dict):
      r["torchattacks"] = net
    elif net is not None:
      r["torchattacks"] = bench_torchattacks(net, x, y, norm, args.steps,
                                             args.repeats, logits_fn(x))
    if not args.no_foolbox:
      # Foolbox calls the model function eagerly each step. With a jitted
      # model function (the fair setup) its steps are compiled too; with the
      # plain function (as in Foolbox's examples) every op is dispatched.
      r["foolbox_jax"] = bench_foolbox(logits_fn, x, y, norm, args.steps,
                                       max(1, args.repeats - 1), "jit fn")
      if not args.no_foolbox_plain:
        r["foolbox_jax_plain"] = bench_foolbox(
            functools.partial(model.logits, params), x, y, norm, args.steps,
            1, "plain fn")
    out[norm] = r
  return out


def interleaved_cnn(model, params, x, y, steps, rounds):
  """Alternates ours (default loop), torchattacks and Foolbox (jit fn) run by
  run, so background load on a shared machine hits all three alike."""
  import foolbox as fb
  import torch
  import torchattacks
  torch.set_num_threads(os.cpu_count() or 1)
  net = make_torch_cnn(params)
  xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy())
  yt = torch.tensor(np.asarray(y), dtype=torch.long)
  logits_fn = jax.jit(functools.partial(model.logits, params))
  fmodel = fb.JAXModel(logits_fn, bounds=(0.0, 1.0))
  out = {}
  for norm in ("linf", "l2"):
    rel = 2.5 / steps if norm == "linf" else max(2.5 / steps, 0.25)
    ours = jax.jit(lambda p, x, y, k: attacks.pgd(
        functools.partial(model.logits, p), x, y, eps=EPS[norm], norm=norm,
        steps=steps, rng=k))
    if norm == "linf":
      ta = torchattacks.PGD(net, eps=EPS[norm], alpha=rel * EPS[norm],
                            steps=steps, random_start=True)
      fa = fb.attacks.LinfPGD(rel_stepsize=rel, steps=steps)
    else:
      ta = torchattacks.PGDL2(net, eps=EPS[norm], alpha=rel * EPS[norm],
                              steps=steps, random_start=True)
      fa = fb.attacks.L2PGD(rel_stepsize=rel, steps=steps)
    runs = {
        "ours": lambda: _block(ours(params, x, y, jax.random.PRNGKey(0))),
        "torchattacks": lambda: ta(xt, yt),
        "foolbox_jax": lambda: jax.block_until_ready(
            fa(fmodel, x, y, epsilons=EPS[norm])[1]),
    }
    for f in runs.values():
      f()                                                   # warm-up
    ts = {k: [] for k in runs}
    for _ in range(rounds):
      for k, f in runs.items():
        t = time.perf_counter()
        f()
        ts[k].append(time.perf_counter() - t)
    out[norm] = {k: statistics.median(v) for k, v in ts.items()}
    out[norm]["all_s"] = ts
    print(f"    interleaved {norm}: " + ", ".join(
        f"{k} {out[norm][k]:.2f} s" for k in runs), flush=True)
  return out


def table(results, steps):
  lines = ["| model | norm | ours fori | ours unrolled | ours scan | "
           f"{steps} x fwd+bwd | best / floor | torchattacks | Foolbox-JAX "
           "(jit fn) | Foolbox-JAX (plain fn) | vs torchattacks | vs Foolbox "
           "(jit fn) | vs Foolbox (plain fn) | torch-vs-jax logits max diff "
           "(/ max \\|logit\\|) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for mname, per in results["models"].items():
    for norm, r in per.items():
      ours = r["ours"]
      best = min(v["time_s"] for v in ours.values())
      def cell(loop):
        return f"{ours[loop]['time_s']:.2f} s" if loop in ours else "-"
      def peer(k):
        v = r.get(k, {})
        return f"{v['time_s']:.2f} s" if "time_s" in v else "skipped"
      def speed(k):
        v = r.get(k, {})
        return f"{v['time_s'] / best:.2f}x" if "time_s" in v else "-"
      def diff():
        v = r.get("torchattacks", {})
        if "logits_max_abs_diff" not in v:
          return "-"
        d = f"{v['logits_max_abs_diff']:.1e}"
        if "logits_max_rel_diff" in v:
          d += f" ({v['logits_max_rel_diff']:.1e})"
        return d
      lines.append(
          f"| {mname} | {norm} | {cell('fori')} | {cell('unrolled')} | "
          f"{cell('scan')} | {r['floor_s']:.2f} s | "
          f"{best / r['floor_s']:.2f} | {peer('torchattacks')} | "
          f"{peer('foolbox_jax')} | {peer('foolbox_jax_plain')} | "
          f"{speed('torchattacks')} | {speed('foolbox_jax')} | "
          f"{speed('foolbox_jax_plain')} | {diff()} |")
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--steps", type=int, default=40)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--loops", default="fori,unrolled,scan")
  p.add_argument("--no-torch", action="store_true")
  p.add_argument("--no-foolbox", action="store_true")
  p.add_argument("--no-foolbox-plain", action="store_true",
                 help="skip Foolbox with the un-jitted model function")
  p.add_argument("--no-firevnet", action="store_true")
  p.add_argument("--no-cnn", action="store_true")
  p.add_argument("--interleave", type=int, default=0,
                 help="also time ours/torchattacks/Foolbox on the CNN "
                      "alternately for this many rounds (medians)")
  p.add_argument("--only-interleave", action="store_true")
  p.add_argument("--firevnet-batch", type=int, default=0,
                 help="batch for the fiRevNet (0: --batch)")
  p.add_argument("--firevnet-loops", default="fori,scan,unrolled")
  p.add_argument("--cnn-impls", default="xla_gemm_grad,xla",
                 help="config.model.compute.conv3x3_impl values for the CNN; the "
                      "first is compared with the peers")
  p.add_argument("--firevnet-arch", default="small",
                 choices=sorted(FIREVNET_ARCHS),
                 help="small: 3 levels x 4 affine steps, width 32, 32x32x1; "
                      "authors: the authors' MNIST model (3 x 16 additive "
                      "steps, reverse permutation, width 128, 32x32x3)")
  p.add_argument("--firevnet-batch-chunk", type=int, default=0,
                 help="config.model.compute.batch_chunk of our fiRevNet (run in "
                      "chunks of this many examples; 0: whole batch)")
  p.add_argument("--firevnet-perturb", type=float, default=0.0,
                 help="add N(0, S^2) noise to every fiRevNet parameter (0: "
                      "fresh init, whose couplings are the identity)")
  p.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                               "results", "attacks.json"))
  args = p.parse_args()
  args.loops = tuple(args.loops.split(","))
  try:
    import torch  # noqa: F401
    torch_ok = True
  except ImportError:
    torch_ok = False

  rng = np.random.default_rng(0)
  results = {"config": {"batch": args.batch, "steps": args.steps,
                        "eps": EPS, "repeats": args.repeats,
                        "backend": jax.default_backend(),
                        "default_loop": attacks.default_loop(),
                        "firevnet_perturb": args.firevnet_perturb,
                        "jax": jax.__version__,
                        "cpu_count": os.cpu_count(),
                        "machine": platform.processor() or platform.machine()},
             "models": {}}
  x = jnp.asarray(rng.uniform(0, 1, (args.batch, 28, 28, 1)), jnp.float32)
  cnn_impls = args.cnn_impls.split(",")
  def cnn_cfg(impl):
    return {"name": "cnn", "cnn": {"features": (32, 64, 64), "hidden": (128,)},
            "compute": {"conv3x3_impl": impl}}
  cnn = build_model(cnn_cfg(cnn_impls[0]), (28, 28, 1), 10)
  params = cnn.init(jax.random.PRNGKey(0), x)
  y = jnp.argmax(cnn.logits(params, x), -1).astype(jnp.int32)
  if args.interleave or args.only_interleave:
    results["interleaved_cnn"] = interleaved_cnn(
        cnn, params, x, y, args.steps, max(1, args.interleave))
  if args.only_interleave:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=1)
    print(f"wrote {args.out}")
    return
  if not args.no_cnn:
    results["models"]["cnn"] = bench_model(
        f"cnn (conv3x3_impl={cnn_impls[0]})", cnn, params, x, y, args,
        (lambda: make_torch_cnn(params)) if torch_ok else None)
  # The same network and weights computed another way (layers.conv3x3):
  # only ours is timed again; the peers' rows are the first impl's.
  for impl in ([] if args.no_cnn else cnn_impls[1:]):
    m = build_model(cnn_cfg(impl), (28, 28, 1), 10)
    diff = float(jnp.max(jnp.abs(m.logits(params, x) - cnn.logits(params, x))))
    print(f"conv3x3_impl={impl}: logits max diff vs {cnn_impls[0]} "
          f"{diff:.1e}", flush=True)
    quiet = argparse.Namespace(**vars(args))
    quiet.no_torch = quiet.no_foolbox = True
    r = bench_model(f"cnn (conv3x3_impl={impl})", m, params, x, y, quiet)
    for norm, row in r.items():
      for k in ("torchattacks", "foolbox_jax", "foolbox_jax_plain"):
        if k in results["models"]["cnn"][norm]:
          row[k] = results["models"]["cnn"][norm][k]
    results["models"][f"cnn[{impl}]"] = r

  if args.no_firevnet:
    pass
  elif "firevnet" not in model_names():
    print("firevnet not registered in advinv_jax.models: skipped")
    results["firevnet_skipped"] = "not registered"
  else:
    b = args.firevnet_batch or args.batch
    arch, fshape = FIREVNET_ARCHS[args.firevnet_arch]
    fcfg = {"name": "firevnet", "firevnet": arch,
            "compute": {"batch_chunk": args.firevnet_batch_chunk}}
    fnet = build_model(fcfg, fshape, 10)
    xf = jnp.asarray(rng.uniform(0, 1, (b,) + fshape), jnp.float32)
    fparams = fnet.init(jax.random.PRNGKey(0), xf)
    if args.firevnet_perturb:
      prng = np.random.default_rng(1)
      fparams = jax.tree_util.tree_map(
          lambda a: a + jnp.asarray(
              args.firevnet_perturb * prng.standard_normal(a.shape), a.dtype),
          fparams)
    yf = jnp.argmax(fnet.logits(fparams, xf), -1).astype(jnp.int32)
    fargs = argparse.Namespace(**vars(args))
    fargs.loops = tuple(args.firevnet_loops.split(","))
    arch_txt = ", ".join(f"{k} {v}" for k, v in fcfg.items())
    key = "firevnet" if args.firevnet_arch == "small" else (
        f"firevnet_{args.firevnet_arch}")
    results["models"][key] = bench_model(
        f"firevnet ({arch_txt}, {'x'.join(map(str, fshape))})", fnet, fparams,
        xf,
        yf, fargs,
        (lambda: make_torch_firevnet(fnet, fparams)) if torch_ok else None)

  tab = table(results, args.steps)
  results["table_markdown"] = tab
  print()
  print(tab)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=1)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
