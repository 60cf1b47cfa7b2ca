"""The shipped configs: each module's ``get_config(variant)`` returns a
ConfigDict for ``python -m advinv_jax.main --config=configs/<name>.py[:variant]``.
Helpers shared by several configs live in the ``_``-prefixed modules."""
