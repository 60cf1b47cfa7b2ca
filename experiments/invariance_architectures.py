"""Jacobsen et al. 2019's "excessive invariance across architecture types":
an MLP, a CNN, and a fiRevNet trained with CE and with iCE, on MNIST, each
attacked from both sides and judged by an independent oracle.

For each model, on the same test pairs (A, B) of different classes:

* sensitivity: AutoAttack's robust accuracy at linf and l2 eps;
* invariance: the invariance attack (:func:`advinv_jax.invariance.
  invariance_rate`): an x within eps of B whose logits equal A's (relative
  error <= 1e-2), a success when the oracle still reads x as B's class; at
  the same eps and anywhere in the box (eps = inf, the model metamer of A
  started at B, Feather et al. 2023);
* what the box-only metamers look like to the oracle (B's class, A's, or
  another), and for the fiRevNets what the analytic metamers
  F^-1(z_s(A), z_n(B)) look like, with their in-bounds share and largest
  overshoot; with ``--second_oracle``, also to the oracle of the other
  architecture (how much the judgement depends on the judge).

The oracle is a classifier of another architecture than the model under
test (a CNN for the MLP and the fiRevNets, an MLP for the CNN), trained once
on the training set and cached in ``<workdir>/oracle``.

  ADVINV_MNIST_DIR=/path/to/mnist python -m experiments.invariance_architectures \\
      --scale=cpu --workdir=workdirs/invariance_architectures
Scales: tiny (the bundled digits, a few training steps; minutes, most of it
compilation), cpu (MNIST padded to 32x32: the fiRevNets at
configs/mnist.py's cpu scale, 3 levels x 4 additive steps, width 32; the MLP
256-256 and the CNN 32-64-64; 2 epochs each unless overridden; 128 test
pairs; AutoAttack as published, version='standard'). The cpu run in
docs/results.md cost 37 min for the four models on 2 shared cores, 1.8 to
17.6 min per model (training + evaluation; the CNN's training the most),
with both oracles loaded from the cache (training them adds minutes);
``--second_oracle`` on the trained checkpoints re-evaluated them in 9 min.
"""
from __future__ import annotations

import os
import time

from absl import flags
import numpy as np

from advinv_jax import cli
from experiments import _common as C

_SCALE = flags.DEFINE_string("scale", "cpu", "tiny | cpu")
_CONFIG = C.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/invariance_architectures",
                               "")
_MODELS = C.define_losses_flag()      # --losses=mlp,firevnet_ice: a subset
_NUM_PAIRS = flags.DEFINE_integer(
    "num_pairs", 0, "test pairs (A, B) per model (0: the scale's default)")
_SECOND_ORACLE = flags.DEFINE_bool(
    "second_oracle", False,
    "also judge the metamers by the oracle of the other architecture (the "
    "MLP's and the fiRevNets' by an MLP oracle, the CNN's by a CNN one): how "
    "much the judgement depends on the judge")

MODELS = ("mlp", "cnn", "firevnet_ce", "firevnet_ice")
INF = float("inf")
# Per scale: test pairs, invariance attack steps (projected Adam, lr 0.03
# on pixels), eps of both attacks, the oracle's training, AutoAttack (at cpu
# as published: version='standard', APGD-CE, APGD-T, FAB-T, Square at the
# authors' budgets).
SETTINGS = {
    "tiny": dict(num_pairs=4, steps=20, linf_eps=(0.1,), l2_eps=(),
                 oracle_steps=30, oracle_train=512,
                 autoattack=dict(version="custom", attacks=("apgd-ce",),
                                 steps=3)),
    "cpu": dict(num_pairs=128, steps=500, linf_eps=(0.1,), l2_eps=(),
                oracle_steps=1000, oracle_train=60000,
                autoattack=dict(version="standard")),
}
# AutoAttack's published members and budgets (``attacks.autoattack``'s
# defaults), named in the table's notes.
_STANDARD = ("version=standard: APGD-CE (100 steps), APGD-T (9 targets x 100 "
             "steps), FAB-T (9 targets x 100 steps), Square (5000 queries)")


def configs(scale):
  out = {}
  for name in MODELS:
    loss = "ice" if name.endswith("_ice") else "ce"
    if scale == "tiny":
      c = C.tiny(C.load_config("digits", loss))
    else:
      c = C.load_config("mnist", f"{loss},cpu")
    if not name.startswith("firevnet"):
      c.model.name = name
      c.model.compute.batch_chunk = 0
      if scale != "tiny":
        c.model.mlp.hidden = (256, 256)
    c.report.enabled = False        # both attacks run here, on equal pairs
    out[name] = c
  return out


def _pairs(y: np.ndarray, n: int):
  """``n`` pairs (A, B) of different classes: the images sorted by class,
  B half the list away from A."""
  order = np.argsort(y, kind="stable")
  ia, ib = order, np.roll(order, len(order) // 2)
  keep = y[ia] != y[ib]
  return ia[keep][:n], ib[keep][:n]


def _oracle(ds, architecture, settings, workdir):
  import jax  # pylint: disable=g-import-not-at-top  (after the flags parse)
  from advinv_jax import invariance as I
  tr = ds.split("train").get(np.arange(min(len(ds.train),
                                           settings["oracle_train"])))
  te = ds.test.get(np.arange(min(len(ds.test), 2000)))
  return I.train_oracle(tr["image"], tr["label"],
                        cache_dir=os.path.join(workdir, "oracle"),
                        rng=jax.random.PRNGKey(0), architecture=architecture,
                        num_classes=ds.num_classes, x_test=te["image"],
                        y_test=te["label"], steps=settings["oracle_steps"])


OTHER = {"cnn": "mlp", "mlp": "cnn"}


def evaluate(model, params, ds, settings, workdir):
  """Both attacks and the oracle's judgement on one trained model (with
  ``settings['second_oracle']``, also the other oracle's judgement of the
  metamers, as ``*_second_oracle``)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from advinv_jax import attacks as A  # pylint: disable=g-import-not-at-top
  from advinv_jax import invariance as I  # pylint: disable=g-import-not-at-top
  oracle = _oracle(ds, I.oracle_architecture(model), settings, workdir)
  test = ds.test.get(np.arange(min(len(ds.test), 4 * settings["num_pairs"])))
  x, y = jnp.asarray(test["image"]), np.asarray(test["label"])
  ia, ib = _pairs(y, settings["num_pairs"])
  xa, xb, ya, yb = x[ia], x[ib], jnp.asarray(y[ia]), jnp.asarray(y[ib])
  logits_fn = jax.tree_util.Partial(model.logits, params)
  bounds = ds.bounds
  out = {"oracle": {"architecture": oracle.architecture,
                    "test_accuracy": oracle.test_accuracy,
                    "loaded": oracle.loaded},
         "num_pairs": int(len(ia)),
         "clean_accuracy": float(jnp.mean(jnp.argmax(logits_fn(xb), -1)
                                          == yb)),
         "oracle_clean_accuracy": float(jnp.mean(jnp.argmax(
             oracle.logits(xb), -1) == yb))}
  kw = dict(steps=settings["steps"], lr=0.03, bounds=bounds)
  for norm in ("linf", "l2"):
    eps = settings[f"{norm}_eps"]
    if norm == "linf" and not eps:
      continue
    ra = []
    for k, e in enumerate(eps):
      res = A.autoattack(logits_fn, xb, yb, eps=e, norm=norm, bounds=bounds,
                         rng=jax.random.PRNGKey(k), **settings["autoattack"])
      ra.append(float(res.robust_accuracy))
      out.setdefault("autoattack_log", {})[f"{norm} {e:g}"] = (
          A.autoattack_log(res))
    inv = I.invariance_rate(logits_fn, oracle.logits, xa, xb, yb,
                            eps + ((INF,) if norm == "l2" else ()),
                            norm=norm, **kw)      # l2 ends with the box only
    x_box = inv.pop("x")
    out[norm] = dict(inv, robust_accuracy=ra)
  # The box-only search (the last l2 entry, eps = inf): model metamers of A
  # started at B; what do they look like?
  judges = {"": oracle}
  if settings.get("second_oracle"):
    second = _oracle(ds, OTHER[oracle.architecture], settings, workdir)
    judges["_second_oracle"] = second
    out["second_oracle"] = {"architecture": second.architecture,
                            "test_accuracy": second.test_accuracy,
                            "loaded": second.loaded}

  def judge(orc, xm):
    return I.summarize_judgement(
        I.judge_metamers(orc.logits, xm, xa, xb, ya, yb, bounds=bounds))

  for suffix, orc in judges.items():
    out["box_metamers" + suffix] = judge(orc, x_box)
  if getattr(model, "invertible", False):
    z = I.metamer_latent(model, params, xa, xb)
    met = model.inverse(params, z)
    v = I.summarize_validity(I.metamer_validity(model, params, met, z,
                                                bounds=bounds))
    for suffix, orc in judges.items():
      out["analytic_metamers" + suffix] = dict(judge(orc, met),
                                               valid_share=v["valid_share"])
  return out


def _aa_members(aa) -> str:
  """AutoAttack's members and budgets as run (the settings' dict)."""
  if aa.get("version") == "standard" and len(aa) == 1:
    return _STANDARD
  return ", ".join(f"{k}={v}" for k, v in aa.items())


def _with_ci(rate, n) -> str:
  """``rate`` in % with its Wilson 95% interval on ``n`` trials."""
  # pylint: disable-next=g-import-not-at-top  (after the flags parse)
  from advinv_jax.report import wilson_interval
  lo, hi = wilson_interval(int(round(rate * n)), int(n))
  return f"{100 * rate:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def _write_table(workdir, scale, s, rows, data):
  """results.md / results.json of the models done so far."""
  header = (["model", "test err %", "oracle"]
            + [f"linf {e:g}: AA robust / invariance %" for e in s["linf_eps"]]
            + [f"l2 {e:g}: AA robust / invariance %" for e in s["l2_eps"]]
            + ["invariance % (box only)", "logits matched % (box only)",
               "box metamers read as B/A/other %",
               "analytic metamers read as B/A/other %"]
            + (["second oracle", "box / analytic metamers read as B/A/other "
                "% by it"] if s.get("second_oracle") else [])
            + ["cost"])
  C.write_results(
      workdir, f"invariance_architectures (scale={scale})", header, rows,
      data,
      notes=f"{s['num_pairs']} test pairs (A, B) of different classes per "
            "model; rates in % with Wilson 95% intervals [low, high]. AA: "
            f"AutoAttack ({_aa_members(s['autoattack'])}) on the B images. "
            "Invariance: an x within eps of B (projected Adam, "
            f"{s['steps']} steps) whose logits match A's within 1e-2 "
            "(relative l2) and that the oracle still reads as B's class. "
            "The oracle: a CNN for the MLP and the fiRevNets, an MLP for the "
            "CNN, trained on the training set, never attacked.")


def _shares(j) -> str:
  """B/A/other shares (%) of a judgement summary; n/a for None."""
  return "n/a" if j is None else "/".join(
      C.fmt(j[k], pct=True, digits=0)
      for k in ("as_nuisance_source", "as_logits_source", "as_other"))


def run(scale: str, workdir: str, overrides=None, models=(),
        num_pairs: int = 0, second_oracle: bool = False):
  # pylint: disable=g-import-not-at-top,unused-import  (all loaded up front)
  from advinv_jax import attacks, invariance  # noqa: F401
  from advinv_jax.train import load_trained
  C.check_scale(scale, tuple(SETTINGS))
  settings = dict(SETTINGS[scale])
  if num_pairs:
    settings["num_pairs"] = int(num_pairs)
  if second_oracle:
    settings["second_oracle"] = True
  overrides = dict(overrides or {})
  data = {"scale": scale, "overrides": dict(overrides),
          "models": list(models),
          "settings": {k: v for k, v in settings.items()}}
  rows = []
  cfgs = C.prepare(C.select_losses(configs(scale), models), overrides)
  for name, cfg in cfgs.items():
    wd = os.path.join(workdir, name)
    res = C.train_and_report(cfg, wd)
    t = time.perf_counter()
    _, exp, state, _ = load_trained(wd, with_extras=False)
    r = evaluate(exp.model, state.params, exp.dataset, settings, workdir)
    r["test_error"] = res["results"]["test"]["error"]
    r["train_seconds"], r["eval_seconds"] = (res["seconds"],
                                             time.perf_counter() - t)
    data[name] = r
    lin, l2 = r["linf"], r["l2"]
    an = r.get("analytic_metamers")
    n = r["num_pairs"]
    rows.append(
        [name, C.fmt(r["test_error"], pct=True), r["oracle"]["architecture"]]
        + [f"{_with_ci(a, n)} / {_with_ci(i, n)}"
           for a, i in zip(lin["robust_accuracy"], lin["invariance_rate"])]
        + [f"{_with_ci(a, n)} / {_with_ci(i, n)}"
           for a, i in zip(l2["robust_accuracy"], l2["invariance_rate"])]
        + [_with_ci(l2["invariance_rate"][-1], n),
           _with_ci(l2["matched"][-1], n),
           _shares(r["box_metamers"]),
           "n/a" if an is None else _shares(an)
           + f" ({C.fmt(an['in_bounds_share'], pct=True, digits=0)} in box,"
           f" overshoot {an['overshoot_max']:.2g})"]
        + ([r["second_oracle"]["architecture"],
            f"{_shares(r['box_metamers_second_oracle'])} / "
            f"{_shares(r.get('analytic_metamers_second_oracle'))}"]
           if second_oracle else [])
        + [f"{(r['train_seconds'] + r['eval_seconds']) / 60:.1f} min"])
    _write_table(workdir, scale, settings, rows, data)  # each model as it ends
  return data


main = C.scale_main(run, _SCALE, _WORKDIR, _MODELS, _NUM_PAIRS,
                    _SECOND_ORACLE)


if __name__ == "__main__":
  cli.run(main)
