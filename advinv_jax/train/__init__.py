"""advinv_jax.train."""
