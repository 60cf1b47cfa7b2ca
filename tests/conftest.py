"""Test setup, before jax is imported.

* 4 forced CPU devices for the data-parallel tests; everything else runs on
  device 0 as usual.
* XLA's backend (LLVM) optimisation level 0: the suite is dominated by
  compilation of small programs, which this roughly halves in CPU time. It
  changes how fast the compiled code runs, not what it computes (results
  agree to float rounding; bitwise comparisons in the tests always compare
  runs made under the same flags). Subprocesses get the same flags through
  ``tests._helpers.subprocess_env``.
* One persistent XLA compilation cache for the whole run (JAX's own
  ``JAX_COMPILATION_CACHE_DIR``, every program cached), shared by the xdist
  workers and the subprocesses they start: experiment scripts, fault tests
  and reports compile many identical programs (the same attack on models of
  one architecture, a job and its resumed run). A fresh folder per run,
  removed at the end, unless the caller set ``JAX_COMPILATION_CACHE_DIR``.
  The test that asserts "nothing recompiles" counts cache fetches too.
"""
import atexit
import os
import shutil
import tempfile

TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"

os.environ.setdefault(
    "XLA_FLAGS", f"--xla_force_host_platform_device_count=4 {TEST_XLA_FLAGS}")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:   # the controller (or -n 0)
  _CACHE_DIR = tempfile.mkdtemp(prefix="advinv-tests-xla-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
  atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
