"""shiftMNIST (Jacobsen et al. 2019, final version): CE vs iCE trained on
MNIST with a planted label code (a 4-bit binary pixel code of the label in
the training images), tested where the code is random.

A model that uses the shortcut is right on the training distribution and
wrong on the test set; iCE, which must keep the label in z_s and out of z_n,
is expected to rely more on the digit.

  ADVINV_MNIST_DIR=../shared/data/mnist python experiments/shiftmnist.py \
      --scale=cpu --workdir=workdirs/shiftmnist
Cost: tiny ~1 min; cpu ~40 min on 2 cores (two models, 2 epochs each);
paper: GPU. The paper's construction and numbers are unverified
(shared/reference/papers.md), so no paper column is printed.
"""
from __future__ import annotations

import os

from absl import app, flags

import _common as C

_SCALE = flags.DEFINE_string("scale", "cpu", "tiny | cpu | paper")
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/shiftmnist", "")


def configs(scale):
  out = {}
  for loss in ("ce", "ice"):
    if scale == "tiny":
      c = C.tiny(C.load_config(f"digits_{loss}"))
      c.data.shift.enabled = True
      c.data.shift.code_size = 4
      out[loss] = c
    else:
      out[loss] = C.load_config(f"shiftmnist_{loss}",
                                "cpu" if scale == "cpu" else None)
  return out


def run(scale: str, workdir: str):
  C.check_scale(scale)
  rows, data = [], {"scale": scale}
  for loss, cfg in configs(scale).items():
    cfg.report.enabled = False
    res = C.train_and_report(cfg, os.path.join(workdir, loss))
    tr, te = res["results"]["train"], res["results"]["test"]
    data[loss] = {"train_accuracy_with_code": tr["accuracy"],
                  "test_accuracy_random_code": te["accuracy"],
                  "seconds": res["seconds"]}
    rows.append([loss.upper(), C.fmt(tr["accuracy"], pct=True),
                 C.fmt(te["accuracy"], pct=True),
                 f"{res['seconds'] / 60:.1f} min"])
  C.write_results(
      workdir, f"shiftmnist (scale={scale})",
      ["loss", "train acc % (code = label)", "test acc % (random code)",
       "cost"], rows, data)
  return data


def main(argv):
  del argv
  run(_SCALE.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
