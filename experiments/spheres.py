"""Adversarial spheres (Gilmer et al.; Jacobsen et al. 2019 Sec. 5):
points on two concentric spheres in R^100 (radii 1 and 10).

1. The invariance counter-example: a classifier that thresholds the norm of
   x[:d-1] (it ignores x_d) is perfect on the data, yet moving a point onto
   the other sphere by changing x_d alone leaves its decision unchanged.
   We count on how many test points such a move exists and succeeds.
2. A fiRevNet trained with CE: its test error (paper: 0%), and its metamers
   z_s(inner point) + z_n(outer point): how many land off the inner sphere
   (closer to radius 10) while still classified "inner".

  python -m experiments.spheres --scale=cpu --workdir=workdirs/spheres
Cost: tiny ~1 min, cpu ~3 min on 2 cores.
"""
from __future__ import annotations

import os

import numpy as np
from absl import flags

from advinv_jax import cli
from experiments import _common as C

_SCALE = flags.DEFINE_string("scale", "cpu", "tiny | cpu | paper")
_CONFIG = C.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/spheres", "")


def run(scale: str, workdir: str, overrides=None):
  C.check_scale(scale)
  cfg = C.load_config("spheres")
  if scale == "tiny":
    cfg = C.tiny(cfg, model=False)
    cfg.data.name = "spheres"
    cfg.data.sphere_num_train = 512
    cfg.data.sphere_num_test = 128
    cfg.model.firevnet.depth = 1
    cfg.model.firevnet.width = 8
  cfg.report.enabled = False
  C.prepare({"firevnet": cfg}, overrides or {})
  res = C.train_and_report(cfg, os.path.join(workdir, "firevnet"))
  import jax  # pylint: disable=g-import-not-at-top  (after the flags parse)
  from advinv_jax import invariance as I
  from advinv_jax.train import load_trained
  _, exp, state, _ = load_trained(os.path.join(workdir, "firevnet"))
  test = exp.dataset.test.get(np.arange(len(exp.dataset.test)))
  x, y = test["image"], test["label"]
  counter = {k: float(v) for k, v in
             I.norm_classifier_counterexample(x, y).items()}
  inner, outer = np.where(y == 0)[0], np.where(y == 1)[0]
  m = min(len(inner), len(outer), 256)

  @jax.jit
  def metamers(params, xa, xb):
    z = I.metamer_latent(exp.model, params, xa, xb)
    met = exp.model.inverse(params, z)
    return met, I.metamer_validity(exp.model, params, met, z, bounds=None)

  met, validity = metamers(state.params, x[inner[:m]], x[outer[:m]])
  met, valid = np.asarray(met), np.asarray(validity.valid)
  pred = np.argmax(np.asarray(exp.model.logits(state.params, met)), -1)
  radius = np.linalg.norm(met.reshape(m, -1), axis=1)
  off_inner = valid & (radius > 0.5 * (1.0 + 10.0))
  data = {"scale": scale, "overrides": dict(overrides or {}),
          "firevnet_test_error": res["results"]["test"][
      "error"], "norm_classifier": counter,
          "metamers": {"num": int(m), "median_radius": float(np.median(radius)),
                       "validity": I.summarize_validity(validity),
                       "outer_but_classified_inner": float(
                           np.mean(off_inner & (pred == 0)))},
          "seconds": res["seconds"]}
  rows = [["fiRevNet test error %", C.fmt(data["firevnet_test_error"],
                                          pct=True), "0"],
          ["classifier on the norm of x[:d-1]: clean accuracy %",
           C.fmt(counter["clean_accuracy"], pct=True), "100"],
          ["  x_d-only invariance attack success %",
           C.fmt(counter["attack_success"], pct=True), "(the counter-example)"],
          ["fiRevNet metamers (z_s inner, z_n outer): valid %",
           C.fmt(data["metamers"]["validity"]["valid_share"], pct=True),
           "n/a"],
          ["fiRevNet metamers (z_s inner, z_n outer): valid, radius > 5.5 "
           "and classified inner %",
           C.fmt(data["metamers"]["outer_but_classified_inner"], pct=True),
           "n/a"]]
  C.write_results(workdir, f"spheres (scale={scale})",
                  ["quantity", "ours", "paper"], rows, data)
  return data


main = C.scale_main(run, _SCALE, _WORKDIR)


if __name__ == "__main__":
  cli.run(main)
