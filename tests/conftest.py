"""Test setup: 4 forced CPU devices (before jax is imported) for the
data-parallel tests; everything else runs on device 0 as usual."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
