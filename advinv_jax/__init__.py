"""advinv_jax: the two sides of adversarial vulnerability, in JAX.

Sub-packages (imports flow one way, bottom first; tests/test_imports.py):
  _settings -> layers -> models / data -> losses / attacks / invariance
  -> train -> config -> report -> cli / job / main.
"""
__version__ = "0.1.0"
