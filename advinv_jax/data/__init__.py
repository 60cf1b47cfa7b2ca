"""advinv_jax.data."""
