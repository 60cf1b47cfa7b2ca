"""Python-level input checks shared by losses and attacks (run before
tracing). Private: no public names; below layers/models in the import order
(it imports only JAX)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def is_concrete(x) -> bool:
  """True when ``x`` holds values now (not a tracer under jit/vmap/grad), so a
  value check can run in Python before compilation."""
  return not isinstance(x, jax.core.Tracer)


def shape_of(x):
  return tuple(x.shape if hasattr(x, "shape") else jnp.shape(x))


def dtype_of(x):
  dtype = getattr(x, "dtype", None)
  return dtype if dtype is not None else jnp.asarray(x).dtype


def check_rank(x, rank: int, name: str, layout: str) -> tuple:
  shape = shape_of(x)
  if len(shape) != rank:
    raise ValueError(f"{name} must have shape {layout}, got {shape}; reshape "
                     f"it to rank {rank}.")
  return shape


def check_floating(x, name: str) -> None:
  dtype = dtype_of(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"{name} must be floating point, got dtype {dtype}; "
                     f"convert with {name}.astype(jnp.float32).")


def check_integer_labels(labels, name: str = "labels") -> None:
  dtype = dtype_of(labels)
  if not (jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_):
    raise ValueError(f"{name} must hold integer class ids, got dtype {dtype}; "
                     f"convert with {name}.astype(jnp.int32).")


def check_batch(shape_a: tuple, shape_b: tuple, name_a: str,
                name_b: str) -> None:
  if shape_a[0] != shape_b[0]:
    raise ValueError(f"{name_a} has batch size {shape_a[0]} but {name_b} has "
                     f"{shape_b[0]}; pass one entry per example to both.")
  if shape_a[0] == 0:
    raise ValueError(f"empty batch (B=0) in {name_a}: pass at least one "
                     "example.")
