"""advinv_jax.attacks."""
