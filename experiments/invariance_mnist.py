"""Jacobsen et al. 2019, Table 2 and the metamer figures: fiRevNet trained
with CE and with iCE on MNIST.

For each model: test error on the logits z_s, and test error of a classifier
trained post hoc on the nuisance z_n (a lower bound on I(y; z_n)); metamer
grids (z_s of A, z_n of B, inverted) and nuisance interpolations (PNG).

  ADVINV_MNIST_DIR=/path/to/mnist python -m experiments.invariance_mnist \
      --scale=cpu --workdir=workdirs/invariance_mnist
Scales: tiny (digits, ~1 min), digits (the bundled digits, 60 epochs:
~8 min), cpu (depth 4, width 32, 2 epochs per model:
~26 min on 2 cores), paper (3x16 steps, width 128, 200 epochs: GPU).
"""
from __future__ import annotations

import os

from absl import flags

from advinv_jax import cli
from experiments import _common as C

_SCALE = flags.DEFINE_string("scale", "cpu", "tiny | digits | cpu | paper")
_CONFIG = C.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/invariance_mnist", "")
_LOSSES = C.define_losses_flag()
_RECIPE = C.define_recipe_flag()

PAPER = {"ce": (0.39, 0.34), "ice": (0.38, 27.70)}  # test error %: logits, z_n


def configs(scale, recipe="ours"):
  out = {}
  for loss in ("ce", "ice"):
    if scale == "tiny" and recipe == "authors":
      out[loss] = C.tiny(C.load_config("mnist", f"{loss},authors"))
    elif scale == "tiny":
      out[loss] = C.tiny(C.load_config("digits", loss))
    elif scale == "digits":
      out[loss] = C.load_config("digits", loss)
    else:
      out[loss] = C.load_config("mnist", f"{loss},{scale},{recipe}")
  return out


def run(scale: str, workdir: str, overrides=None, losses=(), recipe="ours"):
  C.check_scale(scale, C.SCALES + ("digits",))
  overrides = dict(overrides or {})
  rows, data = [], {"scale": scale, "overrides": dict(overrides),
                    "losses": list(losses), "recipe": recipe}
  cfgs = C.prepare(C.select_losses(configs(scale, recipe), losses), overrides)
  for loss, cfg in cfgs.items():
    res = C.train_and_report(cfg, os.path.join(workdir, loss))
    inv = res["report"]["invariance"]
    nc = inv["nuisance_classifier"]
    err = res["results"]["test"]["error"]
    zn_err = 1.0 - nc["test_accuracy"]
    data[loss] = {"logit_test_error": err, "zn_test_error": zn_err,
                  "zn_train_error": 1.0 - nc["train_accuracy"],
                  "metamer_predicts_nuisance_source_label":
                      inv["metamer_predicts_nuisance_source_label"],
                  "metamer_logit_max_abs_diff":
                      inv["metamer_logit_max_abs_diff"],
                  "metamer_valid_share":
                      inv["metamer_validity"]["valid_share"],
                  "metamer_png": inv["metamer_png"],
                  "seconds": res["seconds"]}
    rows.append([loss.upper(), C.fmt(err, pct=True), PAPER[loss][0],
                 C.fmt(zn_err, pct=True), PAPER[loss][1],
                 C.fmt(inv["metamer_validity"]["valid_share"], pct=True),
                 f"{res['seconds'] / 60:.1f} min"])
  C.write_results(
      workdir, f"invariance_mnist (scale={scale}, recipe={recipe})",
      ["loss", "logit test err % (ours)", "paper", "z_n clf test err % (ours)",
       "paper", "valid metamers %", "cost"], rows, data,
      notes="z_n classifier: MLP trained post hoc on z_n of the trained "
            "model; its error lower-bounds how little label information z_n "
            "holds. Metamers (z_s of A, z_n of B, inverted) keep A's logits "
            "where valid (round trip within report.metamer_tol, checked per "
            "metamer); what they look like is in <loss>/metamers.png. "
            "Paper: 200 epochs, 3x16 steps, width 128.")
  return data


main = C.scale_main(run, _SCALE, _WORKDIR, _LOSSES, _RECIPE)


if __name__ == "__main__":
  cli.run(main)
