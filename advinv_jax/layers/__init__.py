"""advinv_jax.layers."""
