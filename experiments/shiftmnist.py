"""shiftMNIST (Jacobsen et al. 2019, final version): CE vs iCE trained on
MNIST with a planted label shortcut (configs/shiftmnist.py: by default ONE
pixel whose position encodes the class; ``--shift=code``: a 4-bit binary
code of the label; ``--shift=texture``: a grating per class in the
background), tested where the shortcut points to a random class.
Below, "code" means the planted shortcut of either construction.

A model that uses the shortcut is right on the training distribution and
wrong on the test set; iCE, which must keep the label in z_s and out of z_n,
is expected to rely more on the digit.

Accuracy alone does not say *why* a model fails, so after training each
model is diagnosed on the shifted test set (the random code of each test
image is known: ``code_label`` of ``shift_dataset``'s test batches):

* ``follows digit %`` — share of test predictions (argmax of z_s) equal to
  the true digit; this *is* the test accuracy.
* ``follows code %`` — share equal to the planted (random) code's class. A
  pure shortcut model scores ~100 here and ~10 (chance agreement of code
  and digit) on ``follows digit``; a pure digit model the reverse. The JSON
  also holds ``follows_both`` (prediction = code = digit), ``follows_neither``
  (so follows_code + follows_digit - follows_both + follows_neither = 1),
  ``code_equals_label`` (~0.1) and both rates restricted to the test images
  whose code disagrees with the digit (``*_when_conflict``).
* ``probe z_s / z_n -> digit (train->test) %`` — an MLP probe
  (``invariance.train_nuisance_classifier``) trained on features of (a subset
  of) the *training* set, where code = digit, to predict the digit from the
  10 logits z_s or from the nuisance z_n, then tested on the shifted test
  set. It can use the code or the digit, whichever the features make easier,
  so it measures the digit information that survives along the training
  shortcut.
* ``probe z_s / z_n -> digit (test half->half) %`` — the same probe trained
  on the features of one random half of the shifted test set and tested on
  the other half: is the digit decodable at all from z_s / z_n under the
  shift, regardless of the training shortcut?

Interpretation: the paper's mechanism is that iCE must move label
information out of z_n into z_s (here the label is the digit *and* the code,
which coincide in training). That predicts a low z_n probe for iCE (digit
not in z_n) and a high half->half z_s probe (digit in z_s). Whether the
*argmax* of z_s then follows the digit or the code is a separate question,
answered by the ``follows`` columns: a model can hold the digit in z_s (high
half->half z_s probe) and still let the code dominate the argmax (high
``follows code``). With CE nothing forces the digit out of z_n, so for CE
the z_n probes stay high while the argmax may still use the code.

  ADVINV_MNIST_DIR=/path/to/mnist python -m experiments.shiftmnist \
      --scale=cpu --workdir=workdirs/shiftmnist
Cost: tiny ~1 min; cpu ~40 min on 2 cores (two models, 2 epochs each) plus
~1-2 min of diagnostics per model; paper: GPU. The paper's construction and
numbers could not be verified, so no paper column is
printed.
"""
from __future__ import annotations

import os
import time

import numpy as np
from absl import flags

from advinv_jax import cli
from experiments import _common as C

_SCALE = flags.DEFINE_string("scale", "cpu", "tiny | cpu | paper")
_CONFIG = C.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/shiftmnist", "")
_LOSSES = C.define_losses_flag()
_RECIPE = C.define_recipe_flag()
_SHIFT = flags.DEFINE_enum("shift", "pixel", ["pixel", "code", "texture"],
                           "the planted shortcut (configs/shiftmnist.py)")

# Diagnostics per scale: training examples for the train->test probes (0 =
# all) and the probes' optimisation (Adam minibatches of 128).
_PROBE = {
    "tiny": dict(num_train=0, steps=20, hidden=(32,)),
    "cpu": dict(num_train=10000, steps=1500, hidden=(256,)),
    "paper": dict(num_train=0, steps=5000, hidden=(256,)),
}


def configs(scale, recipe="ours", shift="pixel"):
  out = {}
  for loss in ("ce", "ice"):
    if scale == "tiny":
      # 8x8 digits: no room for 10 pixel rows, so the 4-bit code
      c = C.tiny(C.load_config("digits", loss) if recipe == "ours" else
                 C.load_config("shiftmnist", f"{loss},authors,code"))
      c.data.shift.enabled = True
      c.data.shift.construction = "code"
      c.data.shift.code_size = 4
      out[loss] = c
    else:
      out[loss] = C.load_config("shiftmnist",
                                f"{loss},{scale},{recipe},{shift}")
  return out


def features(model, params, source, indices, batch_size):
  """z_s, z_n and the batch keys of ``source[indices]``, in fixed batches.

  One jitted forward pass of ``batch_size`` examples (the last batch is
  zero-padded and its padding dropped), so it compiles once.

  Returns:
    ``{"z_s": f32[n, C], "z_n": f32[n, d - C], "label": i32[n]}`` plus
    ``"code_label": i32[n]`` where the source provides it.
  """
  import jax
  enc = jax.jit(lambda p, x: model.split(model.forward(p, x)[0]))
  out = {}
  for start in range(0, len(indices), batch_size):
    got = source.get(indices[start:start + batch_size])
    x = got.pop("image")
    n = x.shape[0]
    if n < batch_size:
      x = np.concatenate([x, np.zeros((batch_size - n,) + x.shape[1:],
                                      x.dtype)])
    z_s, z_n = enc(params, x)
    got["z_s"], got["z_n"] = np.asarray(z_s)[:n], np.asarray(z_n)[:n]
    for k, v in got.items():
      out.setdefault(k, []).append(np.asarray(v))
  return {k: np.concatenate(v) for k, v in out.items()}


def follow_rates(pred, label, code):
  """Shares of predictions equal to the digit / the code (see docstring)."""
  pred, label, code = (np.asarray(a) for a in (pred, label, code))
  conflict = code != label
  nc = max(int(conflict.sum()), 1)
  return {
      "follows_digit": float(np.mean(pred == label)),
      "follows_code": float(np.mean(pred == code)),
      "follows_both": float(np.mean((pred == label) & (pred == code))),
      "follows_neither": float(np.mean((pred != label) & (pred != code))),
      "code_equals_label": float(np.mean(~conflict)),
      "num_conflict": int(conflict.sum()),
      "follows_digit_when_conflict": float(
          np.sum((pred == label) & conflict) / nc),
      "follows_code_when_conflict": float(
          np.sum((pred == code) & conflict) / nc),
  }


def diagnose(workdir: str, scale: str, seed: int = 0):
  """Follow rates and digit probes of the model trained in ``workdir``."""
  import jax
  from advinv_jax import invariance
  from advinv_jax.train import load_trained
  cfg, exp, state, _ = load_trained(workdir)
  model, params, ds = exp.model, state.params, exp.dataset
  pc = _PROBE[scale]
  bs = int(cfg.eval.batch_size)
  rng = np.random.default_rng(seed)
  n_tr = len(ds.train)
  if 0 < pc["num_train"] < n_tr:
    tr_idx = np.sort(rng.choice(n_tr, pc["num_train"], replace=False))
  else:
    tr_idx = np.arange(n_tr)
  tr = features(model, params, ds.split("train"), tr_idx, bs)
  te = features(model, params, ds.test, np.arange(len(ds.test)), bs)
  if "code_label" not in te:
    raise ValueError("the test set has no code_label; shiftmnist needs "
                     "config.data.shift.enabled=True and test_mode='random'.")
  y_te = te["label"]
  out = follow_rates(np.argmax(te["z_s"], -1), y_te, te["code_label"])
  out["num_test"] = int(len(y_te))
  counts = np.bincount(y_te, minlength=model.num_classes)
  out["majority_class_accuracy"] = float(counts.max() / counts.sum())

  perm = rng.permutation(len(y_te))
  half_a, half_b = perm[:len(perm) // 2], perm[len(perm) // 2:]
  key = jax.random.PRNGKey(seed)
  probes = {}
  for i, (name, which, (za, ya), (zb, yb)) in enumerate([
      ("zs_train_to_test", "z_s", (tr["z_s"], tr["label"]),
       (te["z_s"], y_te)),
      ("zn_train_to_test", "z_n", (tr["z_n"], tr["label"]),
       (te["z_n"], y_te)),
      ("zs_test_half", "z_s", (te["z_s"][half_a], y_te[half_a]),
       (te["z_s"][half_b], y_te[half_b])),
      ("zn_test_half", "z_n", (te["z_n"][half_a], y_te[half_a]),
       (te["z_n"][half_b], y_te[half_b])),
  ]):
    acc_a, acc_b, _ = invariance.train_nuisance_classifier(
        za, ya, zb, yb, hidden=pc["hidden"], steps=pc["steps"], lr=1e-3,
        batch_size=128, rng=jax.random.fold_in(key, i),
        num_classes=model.num_classes)
    probes[name] = {"features": which, "target": "digit",
                    "train_accuracy": float(acc_a),
                    "test_accuracy": float(acc_b),
                    "num_train": int(len(ya)), "num_test": int(len(yb))}
  out["probes"] = probes
  out["probe_settings"] = {**pc, "hidden": list(pc["hidden"]), "lr": 1e-3,
                           "batch_size": 128}
  return out


def run(scale: str, workdir: str, overrides=None, losses=(), recipe="ours",
        shift="pixel"):
  C.check_scale(scale)
  overrides = dict(overrides or {})
  rows, data = [], {"scale": scale, "overrides": dict(overrides),
                    "losses": list(losses), "recipe": recipe, "shift": shift}
  cfgs = C.select_losses(configs(scale, recipe, shift), losses)
  for cfg in cfgs.values():
    cfg.report.enabled = False
  for loss, cfg in C.prepare(cfgs, overrides).items():
    wd = os.path.join(workdir, loss)
    res = C.train_and_report(cfg, wd)
    tr, te = res["results"]["train"], res["results"]["test"]
    t = time.perf_counter()
    diag = diagnose(wd, scale, seed=int(cfg.seed))
    diag["seconds"] = time.perf_counter() - t
    data[loss] = {"train_accuracy_with_code": tr["accuracy"],
                  "test_accuracy_random_code": te["accuracy"],
                  "follows_digit": diag["follows_digit"],
                  "follows_code": diag["follows_code"],
                  "diagnostics": diag,
                  "seconds": res["seconds"]}
    pr = diag["probes"]
    rows.append([loss.upper(), C.fmt(tr["accuracy"], pct=True),
                 C.fmt(te["accuracy"], pct=True),
                 C.fmt(diag["follows_code"], pct=True),
                 C.fmt(pr["zs_train_to_test"]["test_accuracy"], pct=True),
                 C.fmt(pr["zn_train_to_test"]["test_accuracy"], pct=True),
                 C.fmt(pr["zs_test_half"]["test_accuracy"], pct=True),
                 C.fmt(pr["zn_test_half"]["test_accuracy"], pct=True),
                 f"{res['seconds'] / 60:.1f} + {diag['seconds'] / 60:.1f} min"])
  notes = ("follows digit = test accuracy; follows code = predictions equal "
           "to the planted random code's class (chance agreement of code and "
           "digit ~10%). Probes: MLP predicting the digit from z_s or z_n, "
           "trained on training-set features (code = digit) or on one half "
           "of the shifted test set, accuracy on the shifted test set (other "
           "half). Cost: training + diagnostics.")
  C.write_results(
      workdir, f"shiftmnist (scale={scale}, recipe={recipe}, shift={shift})",
      ["loss", "train acc % (code = label)",
       "test acc % (random code) = follows digit", "follows code %",
       "probe z_s->digit % (train->test)", "probe z_n->digit % (train->test)",
       "probe z_s->digit % (test half->half)",
       "probe z_n->digit % (test half->half)", "cost"], rows, data,
      notes=notes)
  return data


main = C.scale_main(run, _SCALE, _WORKDIR, _LOSSES, _RECIPE, _SHIFT)


if __name__ == "__main__":
  cli.run(main)
