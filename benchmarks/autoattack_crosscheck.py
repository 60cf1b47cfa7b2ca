"""Cross-check: our AutoAttack vs torchattacks' AutoAttack (the reference).

Not a test. Trains small models on the built-in digits (8x8, offline) in
JAX, copies their weights into PyTorch, runs torchattacks 3.5.1
``AutoAttack(version='standard')`` and ours (``advinv_jax.attacks.
autoattack``, standard, host mode) on the same test inputs and eps, and
prints both robust accuracies, the per-input agreement and both wall times
(ours twice: the first call including compilation, and a second call with
the compiled members reused). Writes ``benchmarks/results/
autoattack_crosscheck.json`` after every run, so an interrupted run keeps
what finished::

  python -m benchmarks.autoattack_crosscheck              # 256 inputs
  python -m benchmarks.autoattack_crosscheck --n 64 --models mlp --norms linf
  python -m benchmarks.autoattack_crosscheck --models firevnet --n 64 \
      --norms linf --out benchmarks/results/autoattack_crosscheck_firevnet.json

Models: ``mlp`` (256-256), ``cnn`` (32-64-64 / 128) and ``firevnet`` (the
demo's fiRevNet, 3 levels x 4 additive couplings, width 32; torchattacks
attacks our PyTorch port ``benchmarks/_torch_firevnet.py``).

Needs the peers of ``benchmarks/requirements-peers.txt`` (torch,
torchattacks) in the interpreter that runs it. ``--budget-min`` skips the
remaining torchattacks runs once the script has used that many minutes
(reported as skipped). ``--torch-threads`` sets PyTorch's threads (default:
all cores; with other load on the cores, 1 thread is the faster choice).
``--compilation-cache DIR`` turns on JAX's persistent compilation cache in
DIR (``JAX_COMPILATION_CACHE_DIR`` does the same): run the script twice and
the second run's first call is the first call of a new process whose
programs were compiled before (a report of another checkpoint, a relaunch).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from advinv_jax import attacks
from advinv_jax.config import default_config
from advinv_jax.data import load_digits
from advinv_jax.models import build_model

HERE = os.path.dirname(os.path.abspath(__file__))

EPS = {"linf": 0.1, "l2": 0.5}
MODELS = {"cnn": {"name": "cnn", "cnn": {"features": (32, 64, 64),
                                         "hidden": (128,)}},
          "mlp": {"name": "mlp", "mlp": {"hidden": (256, 256)}},
          # the demo's model (configs/default.py): 3 levels x 4 additive
          # couplings, width 32; torchattacks runs our PyTorch port of it
          "firevnet": None}


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


def run_ours(model, params, x, y, norm, eps, seed):
  """Ours twice: the first call (compiling every member) and a second one
  on the same inputs with another key (compiled members reused, as in a
  report's later eps values or checkpoints). Returns the first call's
  result and both wall times."""
  fn = jax.tree_util.Partial(model.logits, params)
  walls = []
  for k in (seed, seed + 1):
    t = time.perf_counter()
    res = attacks.autoattack(fn, jnp.asarray(x), jnp.asarray(y), eps=eps,
                             norm=norm, version="standard",
                             rng=jax.random.PRNGKey(k))
    jax.block_until_ready(res.x_adv)
    walls.append(time.perf_counter() - t)
    attacks.check_adversarial(x, res.x_adv, eps, norm)
    if k == seed:
      first = res
  return first, walls[0], walls[1]


def run_theirs(net, x, y, norm, eps, seed):
  import torch
  import torchattacks
  xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy())
  yt = torch.tensor(np.asarray(y), dtype=torch.long)
  atk = torchattacks.AutoAttack(net, norm="Linf" if norm == "linf" else "L2",
                                eps=eps, version="standard", n_classes=10,
                                seed=seed)
  t = time.perf_counter()
  adv = atk(xt, yt)
  wall = time.perf_counter() - t
  with torch.no_grad():
    robust = (net(adv).argmax(1) == yt).numpy()
  return robust, wall


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--models", nargs="+", default=["mlp", "cnn"])
  ap.add_argument("--norms", nargs="+", default=["linf", "l2"])
  ap.add_argument("--n", type=int, default=256)
  ap.add_argument("--train-steps", type=int, default=400)
  ap.add_argument("--eps-linf", type=float, default=EPS["linf"])
  ap.add_argument("--eps-l2", type=float, default=EPS["l2"])
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--budget-min", type=float, default=45.0)
  ap.add_argument("--torch-threads", type=int, default=None,
                  help="PyTorch's intra-op threads (default: all cores). "
                  "Under other load on the cores, 1 can be much faster: "
                  "OpenMP threads that wait for a descheduled peer spin.")
  ap.add_argument("--compilation-cache", default=None, metavar="DIR",
                  help="JAX's persistent compilation cache directory "
                  "(every program, however short its compile).")
  ap.add_argument("--out", default=os.path.join(
      HERE, "results", "autoattack_crosscheck.json"))
  args = ap.parse_args()
  cache = "off"
  if args.compilation_cache:
    cache = ("warm" if os.path.isdir(args.compilation_cache)
             and os.listdir(args.compilation_cache) else "cold")
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  import torch
  torch_threads = args.torch_threads or os.cpu_count() or 1
  torch.set_num_threads(torch_threads)
  t_start = time.perf_counter()
  tr, te = load_digits()
  btr = tr.get(np.arange(len(tr)))
  bte = te.get(np.arange(min(args.n, len(te))))
  x_tr, y_tr = np.asarray(btr["image"]), np.asarray(btr["label"])
  x, y = np.asarray(bte["image"]), np.asarray(bte["label"])
  eps_of = {"linf": args.eps_linf, "l2": args.eps_l2}
  rows = []
  meta = {"machine": platform.processor() or platform.machine(),
          "cpus": os.cpu_count(), "n": int(len(y)),
          "train_steps": args.train_steps,
          "jax": jax.__version__, "torch": torch.__version__,
          "torch_threads": torch_threads,
          # persistent compilation cache at the start: off | cold | warm
          "compilation_cache": cache}
  for name in args.models:
    model, params = train(name, (x_tr, y_tr), args.train_steps, args.seed)
    net = torch_net(name, model, params)
    with torch.no_grad():
      zt = net(torch.tensor(x.transpose(0, 3, 1, 2).copy())).numpy()
    zj = np.asarray(model.logits(params, jnp.asarray(x)))
    port_diff = float(np.max(np.abs(zt - zj)))
    for norm in args.norms:
      eps = eps_of[norm]
      res, t_ours, t_warm = run_ours(model, params, x, y, norm, eps,
                                     args.seed)
      ours_rob = np.asarray(res.clean_correct & ~res.success)
      row = {"model": name, "norm": norm, "eps": eps,
             "clean_accuracy": float(np.mean(res.clean_correct)),
             "ours_robust_accuracy": float(res.robust_accuracy),
             "ours_s": t_ours, "ours_warm_s": t_warm,
             "ours_per_attack": dict(zip(res.attacks, np.asarray(
                 res.per_attack_success).tolist())),
             "ours_attack_s": dict(zip(res.attacks, np.asarray(
                 res.seconds).round(2).tolist())),
             "ours_flags": {k: bool(v) for k, v in res.flags.items()},
             "port_logits_max_abs_diff": port_diff}
      print(f"{name:4s} {norm:4s} ours: robust {row['ours_robust_accuracy']:.3f}"
            f" in {t_ours:.1f} s (per attack {row['ours_per_attack']}); "
            "torchattacks running...", flush=True)
      rows.append(row)
      _write(args.out, meta, rows)
      used = (time.perf_counter() - t_start) / 60.0
      if used > args.budget_min:
        row["theirs"] = f"skipped: budget of {args.budget_min} min used"
      else:
        theirs_rob, t_theirs = run_theirs(net, x, y, norm, eps, args.seed)
        row.update({
            "theirs_robust_accuracy": float(np.mean(theirs_rob)),
            "theirs_s": t_theirs, "speedup": t_theirs / t_ours,
            "speedup_warm": t_theirs / t_warm,
            "both_robust": int(np.sum(ours_rob & theirs_rob)),
            "both_broken": int(np.sum(~ours_rob & ~theirs_rob)),
            "only_ours_broke": int(np.sum(~ours_rob & theirs_rob)),
            "only_theirs_broke": int(np.sum(ours_rob & ~theirs_rob)),
            "agreement": float(np.mean(ours_rob == theirs_rob))})
      th = row.get("theirs_robust_accuracy")
      print(f"{name:4s} {norm:4s} eps={eps:<5g} clean {row['clean_accuracy']:.3f}"
            f"  ours {row['ours_robust_accuracy']:.3f} ({t_ours:6.1f} s, "
            f"compiled {t_warm:5.1f} s)  "
            + (f"torchattacks {th:.3f} ({row['theirs_s']:6.1f} s)  "
               f"agree {row['agreement']:.3f}  only-ours "
               f"{row['only_ours_broke']}  only-theirs "
               f"{row['only_theirs_broke']}  speedup {row['speedup']:.1f}x "
               f"(compiled: {row['speedup_warm']:.1f}x)"
               if th is not None else row["theirs"]), flush=True)
      _write(args.out, meta, rows)
  print("wrote", args.out)


def _write(path, meta, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as fh:
    json.dump({"meta": meta, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
  main()
