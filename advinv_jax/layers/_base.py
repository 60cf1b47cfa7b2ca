"""The invertible-layer protocol and the ``Chain`` combinator.

Every layer is a frozen (hashable) dataclass holding only static settings;
parameters live in an explicit pytree. The protocol:

* ``init(rng, x) -> params``: ``x`` is a sample batch ``f32[B, H, W, C]``;
  data-dependent layers (ActNorm) initialise from it.
* ``forward(params, x) -> (y, logdet)``: ``logdet: f32[B]`` is
  ``log|det dy/dx|`` per example.
* ``inverse(params, y) -> x`` and ``inverse_with_logdet(params, y) ->
  (x, logdet_inv)`` with ``logdet_inv = log|det dx/dy| = -logdet``.

Layers whose behaviour depends on fixed, seed-derived arrays (a shuffle
permutation, the permutation of an LU 1x1 conv) keep those out of ``params``
(they are not trainable) and expose them through ``consts(shape)``; the
low-level ``apply(params, consts, x)`` / ``apply_inverse(params, consts, y)``
take them explicitly, which lets a ``lax.scan`` run steps that differ only in
their seeds (see :meth:`Layer.template`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = Any
Shape = Tuple[int, ...]


def _key(i: int) -> str:
  return f"{i:03d}"


def count_params(params: Params) -> int:
  """Number of scalar entries in a parameter pytree (arrays or ShapeDtypeStructs)."""
  return int(sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params)))


@dataclasses.dataclass(frozen=True)
class Layer:
  """Base class of the invertible layers (see the module docstring)."""

  # ---------------------------------------------------------------- shapes
  def check_shape(self, shape: Shape) -> None:
    """Raises ValueError (naming the shape and the fix) if ``shape`` is bad."""
    if len(shape) != 4:
      raise ValueError(f"{type(self).__name__} expects [B, H, W, C] inputs, got "
                       f"shape {tuple(shape)}; add/remove axes to match.")

  def output_shape(self, shape: Shape) -> Shape:
    """Shape of ``forward``'s output for an input of ``shape``."""
    self.check_shape(shape)
    return tuple(shape)

  def input_shape(self, shape: Shape) -> Shape:
    """Shape of ``inverse``'s output for an input of ``shape``."""
    return tuple(shape)

  # ---------------------------------------------------------------- statics
  def consts(self, shape: Shape) -> Any:
    """Fixed (non-trainable) arrays for an input of ``shape``; numpy pytree."""
    del shape
    return ()

  def template(self) -> "Layer":
    """This layer with its seeds zeroed: steps with equal templates can be
    scanned over, with ``consts`` supplying the per-step differences."""
    return self

  # ---------------------------------------------------------------- maths
  def init(self, rng: Array, x: Array) -> Params:
    del rng, x
    return {}

  def apply(self, params: Params, consts: Any, x: Array) -> Tuple[Array, Array]:
    raise NotImplementedError

  def apply_inverse(self, params: Params, consts: Any,
                    y: Array) -> Tuple[Array, Array]:
    raise NotImplementedError

  def apply_train(self, params: Params, consts: Any, x: Array,
                  rng: Array) -> Tuple[Array, Array]:
    """:meth:`apply` in train mode (dropout on, key ``rng``); layers without
    dropout ignore the key."""
    del rng
    return self.apply(params, consts, x)

  def forward(self, params: Params, x: Array) -> Tuple[Array, Array]:
    """``x: f32[B,H,W,C]`` -> ``(y, logdet: f32[B])``."""
    return self.apply(params, self.consts(tuple(x.shape)), x)

  def inverse_with_logdet(self, params: Params, y: Array) -> Tuple[Array, Array]:
    """``y`` -> ``(x, log|det dx/dy|: f32[B])``."""
    shape = self.input_shape(tuple(y.shape))
    return self.apply_inverse(params, self.consts(shape), y)

  def inverse(self, params: Params, y: Array) -> Array:
    """Exact inverse of :meth:`forward`."""
    return self.inverse_with_logdet(params, y)[0]

  def reverse_vjp(self, params: Params, consts: Any, y: Array, gy: Array,
                  gld: Array) -> Tuple[Array, Params, Array]:
    """Backward step of reversible backprop.

    Recomputes this layer's input from its output and pulls the cotangents
    ``(gy, gld)`` of ``(y, logdet)`` back.

    Returns:
      ``(x, grad_params, grad_x)``.
    """
    x, _ = self.apply_inverse(params, consts, y)
    out, pull = jax.vjp(lambda p, v: self.apply(p, consts, v), params, x)
    gp, gx = pull(replicated_cotangent_share((gy, gld), out))
    return x, gp, gx


def zeros_logdet(x: Array) -> Array:
  return jnp.zeros((x.shape[0],), jnp.float32)


# How a Chain loops over its layers (reversible_loop).
REVERSIBLE_LOOPS = ("unrolled", "scan")

@dataclasses.dataclass(frozen=True)
class Chain(Layer):
  """A sequence of layers; params are ``{"000": p0, "001": p1, ...}``, or
  ``{"stacked": p}`` with ``stacked=True`` (every leaf with a leading axis of
  length ``len(layers)``).

  Attributes:
    layers: the layers, applied in order.
    reversible: if True, gradients are computed by reversible backprop: a
      ``jax.custom_vjp`` whose backward pass recomputes each layer's input from
      its output with the layer's inverse instead of storing activations
      (memory O(1) in the number of layers). Gradients equal plain autodiff up
      to the float error of the inverse.
    reversible_loop: ``'unrolled'`` (Python loop; each recompute is tied to the
      incoming cotangent by ``lax.optimization_barrier`` plus a true data
      dependence, see :func:`_depend_on`, so XLA can neither hoist the
      recomputations ahead of the backward pass nor share parameter-only
      values with the forward pass) or ``'scan'`` (forward and backward as
      ``lax.scan`` over steps with equal :meth:`Layer.template`; params are
      stacked on the fly unless ``stacked``). Both give flat memory in depth.
      'scan' compiles faster into a smaller program; on 2 CPU cores it
      runs as fast at batch 32 and ~1.25x slower at batch 128 (XLA overlaps
      neighbouring steps only when unrolled; benchmarks/README.md,
      "Reversible backprop"). Loop bodies need convolution gradients in the
      form XLA CPU runs fast in loops (``conv3x3_impl='xla_gemm_grad'``, the
      CPU default; with ``'xla'`` 'scan' is ~5-10x slower). With
      ``stacked``, 'scan' also scans the plain (non-reversible) forward.
    stacked: store the layers' params stacked, ``{"stacked": p}`` (layers
      with equal templates only), as ``flax.linen.scan`` does: an optimizer
      then updates one array per parameter kind instead of one per layer
      (fewer, larger kernels: a smaller compiled program). Convert with
      :meth:`stack_params` / :meth:`unstack_params`.
    batch_chunk: when the chain scans (``reversible_loop='scan'``), each loop
      iteration runs its step on chunks of at most this many examples (0:
      the whole batch). Same function and gradients; independent chunks give
      XLA work to run side by side on a CPU's cores within one iteration
      (the authors' iCE step at batch 128 on 2 cores, interleaved: scan
      4.22 s, chunks of 32 / 16: 3.52 / 3.29 s, unrolled 3.22 s).

  A reversible chain supports reverse-mode autodiff only (``jax.grad``,
  ``jax.vjp``, ``jacrev``); ``jax.jvp`` / ``jacfwd`` raise. Its params are the
  same pytree as the plain chain's (same ``stacked``), so build the plain one
  for forward mode.
  """

  layers: Tuple[Layer, ...] = ()
  reversible: bool = False
  reversible_loop: str = "unrolled"
  stacked: bool = False
  batch_chunk: int = 0

  def __post_init__(self):
    if int(self.batch_chunk) < 0:
      raise ValueError(f"batch_chunk={self.batch_chunk} must be >= 0.")
    object.__setattr__(self, "layers", tuple(self.layers))
    if self.reversible_loop not in REVERSIBLE_LOOPS:
      raise ValueError(f"reversible_loop={self.reversible_loop!r}; choose "
                       f"one of {REVERSIBLE_LOOPS}.")
    if self.stacked:
      need = "stacked=True"
    elif self.reversible and self.reversible_loop == "scan":
      need = "reversible_loop='scan'"
    else:
      need = None
    if need and self.layers and not _homogeneous(self.layers):
      raise ValueError(
          f"{need} needs layers that differ only in their seeds (equal "
          f"templates); got {sorted({type(l).__name__ for l in self.layers})}"
          ". Use reversible_loop='unrolled' and stacked=False.")

  @property
  def _scans(self) -> bool:
    """Whether the forward / inverse run as ``lax.scan``."""
    return (self.reversible_loop == "scan" and bool(self.layers) and
            (self.stacked or self.reversible))

  # -- params layout
  def stack_params(self, params: Params) -> Params:
    """``{"000": p0, ...}`` -> ``{"stacked": p}`` (or as is if stacked)."""
    if "stacked" in params:
      return params
    return {"stacked": _stack([params[_key(i)]
                               for i in range(len(self.layers))])}

  def unstack_params(self, params: Params) -> Params:
    """``{"stacked": p}`` -> ``{"000": p0, ...}`` (or as is if unstacked)."""
    if "stacked" not in params:
      return params
    return {_key(i): self.step_params(params, i)
            for i in range(len(self.layers))}

  def step_params(self, params: Params, i: int) -> Params:
    """The params of ``layers[i]`` in either layout."""
    if "stacked" in params:
      return jax.tree_util.tree_map(lambda a: a[i], params["stacked"])
    return params[_key(i)]

  def _pack(self, per_layer: Sequence[Params]) -> Params:
    if self.stacked:
      return {"stacked": _stack(per_layer)}
    return {_key(i): p for i, p in enumerate(per_layer)}

  def _stacked_params(self, params: Params) -> Params:
    return self.stack_params(params)["stacked"]

  # -- shapes
  def _shapes(self, shape: Shape):
    shapes = [tuple(shape)]
    for layer in self.layers:
      shapes.append(layer.output_shape(shapes[-1]))
    return shapes

  def check_shape(self, shape: Shape) -> None:
    self._shapes(shape)

  def output_shape(self, shape: Shape) -> Shape:
    return self._shapes(shape)[-1]

  def input_shape(self, shape: Shape) -> Shape:
    for layer in reversed(self.layers):
      shape = layer.input_shape(shape)
    return tuple(shape)

  def consts(self, shape: Shape):
    shapes = self._shapes(shape)
    return tuple(l.consts(s) for l, s in zip(self.layers, shapes))

  def template(self) -> "Chain":
    return dataclasses.replace(
        self, layers=tuple(l.template() for l in self.layers))

  def init(self, rng: Array, x: Array) -> Params:
    self.check_shape(tuple(x.shape))
    per_layer = []
    for layer in self.layers:
      rng, sub = jax.random.split(rng)
      per_layer.append(layer.init(sub, x))
      x, _ = layer.forward(per_layer[-1], x)
    return self._pack(per_layer)

  # -- plain composition
  def _apply_plain(self, params, consts, x):
    if self._scans:
      return _scan_apply(self, params, consts, x)
    ld = zeros_logdet(x)
    for i, layer in enumerate(self.layers):
      x, l = layer.apply(self.step_params(params, i), consts[i], x)
      ld = ld + l
    return x, ld

  def apply(self, params, consts, x):
    if not self.reversible or not self.layers:
      return self._apply_plain(params, consts, x)
    return _reversible_apply(self, params, consts, x)

  def apply_train(self, params, consts, x, rng):
    """Train mode: the layers in a plain unrolled loop, layer ``i`` with key
    ``fold_in(rng, i)`` (plain autodiff; no reversible backprop or scan)."""
    ld = zeros_logdet(x)
    for i, layer in enumerate(self.layers):
      x, l = layer.apply_train(self.step_params(params, i), consts[i], x,
                               jax.random.fold_in(rng, i))
      ld = ld + l
    return x, ld

  def apply_inverse(self, params, consts, y):
    if self._scans:
      return _scan_apply(self, params, consts, y, inverse=True)
    ld = zeros_logdet(y)
    for i in reversed(range(len(self.layers))):
      y, l = self.layers[i].apply_inverse(self.step_params(params, i),
                                          consts[i], y)
      ld = ld + l
    return y, ld

  def reverse_vjp(self, params, consts, y, gy, gld):
    grads = [None] * len(self.layers)
    for i in reversed(range(len(self.layers))):
      y, grads[i], gy = self.layers[i].reverse_vjp(
          self.step_params(params, i), consts[i], y, gy, gld)
    return y, self._pack(grads), gy


def map_batch_chunks(fn: Callable, x: Any, chunk: int):
  """``fn(x)`` computed on consecutive chunks of ``x``'s leading axis.

  The chunks (at most ``chunk`` examples each; the last may be smaller) are
  an unrolled Python loop inside one program, so they are independent
  computations XLA may run side by side, and each works on a smaller,
  cache-friendlier batch. ``fn`` must treat examples independently
  (true of every model here after initialisation); its outputs, a pytree of
  arrays with a leading batch axis, are concatenated back.

  Args:
    fn: ``x[i:j] -> pytree`` of arrays ``[j - i, ...]``.
    x: ``[B, ...]`` array, or a pytree of them (all with the same ``B``),
      sliced alike.
    chunk: the largest chunk; ``chunk <= 0`` or ``chunk >= B``: one call.

  Returns:
    ``fn(x)``'s pytree, each leaf ``[B, ...]``.
  """
  b = jax.tree_util.tree_leaves(x)[0].shape[0]
  if chunk <= 0 or b <= chunk:
    return fn(x)
  outs = [fn(jax.tree_util.tree_map(lambda a, i=i: a[i:i + chunk], x))
          for i in range(0, b, chunk)]
  return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a, axis=0), *outs)


def _scan_apply(chain: Chain, params, consts, x, inverse: bool = False):
  """``chain``'s forward (or inverse) as one ``lax.scan`` over its layers."""
  template = chain.layers[0].template()
  step = template.apply_inverse if inverse else template.apply

  def one(p, c, x):    # a per-example logdet, so that chunks concatenate
    y, l = step(p, c, x)
    return y, jnp.broadcast_to(l, y.shape[:1])

  def body(carry, pc):
    x, ld = carry
    y, l = map_batch_chunks(lambda v: one(pc[0], pc[1], v), x,
                            chain.batch_chunk)
    return (y, ld + l), None

  ld = zeros_logdet(x)
  axes = tuple(sorted(_varying_axes(x)))
  if axes:   # under shard_map the carry must vary like the step's output
    ld = jax.lax.pcast(ld, axes, to="varying")
  xs = (chain._stacked_params(params), _np_stack(list(consts)))
  return jax.lax.scan(body, (x, ld), xs, reverse=inverse)[0]


# ------------------------------------------------------------------ reversible
def _homogeneous(layers: Sequence[Layer]) -> bool:
  return len({l.template() for l in layers}) == 1


def _stack(trees):
  return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def _np_stack(trees):
  return jax.tree_util.tree_map(lambda *a: np.stack(a), *trees)


def _depend_on(g, tree):
  """Adds ``0 * g[0]`` to every leaf of ``tree``: a data dependence on ``g``.

  XLA CPU expands optimization barriers early, after which CSE and the
  scheduler may share / hoist work that depends only on parameters (e.g. an
  ActNorm's broadcast shift) across the whole backward pass. A true data
  dependence cannot be moved; ``x * 0`` is not folded for floats (NaN/inf
  semantics), so this costs one fused multiply-add per leaf.
  """
  zero = g.reshape(-1)[0] * 0.0
  return jax.tree_util.tree_map(lambda a: a + zero.astype(a.dtype), tree)


def _varying_axes(x) -> frozenset:
  """Manual mesh axes along which ``x`` varies (``shard_map``), else {}."""
  t = jax.typeof(x)
  mat = getattr(t, "manual_axis_type", None)   # jax >= 0.8
  axes = getattr(mat, "varying", None) if mat is not None else getattr(
      t, "vma", None)                            # jax 0.7
  return frozenset(axes or ())


def match_cotangent_axes(cotangent, primal):
  """A ``custom_vjp`` bwd's cotangent, summed to its primal's mesh axes.

  Only matters under ``jax.shard_map`` with its default ``check_vma=True``,
  where JAX types every value by the manual axes it varies along; outside it
  this is the identity. A replicated parameter used with a batch-sharded
  input gets a per-device cotangent; JAX's own autodiff sums it over the
  batch axis (the transpose of the implicit broadcast), and a custom bwd
  must do the same or JAX rejects its output's type: each leaf is
  ``psum``-ed over the axes along which it varies but its primal does not.
  """
  def one(ct, p):
    extra = tuple(sorted(_varying_axes(ct) - _varying_axes(p)))
    return jax.lax.psum(ct, extra) if extra else ct
  return jax.tree_util.tree_map(one, cotangent, primal)


def replicated_cotangent_share(ct, out):
  """Types a cotangent like the pullback's output (``shard_map`` only).

  In the reversible backward, :func:`_depend_on` makes a step's params vary
  along the batch axis (their values stay identical on every device), so a
  param-only output such as an ActNorm or additive coupling logdet is typed
  varying while its incoming cotangent is replicated (JAX already summed it
  over devices). Each device takes ``1/N`` of it: the parameter gradients
  are ``psum``-ed at the end of the backward (:func:`match_cotangent_axes`),
  which adds the N identical shares back to exactly one. Conversely a
  cotangent that varies along axes its (replicated) output does not is
  ``psum``-ed, as JAX's autodiff does. Outside ``shard_map``: the identity.
  """
  # A replicated output (e.g. a parameter-free layer's zero logdet) takes
  # the summed cotangent, as for a custom bwd's output.
  ct = match_cotangent_axes(ct, out)

  def one(c, o):
    missing = tuple(sorted(_varying_axes(o) - _varying_axes(c)))
    if not missing:
      return c
    n = 1
    for a in missing:
      n *= jax.lax.axis_size(a)
    return jax.lax.pcast(c, missing, to="varying") / n
  return jax.tree_util.tree_map(one, ct, out)


def _reversible_apply(chain: Chain, params, consts, x):
  """Applies ``chain`` with a custom VJP that recomputes activations."""
  n = len(chain.layers)

  @jax.custom_vjp
  def run(params, x):
    return chain._apply_plain(params, consts, x)

  def fwd(params, x):
    y, ld = chain._apply_plain(params, consts, x)
    return (y, ld), (params, y)

  def bwd(res, cot):
    params, y = res
    gy, gld = cot
    if chain._scans:
      template = chain.layers[0].template()

      def one(p, c, ygg):  # the chunk's param grads get a leading axis
        x, gp, gx = template.reverse_vjp(p, c, *ygg)
        return x, jax.tree_util.tree_map(lambda g: g[None], gp), gx

      def body(carry, pc):
        y, gy = carry
        x, gps, gx = map_batch_chunks(lambda v: one(pc[0], pc[1], v),
                                      (y, gy, gld), chain.batch_chunk)
        return (x, gx), jax.tree_util.tree_map(lambda g: g.sum(0), gps)

      (_, gx), gps = jax.lax.scan(
          body, (y, gy),
          (chain._stacked_params(params), _np_stack(list(consts))),
          reverse=True)
      grads = {"stacked": gps}
      if "stacked" not in params:    # stacked on the fly: per-layer layout
        grads = chain.unstack_params(grads)
      return match_cotangent_axes(grads, params), gx
    grads = [None] * n
    for i in reversed(range(n)):
      # Tie step i's recomputation to the arrival of its output cotangent:
      # passing (y, gy, params_i) through one barrier stops XLA from hoisting
      # the recomputation (or anything computed from params_i alone, such as
      # broadcasts, which CSE would otherwise share with the forward pass)
      # ahead of the backward pass and keeping it alive.
      y, gy, p_i = jax.lax.optimization_barrier(
          (y, gy, chain.step_params(params, i)))
      y, p_i = _depend_on(gy, (y, p_i))
      y, grads[i], gy = chain.layers[i].reverse_vjp(
          p_i, consts[i], y, gy, gld)
    return match_cotangent_axes(chain._pack(grads), params), gy

  run.defvjp(fwd, bwd)
  return run(params, x)
