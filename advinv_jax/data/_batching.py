"""Deterministic, per-host-sharded batch iteration over a source.

Every host computes the same *global* order of the epoch (a permutation drawn
from ``numpy.random.default_rng([seed, epoch])``, or ``0..n-1`` without
shuffling) and cuts it into global batches of ``batch_size``. Host ``p`` of
``P`` takes the ``p``-th contiguous slice of ``batch_size // P`` examples of
each global batch, so the hosts' slices are disjoint and together form the
global batch; concatenated in host order they are exactly the global batch.

Without ``drop_remainder`` the last, short global batch of ``r`` examples is
split with ``numpy.array_split`` into ``P`` nearly equal slices (a host may
get an empty batch when ``r < P``); every host still yields the same number of
batches, :func:`steps_per_epoch` of them.
"""
from __future__ import annotations

from typing import Dict, Iterator, Optional

import numpy as np

from advinv_jax.data._sources import Source


def steps_per_epoch(n: int, batch_size: int,
                    drop_remainder: bool = True) -> int:
  """Global batches per epoch: ``n // batch_size`` (ceil if not dropping)."""
  n, batch_size = int(n), int(batch_size)
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1.")
  if n < 0:
    raise ValueError(f"n={n} must be >= 0.")
  return n // batch_size if drop_remainder else -(-n // batch_size)


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
  """The global example order of one epoch, ``int64[n]``."""
  if not shuffle:
    return np.arange(n, dtype=np.int64)
  return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def iterate_batches(source: Source, batch_size: int, *, seed: int = 0,
                    epoch: int = 0, shuffle: bool = True,
                    drop_remainder: bool = True,
                    process_index: Optional[int] = None,
                    process_count: Optional[int] = None,
                    start_step: int = 0) -> Iterator[Dict[str, np.ndarray]]:
  """Yields this host's share of each global batch of one epoch.

  Args:
    source: a random-access source (``len``, ``get``).
    batch_size: the *global* batch size; must be divisible by
      ``process_count``.
    seed: shuffling seed (same on all hosts).
    epoch: epoch number; each epoch gets its own permutation.
    shuffle: False iterates in the source's order.
    drop_remainder: drop the last short global batch.
    process_index: this host's index; default ``jax.process_index()``.
    process_count: number of hosts; default ``jax.process_count()``.
    start_step: skip this epoch's first ``start_step`` batches without
      reading them (resuming mid-epoch).

  Yields:
    ``{"image": f32[b, H, W, C], "label": i32[b]}`` numpy arrays with
    ``b = batch_size // process_count`` (the last batch may be smaller
    without ``drop_remainder``).

  Raises:
    ValueError: bad batch size / process settings, or ``drop_remainder`` with
      fewer examples than one global batch.
  """
  if process_index is None or process_count is None:
    import jax
    if process_index is None:
      process_index = jax.process_index()
    if process_count is None:
      process_count = jax.process_count()
  batch_size, pi, pc = int(batch_size), int(process_index), int(process_count)
  if pc < 1 or not 0 <= pi < pc:
    raise ValueError(f"process_index={pi} must lie in [0, process_count={pc}).")
  if batch_size < 1 or batch_size % pc:
    raise ValueError(f"batch_size={batch_size} must be a positive multiple of "
                     f"process_count={pc} (it is the global batch).")
  if int(start_step) < 0:
    raise ValueError(f"start_step={start_step} must be >= 0.")
  n = len(source)
  if n == 0:
    raise ValueError("the source is empty; nothing to iterate.")
  if drop_remainder and n < batch_size:
    raise ValueError(f"batch_size={batch_size} exceeds the {n} examples, so "
                     "drop_remainder=True leaves no batch; lower batch_size or "
                     "pass drop_remainder=False.")
  order = epoch_order(n, seed=seed, epoch=epoch, shuffle=shuffle)
  per_host = batch_size // pc
  for step in range(int(start_step),
                    steps_per_epoch(n, batch_size, drop_remainder)):
    glob = order[step * batch_size:(step + 1) * batch_size]
    if glob.shape[0] == batch_size:
      mine = glob[pi * per_host:(pi + 1) * per_host]
    else:
      mine = np.array_split(glob, pc)[pi]
    yield source.get(mine)
