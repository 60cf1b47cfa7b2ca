"""Cross-check: our AutoAttack against the original AutoAttack code.

Not a test. Trains small models on the built-in digits (8x8, offline) in
JAX, copies their weights into PyTorch and runs, on the same test inputs
and eps, per model, norm and seed:

* ours: ``advinv_jax.attacks.autoattack(version='standard')`` (APGD-CE,
  APGD-T, FAB-T, Square; host mode), the first call (compiling every
  member) and, with ``--compiled``, a second call with another key
  (compiled members reused);
* the original: ``AutoAttack(version='standard')`` of Croce & Hein's code
  (``fra31/auto-attack``), imported from ``--original DIR``, a local copy
  of its source kept outside this repository (it is not on PyPI);
* torchattacks 3.5.1 ``AutoAttack(version='standard')`` (its own ports of
  the four members), a second reference (``--no-torchattacks`` skips it).

Records per input who broke it (our member / the original's member, found
by wrapping the original's member attacks), per-member counts, the
agreement (both robust / both broken / only ours / only the original), the
wall times and the model's forward and backward passes on every side,
counted in examples: ours from ``AutoAttackResult.passes`` (checked
against a counting wrapper in ``tests/test_autoattack.py``), the PyTorch
sides by a wrapper module that counts the rows of every forward and, by a
hook on the output, of every backward. Writes the JSON after every row::

  python -m benchmarks.autoattack_crosscheck --original DIR
  python -m benchmarks.autoattack_crosscheck --original DIR \
      --models firevnet --n 128 --eps-linf 0.04 --eps-l2 0.4

Models: ``mlp`` (256-256), ``cnn`` (32-64-64 / 128) and ``firevnet`` (the
schema's fiRevNet, 3 levels x 4 additive couplings, width 32: the demo's
layout without its logit input layer, which the port lacks; the PyTorch
sides attack our port ``benchmarks/_torch_firevnet.py``). Needs torch and
torchattacks (``benchmarks/requirements-peers.txt``). PyTorch runs with
``--torch-threads`` (default 1: on cores shared with other work its
spinning OpenMP threads were much slower than one thread).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from advinv_jax import attacks
from advinv_jax import platform as advinv_platform
from advinv_jax.config import default_config
from advinv_jax.data import load_digits
from advinv_jax.models import build_model

HERE = os.path.dirname(os.path.abspath(__file__))

EPS = {"linf": 0.08, "l2": 0.6}
MODELS = {"cnn": {"name": "cnn", "cnn": {"features": (32, 64, 64),
                                         "hidden": (128,)}},
          "mlp": {"name": "mlp", "mlp": {"hidden": (256, 256)}},
          # the schema's fiRevNet: 3 levels x 4 additive couplings, width
          # 32 (the demo's without its logit input); PyTorch runs our port
          "firevnet": None}
# The original's member attack objects -> AutoAttack's member names.
STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")


def train(name, train_set, steps, seed=0):
  cfg = MODELS[name]
  cfg = (default_config().model if cfg is None
         else ml_collections.ConfigDict(cfg))
  model = build_model(cfg, input_shape=(8, 8, 1), num_classes=10)
  x_all, y_all = train_set
  params = model.init(jax.random.PRNGKey(seed), jnp.asarray(x_all[:2]))
  opt = optax.adam(1e-3)
  state = opt.init(params)

  @jax.jit
  def step(params, state, x, y):
    def loss(p):
      return optax.softmax_cross_entropy_with_integer_labels(
          model.logits(p, x), y).mean()
    g = jax.grad(loss)(params)
    upd, state = opt.update(g, state, params)
    return optax.apply_updates(params, upd), state

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(0, len(y_all), 128)
    params, state = step(params, state, jnp.asarray(x_all[idx]),
                         jnp.asarray(y_all[idx]))
  return model, params


def torch_net(name, model, params):
  import torch
  import torch.nn.functional as F
  from benchmarks import attacks as mod  # pylint: disable=g-import-not-at-top
  if name == "cnn":
    return mod.make_torch_cnn(params)
  if name == "firevnet":
    return mod.make_torch_firevnet(model, params)

  class TorchMLP(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.fcs = mod.torch_dense_layers(params, len(params))

    def forward(self, x):                                   # NCHW
      x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
      for fc in self.fcs[:-1]:
        x = F.relu(fc(x))
      return self.fcs[-1](x)

  return TorchMLP().eval()


def counted(net):
  """``net`` wrapped to count the examples of every forward and backward."""
  import torch

  class Counted(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.net = net
      self.fwd = self.bwd = 0
      self.on = True

    def _back(self, n):
      self.bwd += n

    def forward(self, x):
      out = self.net(x)
      if self.on:
        n = int(x.shape[0])
        self.fwd += n
        if out.requires_grad:
          out.register_hook(lambda g, n=n: self._back(n))
      return out

  return Counted().eval()


def run_ours(model, params, x, y, norm, eps, seed, compiled):
  """Ours once (``compiled``: twice, the second call with another key and
  the compiled members reused). Returns the first call's result and the
  wall times."""
  fn = jax.tree_util.Partial(model.logits, params)
  walls, first = [], None
  for k in ((seed, seed + 1000) if compiled else (seed,)):
    t = time.perf_counter()
    res = attacks.autoattack(fn, jnp.asarray(x), jnp.asarray(y), eps=eps,
                             norm=norm, version="standard",
                             rng=jax.random.PRNGKey(k))
    jax.block_until_ready(res.x_adv)
    walls.append(time.perf_counter() - t)
    attacks.check_adversarial(x, res.x_adv, eps, norm)
    first = first or res
  return first, walls


def run_original(module, net, x, y, norm, eps, seed):
  """The original AutoAttack, its member attacks wrapped to record who
  broke each input, the time and the passes spent inside each."""
  import torch
  cnet = counted(net)
  xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy())
  yt = torch.tensor(np.asarray(y), dtype=torch.long)
  aa = module.AutoAttack(cnet, norm="Linf" if norm == "linf" else "L2",
                         eps=eps, version="standard", seed=seed,
                         device="cpu", verbose=False)
  row_of = {xt[i].numpy().tobytes(): i for i in range(len(y))}
  member = np.full(len(y), -1)
  per = {m: {"broken": 0, "seconds": 0.0, "forwards": 0, "backwards": 0}
         for m in STANDARD}

  def wrap(obj, name_of):
    inner = obj.perturb

    def perturb(xb, yb, *a, **k):
      name = name_of()
      f0, b0, t0 = cnet.fwd, cnet.bwd, time.perf_counter()
      adv = inner(xb, yb, *a, **k)
      rec = per[name]
      rec["seconds"] += time.perf_counter() - t0
      rec["forwards"] += cnet.fwd - f0
      rec["backwards"] += cnet.bwd - b0
      with torch.no_grad():
        broken = (net(adv).argmax(1) != yb).numpy()
      for i in np.nonzero(broken)[0]:
        g = row_of[xb[i].numpy().tobytes()]
        if member[g] < 0:
          member[g] = STANDARD.index(name)
          rec["broken"] += 1
      return adv
    obj.perturb = perturb

  wrap(aa.apgd, lambda: "apgd-ce")
  wrap(aa.apgd_targeted, lambda: "apgd-t")
  wrap(aa.fab, lambda: "fab-t")
  wrap(aa.square, lambda: "square")
  t = time.perf_counter()
  adv = aa.run_standard_evaluation(xt, yt, bs=len(y))
  wall = time.perf_counter() - t
  cnet.on = False
  with torch.no_grad():
    robust = (net(adv).argmax(1) == yt).numpy()
    d = (adv - xt).reshape(len(y), -1)
    dist = (d.abs().max(1)[0] if norm == "linf" else d.norm(dim=1)).numpy()
  assert np.all(dist[~robust] <= eps * (1 + 1e-5)), dist.max()
  return dict(robust=robust, member=member, per_member=per, wall=wall,
              forwards=cnet.fwd, backwards=cnet.bwd)


def run_torchattacks(net, x, y, norm, eps, seed):
  import torch
  import torchattacks
  cnet = counted(net)
  xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy())
  yt = torch.tensor(np.asarray(y), dtype=torch.long)
  atk = torchattacks.AutoAttack(cnet, norm="Linf" if norm == "linf" else "L2",
                                eps=eps, version="standard", n_classes=10,
                                seed=seed)
  t = time.perf_counter()
  adv = atk(xt, yt)
  wall = time.perf_counter() - t
  cnet.on = False
  with torch.no_grad():
    robust = (net(adv).argmax(1) == yt).numpy()
  return dict(robust=robust, wall=wall, forwards=cnet.fwd,
              backwards=cnet.bwd)


def agreement(ours_rob, ref_rob):
  return {"both_robust": int(np.sum(ours_rob & ref_rob)),
          "both_broken": int(np.sum(~ours_rob & ~ref_rob)),
          "only_ours_broke": int(np.sum(~ours_rob & ref_rob)),
          "only_reference_broke": int(np.sum(ours_rob & ~ref_rob)),
          "agreement": float(np.mean(ours_rob == ref_rob))}


def load_original(path):
  """The ``autoattack`` package of the original code at ``path``."""
  if not os.path.isfile(os.path.join(path, "autoattack", "autoattack.py")):
    raise SystemExit(f"--original {path}: expected a copy of "
                     "fra31/auto-attack (with autoattack/autoattack.py).")
  sys.path.insert(0, os.path.abspath(path))
  module = importlib.import_module("autoattack")
  if not os.path.abspath(module.__file__).startswith(os.path.abspath(path)):
    raise SystemExit(f"imported autoattack from {module.__file__}, not from "
                     f"{path}: remove the other copy from sys.path.")
  return module


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--original", metavar="DIR",
                  help="a local copy of fra31/auto-attack's source")
  ap.add_argument("--models", nargs="+", default=["mlp", "cnn"])
  ap.add_argument("--norms", nargs="+", default=["linf", "l2"])
  ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
  ap.add_argument("--n", type=int, default=256)
  ap.add_argument("--train-steps", type=int, default=400)
  ap.add_argument("--eps-linf", type=float, default=EPS["linf"])
  ap.add_argument("--eps-l2", type=float, default=EPS["l2"])
  ap.add_argument("--compiled", action="store_true",
                  help="time a second call of ours (members compiled)")
  ap.add_argument("--no-torchattacks", action="store_true")
  ap.add_argument("--torch-threads", type=int, default=1)
  ap.add_argument("--out", default=os.path.join(
      HERE, "results", "autoattack_crosscheck.json"))
  ap.add_argument("--table", action="store_true",
                  help="print the markdown table of --out and exit")
  args = ap.parse_args()
  if args.table:
    with open(args.out) as fh:
      data = json.load(fh)
    print(table(data["meta"], data["rows"]))
    return
  import torch
  torch.set_num_threads(args.torch_threads)
  if not args.original:
    raise SystemExit("--original DIR is required: a local copy of "
                     "fra31/auto-attack's source.")
  original = load_original(args.original)
  tr, te = load_digits()
  btr = tr.get(np.arange(len(tr)))
  bte = te.get(np.arange(min(args.n, len(te))))
  x_tr, y_tr = np.asarray(btr["image"]), np.asarray(btr["label"])
  x, y = np.asarray(bte["image"]), np.asarray(bte["label"])
  eps_of = {"linf": args.eps_linf, "l2": args.eps_l2}
  rows = []
  if os.path.exists(args.out):        # keep the rows of other runs
    with open(args.out) as fh:
      old = json.load(fh)
    rows = [r for r in old.get("rows", [])
            if not (r["model"] in args.models and r["norm"] in args.norms
                    and r["seed"] in args.seeds and r["n"] == len(y))]
  meta = {"cpu": advinv_platform.cpu_model(), "cpus": os.cpu_count(),
          "train_steps": args.train_steps, "jax": jax.__version__,
          "torch": torch.__version__, "torch_threads": args.torch_threads}
  for name in args.models:
    for seed in args.seeds:
      model, params = train(name, (x_tr, y_tr), args.train_steps, seed)
      net = torch_net(name, model, params)
      with torch.no_grad():
        zt = net(torch.tensor(x.transpose(0, 3, 1, 2).copy())).numpy()
      zj = np.asarray(model.logits(params, jnp.asarray(x)))
      for norm in args.norms:
        eps = eps_of[norm]
        res, walls = run_ours(model, params, x, y, norm, eps, seed,
                              args.compiled)
        ours_rob = np.asarray(res.clean_correct & ~res.success)
        passes = np.asarray(res.passes)
        row = {"model": name, "seed": seed, "norm": norm, "eps": eps,
               "n": int(len(y)),
               "port_logits_max_abs_diff": float(np.max(np.abs(zt - zj))),
               "clean_accuracy": float(np.mean(res.clean_correct)),
               "ours": {
                   "robust_accuracy": float(res.robust_accuracy),
                   "s": walls[0], "compiled_s": walls[1:] or None,
                   "forwards": int(passes[:, 0].sum()) + 2 * len(y),
                   "backwards": int(passes[:, 1].sum()),
                   "per_member": {
                       m: {"broken": int(res.per_attack_success[i]),
                           "seconds": float(res.seconds[i]),
                           "forwards": int(passes[i, 0]),
                           "backwards": int(passes[i, 1])}
                       for i, m in enumerate(res.attacks)},
                   "flags": [k for k, v in res.flags.items() if bool(v)],
                   "log": attacks.autoattack_log(res),
                   "member": np.asarray(res.attack_index).tolist(),
                   "robust": ours_rob.astype(int).tolist()}}
        print(f"{name} seed {seed} {norm} eps={eps:g}: ours robust "
              f"{row['ours']['robust_accuracy']:.4f} in {walls[0]:.1f} s "
              f"{row['ours']['per_member']}", flush=True)
        orig = run_original(original, net, x, y, norm, eps, seed)
        row["original"] = {
            "robust_accuracy": float(np.mean(orig["robust"])),
            "s": orig["wall"], "forwards": orig["forwards"],
            "backwards": orig["backwards"], "per_member": orig["per_member"],
            "member": orig["member"].tolist(),
            "robust": orig["robust"].astype(int).tolist(),
            **agreement(ours_rob, orig["robust"])}
        # who broke what: [our member][the original's member], -1 = none
        both = np.zeros((5, 5), int)
        for a, b in zip(np.asarray(res.attack_index), orig["member"]):
          both[a + 1, b + 1] += 1
        row["member_table"] = both.tolist()
        print(f"  original robust {row['original']['robust_accuracy']:.4f}"
              f" in {orig['wall']:.1f} s; only ours "
              f"{row['original']['only_ours_broke']}, only original "
              f"{row['original']['only_reference_broke']}", flush=True)
        if not args.no_torchattacks:
          ta = run_torchattacks(net, x, y, norm, eps, seed)
          row["torchattacks"] = {
              "robust_accuracy": float(np.mean(ta["robust"])),
              "s": ta["wall"], "forwards": ta["forwards"],
              "backwards": ta["backwards"],
              **agreement(ours_rob, ta["robust"])}
          print(f"  torchattacks robust "
                f"{row['torchattacks']['robust_accuracy']:.4f} in "
                f"{ta['wall']:.1f} s", flush=True)
        rows.append(row)
        _write(args.out, meta, rows)
  print(table(meta, rows))
  print("wrote", args.out)


def table(meta, rows):
  """The markdown table of docs/attacks.md from the JSON rows."""
  out = ["| model | seed | norm, eps | inputs | clean | robust: ours / "
         "original / torchattacks | only ours broke / only the original | "
         "broken per member, ours (original) | passes fwd / bwd, ours "
         "(original), thousands | original s / ours s: first (compiled) |",
         "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    o, g, t = r["ours"], r["original"], r.get("torchattacks")
    per = " / ".join(
        f"{o['per_member'][m]['broken']} ({g['per_member'][m]['broken']})"
        for m in STANDARD)
    sym = "∞" if r["norm"] == "linf" else "2"
    ta = f"{100 * t['robust_accuracy']:.1f}%" if t else "-"
    comp = (f" ({g['s'] / o['compiled_s'][0]:.1f}x)" if o["compiled_s"]
            else "")
    out.append(
        f"| {r['model']} | {r['seed']} | ℓ{sym} {r['eps']:g} | {r['n']} | "
        f"{100 * r['clean_accuracy']:.1f}% | {100 * o['robust_accuracy']:.1f}%"
        f" / {100 * g['robust_accuracy']:.1f}% / {ta} | "
        f"{g['only_ours_broke']} / {g['only_reference_broke']} | {per} | "
        f"{o['forwards'] / 1e3:.0f} / {o['backwards'] / 1e3:.0f} "
        f"({g['forwards'] / 1e3:.0f} / {g['backwards'] / 1e3:.0f}) | "
        f"{g['s'] / o['s']:.1f}x{comp} |")
  return "\n".join(out) + f"\n\nCPU: {meta['cpu']} ({meta['cpus']} cores)"


def _write(path, meta, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as fh:
    json.dump({"meta": meta, "rows": rows}, fh, indent=None)


if __name__ == "__main__":
  main()
