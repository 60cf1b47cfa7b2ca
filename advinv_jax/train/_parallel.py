"""Data parallelism: one device mesh, replicated parameters, sharded batches.

The per-device training step is written pmap-style (it sees its shard of the
batch and averages gradients with ``lax.pmean`` over :data:`AXIS`) and is run
with ``jax.shard_map`` over a 1-D mesh of all devices (all processes' devices
under ``jax.distributed``). The same code runs on one CPU, on N forced host
devices, on GPUs/TPUs and on several hosts.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "batch"


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh named :data:`AXIS` over ``devices`` (default: all devices)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (AXIS,))


def check_batch_divisible(batch_size: int, mesh: Mesh, field: str) -> None:
  n = mesh.size
  if batch_size % n:
    raise ValueError(
        f"{field}={batch_size} is not divisible by the {n} devices of the "
        f"mesh; use a multiple of {n} (e.g. {max(n, batch_size // n * n)}).")
  if batch_size % jax.process_count():
    raise ValueError(f"{field}={batch_size} is not divisible by the "
                     f"{jax.process_count()} processes.")


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a host pytree (same value on every process) on all devices."""
  sharding = NamedSharding(mesh, P())

  def put(x):
    x = np.asarray(x)
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, x, x.shape)

  return jax.tree_util.tree_map(put, tree)


def shard_batch(local_batch: Any, mesh: Mesh) -> Any:
  """Assembles each process's slice of the global batch into global arrays.

  Args:
    local_batch: pytree of numpy arrays ``[B_local, ...]``; ``B_local`` is
      this process's share of the global batch.
    mesh: the data-parallel mesh.

  Returns:
    Pytree of ``jax.Array`` of shape ``[B_global, ...]`` sharded along
    :data:`AXIS`.
  """
  sharding = NamedSharding(mesh, P(AXIS))
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding,
                                                       np.asarray(x)),
      local_batch)


def to_host(tree: Any) -> Any:
  """Fetches replicated (or fully addressable) arrays to numpy."""

  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)

  return jax.tree_util.tree_map(get, tree)


def data_parallel(step_fn: Callable, mesh: Mesh, in_specs, out_specs,
                  donate_argnums=()) -> Callable:
  """``jit(shard_map(step_fn))`` with the given partition specs."""
  mapped = jax.shard_map(step_fn, mesh=mesh, in_specs=in_specs,
                         out_specs=out_specs, check_vma=False)
  return jax.jit(mapped, donate_argnums=donate_argnums)
