"""advinv_jax.losses."""
