"""One check of the library on an accelerator: tests, then timings, one JSON.

Run by ``benchmarks/device_check.sh`` (which first installs the wheels the
machine lacks, see there); by hand::

  python -m benchmarks.device_check --out benchmarks/results/device_check.json
  python -m benchmarks.device_check --cpu --out /tmp/dc.json   # dry run

Sections, in order (the JSON is rewritten after each, so a run cut short
keeps what it did; a section that would start past ``--budget_s`` is
skipped and says so):

1. ``env``: jax / torch versions, devices, the platform defaults in use.
2. ``tests``: the pytest subset of 1-vs-N-device equality and exact-inverse
   tests, on this backend (``--cpu``: only collected, not run), one outcome
   per test.
3. ``ice_step``: the authors' iCE training step (configs/mnist.py:ice:
   fiRevNet 3 x 16 additive steps, width 128, MNIST 32x32x1, batch 128,
   Adamax) with this platform's defaults, float32 and bfloat16 subnet
   compute (``model.compute.dtype``), and the PyTorch port of the same step
   (benchmarks/_torch_train_step.py) on the same device: compile time,
   median step time.
4. ``pgd``: PGD-40 linf on the same (untrained) fiRevNet, ours vs
   torchattacks.PGD on the PyTorch port (benchmarks/_torch_firevnet.py).
5. ``autoattack``: ours (when ``attacks.autoattack`` exists) vs
   torchattacks.AutoAttack, standard version, on a small batch.

Labels are the model's own clean predictions, so every example is attacked
(an untrained network is the workload, not its robustness). Times are
medians of ``--repeats`` calls after a warm-up call, synchronised
(``block_until_ready`` / ``torch.cuda.synchronize``).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform as host_platform
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The pytest subset (50 tests): equality of 1 and N devices (skipped with
# fewer than 4 accelerators), exact inverses and log-dets of every layer and
# model, bfloat16 models' inverses and gradients, reversible gradients.
TEST_FILES = ["tests/test_train.py", "tests/test_models.py",
              "tests/test_layers.py"]
TEST_SELECTION = ("data_parallel_equals_single_device or "
                  "grads_under_user_shard_map or bijective or invertible or "
                  "reversible_grads or inverse")


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--cpu", action="store_true",
                  help="dry run: tiny sizes on the CPU, tests only collected")
  ap.add_argument("--out", default=os.path.join(HERE, "results",
                                                "device_check.json"))
  ap.add_argument("--budget_s", type=float, default=450.0,
                  help="skip sections that would start after this many s")
  ap.add_argument("--repeats", type=int, default=0, help="0: 10 (2 --cpu)")
  ap.add_argument("--batch", type=int, default=0, help="0: 128 (8 --cpu)")
  ap.add_argument("--attack_batch", type=int, default=0,
                  help="PGD batch; 0: 128 (4 --cpu)")
  ap.add_argument("--aa_batch", type=int, default=0,
                  help="AutoAttack batch; 0: 32 (2 --cpu)")
  ap.add_argument("--skip", default="",
                  help="comma-separated sections to skip (tests, ice_step, "
                  "pgd, autoattack)")
  args = ap.parse_args(argv)
  cpu = args.cpu
  args.repeats = args.repeats or (2 if cpu else 10)
  args.batch = args.batch or (8 if cpu else 128)
  args.attack_batch = args.attack_batch or (4 if cpu else 128)
  args.aa_batch = args.aa_batch or (2 if cpu else 32)
  args.skip = {s for s in args.skip.split(",") if s}
  return args


def _median_time(fn, repeats, sync):
  fn()
  sync()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    sync()
    times.append(time.perf_counter() - t0)
  return {"median_s": statistics.median(times), "min_s": min(times),
          "repeats": repeats}


def _torch():
  """``(torch, device, sync)`` or ``None`` when torch is absent."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
  return torch, dev, sync


def input_shape(args):
  """MNIST padded to 32x32 (--cpu: 8x8)."""
  return (8, 8, 1) if args.cpu else (32, 32, 1)


def authors_config(args, compute_dtype="float32"):
  """configs/mnist.py:ice (paper scale), this platform's defaults; --cpu:
  2 levels x 1 step, width 4 (on 8x8 inputs), one small nuisance step."""
  from configs.mnist import mnist_firevnet
  from advinv_jax import platform
  c = mnist_firevnet(loss="ice")
  c.model.compute.dtype = compute_dtype
  if args.cpu:
    c.model.firevnet.levels, c.model.firevnet.depth, c.model.firevnet.width = 2, 1, 4
    c.model.compute.batch_chunk = 0
    c.loss.ice.nuisance_steps, c.loss.ice.nuisance_hidden = 1, (16,)
  return platform.resolve_config(c)


def section_env(args):
  import jax
  from advinv_jax import platform
  info = {"python": sys.version.split()[0], "jax": jax.__version__,
          "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()],
          "device_kind": jax.devices()[0].device_kind,
          "host": host_platform.platform(), "cpu_count": os.cpu_count(),
          "platform_defaults": vars(platform.defaults()).copy(),
          "dry_run": bool(args.cpu)}
  t = _torch()
  info["torch"] = None if t is None else t[0].__version__
  info["torch_device"] = None if t is None else t[1]
  try:
    import torchattacks  # pylint: disable=import-outside-toplevel
    info["torchattacks"] = torchattacks.__version__
  except ImportError:
    info["torchattacks"] = None
  return info


def section_tests(args):
  cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
         *TEST_FILES, "-k", TEST_SELECTION]
  if args.cpu:
    cmd.append("--collect-only")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                if p]))
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=max(60, args.budget_s / 2))
  out = proc.stdout + proc.stderr
  outcomes = dict((m.group(2), m.group(1)) for m in re.finditer(
      r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)", out, re.M))
  collected = re.findall(r"^(tests/\S+::\S+)$", out, re.M)
  return {"returncode": proc.returncode, "seconds": time.perf_counter() - t0,
          "outcomes": outcomes, "collected": len(collected) or len(outcomes),
          "summary": out.strip().splitlines()[-1] if out.strip() else "",
          "ran": not args.cpu}


def _ours_ice_step(cfg, batch, shape):
  """``(model, state, compiled step, args, compile_s)`` of our iCE step."""
  import jax
  from advinv_jax import train
  from advinv_jax.models import build_model
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.uniform(k1, (batch,) + shape)
  y = jax.random.randint(k2, (batch,), 0, 10)
  model = build_model(cfg.model, shape, 10)
  objective = train.make_objective(cfg)
  opt = train.make_optimizer(cfg.optimizer, 1000)
  state = jax.jit(lambda r, v: train.init_train_state(model, objective, opt,
                                                      r, v))(k3, x)
  step = jax.jit(train.make_train_step(
      model, objective, opt, dequant_noise=float(cfg.train.dequant_noise)))
  args = (state, {"image": x, "label": y}, jax.random.PRNGKey(1))
  t0 = time.perf_counter()
  compiled = step.lower(*args).compile()
  return model, state, compiled, args, time.perf_counter() - t0


def section_ice_step(args):
  import jax
  out = {"batch": args.batch}
  built = None
  # (the dry run compiles one: the same code)
  for dtype in ("float32",) if args.cpu else ("float32", "bfloat16"):
    cfg = authors_config(args, dtype)
    model, state, compiled, call_args, compile_s = _ours_ice_step(
        cfg, args.batch, input_shape(args))
    built = built or (cfg, model, state, call_args)
    row = _median_time(lambda: jax.block_until_ready(compiled(*call_args)),  # pylint: disable=cell-var-from-loop
                       args.repeats, lambda: None)
    # The loss after one update (at init the subnets' zero last conv makes
    # it the same in every dtype): float32 vs bfloat16 numerics.
    state1 = compiled(*call_args)[0]
    loss = float(jax.device_get(compiled(state1, *call_args[1:])[1]["loss"]))
    out[f"ours_{dtype}"] = dict(row, compile_s=compile_s, loss_step2=loss,
                                params=model.param_count(),
                                config=cfg.model.compute.to_dict())
    print(f"  ours {dtype}: {row['median_s'] * 1e3:.1f} ms/step, compile "
          f"{compile_s:.1f} s", flush=True)
  t = _torch()
  if t is None:
    out["torch"] = {"skipped": "torch is not installed"}
    return out
  torch, dev, sync = t
  from benchmarks._torch_train_step import make_torch_ice_step
  cfg, model, state, call_args = built
  host = jax.device_get(state)
  x = jax.device_get(call_args[1]["image"])
  y = jax.device_get(call_args[1]["label"])
  step = make_torch_ice_step(cfg, model, host.params, x=x, y=y,
                             loss_params=host.loss_params,
                             nc_params=host.aux["params"], device=dev)
  row = _median_time(step, args.repeats, sync)
  out["torch"] = dict(row, device=dev, torch=torch.__version__)
  print(f"  torch ({dev}): {row['median_s'] * 1e3:.1f} ms/step", flush=True)
  return out


def _attack_setup(args, batch):
  """The authors' fiRevNet (this platform's defaults), its init params, a
  batch and the model's own labels."""
  import jax
  from advinv_jax.models import build_model
  cfg = authors_config(args)
  model = build_model(cfg.model, input_shape(args), 10)
  x = jax.random.uniform(jax.random.PRNGKey(3), (batch,) + input_shape(args))
  params = jax.jit(model.init)(jax.random.PRNGKey(4), x)
  y = jax.jit(model.logits)(params, x).argmax(-1)
  return model, params, x, y


def _torch_net(model, params, dev):
  from benchmarks._torch_firevnet import make_torch_firevnet
  return make_torch_firevnet(model, params).to(dev)


def _torch_inputs(torch, x, y, dev):
  import numpy as np
  xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy(), device=dev)
  yt = torch.tensor(np.asarray(y), dtype=torch.long, device=dev)
  return xt, yt


EPS = 0.1
PGD_STEPS = 40


def section_pgd(args):
  import jax
  from advinv_jax import attacks
  steps = 2 if args.cpu else PGD_STEPS
  model, params, x, y = _attack_setup(args, args.attack_batch)
  fn = jax.jit(lambda p, xx, yy, k: attacks.pgd(
      functools.partial(model.logits, p), xx, yy, eps=EPS, steps=steps,
      rng=k))
  key = jax.random.PRNGKey(5)
  t0 = time.perf_counter()
  compiled = fn.lower(params, x, y, key).compile()
  compile_s = time.perf_counter() - t0
  row = _median_time(lambda: jax.block_until_ready(compiled(params, x, y,
                                                            key)),
                     args.repeats, lambda: None)
  res = compiled(params, x, y, key)
  out = {"steps": steps, "eps": EPS, "batch": args.attack_batch,
         "ours": dict(row, compile_s=compile_s,
                      success=float(res.success.mean()))}
  print(f"  ours PGD-{steps}: {row['median_s']:.3f} s", flush=True)
  out["torchattacks"] = _torchattacks_run(
      args, model, params, x, y, lambda ta, net: ta.PGD(
          net, eps=EPS, alpha=2.5 * EPS / steps, steps=steps,
          random_start=True))
  return out


def _torchattacks_run(args, model, params, x, y, make_attack):
  t = _torch()
  if t is None:
    return {"skipped": "torch is not installed"}
  try:
    import torchattacks  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    return {"skipped": f"torchattacks is not installed ({e})"}
  torch, dev, sync = t
  net = _torch_net(model, params, dev)
  xt, yt = _torch_inputs(torch, x, y, dev)
  atk = make_attack(torchattacks, net)
  row = _median_time(lambda: atk(xt, yt), args.repeats, sync)
  adv = atk(xt, yt)                 # the attack needs gradients
  with torch.no_grad():
    succ = float((net(adv).argmax(1) != yt).float().mean())
  print(f"  torchattacks ({dev}): {row['median_s']:.3f} s", flush=True)
  return dict(row, device=dev, success=succ)


def section_autoattack(args):
  import jax
  from advinv_jax import attacks
  out = {"eps": EPS, "batch": args.aa_batch, "version": "standard"}
  if args.cpu and not hasattr(attacks, "autoattack"):
    return dict(out, ours={"skipped": "attacks.autoattack is not in this "
                           "checkout"}, torchattacks={"skipped": "dry run"})
  model, params, x, y = _attack_setup(args, args.aa_batch)
  small = dict(steps=2, queries=2, fmn_steps=2, num_targets=2) if args.cpu \
      else {}
  if hasattr(attacks, "autoattack"):
    def run():
      res = attacks.autoattack(functools.partial(model.logits, params), x, y,
                               eps=EPS, rng=jax.random.PRNGKey(6), **small)
      return jax.block_until_ready(res)
    t0 = time.perf_counter()
    run()
    first_s = time.perf_counter() - t0
    row = _median_time(run, max(1, args.repeats // 5), lambda: None)
    out["ours"] = dict(row, first_call_s=first_s)
    print(f"  ours AutoAttack: {row['median_s']:.3f} s (first call "
          f"{first_s:.1f} s)", flush=True)
  else:
    out["ours"] = {"skipped": "attacks.autoattack is not in this checkout"}
  if args.cpu:
    out["torchattacks"] = {"skipped": "dry run"}
  else:
    out["torchattacks"] = _torchattacks_run(
        args, model, params, x, y, lambda ta, net: ta.AutoAttack(
            net, norm="Linf", eps=EPS, version="standard", n_classes=10))
  return out


SECTIONS = (("env", section_env), ("tests", section_tests),
            ("ice_step", section_ice_step), ("pgd", section_pgd),
            ("autoattack", section_autoattack))


def main(argv=None):
  args = parse_args(argv)
  if args.cpu:
    os.environ["JAX_PLATFORMS"] = "cpu"
  t_start = time.perf_counter()
  result = {"command": " ".join(sys.argv), "sections": {}}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  for name, fn in SECTIONS:
    elapsed = time.perf_counter() - t_start
    if name in args.skip or (elapsed > args.budget_s and name != "env"):
      result["sections"][name] = {"skipped": "--skip" if name in args.skip
                                  else f"budget: {elapsed:.0f} s elapsed"}
      continue
    print(f"[{elapsed:6.1f} s] {name}", flush=True)
    t0 = time.perf_counter()
    try:
      result["sections"][name] = fn(args)
    except Exception as e:  # pylint: disable=broad-except
      # Recorded, not fatal: the later sections still run.
      result["sections"][name] = {"error": f"{type(e).__name__}: {e}"}
      print(f"  error: {type(e).__name__}: {e}", flush=True)
    result["sections"][name]["section_s"] = time.perf_counter() - t0
    result["total_s"] = time.perf_counter() - t_start
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1, default=str)
  print(f"wrote {args.out} ({result['total_s']:.0f} s)")
  errors = [n for n, s in result["sections"].items() if "error" in s]
  return 1 if errors else 0


if __name__ == "__main__":
  sys.exit(main())
