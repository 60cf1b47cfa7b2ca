"""Per-backend defaults: the one place where a setting depends on the hardware.

A config field set to its *platform default* value (``''``, ``-1`` or
``'auto'``, see the table) is resolved here, for the backend the program will
run on: :func:`defaults` takes the platform name explicitly (``'cpu'``,
``'gpu'``, ``'tpu'``; ``None`` = ``jax.default_backend()``), so a program can
be built for an accelerator on a CPU-only machine (tests/test_export.py
exports every train step and attack that way) and :func:`resolve_config`
fills a config's platform-default fields for a named platform.

======================  ===============  ======  ========  ====================
setting                 cpu              gpu     tpu       config field (value)
======================  ===============  ======  ========  ====================
attack loop             fori             fori    fori      report.attack_loop
                                                           (``''``), attacks'
                                                           ``loop=None``
3x3 conv form           xla_gemm_grad    xla     xla       model.compute.
                                                           conv3x3_impl
                                                           (``''``)
batch chunks            32               0 (off) 0 (off)   model.compute.
                                                           batch_chunk
                                                           (``-1``)
subnet compute dtype    float32          float32 bfloat16  model.compute.dtype
                                                           (``''``)
reversible loop         unrolled         unrolled unrolled model.compute.
                                                           reversible_loop
                                                           (``'auto'``)
======================  ===============  ======  ========  ====================

Why each choice (CPU numbers: benchmarks/README.md; the
accelerator choices are not timed in this repository -- run
``benchmarks/device_check.sh`` on a GPU to time them):

* **attack loop**: a rolled ``lax.fori_loop`` everywhere. It compiles one
  copy of the attack step, so compile time does not grow with ``steps``
  (a 64-wide MLP on CPU: PGD-200 compiled in 14.5 s rolled, PGD-20 in 48.8 s
  unrolled; an unrolled fiRevNet PGD-200 did not finish compiling in 10
  minutes, docs/attacks.md). On XLA CPU the
  library's models run as fast rolled as unrolled because their gradient
  convolutions are written in the form XLA CPU keeps fast inside loops
  (``xla_gemm_grad``); a ``logits_fn`` on plain ``lax.conv`` can be several
  times slower rolled on CPU (pass ``loop='unrolled'`` for it). GPU/TPU
  compile one loop body much faster than many and run it as fast.
* **3x3 conv form**: XLA CPU computes the filter gradient of a convolution
  2-3x slower than its forward and the input gradient of a thin-input conv
  slowly, and inside loops falls back to a generic kernel; ``xla_gemm_grad``
  (XLA forward, gradients as matrix products) ran the authors' reversible
  fiRevNet step 0.81x / 0.85x the time of ``xla`` (batch 32 / 128). On
  GPU/TPU the plain convolution (cuDNN, the TPU convolution emitter) is the
  native form, with forward-mode autodiff too.
* **batch chunks**: XLA CPU runs one large batch's convolutions with poor
  core scaling; fiRevNet train steps at batch 128 ran 12-17% faster in chunks
  of 32 (at ~2x compile time and resident memory). On accelerators one large
  batch is the efficient form (chunks would serialise the device).
* **subnet compute dtype**: TPUs already multiply float32 operands as one
  bfloat16 pass at JAX's default matmul precision, so bfloat16 operands in
  the coupling subnets' convolutions lose no accuracy there and halve the
  activations saved for the backward pass; parameters, ActNorm, the coupling
  arithmetic and the log-determinants stay float32 (the network stays
  exactly invertible, see ``advinv_jax.layers.Subnet``). GPUs multiply
  float32 at full or TF32 precision, where bfloat16 changes the numerics:
  float32 until measured (``compute_dtype='bfloat16'`` opts in). XLA CPU has
  no fast bfloat16 convolutions: float32 (``'bfloat16_1x1'``, bfloat16 1x1
  convs only, ran the authors' iCE step in 0.80x the time on a CPU with
  bfloat16 matrix instructions: benchmarks/README.md).
* **reversible loop**: the unrolled chain of coupling steps was the faster
  form measured on CPU (benchmarks/reversible.py); ``'scan'`` compiles a much
  smaller program and is the choice for deep models on any backend.

Also here: :func:`enable_compilation_cache`, JAX's persistent compilation
cache in a user cache folder (``~/.cache/advinv_jax/jax``; opt out with
``ADVINV_JAX_COMPILATION_CACHE=off``), on for the main job and the
experiments.
"""
from __future__ import annotations

import dataclasses
import os
import platform as _host
import re
import warnings
from typing import Optional

import jax

PLATFORMS = ("cpu", "gpu", "tpu")

# jax.export's names of the platforms a program is lowered for.
EXPORT_PLATFORMS = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}


@dataclasses.dataclass(frozen=True)
class PlatformDefaults:
  """The defaults of one platform (see the module docstring for the why).

  Attributes:
    platform: ``'cpu'``, ``'gpu'`` or ``'tpu'``.
    attack_loop: the attacks' loop form (``'fori'`` | ``'unrolled'`` |
      ``'scan'``).
    conv3x3_impl: the coupling subnets' 3x3 conv form
      (``advinv_jax.layers.conv3x3``).
    batch_chunk: run the model on chunks of this many examples (0: off).
    compute_dtype: the coupling subnets' compute dtype (``'float32'`` |
      ``'bfloat16'`` | ``'bfloat16_1x1'``).
    reversible_loop: what ``model.compute.reversible_loop='auto'`` means.
  """
  platform: str
  attack_loop: str
  conv3x3_impl: str
  batch_chunk: int
  compute_dtype: str
  reversible_loop: str


_DEFAULTS = {
    "cpu": PlatformDefaults("cpu", attack_loop="fori",
                            conv3x3_impl="xla_gemm_grad", batch_chunk=32,
                            compute_dtype="float32",
                            reversible_loop="unrolled"),
    "gpu": PlatformDefaults("gpu", attack_loop="fori", conv3x3_impl="xla",
                            batch_chunk=0, compute_dtype="float32",
                            reversible_loop="unrolled"),
    "tpu": PlatformDefaults("tpu", attack_loop="fori", conv3x3_impl="xla",
                            batch_chunk=0, compute_dtype="bfloat16",
                            reversible_loop="unrolled"),
}

_ALIASES = {"cuda": "gpu", "rocm": "gpu"}


def platform_name(platform: Optional[str] = None) -> str:
  """``'cpu'`` | ``'gpu'`` | ``'tpu'``: ``platform`` (``'cuda'`` and
  ``'rocm'`` mean ``'gpu'``), or the default backend's when None."""
  name = jax.default_backend() if platform is None else str(platform)
  name = _ALIASES.get(name.lower(), name.lower())
  if name not in _DEFAULTS:
    raise ValueError(f"platform={platform!r} is unknown; use one of "
                     f"{list(PLATFORMS)} (or None for the default backend).")
  return name


def cpu_model() -> str:
  """The host CPU's model name (``/proc/cpuinfo``'s ``model name``, as
  ``lscpu`` prints it), or the processor/machine string where that file is
  missing: what a benchmark table names as its hardware."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.lower().startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return _host.processor() or _host.machine()


def defaults(platform: Optional[str] = None) -> PlatformDefaults:
  """The :class:`PlatformDefaults` of ``platform`` (None: the default
  backend, ``jax.default_backend()``)."""
  return _DEFAULTS[platform_name(platform)]


def resolve_config(config, platform: Optional[str] = None):
  """A copy of ``config`` with every platform-default field filled in.

  ``model.compute``'s ``conv3x3_impl=''``, ``batch_chunk=-1``,
  ``dtype=''``, ``reversible_loop='auto'`` and ``report.attack_loop=''``
  become ``platform``'s choices (see the module table); explicit values are
  kept. The same model/report is built from the
  result on any machine, e.g. a GPU's program on a CPU for ``jax.export``.

  Args:
    config: an ml_collections ConfigDict of ``advinv_jax/config.py``
      (``model`` and ``report`` may be absent).
    platform: ``'cpu'`` | ``'gpu'`` | ``'tpu'`` (None: the default backend).
  """
  d = defaults(platform)
  out = config.copy_and_resolve_references()
  compute = out.get("model", None)
  compute = None if compute is None else compute.get("compute", None)
  if compute is not None:
    # (field, value when absent, its platform-default value, the choice)
    for field, absent, auto, value in (
        ("conv3x3_impl", "", "", d.conv3x3_impl),
        ("batch_chunk", 0, -1, d.batch_chunk),
        ("dtype", "", "", d.compute_dtype),
        ("reversible_loop", "auto", "auto", d.reversible_loop)):
      if compute.get(field, absent) == auto:
        compute[field] = value
  report = out.get("report", None)
  if report is not None and report.get("attack_loop", "") == "":
    report.attack_loop = d.attack_loop
  return out


# ------------------------------------------------ persistent compile cache
CACHE_ENV = "ADVINV_JAX_COMPILATION_CACHE"


def default_cache_dir() -> str:
  """``$XDG_CACHE_HOME/advinv_jax/jax``, else ``~/.cache/advinv_jax/jax``."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(base, "advinv_jax", "jax")


def enable_compilation_cache() -> Optional[str]:
  """Turns on JAX's persistent compilation cache; returns its folder (None:
  off).

  Compiled programs (the train step, every attack of the report) are kept
  on disk, so a second run of the same model and settings loads them
  instead of compiling again. The folder, in order:
  ``JAX_COMPILATION_CACHE_DIR`` when set (JAX's own variable, left as it
  is), else
  ``$ADVINV_JAX_COMPILATION_CACHE`` when it names a folder, else
  :func:`default_cache_dir`. ``ADVINV_JAX_COMPILATION_CACHE=off`` (or
  ``0``, ``false``, ``no``, empty) turns it off. A folder that cannot be
  created leaves it off with a warning. Called by ``advinv_jax.cli.run``
  (the main job and the experiments), before anything compiles.
  """
  own = os.environ.get("JAX_COMPILATION_CACHE_DIR")
  if own:
    return own
  env = os.environ.get(CACHE_ENV)
  if env is not None and env.strip().lower() in ("", "0", "off", "false",
                                                  "no"):
    return None
  folder = os.path.expanduser(env) if env else default_cache_dir()
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    warnings.warn(f"the compilation cache folder {folder} cannot be created "
                  f"({e}); compiling without a persistent cache (set "
                  f"{CACHE_ENV} to a writable folder, or to off).",
                  RuntimeWarning, stacklevel=2)
    return None
  jax.config.update("jax_compilation_cache_dir", folder)
  return folder


class LoweringError(RuntimeError):
  """A program has no lowering for a platform; names the primitive."""


# Host-only custom calls (LAPACK, DUCC FFT, Python callbacks): an
# accelerator program must not contain them.
_HOST_ONLY_CALLS = re.compile(
    r"custom_call[^\n]*?@?\"?(lapack_\w+|ducc_\w+|\w*cpu_callback\w*)")


def export(fn, platforms, *args, name: str = "", **kwargs):
  """``jax.export.export(jax.jit(fn), platforms=...)(*args, **kwargs)``.

  Lowers (does not compile) ``fn`` for ``platforms`` (``'cpu'`` | ``'gpu'``
  | ``'tpu'``, or jax.export's ``'cuda'`` / ``'rocm'``) on any machine;
  ``args`` may be ``jax.ShapeDtypeStruct``s. ``fn`` may already be jitted
  (its shardings, e.g. a ``jax.shard_map`` over a mesh of the local
  devices, are kept: the export records the device count, not the devices).

  Raises:
    LoweringError: naming ``name``, the platforms and the primitive that has
      no lowering there, or the host-only custom call the program contains.
  """
  targets = ["rocm" if p == "rocm" else EXPORT_PLATFORMS[platform_name(p)]
             for p in platforms]
  jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
  try:
    exported = jax.export.export(jitted, platforms=targets)(*args, **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    m = re.search(r"primitive '?([\w\-]+)'?", str(e))
    if m is None:  # not a lowering failure (a bug in fn, bad args): as is
      raise
    prim = m.group(1)
    raise LoweringError(f"{name or fn}: cannot be lowered for {targets}: "
                        f"primitive {prim!r} ({str(e).splitlines()[0]})"
                        ) from e
  host = sorted(set(_HOST_ONLY_CALLS.findall(exported.mlir_module())))
  if host and "cpu" not in targets:
    raise LoweringError(f"{name or fn}: the program for {targets} calls "
                        f"host-only custom call(s) {host}.")
  return exported
