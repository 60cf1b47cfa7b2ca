"""Independence cross-entropy (iCE), Jacobsen et al. 2019, Definition 7.

The min-max objective is

  min_theta max_theta_nc  L_iCE = L_sCE(theta) + L_nCE(theta, theta_nc)
                                  + L_MLEn(theta)

with ``L_sCE = CE(z_s, y)`` (ordinary cross-entropy of the logits),
``L_nCE = +sum_i y_i log D(z_n)_i = -CE(D(z_n), y)`` (the nuisance classifier
``D`` with parameters ``theta_nc`` maximises it, i.e. *minimises* its own
cross-entropy; the network ``theta`` minimises it, i.e. *raises* ``D``'s
cross-entropy, making ``z_n`` uninformative of ``y``) and
``L_MLEn = -log N(z_n; beta, gamma) - log|det J(x)|`` (maximum likelihood of
``z_n`` under a learned factorial Gaussian prior; it stops the network from
hiding label information in ``z_n`` by shrinking it).

Two ways to run the min-max:

* alternating (the authors' code): per batch, ``k`` optimiser steps of ``D`` on
  ``stop_gradient(z_n)`` with :func:`nuisance_updates`, then one network step
  on :func:`ice_network_loss` (``D``'s parameters held fixed);
* one pass with :func:`gradient_reversal`: ``w_s CE(z_s) + w_m MLE +
  w_n CE(D(gradient_reversal(z_n)), y)`` differentiated w.r.t. both parameter
  sets at once gives ``D`` the descent direction of its CE and the network the
  gradient of ``-w_n CE``, exactly as in :func:`ice_network_loss`.

The training objective that runs these terms is ``_ice_objective`` in
``advinv_jax/train/_objectives.py``; every place iCE lives (settings,
configs, tests, experiments) and what the authors' recipe changes:
docs/papers.md#independence-cross-entropy-ice.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax

from advinv_jax import _checks
from advinv_jax.losses._classification import cross_entropy

Array = jax.Array
Params = Any

_LOG_2PI = math.log(2.0 * math.pi)
_LN2 = math.log(2.0)


def init_prior_params(dim: int, dtype=jnp.float32) -> Dict[str, Array]:
  """Parameters of a standard-normal factorial prior over ``z_n``.

  Args:
    dim: number of nuisance dimensions ``D = d - C``.
    dtype: float dtype of the parameters.

  Returns:
    ``{"mean": zeros[D], "log_std": zeros[D]}`` (``beta`` and ``log gamma`` of
    the paper, learned with the network). We parametrise the scale by its log
    so that it stays positive under gradient steps (our choice).

  Raises:
    ValueError: ``dim`` not a positive int.
  """
  if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
    raise ValueError(f"dim must be a positive int (the nuisance size d - C), "
                     f"got {dim!r}.")
  return {"mean": jnp.zeros((dim,), dtype), "log_std": jnp.zeros((dim,), dtype)}


def factorial_gaussian_nll(z_n: Array, mean: Array, log_std: Array) -> Array:
  """Negative log-density of ``z_n`` under a factorial Gaussian.

  The prior is ``prod_k N(mean_k, exp(log_std_k)^2)``.

  ``nll_b = sum_k [ 0.5 log(2 pi) + log_std_k
                    + 0.5 ((z_bk - mean_k) / exp(log_std_k))^2 ]`` in nats.

  Args:
    z_n: ``float[B, D]`` nuisance latents.
    mean: ``float[D]``.
    log_std: ``float[D]`` log standard deviations.

  Returns:
    ``float[B]`` per-example NLL, summed over the ``D`` dimensions.

  Raises:
    ValueError: wrong ranks or ``mean``/``log_std`` not of shape ``[D]``.
  """
  shape = _checks.check_rank(z_n, 2, "z_n", "[B, D]")
  _checks.check_floating(z_n, "z_n")
  for name, p in (("mean", mean), ("log_std", log_std)):
    pshape = _checks.shape_of(p)
    if pshape != (shape[1],):
      raise ValueError(f"prior {name} must have shape [D]=({shape[1]},) to "
                       f"match z_n {shape}, got {pshape}; build it with "
                       f"init_prior_params({shape[1]}).")
  z_n = jnp.asarray(z_n)
  scaled = (z_n - mean) * jnp.exp(-log_std)
  return jnp.sum(0.5 * jnp.square(scaled) + log_std + 0.5 * _LOG_2PI, axis=-1)


def _check_prior(prior) -> None:
  if not isinstance(prior, Mapping) or not {"mean", "log_std"} <= set(prior):
    keys = list(prior) if isinstance(prior, Mapping) else type(prior).__name__
    raise ValueError("prior must be a dict with keys 'mean' and 'log_std' "
                     f"(see init_prior_params), got {keys}.")


def mle_nuisance_term(z_n: Array, logdet: Array, prior: Mapping[str, Array],
                      bits_per_dim_dim: Optional[int] = None) -> Array:
  """Per-example ``L_MLEn = -log N(z_n; beta, gamma) - log|det J(x)|``.

  This is the negative log-likelihood of ``x`` under the flow, restricted to
  the nuisance prior (the logits ``z_s`` get no density term). It is a
  quantity to *minimise*.

  Args:
    z_n: ``float[B, D]`` nuisance latents.
    logdet: ``float[B]`` log-determinant of the Jacobian of ``x -> z``.
    prior: ``{"mean": float[D], "log_std": float[D]}``.
    bits_per_dim_dim: if given, the data dimension ``d`` (e.g. ``H*W*C``); the
      result is then in bits per dimension, ``nats / (d ln 2)`` (the authors
      reported NLL in bits/dim). The constant of discretisation
      (``log 256`` per dim) is not added: it does not depend on parameters.

  Returns:
    ``float[B]``.

  Raises:
    ValueError: bad shapes, a malformed prior, or ``bits_per_dim_dim < 1``.
  """
  _check_prior(prior)
  shape = _checks.check_rank(z_n, 2, "z_n", "[B, D]")
  lshape = _checks.check_rank(logdet, 1, "logdet", "[B]")
  _checks.check_batch(shape, lshape, "z_n", "logdet")
  nll = factorial_gaussian_nll(z_n, prior["mean"], prior["log_std"])
  nll = nll - jnp.asarray(logdet, nll.dtype)
  if bits_per_dim_dim is not None:
    if isinstance(bits_per_dim_dim, bool) or not isinstance(
        bits_per_dim_dim, int) or bits_per_dim_dim < 1:
      raise ValueError(f"bits_per_dim_dim must be a positive int (the data "
                       f"dimension H*W*C), got {bits_per_dim_dim!r}.")
    nll = nll / (bits_per_dim_dim * _LN2)
  return nll


def glow_nll(logdet: Array, log_prior: Array, dim: int, n_bins: int = 256,
             bits_per_dim: bool = True) -> Array:
  """Per-example NLL of the authors' code (train.py ~L128-L182): the flow's
  log-det plus the model's own prior, plus the dequantisation constant.

  ``nll_b = -(logdet_b + log_prior_b) + dim * log(n_bins)`` nats; in bits
  per dimension ``nll_b / (dim ln 2)`` when ``bits_per_dim``. ``log_prior``
  is the model's prior log-density of ``z`` (the authors': conditional
  Gaussians of the split-off halves and N(0, 1) on the final tensor, logit
  entries included; see :meth:`FiRevNet.flow_train`). Our ``logdet``
  includes the input map ``x -> 2x - 1`` (``dim log 2``), which the authors
  apply outside the model: a constant 1 bit/dim lower, same gradients.

  Args:
    logdet: ``float[B]``.
    log_prior: ``float[B]``.
    dim: data dimension ``d`` (``H W C``), a positive int.
    n_bins: quantisation levels of the data (256 for 8 bits).
    bits_per_dim: divide by ``d ln 2``.

  Returns:
    ``float[B]``.
  """
  if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
    raise ValueError(f"dim must be a positive int (H*W*C), got {dim!r}.")
  if n_bins < 1:
    raise ValueError(f"n_bins={n_bins} must be >= 1.")
  lshape = _checks.check_rank(logdet, 1, "logdet", "[B]")
  pshape = _checks.check_rank(log_prior, 1, "log_prior", "[B]")
  _checks.check_batch(lshape, pshape, "logdet", "log_prior")
  nll = -(jnp.asarray(logdet) + jnp.asarray(log_prior)) + dim * math.log(
      n_bins)
  return nll / (dim * _LN2) if bits_per_dim else nll


def nuisance_classifier_loss(nuisance_logits: Array, labels: Array) -> Array:
  """The nuisance classifier's objective: ``CE(D(z_n), y)``, to minimise.

  Minimising it maximises ``L_nCE = -CE`` of Definition 7. Compute
  ``nuisance_logits`` from ``stop_gradient(z_n)`` so only ``D`` is trained.

  Args:
    nuisance_logits: ``float[B, C]`` = ``D(z_n)``.
    labels: ``int[B]``.

  Returns:
    Scalar mean cross-entropy.
  """
  return cross_entropy(nuisance_logits, labels)


def ice_network_loss(z_s: Array, z_n: Array, logdet: Array, labels: Array,
                     nuisance_logits: Array, prior: Mapping[str, Array], *,
                     weights: Sequence[float] = (1.0, 0.05, 1.0),
                     bits_per_dim_dim: Optional[int] = None,
                     label_smoothing: float = 0.0,
                     mle: Optional[Array] = None,
                     nuisance_labels: Optional[Array] = None
                     ) -> Tuple[Array, Dict[str, Array]]:
  """The network's side of iCE: ``L = w_s CE(z_s) - w_n CE(D(z_n), y') + w_m MLE``.

  ``y'`` is ``nuisance_labels`` (default: ``labels``, Definition 7; the
  authors' code: in-batch shuffled labels, see
  ``config.loss.ice.nuisance_labels``). A negative ``w_n`` flips the term's
  sign (the authors' first commit).

  The network minimises ``L``. The middle term enters with a **minus** sign:
  lowering ``L`` pushes the nuisance classifier's cross-entropy *up*
  (``+w_n L_nCE`` with ``L_nCE = -CE``). Differentiate ``L`` only w.r.t. the
  network (and prior) parameters: compute ``nuisance_logits = D(params_nc,
  z_n)`` with ``params_nc`` held fixed (``jax.lax.stop_gradient``), and train
  ``D`` separately on :func:`nuisance_classifier_loss`. Note that ``-w_n CE``
  is unbounded below for a fixed ``D``; the alternating ``D`` updates keep it
  in check (as in the authors' code), a small ``w_n`` helps.

  Args:
    z_s: ``float[B, C]`` logits (first ``C`` latents).
    z_n: ``float[B, D]`` nuisance latents (with gradient to the network).
    logdet: ``float[B]`` log|det J| of ``x -> z``.
    labels: ``int[B]`` class ids.
    nuisance_logits: ``float[B, C]`` = ``D(z_n)`` (gradient flows into
      ``z_n``; ``D``'s parameters fixed).
    prior: ``{"mean": float[D], "log_std": float[D]}`` (unused, may be
      None, when ``mle`` is given).
    weights: ``(w_s, w_n, w_m)`` for sCE, nCE and MLE. The authors used
      ``w_n = 0.05`` and the NLL in bits/dim.
    bits_per_dim_dim: data dimension ``d`` to express the MLE term in bits/dim
      (see :func:`mle_nuisance_term`); ``None`` keeps nats per example.
    label_smoothing: applied to the semantic CE only.
    mle: ``float[B]``, a per-example likelihood term to use instead of the
      factorial prior's (e.g. :func:`glow_nll`); None: the factorial one.
    nuisance_labels: ``int[B]`` labels ``y'`` of the nuisance term (None:
      ``labels``). ``nce`` in the metrics is always against ``labels``.

  Returns:
    ``(loss, metrics)``: scalar loss and a dict of scalars ``loss``, ``sce``,
    ``nce`` (the nuisance classifier's CE, reported as a positive number),
    ``mle`` (batch mean of the MLE term), ``accuracy`` (of ``z_s``) and
    ``nuisance_accuracy`` (of ``D``).

  Raises:
    ValueError: bad shapes/dtypes or ``weights`` not of length 3.
  """
  if len(tuple(weights)) != 3:
    raise ValueError(f"weights must be (sce, nce, mle), got {weights!r}.")
  w_s, w_n, w_m = tuple(weights)
  sshape = _checks.check_rank(z_s, 2, "z_s", "[B, C]")
  nshape = _checks.check_rank(nuisance_logits, 2, "nuisance_logits", "[B, C]")
  if nshape != sshape:
    raise ValueError(f"nuisance_logits {nshape} must match z_s {sshape} "
                     "(one logit per class for each example).")
  sce = cross_entropy(z_s, labels, label_smoothing=label_smoothing)
  nce = cross_entropy(nuisance_logits, labels)
  n_term = nce if nuisance_labels is None else cross_entropy(
      nuisance_logits, nuisance_labels)
  if mle is None:
    mle = mle_nuisance_term(z_n, logdet, prior,
                            bits_per_dim_dim=bits_per_dim_dim)
  mle = jnp.mean(mle)
  loss = w_s * sce - w_n * n_term + w_m * mle
  labels = jnp.asarray(labels)
  metrics = {
      "loss": loss,
      "sce": sce,
      "nce": nce,
      "nce_term": n_term,
      "mle": mle,
      "accuracy": jnp.mean(jnp.argmax(z_s, -1) == labels),
      "nuisance_accuracy": jnp.mean(jnp.argmax(nuisance_logits, -1) == labels),
  }
  return loss, metrics


@jax.custom_vjp
def _reverse(x, scale):
  del scale
  return x


def _reverse_fwd(x, scale):
  return x, scale


def _reverse_bwd(scale, g):
  flipped = jax.tree_util.tree_map(lambda t: (-scale * t).astype(t.dtype), g)
  return flipped, jnp.zeros_like(scale)


_reverse.defvjp(_reverse_fwd, _reverse_bwd)


def gradient_reversal(x: Any, scale: float = 1.0) -> Any:
  """Identity in the forward pass, ``-scale * grad`` in the backward pass.

  Put it between ``z_n`` and the nuisance classifier to run the iCE min-max
  in one pass: the classifier descends its cross-entropy while the network
  receives the reversed (ascent) gradient. ``scale`` gets a zero gradient.

  Args:
    x: a float array (or pytree of float arrays), any shape.
    scale: Python float or scalar array (may be traced, e.g. a schedule).

  Returns:
    ``x`` unchanged (same shapes and dtypes).
  """
  scale = jnp.asarray(scale, jnp.float32)
  if scale.shape != ():
    raise ValueError(f"scale must be a scalar, got shape {scale.shape}.")
  return _reverse(x, scale)


def nuisance_updates(nc_params: Params, nc_opt_state: Any, z_n: Array,
                     labels: Array, apply_fn: Callable[..., Array],
                     optimizer: optax.GradientTransformation, k: int,
                     rng: Optional[Array] = None,
                     axis_name: Optional[str] = None
                     ) -> Tuple[Params, Any, Array]:
  """``k`` optimiser steps of the nuisance classifier on ``stop_gradient(z_n)``.

  The alternating half of iCE: the classifier minimises
  :func:`nuisance_classifier_loss`; no gradient reaches the network. Runs as
  a ``lax.scan`` of length ``k`` (static), so it is cheap to jit inside a
  training step (close over ``apply_fn``/``optimizer``).

  Args:
    nc_params: the classifier's parameter pytree.
    nc_opt_state: ``optimizer``'s state for ``nc_params``.
    z_n: ``float[B, D]`` nuisance latents (gradient is stopped here).
    labels: ``int[B]``.
    apply_fn: ``apply_fn(nc_params, z_n) -> float[B, C]``; when ``rng`` is
      given, ``apply_fn(nc_params, z_n, rng)`` (e.g. for dropout) with a fresh
      key per step.
    optimizer: an ``optax.GradientTransformation``.
    k: number of steps, a Python int >= 0 (0 returns the inputs unchanged).
    rng: optional PRNG key, split into ``k`` step keys.
    axis_name: under ``shard_map``/``pmap``, the batch axis: gradients and
      the loss are averaged over it (``lax.pmean``), so every device takes
      the same steps as one device on the global batch.

  Returns:
    ``(nc_params, nc_opt_state, last_loss)`` where ``last_loss`` is the
    classifier's loss at the start of the last step (with ``k = 0``: at
    ``nc_params``).

  Raises:
    ValueError: ``k`` not a non-negative Python int, or bad shapes.
  """
  if isinstance(k, bool) or not isinstance(k, int) or k < 0:
    raise ValueError(f"k (nuisance steps per batch) must be a static Python "
                     f"int >= 0, got {k!r}.")
  shape = _checks.check_rank(z_n, 2, "z_n", "[B, D]")
  lshape = _checks.check_rank(labels, 1, "labels", "[B]")
  _checks.check_batch(shape, lshape, "z_n", "labels")
  z_n = jax.lax.stop_gradient(jnp.asarray(z_n))

  def loss_fn(params, key):
    if rng is None:
      logits = apply_fn(params, z_n)
    else:
      logits = apply_fn(params, z_n, key)
    return nuisance_classifier_loss(logits, labels)

  def pmean(x):
    return x if axis_name is None else jax.lax.pmean(x, axis_name)

  if k == 0:
    return nc_params, nc_opt_state, pmean(loss_fn(nc_params, rng))

  def step(carry, key):
    params, opt_state = carry
    loss, grads = pmean(jax.value_and_grad(loss_fn)(params, key))
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, opt_state), loss

  keys = None if rng is None else jax.random.split(rng, k)
  (nc_params, nc_opt_state), losses = jax.lax.scan(
      step, (nc_params, nc_opt_state), keys, length=k)
  return nc_params, nc_opt_state, losses[-1]
