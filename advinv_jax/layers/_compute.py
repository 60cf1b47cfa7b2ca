"""How a network runs: one frozen settings object, and its config section.

``config.model.compute`` says how a model is computed, never what: every
value gives the same function (up to float rounding; ``dtype`` bfloat16
rounding). :class:`Compute` is that section resolved for the backend (no
platform placeholders left) and is passed once, from the builder to every
layer that reads it (``Chain``'s loop, the coupling subnets' convolutions,
the batch chunks of the model).
"""
from __future__ import annotations

import dataclasses

import ml_collections

from advinv_jax import _settings, platform
from advinv_jax.layers._base import REVERSIBLE_LOOPS
from advinv_jax.layers._conv import (COMPUTE_DTYPES, CONV3X3_IMPLS,
                                     check_compute_dtype, resolve_compute_dtype,
                                     resolve_conv3x3_impl)

@dataclasses.dataclass(frozen=True)
class Compute:
  """How a network runs (the resolved ``config.model.compute``).

  Attributes:
    conv3x3_impl: how 3x3 convs run (:func:`conv3x3`), one of
      ``CONV3X3_IMPLS``.
    dtype: the coupling subnets' compute dtype, one of ``COMPUTE_DTYPES``
      (:class:`Subnet`).
    conv1x1_as_matmul: the subnets' 1x1 conv (and the invertible 1x1 conv)
      as a matmul.
    reversible: memory-saving reversible backprop over each level's steps.
    reversible_loop: ``'unrolled'`` | ``'scan'`` (:class:`Chain`).
    scan_batch_chunk: with ``'scan'``, each scanned step on chunks of at
      most this many examples (0: whole batch).

  (``config.model.compute.batch_chunk``, the whole model on batch chunks,
  is the model's: ``models.build_model`` wraps it, its layers are the
  same.)
  """
  conv3x3_impl: str = "xla"
  dtype: str = "float32"
  conv1x1_as_matmul: bool = True
  reversible: bool = False
  reversible_loop: str = "unrolled"
  scan_batch_chunk: int = 0

  def __post_init__(self):
    if self.conv3x3_impl not in CONV3X3_IMPLS:
      raise ValueError(f"conv3x3_impl={self.conv3x3_impl!r}; choose one of "
                       f"{CONV3X3_IMPLS}.")
    check_compute_dtype(self.dtype)
    if self.reversible_loop not in REVERSIBLE_LOOPS:
      raise ValueError(f"reversible_loop={self.reversible_loop!r}; choose "
                       f"one of {REVERSIBLE_LOOPS}.")

  @classmethod
  def from_config(cls, cp) -> "Compute":
    """``config.model.compute`` (but ``batch_chunk``) with its platform
    defaults (``''``, ``'auto'``) resolved for the default backend."""
    loop = cp.reversible_loop
    if loop == "auto":
      loop = platform.defaults().reversible_loop
    return cls(conv3x3_impl=resolve_conv3x3_impl(cp.conv3x3_impl),
               dtype=resolve_compute_dtype(cp.dtype),
               conv1x1_as_matmul=bool(cp.conv1x1_as_matmul),
               reversible=bool(cp.reversible), reversible_loop=loop,
               scan_batch_chunk=int(cp.scan_batch_chunk))


def compute_defaults() -> ml_collections.ConfigDict:
  """The ``config.model.compute`` section. A value ``""`` / ``-1`` /
  ``"auto"`` is a *platform default*, resolved per backend (cpu | gpu |
  tpu) in advinv_jax/platform.py, which gives each choice and its reason;
  ``platform.resolve_config(config, "tpu")`` fills them for a named
  platform."""
  cp = ml_collections.ConfigDict()
  # Memory-saving reversible backprop (fiRevNet): activations recomputed
  # from the outputs instead of stored.
  cp.reversible = False
  # auto (platform default: unrolled) | scan | unrolled. scan: each level's
  # steps run as one lax.scan and their params are stored stacked (small
  # program, fast compile; with scan_batch_chunk=16 the authors' iCE step
  # at batch 128 on CPU ran faster than unrolled whole-batch steps, in
  # < 1 GiB: benchmarks/README.md).
  cp.reversible_loop = "auto"
  # with reversible_loop=scan: run each scanned step on chunks of at most
  # this many examples (0 = whole batch); 16 is the fastest measured on CPU
  # at batch 128 (benchmarks/README.md). batch_chunk (below) chunks the
  # whole model instead.
  cp.scan_batch_chunk = 0
  # Run the model on batch chunks of at most this many examples, unrolled
  # in one program (0 = whole batch; -1 = platform default: 32 on CPU, off
  # elsewhere). CPU: fiRevNet train steps at batch 128 run 12-17% faster
  # with 32 (16: a bit faster, 2x the compile time).
  cp.batch_chunk = 0
  # How 3x3 convs run (fiRevNet subnets, cnn): "" = platform default (CPU:
  # xla_gemm_grad, else xla) | one of CONV3X3_IMPLS
  cp.conv3x3_impl = ""
  cp.conv1x1_as_matmul = True  # the invertible 1x1 conv as a matmul
  # Mixed precision of the coupling subnets: "" = platform default (TPU:
  # bfloat16, else float32) | float32 | bfloat16 (all three subnet convs on
  # bfloat16 operands) | bfloat16_1x1 (only the 1x1 conv: bfloat16
  # operands, float32 accumulation). Parameters, ActNorm, the coupling
  # arithmetic and the log-dets stay float32 and the network exactly
  # invertible (the inverse recomputes the same subnet output); values and
  # gradients carry bfloat16 rounding (~1e-2 relative on gradients). On a CPU
  # with bfloat16 matrix instructions, bfloat16_1x1 ran the authors' iCE step
  # at batch 128 in 0.80x the time of float32 (benchmarks/README.md);
  # bfloat16 is for accelerators.
  cp.dtype = ""
  return cp


def validate_compute(cp, path: str = "model.compute") -> None:
  """Checks a ``config.model.compute`` section; one ConfigError."""
  S = _settings
  S.check_one_of(f"{path}.reversible_loop", cp.reversible_loop,
                 ("auto",) + REVERSIBLE_LOOPS)
  S.check_one_of(f"{path}.dtype", cp.dtype, ("",) + tuple(COMPUTE_DTYPES))
  S.check_one_of(f"{path}.conv3x3_impl", cp.conv3x3_impl,
                 ("",) + tuple(CONV3X3_IMPLS))
  S.check_at_least(f"{path}.scan_batch_chunk", cp.scan_batch_chunk, 0,
                   " (0: whole batch)")
  chunk = cp.batch_chunk
  if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < -1:
    raise S.ConfigError(f"config.{path}.batch_chunk={chunk!r} must be an int "
                        ">= 0 (0: run the whole batch at once) or -1 "
                        "(platform default).")
