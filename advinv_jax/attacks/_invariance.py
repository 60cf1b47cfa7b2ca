"""Invariance attacks on bijective classifiers (Jacobsen et al. 2019).

For an :class:`~advinv_jax.models.InvertibleModel` ``F`` with
``z = F(x) = (z_s, z_n)`` (logits first, nuisance after), the model's
decision depends on ``z_s`` only, so everything in ``z_n`` is invisible to
it. These attacks exploit that analytically, without optimisation.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


def _check_invertible(model, x, name: str) -> None:
  if not getattr(model, "invertible", False):
    raise ValueError(f"{type(model).__name__} is not an InvertibleModel; "
                     "invariance attacks need forward/inverse/split/merge "
                     "(build an invertible model such as 'firevnet').")
  model.check_input(x)


def metameric_sample(model, params, x_logits_source: Array,
                     x_nuisance_source: Array) -> Array:
  """``F^-1(merge(z_s(A), z_n(B)))``: classified exactly as A, built from B.

  Args:
    model: an InvertibleModel.
    params: its parameters.
    x_logits_source: ``f32[B, H, W, C]`` images A (their logits are kept).
    x_nuisance_source: ``f32[B, H, W, C]`` images B (their nuisance is kept).

  Returns:
    ``f32[B, H, W, C]`` metamers; ``model.logits`` of them equals that of A up
    to the model's inversion error.
  """
  _check_invertible(model, x_logits_source, "x_logits_source")
  _check_invertible(model, x_nuisance_source, "x_nuisance_source")
  if x_logits_source.shape != x_nuisance_source.shape:
    raise ValueError(f"x_logits_source {x_logits_source.shape} and "
                     f"x_nuisance_source {x_nuisance_source.shape} must have "
                     "the same shape (pair them up first).")
  za, _ = model.forward(params, x_logits_source)
  zb, _ = model.forward(params, x_nuisance_source)
  z_s, _ = model.split(za)
  _, z_n = model.split(zb)
  return model.inverse(params, model.merge(z_s, z_n))


def nuisance_interpolation(model, params, x_a: Array, x_b: Array,
                           num_steps: int) -> Array:
  """Holds ``z_s(A)`` fixed and moves ``z_n`` linearly from A's to B's.

  Args:
    model: an InvertibleModel; params: its parameters.
    x_a, x_b: ``f32[B, H, W, C]``.
    num_steps: number of points ``t = 0, ..., 1`` (static, >= 2).

  Returns:
    ``f32[num_steps, B, H, W, C]``; step 0 reconstructs A, the last step is
    the metamer of (A, B). Every step has A's logits.
  """
  _check_invertible(model, x_a, "x_a")
  if x_a.shape != x_b.shape:
    raise ValueError(f"x_a {x_a.shape} and x_b {x_b.shape} must have the same "
                     "shape.")
  if int(num_steps) != num_steps or num_steps < 2:
    raise ValueError(f"num_steps={num_steps} must be an integer >= 2.")
  za, _ = model.forward(params, x_a)
  zb, _ = model.forward(params, x_b)
  z_s, zn_a = model.split(za)
  _, zn_b = model.split(zb)
  t = jnp.linspace(0.0, 1.0, num_steps, dtype=za.dtype)[:, None, None]
  zn = (1.0 - t) * zn_a[None] + t * zn_b[None]                # [T, B, d-C]
  zs = jnp.broadcast_to(z_s[None], (num_steps,) + z_s.shape)
  b = x_a.shape[0]
  z = model.merge(zs.reshape((num_steps * b, -1)),
                  zn.reshape((num_steps * b, -1)))
  return model.inverse(params, z).reshape((num_steps,) + x_a.shape)


def _mlp_init(key, sizes):
  layers = []
  for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
    k = jax.random.fold_in(key, i)
    layers.append({"w": jax.random.normal(k, (m, n)) * np.sqrt(2.0 / m),
                   "b": jnp.zeros((n,))})
  return layers


def _mlp_apply(layers, h):
  for i, lyr in enumerate(layers):
    h = h @ lyr["w"] + lyr["b"]
    if i < len(layers) - 1:
      h = jax.nn.relu(h)
  return h


def nuisance_classifier_logits(params: Dict[str, Any], z_n: Array) -> Array:
  """Logits ``f32[N, K]`` of a classifier from :func:`train_nuisance_classifier`."""
  h = (z_n - params["mean"]) / params["std"]
  return _mlp_apply(params["layers"], h)


@functools.partial(jax.jit, static_argnames=("num_classes", "hidden", "steps",
                                             "lr", "batch_size"))
def _train(z_tr, y_tr, z_te, y_te, key, *, num_classes, hidden, steps, lr,
           batch_size):
  mean = jnp.mean(z_tr, axis=0)
  std = jnp.std(z_tr, axis=0) + 1e-6
  k_init, k_data = jax.random.split(key)
  layers = _mlp_init(k_init, (z_tr.shape[1],) + hidden + (num_classes,))
  params = {"mean": mean, "std": std, "layers": layers}
  opt = optax.adam(lr)
  opt_state = opt.init(layers)

  def loss_fn(layers, zb, yb):
    logits = nuisance_classifier_logits(
        {"mean": mean, "std": std, "layers": layers}, zb)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits,
                                                                    yb))

  def step(carry, k):
    layers, opt_state = carry
    idx = jax.random.randint(k, (batch_size,), 0, z_tr.shape[0])
    g = jax.grad(loss_fn)(layers, z_tr[idx], y_tr[idx])
    upd, opt_state = opt.update(g, opt_state, layers)
    return (optax.apply_updates(layers, upd), opt_state), None

  keys = jax.random.split(k_data, steps)
  (layers, _), _ = jax.lax.scan(step, (layers, opt_state), keys)
  params = {"mean": mean, "std": std, "layers": layers}

  def acc(z, y):
    return jnp.mean(jnp.argmax(nuisance_classifier_logits(params, z), -1) == y)

  return acc(z_tr, y_tr), acc(z_te, y_te), params


def train_nuisance_classifier(z_n_train: Array, y_train: Array,
                              z_n_test: Array, y_test: Array, *,
                              hidden: Sequence[int] = (256,),
                              steps: int = 500, lr: float = 1e-3,
                              batch_size: int = 128,
                              rng: Array,
                              num_classes: Optional[int] = None
                              ) -> Tuple[Array, Array, Dict[str, Any]]:
  """Post-hoc classifier of ``y`` from the nuisance ``z_n`` (Jacobsen et al.).

  An MLP (ReLU, ``hidden`` widths) on standardised ``z_n`` (train mean/std),
  trained with Adam on cross-entropy for ``steps`` minibatches (sampled with
  replacement) in one jitted ``lax.scan``. Its test accuracy lower-bounds
  how much label information ``z_n`` carries (a Barber-Agakov bound on
  ``I(y; z_n)``): near chance means ``z_n`` hides little, near the logits'
  accuracy means the model is invariant to label-relevant content.

  Args:
    z_n_train: ``f32[N, D]``; y_train: ``int[N]``.
    z_n_test: ``f32[M, D]``; y_test: ``int[M]``.
    hidden: hidden layer widths.
    steps, lr, batch_size: optimisation settings.
    rng: PRNG key (init and minibatches).
    num_classes: K; default ``max(y_train, y_test) + 1``.

  Returns:
    ``(train_acc, test_acc, params)``; f32 scalars and the classifier's
    parameters (use with :func:`nuisance_classifier_logits`).
  """
  for name, z, yv in (("z_n_train", z_n_train, y_train),
                      ("z_n_test", z_n_test, y_test)):
    if z.ndim != 2 or z.shape[0] == 0:
      raise ValueError(f"{name} must be f32[N, D] with N > 0, got {z.shape}; "
                       "flatten with model.split(z)[1].")
    if yv.shape != (z.shape[0],):
      raise ValueError(f"labels for {name} must have shape ({z.shape[0]},), "
                       f"got {yv.shape}.")
  if z_n_train.shape[1] != z_n_test.shape[1]:
    raise ValueError(f"z_n_train has {z_n_train.shape[1]} features but "
                     f"z_n_test has {z_n_test.shape[1]}.")
  if steps < 1 or batch_size < 1 or lr <= 0:
    raise ValueError(f"steps={steps}, batch_size={batch_size} and lr={lr} "
                     "must be positive.")
  if num_classes is None:
    num_classes = int(max(np.max(np.asarray(y_train)),
                          np.max(np.asarray(y_test)))) + 1
  return _train(jnp.asarray(z_n_train, jnp.float32),
                jnp.asarray(y_train, jnp.int32),
                jnp.asarray(z_n_test, jnp.float32),
                jnp.asarray(y_test, jnp.int32), rng,
                num_classes=int(num_classes),
                hidden=tuple(int(h) for h in hidden), steps=int(steps),
                lr=float(lr), batch_size=int(batch_size))
