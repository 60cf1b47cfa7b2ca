"""The model protocol every advinv_jax model follows.

Every model is an immutable Python object holding only *static* settings
(shapes, widths, choices); parameters live in an explicit pytree ``params``
returned by ``init``. All methods are pure and jittable with the model object
closed over (it is hashable, so it can also be a static argument).

Shapes: images are ``float32 [B, H, W, C]`` in the data's bounds (``[0, 1]``
for every bundled dataset); logits are ``float32 [B, num_classes]``.

Invertible models additionally map ``x`` to a flat latent ``z`` of shape
``[B, d]`` with ``d = H * W * C``; the first ``num_classes`` entries of ``z``
are the logits ``z_s``, the remaining ``d - num_classes`` the nuisance ``z_n``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp

from advinv_jax import _settings, platform
from advinv_jax.layers import map_batch_chunks

Array = jax.Array
Params = Any

_REGISTRY: Dict[str, Callable[..., "Model"]] = {}
_SECTIONS_READ: Dict[str, Tuple[str, ...]] = {}


def register_model(name: str, sections: Tuple[str, ...] = ()):
  """Decorator: registers ``builder(model_config, input_shape,
  num_classes)`` as ``config.model.name = name``; ``sections``: the
  sub-sections of ``config.model`` it reads besides ``compute`` (default:
  ``(name,)``; each registered with
  ``models._settings.register_model_section``)."""

  def wrap(fn):
    if name in _REGISTRY:
      raise ValueError(f"model {name!r} registered twice")
    _REGISTRY[name] = fn
    _SECTIONS_READ[name] = tuple(sections) or (name,)
    return fn

  return wrap


def model_names():
  """The registered model names (``config.model.name``'s choices)."""
  return sorted(_REGISTRY)


def model_sections() -> Dict[str, Tuple[str, ...]]:
  """``{model name: the sub-sections of config.model it reads}`` (besides
  ``config.model.compute``, which every model reads)."""
  return dict(_SECTIONS_READ)


def build_model(model_config, input_shape: Tuple[int, int, int],
                num_classes: int) -> "Model":
  """Builds the model named by ``model_config.name``.

  Args:
    model_config: the ``config.model`` section (ConfigDict or nested
      mapping, possibly partial, e.g. ``{"name": "mlp", "mlp": {"hidden":
      (64,)}}``: missing fields take their defaults, set next to each
      builder, the only place they are set); ``name`` picks the builder,
      which reads its own sub-sections (:func:`model_sections`) and
      ``compute`` of the completed, validated section only.
    input_shape: ``(H, W, C)`` of one image as the data pipeline yields it.
    num_classes: number of classes C (the logits' width).

  Returns:
    A :class:`Model` (an :class:`InvertibleModel` for bijective models).

  Raises:
    ValueError: unknown name, or shapes the model cannot take (raised here,
      before any tracing).
  """
  try:
    model_config = _settings.checked_section("model", model_config)
  except _settings.ConfigError as e:
    raise ValueError(str(e)) from None
  if len(tuple(input_shape)) != 3 or min(input_shape) <= 0:
    raise ValueError(f"input_shape must be (H, W, C) with positive sizes, "
                     f"got {tuple(input_shape)}.")
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
  model = _REGISTRY[model_config.name](
      model_config, tuple(int(s) for s in input_shape), int(num_classes))
  chunk = model_config.compute.batch_chunk
  if chunk == -1:
    chunk = default_batch_chunk()
  return batch_chunked(model, chunk) if chunk else model


def default_batch_chunk() -> int:
  """What ``config.model.compute.batch_chunk = -1`` means on the default
  backend: ``advinv_jax.platform`` (32 on CPU, where fiRevNet train steps at
  batch 128 ran 12-17% faster in chunks of 32; 0, off, on GPU/TPU)."""
  return platform.defaults().batch_chunk


@dataclasses.dataclass(frozen=True)
class Model:
  """A classifier: ``init(rng, x) -> params``; ``logits(params, x)``."""

  input_shape: Tuple[int, int, int]
  num_classes: int

  invertible = False

  def init(self, rng: Array, x: Array) -> Params:
    """Initialises parameters; ``x`` is a sample batch ``[B, H, W, C]``.

    Data-dependent initialisation (ActNorm) uses this batch.
    """
    raise NotImplementedError

  def logits(self, params: Params, x: Array) -> Array:
    """``x: f32[B, H, W, C]`` -> ``f32[B, num_classes]``."""
    raise NotImplementedError

  def logits_train(self, params: Params, x: Array, rng=None,
                   axis_name=None) -> Tuple[Array, Params]:
    """Train-mode logits (dropout with key ``rng``, BatchNorm on batch
    statistics over ``axis_name``) and ``updates``: a pytree of new values
    for entries of ``params`` that are state, not trained (running
    statistics), written into ``params`` after the optimiser step; ``{}``
    for a model without train-mode behaviour (the default)."""
    del rng, axis_name
    return self.logits(params, x), {}

  def check_input(self, x) -> None:
    """Raises a ValueError naming the shape and the fix for a bad batch."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 4 or tuple(shape[1:]) != tuple(self.input_shape):
      raise ValueError(
          f"{type(self).__name__} expects images of shape [B, "
          f"{', '.join(map(str, self.input_shape))}], got {shape}; reshape the "
          "batch or rebuild the model for this input_shape.")
    if shape[0] == 0:
      raise ValueError("empty batch (B=0): pass at least one example.")
    dtype = getattr(x, "dtype", None)
    if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(f"images must be floating point, got dtype {dtype}; "
                       "convert with x.astype(jnp.float32) (and scale to "
                       "[0, 1]).")


@dataclasses.dataclass(frozen=True)
class InvertibleModel(Model):
  """A bijection ``x -> z`` whose first ``num_classes`` outputs are logits."""

  invertible = True

  @property
  def latent_dim(self) -> int:
    h, w, c = self.input_shape
    return h * w * c

  def forward(self, params: Params, x: Array) -> Tuple[Array, Array]:
    """``x: f32[B, H, W, C]`` -> ``(z: f32[B, d], logdet: f32[B])``."""
    raise NotImplementedError

  def inverse(self, params: Params, z: Array) -> Array:
    """``z: f32[B, d]`` -> ``x: f32[B, H, W, C]`` (exact inverse)."""
    raise NotImplementedError

  def split(self, z: Array) -> Tuple[Array, Array]:
    """``z: [B, d]`` -> ``(z_s: [B, C], z_n: [B, d - C])``."""
    return z[:, :self.num_classes], z[:, self.num_classes:]

  def merge(self, z_s: Array, z_n: Array) -> Array:
    """Inverse of :meth:`split`."""
    return jnp.concatenate([z_s, z_n], axis=-1)

  def logits(self, params: Params, x: Array) -> Array:
    z, _ = self.forward(params, x)
    return self.split(z)[0]

  def forward_train(self, params: Params, x: Array, rng=None,
                    axis_name=None) -> Dict[str, Any]:
    """Train mode: ``{"z": f32[B, d], "logdet": f32[B], "log_prior": f32[B],
    "logits": f32[B, C], "updates": pytree}``. ``z`` is the map's output
    before any train-mode readout (what a likelihood scores), ``log_prior``
    the model's own prior density of ``z`` (default: N(0, 1) per entry),
    ``logits`` the train-mode classifier output, ``updates`` as in
    :meth:`Model.logits_train`. Default: eval mode, ``updates = {}``."""
    del rng, axis_name
    z, ld = self.forward(params, x)
    lp = -0.5 * jnp.sum(jnp.square(z) + jnp.log(2 * jnp.pi), axis=-1)
    return {"z": z, "logdet": ld, "log_prior": lp,
            "logits": self.split(z)[0], "updates": {}}

  def logits_train(self, params, x, rng=None, axis_name=None):
    out = self.forward_train(params, x, rng, axis_name)
    return out["logits"], out["updates"]


@dataclasses.dataclass(frozen=True)
class BatchChunkedModel(InvertibleModel):
  """``base`` run on chunks of at most ``chunk`` examples (same function).

  Built by :func:`build_model` when ``config.model.compute.batch_chunk >
  0``. Every map (``logits``, ``forward``, ``inverse``) gives the base
  model's result, computed by :func:`map_batch_chunks`; ``init``
  (data-dependent ActNorm) sees the whole batch. Why: on CPU, XLA runs one
  large batch's
  convolutions with poor core scaling; the authors' fiRevNet iCE train step
  at batch 128 ran 12% / 17% faster in chunks of 32 / 16 (timed interleaved,
  benchmarks/README.md). The cost: compile time and the compiled program's
  resident memory grow with the number of chunks (that step: 37 s and
  ~0.5 GiB unchunked, 117 s and ~1.0 GiB in chunks of 32, ~250 s and
  ~1.7 GiB in chunks of 16; benchmarks/train_step_rss.py). Attribute lookups
  not defined here (``model.stages`` ...) go to ``base``.
  """

  base: Model = None
  chunk: int = 0

  @property
  def invertible(self):
    return self.base.invertible

  @property
  def latent_dim(self):
    return self.base.latent_dim

  def __getattr__(self, name):
    if name.startswith("__") or name in ("base", "chunk"):
      raise AttributeError(name)
    return getattr(self.base, name)

  def init(self, rng, x):
    return self.base.init(rng, x)

  def check_input(self, x):
    self.base.check_input(x)

  def logits(self, params, x):
    self.base.check_input(x)
    return map_batch_chunks(lambda c: self.base.logits(params, c), x,
                            self.chunk)

  def _invertible_base(self, what):
    if not self.base.invertible:
      raise ValueError(f"{type(self.base).__name__} is not invertible: it has "
                       f"no {what}; use an invertible model (firevnet).")
    return self.base

  def forward(self, params, x):
    base = self._invertible_base("forward")
    base.check_input(x)
    return map_batch_chunks(lambda c: base.forward(params, c), x, self.chunk)

  def forward_train(self, params, x, rng=None, axis_name=None):
    """The base's per-example train-mode flow on chunks (chunk ``i`` with key
    ``fold_in(rng, i)``), then its readout (BatchNorm) on the whole batch."""
    base = self._invertible_base("forward_train")
    if not hasattr(base, "flow_train"):
      return base.forward_train(params, x, rng, axis_name)
    base.check_input(x)
    b = x.shape[0]
    outs = [base.flow_train(params, x[i:i + self.chunk],
                            None if rng is None else
                            jax.random.fold_in(rng, i // self.chunk))
            for i in range(0, b, self.chunk)]
    out = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a, axis=0), *outs)
    return base.readout_train(params, out, axis_name)

  def inverse(self, params, z):
    base = self._invertible_base("inverse")
    return map_batch_chunks(lambda c: base.inverse(params, c), z, self.chunk)

  def inverse_with_logdet(self, params, z):
    base = self._invertible_base("inverse_with_logdet")
    return map_batch_chunks(lambda c: base.inverse_with_logdet(params, c), z,
                            self.chunk)


def batch_chunked(model: Model, chunk: int) -> Model:
  """``model`` evaluated in batch chunks of at most ``chunk`` (see above)."""
  if chunk <= 0:
    return model
  return BatchChunkedModel(input_shape=model.input_shape,
                           num_classes=model.num_classes, base=model,
                           chunk=int(chunk))
