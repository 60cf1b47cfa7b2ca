"""The post-hoc nuisance probe: how much label information ``z_n`` carries.

It is iCE's nuisance classifier ``D(z_n)`` trained after the fact: the same
MLP (:func:`advinv_jax.models.mlp_classifier`, which also builds iCE's ``D``
in :mod:`advinv_jax.train`) trained by the same optimiser step
(:func:`advinv_jax.losses.nuisance_updates`, iCE's alternating half), here
one step per minibatch of a fixed, standardised set of ``z_n``.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from advinv_jax import losses
from advinv_jax.models import mlp_classifier

Array = jax.Array


def _probe_model(dim: int, hidden: Tuple[int, ...], num_classes: int):
  """iCE's nuisance classifier (:func:`mlp_classifier`) on ``f32[N, dim]``
  vectors, fed as ``[N, dim, 1, 1]`` like iCE feeds it."""
  return mlp_classifier(dim, hidden, num_classes)


def _as_input(z: Array) -> Array:
  return z.reshape((z.shape[0], -1, 1, 1))


def _probe_shape(mlp_params) -> Tuple[Tuple[int, ...], int]:
  """``(hidden, num_classes)`` of an MLP from its parameters' shapes."""
  widths = [mlp_params[f"Dense_{i}"]["kernel"].shape[1]
            for i in range(len(mlp_params))]
  return tuple(widths[:-1]), widths[-1]


def nuisance_classifier_logits(params: Dict[str, Any], z_n: Array) -> Array:
  """Logits ``f32[N, K]`` of a classifier from :func:`train_nuisance_classifier`
  on ``z_n: f32[N, D]``."""
  hidden, k = _probe_shape(params["mlp"])
  h = (z_n - params["mean"]) / params["std"]
  return _probe_model(z_n.shape[1], hidden, k).logits(params["mlp"],
                                                     _as_input(h))


@functools.partial(jax.jit, static_argnames=("num_classes", "hidden", "steps",
                                             "lr", "batch_size"))
def _train(z_tr, y_tr, z_te, y_te, key, *, num_classes, hidden, steps, lr,
           batch_size):
  mean = jnp.mean(z_tr, axis=0)
  std = jnp.std(z_tr, axis=0) + 1e-6
  k_init, k_data = jax.random.split(key)
  mlp = _probe_model(z_tr.shape[1], hidden, num_classes)
  weights = mlp.init(k_init, jnp.zeros((1, z_tr.shape[1], 1, 1)))
  opt = optax.adam(lr)
  h_tr = (z_tr - mean) / std

  def apply_fn(w, zb):
    return mlp.logits(w, _as_input(zb))

  def step(carry, k):
    w, opt_state = carry
    idx = jax.random.randint(k, (batch_size,), 0, z_tr.shape[0])
    w, opt_state, _ = losses.nuisance_updates(w, opt_state, h_tr[idx],
                                              y_tr[idx], apply_fn, opt, 1)
    return (w, opt_state), None

  keys = jax.random.split(k_data, steps)
  (weights, _), _ = jax.lax.scan(step, (weights, opt.init(weights)), keys)
  params = {"mean": mean, "std": std, "mlp": weights}

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

  iCE's nuisance MLP (ReLU, ``hidden`` widths) on standardised ``z_n``
  (train mean/std), trained with Adam on cross-entropy for ``steps``
  minibatches (sampled with replacement), each one step of
  :func:`advinv_jax.losses.nuisance_updates`, in one jitted ``lax.scan``.
  Its test accuracy lower-bounds how much label information ``z_n`` carries
  (a Barber-Agakov bound on ``I(y; z_n)``): near chance means ``z_n`` hides
  little, near the logits' accuracy means the model is invariant to
  label-relevant content.

  Args:
    z_n_train: ``f32[N, D]``; y_train: ``int[N]``.
    z_n_test: ``f32[M, D]``; y_test: ``int[M]``.
    hidden: hidden layer widths.
    steps, lr, batch_size: optimisation settings.
    rng: PRNG key (init and minibatches).
    num_classes: K; default ``max(y_train, y_test) + 1``.

  Returns:
    ``(train_acc, test_acc, params)``; f32 scalars and the classifier's
    parameters (``{'mean', 'std', 'mlp'}``; use with
    :func:`nuisance_classifier_logits`).
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
  if any(int(h) < 1 for h in hidden):
    raise ValueError(f"hidden={tuple(hidden)} must be positive widths.")
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
