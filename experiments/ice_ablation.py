"""iCE ablation: our MNIST recipe vs the authors' (Jacobsen et al. 2019,
jhjacobsen/fully-invertible-revnet) vs each single difference.

Every row trains one fiRevNet with iCE and reports its logit test error and
the test error of the post-hoc classifier on z_n (Table 2's two columns):

* ``ours``    — configs/mnist.py:ice,<scale>;
* ``authors`` — configs/mnist.py:ice,<scale>,authors;
* ``+<diff>`` — ours with ONE of the authors' choices switched on (the
  field groups of :data:`DIFFERENCES`).

  ADVINV_MNIST_DIR=/path/to/mnist python -m experiments.ice_ablation \
      --scale=cpu --workdir=workdirs/ice_ablation [--variants=ours,+labels]
Scales: tiny (bundled digits, seconds per row), cpu (depth 4, width 32,
mnist; --config.train.num_steps=... to shorten), paper (GPU). Cost at cpu:
one invariance_mnist iCE run per row (~15-30 min each on 2 cores).
Writes results.json + results.md (one table).
"""
from __future__ import annotations

import os

from absl import flags

from advinv_jax import cli
from experiments import _common as C

_SCALE = flags.DEFINE_string("scale", "cpu", "tiny | cpu | paper")
_CONFIG = C.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/ice_ablation", "")
_VARIANTS = flags.DEFINE_list("variants", [], "rows to run (default: all)")

PAPER = (0.38, 27.70)   # iCE, Table 2: logit / z_n classifier test error %

# Each single difference: the config fields (dotted paths) it switches to
# the authors' values, read from the authors' variant so one place holds
# them (configs/mnist.py authors_recipe).
DIFFERENCES = {
    "+labels": ("loss.ice.nuisance_labels",),
    "+likelihood": ("loss.ice.likelihood", "model.firevnet.split_prior"),
    "+logit_bn": ("model.firevnet.logit_bn", "model.firevnet.logit_bn_momentum"),
    "+3ch": ("model.firevnet.zero_channels",
             "model.firevnet.zero_channel_noise",
             "model.firevnet.zero_channel_fill"),
    "+dropout": ("model.firevnet.dropout", "loss.ice.nuisance_dropout"),
    "+actnorm": ("model.firevnet.actnorm_std_floor", "model.firevnet.actnorm_eps",
                 "train.init_batch_size", "train.init_noise"),
}


def _get(cfg, path):
  for part in path.split("."):
    cfg = cfg[part]
  return cfg


def _set(cfg, path, value):
  *head, leaf = path.split(".")
  for part in head:
    cfg = cfg[part]
  cfg[leaf] = value


def _base(scale, recipe):
  if scale == "tiny":
    cfg = C.tiny(C.load_config("mnist", f"ice,{recipe}"))
    cfg.train.init_batch_size = min(cfg.train.init_batch_size, 256)
    return cfg
  return C.load_config("mnist", f"ice,{scale},{recipe}")


def configs(scale):
  """``{row name: config}`` for every row of the table."""
  ours, authors = _base(scale, "ours"), _base(scale, "authors")
  out = {"ours": ours, "authors": authors}
  for name, fields in DIFFERENCES.items():
    cfg = _base(scale, "ours")
    for f in fields:
      _set(cfg, f, _get(authors, f))
    out[name] = cfg
  return out


def run(scale, workdir, overrides=None, variants=()):
  C.check_scale(scale)
  overrides = dict(overrides or {})
  allc = configs(scale)
  bad = [v for v in variants if v not in allc]
  if bad:
    raise cli.UsageError(f"--variants: {bad} not among {sorted(allc)}.")
  rows, data = [], {"scale": scale, "overrides": dict(overrides)}
  allc = C.prepare({k: v for k, v in allc.items()
                    if not variants or k in variants}, overrides)
  for name, cfg in allc.items():
    res = C.train_and_report(cfg, os.path.join(workdir, name.lstrip("+")))
    nc = res["report"]["invariance"]["nuisance_classifier"]
    err = res["results"]["test"]["error"]
    zn = 1.0 - nc["test_accuracy"]
    fields = DIFFERENCES.get(name, ())
    data[name] = {"logit_test_error": err, "zn_test_error": zn,
                  "zn_train_error": 1.0 - nc["train_accuracy"],
                  "fields": {f: _get(cfg, f) for f in fields},
                  "seconds": res["seconds"]}
    rows.append([name, ", ".join(f"{f}={_get(cfg, f)}" for f in fields)
                 or "-", C.fmt(err, pct=True), C.fmt(zn, pct=True),
                 f"{res['seconds'] / 60:.1f} min"])
  rows.append(["paper (iCE, Table 2)", "200 epochs, 3x16, width 128",
               PAPER[0], PAPER[1], "GPU"])
  C.write_results(
      workdir, f"ice_ablation (scale={scale})",
      ["row", "authors' fields switched on", "logit test err %",
       "z_n clf test err %", "cost"], rows, data,
      notes="ours = configs/mnist.py:ice; authors = its ':authors' variant; "
            "+x = ours with one of the authors' choices. z_n classifier: the "
            "post-hoc MLP of the robustness report. Goal (paper): z_n error "
            ">= 5x CE's, logit error within 1 point of CE's.")
  return data


main = C.scale_main(run, _SCALE, _WORKDIR, _VARIANTS)


if __name__ == "__main__":
  cli.run(main)
