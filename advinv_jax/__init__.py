"""advinv_jax: the two sides of adversarial vulnerability, in JAX.

Sub-packages (imports flow one way):
  layers -> models -> losses / attacks -> train -> report / main.
"""
__version__ = "0.1.0"
