"""benchmarks/device_check.sh --cpu: the GPU check's dry run, as it is run.

Tiny sizes on the CPU: every section runs its code (the pytest subset only
collected, torch parts skipped when torch is absent) and the JSON holds what
the GPU run records.
"""
import json
import math
import os
import subprocess
import sys

from advinv_jax import attacks, platform
from tests._helpers import ROOT, subprocess_env


def test_device_check_dry_run(tmp_path):
  out = tmp_path / "device_check.json"
  env = dict(subprocess_env(1), PYTHON=sys.executable,
             WHEEL_DIR=str(tmp_path / "w"), SITE=str(tmp_path / "site"))
  proc = subprocess.run(
      [os.path.join(ROOT, "benchmarks", "device_check.sh"), "--cpu", "--out",
       str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  sections = json.loads(out.read_text())["sections"]
  assert set(sections) == {"env", "tests", "ice_step", "pgd", "autoattack"}
  assert not [n for n, s in sections.items() if "error" in s], sections
  env_s = sections["env"]
  assert env_s["backend"] == "cpu" and env_s["dry_run"]
  assert env_s["platform_defaults"]["conv3x3_impl"] == (
      platform.defaults("cpu").conv3x3_impl)
  # The subset exists (collected, returncode 0): a renamed test breaks this.
  tests = sections["tests"]
  assert tests["returncode"] == 0 and tests["collected"] >= 20, tests
  ice = sections["ice_step"]["ours_float32"]
  assert math.isfinite(ice["loss_step2"]) and ice["median_s"] > 0
  assert ice["config"]["batch_chunk"] == 0   # the dry run's choice
  assert ice["config"]["conv3x3_impl"] == "xla_gemm_grad"
  pgd = sections["pgd"]
  assert 0.0 <= pgd["ours"]["success"] <= 1.0
  if env_s["torch"] is None:
    assert "skipped" in pgd["torchattacks"]
    assert "skipped" in sections["ice_step"]["torch"]
  aa = sections["autoattack"]["ours"]
  assert ("median_s" in aa) == hasattr(attacks, "autoattack")
