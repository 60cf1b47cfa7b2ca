"""MNIST from the four standard IDX files, parsed with numpy (no tfds).

A folder holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each either raw or
gzipped (``.gz`` suffix); the ``train-images.idx3-ubyte`` spelling is accepted
too. IDX format: a 4-byte big-endian magic ``0x0000TTDD`` (type ``TT = 0x08``
for unsigned bytes, ``DD`` dimensions), ``DD`` big-endian uint32 sizes, then
the payload in C order.

Corrupted files (wrong magic number, truncated or over-long payload, broken
gzip stream, image/label count mismatch, labels outside 0..9) raise a
ValueError naming the file.
"""
from __future__ import annotations

import gzip
import os
import zlib
from typing import Dict, Optional, Tuple

import numpy as np

from advinv_jax.data._sources import ArraySource

_UBYTE = 0x08
MNIST_FILES = {
    ("train", "images"): ("train-images", 3),
    ("train", "labels"): ("train-labels", 1),
    ("test", "images"): ("t10k-images", 3),
    ("test", "labels"): ("t10k-labels", 1),
}


def _candidates(stem: str, ndim: int):
  for sep in ("-", "."):
    base = f"{stem}{sep}idx{ndim}-ubyte"
    yield base
    yield base + ".gz"


def find_idx_files(folder: str) -> Optional[Dict[Tuple[str, str], str]]:
  """Paths of the four MNIST IDX files in ``folder`` (None if any is missing)."""
  if not folder or not os.path.isdir(folder):
    return None
  found = {}
  for key, (stem, ndim) in MNIST_FILES.items():
    for cand in _candidates(stem, ndim):
      path = os.path.join(folder, cand)
      if os.path.isfile(path):
        found[key] = path
        break
    else:
      return None
  return found


def missing_idx_files(folder: str):
  """Names (raw spelling) of the IDX files not found in ``folder``."""
  missing = []
  for key, (stem, ndim) in MNIST_FILES.items():
    if not any(os.path.isfile(os.path.join(folder or "", c))
               for c in _candidates(stem, ndim)):
      missing.append(f"{stem}-idx{ndim}-ubyte[.gz]")
  return missing


def _read_bytes(path: str, limit: Optional[int] = None) -> bytes:
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as f:
        return f.read() if limit is None else f.read(limit)
    with open(path, "rb") as f:
      return f.read() if limit is None else f.read(limit)
  except (OSError, EOFError, zlib.error) as e:
    raise ValueError(f"IDX file {path} is corrupted: cannot read it as "
                     f"{'gzip' if path.endswith('.gz') else 'raw bytes'} "
                     f"({type(e).__name__}: {e}); replace it with an intact "
                     "copy.") from e


def _parse_header(path: str, data: bytes, ndim: int) -> Tuple[int, ...]:
  expected_magic = (_UBYTE << 8) | ndim
  if len(data) < 4:
    raise ValueError(f"IDX file {path} is truncated: {len(data)} bytes, not "
                     "even a 4-byte magic number; replace the file.")
  magic = int.from_bytes(data[:4], "big")
  if magic != expected_magic:
    raise ValueError(
        f"IDX file {path} has the wrong magic number 0x{magic:08x} (expected "
        f"0x{expected_magic:08x} for an unsigned-byte {ndim}-D "
        f"{'images' if ndim == 3 else 'labels'} file); the file is corrupted "
        "or not the file its name says (images vs labels swapped?).")
  header_len = 4 + 4 * ndim
  if len(data) < header_len:
    raise ValueError(f"IDX file {path} is truncated inside its header "
                     f"({len(data)} < {header_len} bytes); replace the file.")
  return tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big")
               for i in range(ndim))


def read_idx_header(path: str, ndim: int) -> Tuple[int, ...]:
  """Reads only the header of an IDX file: its dimension sizes."""
  return _parse_header(path, _read_bytes(path, 4 + 4 * ndim), ndim)


def read_idx(path: str, ndim: int) -> np.ndarray:
  """Reads a whole unsigned-byte IDX file into ``uint8[dims]``.

  Args:
    path: the file (``.gz`` suffix: gzipped).
    ndim: expected number of dimensions (3 for images, 1 for labels).

  Returns:
    ``uint8`` array of the header's shape.

  Raises:
    ValueError: naming ``path``, on a wrong magic number, a truncated or
      over-long payload, or an unreadable gzip stream.
  """
  data = _read_bytes(path)
  dims = _parse_header(path, data, ndim)
  header_len = 4 + 4 * ndim
  expected = int(np.prod(dims, dtype=np.int64))
  got = len(data) - header_len
  if got < expected:
    raise ValueError(f"IDX file {path} is truncated: header says shape {dims} "
                     f"({expected} bytes of payload) but only {got} bytes "
                     "follow; replace the file.")
  if got > expected:
    raise ValueError(f"IDX file {path} has {got - expected} trailing bytes "
                     f"after the payload of shape {dims}; the file is "
                     "corrupted, replace it.")
  return np.frombuffer(data, np.uint8, count=expected,
                       offset=header_len).reshape(dims)


def mnist_idx_meta(folder: str
                   ) -> Tuple[Tuple[int, int, int], Dict[str, int]]:
  """Cheap metadata from headers only: ``((H, W, 1), {"train": n, "test": n})``."""
  files = find_idx_files(folder)
  if files is None:
    raise FileNotFoundError(
        f"no MNIST IDX files in {folder!r}: missing "
        f"{', '.join(missing_idx_files(folder))}.")
  sizes, shape = {}, None
  for split in ("train", "test"):
    n_img, h, w = read_idx_header(files[(split, "images")], 3)
    (n_lab,) = read_idx_header(files[(split, "labels")], 1)
    if n_img != n_lab:
      raise ValueError(
          f"MNIST IDX count mismatch: {files[(split, 'images')]} holds {n_img} "
          f"images but {files[(split, 'labels')]} holds {n_lab} labels; "
          "the files do not belong together, replace them.")
    if shape is not None and shape != (h, w, 1):
      raise ValueError(f"MNIST IDX image sizes differ between splits: {shape} "
                       f"vs {(h, w, 1)} in {files[(split, 'images')]}.")
    shape = (h, w, 1)
    sizes[split] = n_img
  return shape, sizes


def load_mnist_idx(folder: str, num_classes: int = 10):
  """Loads MNIST from IDX files into two uint8-backed :class:`ArraySource`.

  Returns:
    ``(train, test)`` sources; images ``uint8[N, H, W, 1]`` scaled by 1/255 on
    ``get``, labels ``int32[N]``.
  """
  mnist_idx_meta(folder)  # headers and counts first: cheap, clear errors
  files = find_idx_files(folder)
  out = []
  for split in ("train", "test"):
    img_path, lab_path = files[(split, "images")], files[(split, "labels")]
    images = read_idx(img_path, 3)
    labels = read_idx(lab_path, 1)
    if images.shape[0] != labels.shape[0]:
      raise ValueError(f"MNIST IDX count mismatch: {img_path} holds "
                       f"{images.shape[0]} images but {lab_path} holds "
                       f"{labels.shape[0]} labels; replace the files.")
    if labels.size and int(labels.max()) >= num_classes:
      raise ValueError(f"IDX labels file {lab_path} holds label "
                       f"{int(labels.max())} >= {num_classes}; the file is "
                       "corrupted or not MNIST.")
    out.append(ArraySource(images[..., None], labels, scale=1.0 / 255.0))
  return tuple(out)
