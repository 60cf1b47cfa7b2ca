"""Test setup, before jax is imported.

* 4 forced CPU devices for the data-parallel tests; everything else runs on
  device 0 as usual.
* XLA's backend (LLVM) optimisation level 0: the suite is dominated by
  compilation of small programs, which this roughly halves in CPU time. It
  changes how fast the compiled code runs, not what it computes (results
  agree to float rounding; bitwise comparisons in the tests always compare
  runs made under the same flags). Subprocesses get the same flags through
  ``tests._helpers.subprocess_env``.
"""
import os

TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"

os.environ.setdefault(
    "XLA_FLAGS", f"--xla_force_host_platform_device_count=4 {TEST_XLA_FLAGS}")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
