"""Training objectives chosen by ``config.loss.name``: ce | ice | differential.

An :class:`Objective` bundles what a loss needs beyond the model:
  * ``init_loss_params(rng, model, params, x)``: parameters trained with the
    model by the main optimiser (iCE: the factorial Gaussian prior of z_n);
  * ``init_aux(rng, model, params, x)``: state with its own optimiser (iCE: the
    nuisance classifier and its optimiser state);
  * ``loss(model, params, loss_params, aux_params, batch, axis_name, rng)``:
    ``(scalar, metrics)``; ``rng`` (may be None) drives train-mode dropout;
    ``metrics`` may hold :data:`UPDATES`, new values of non-trained entries
    of ``params`` (the logit BatchNorm's running statistics), which the step
    writes into the params after the optimiser update (averaged over
    devices); differentiated with respect to ``params``,
    ``loss_params`` and, when ``aux_in_grad``, ``aux_params`` (gradient reversal);
  * ``updates_aux``: when True, ``loss`` gets the whole aux state instead of
    ``aux_params`` and returns ``(scalar, metrics, new_aux)``: it runs the inner
    steps on the auxiliary state itself (iCE with alternating updates: k
    classifier steps on ``stop_gradient(z_n)``), on the same network forward
    that its loss differentiates. One forward per step: XLA merges two
    identical forwards of an unrolled network, but not two ``lax.scan`` loops
    of a scanned one (measured: the authors' iCE step with
    ``reversible_loop='scan'`` ran three subnet forwards per coupling, 20%
    more work, when the classifier steps had a forward of their own).

The pure loss functions themselves live in :mod:`advinv_jax.losses`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from advinv_jax import losses
from advinv_jax.models import Model, mlp_classifier

# Metrics key of the model-state updates (see the module docstring).
UPDATES = "_updates"


def _accuracy(logits, labels):
  return jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))


def local_key(rng, axis_name):
  """This device's dropout key: ``fold_in(rng, device index)`` under
  ``shard_map`` (else ``rng``). Dropout masks therefore depend on the
  device count; everything without dropout does not."""
  if rng is None or axis_name is None:
    return rng
  return jax.random.fold_in(rng, jax.lax.axis_index(axis_name))


def shuffled_labels(labels, rng, axis_name=None):
  """``y[randperm(B)]`` over the GLOBAL batch (train.py ~L142): all devices'
  labels gathered, permuted by one permutation drawn from ``rng`` (the same
  on every device), this device's slice returned. ``labels: i32[b]``."""
  if axis_name is None:
    return labels[jax.random.permutation(rng, labels.shape[0])]
  b = labels.shape[0]
  full = jax.lax.all_gather(labels, axis_name, tiled=True)
  perm = jax.random.permutation(rng, full.shape[0])
  start = jax.lax.axis_index(axis_name) * b
  return jax.lax.dynamic_slice_in_dim(full[perm], start, b)


@dataclasses.dataclass(frozen=True)
class Objective:
  """See the module docstring."""

  name: str
  loss: Callable
  init_loss_params: Callable = lambda rng, model, params, x: {}
  init_aux: Callable = lambda rng, model, params, x: {}
  updates_aux: bool = False
  aux_in_grad: bool = False
  aux_optimizer: Optional[optax.GradientTransformation] = None


# ---------------------------------------------------------------------- CE
def _ce_objective(cfg) -> Objective:
  smoothing = float(cfg.loss.label_smoothing)

  def loss(model, params, loss_params, aux_params, batch, axis_name,
           rng=None):
    del loss_params, aux_params
    logits, updates = model.logits_train(params, batch["image"],
                                         local_key(rng, axis_name), axis_name)
    value = losses.cross_entropy(logits, batch["label"],
                                 label_smoothing=smoothing)
    return value, {"loss": value, "ce": value, UPDATES: updates,
                   "accuracy": _accuracy(logits, batch["label"])}

  return Objective("ce", loss)


# ---------------------------------------------------------------------- iCE
def nuisance_classifier(cfg, model: Model) -> Model:
  """The MLP D(z_n) of iCE (:class:`advinv_jax.models.MLP`), built for
  ``model``'s nuisance size, with ``loss.ice.nuisance_dropout``."""
  d_n = model.latent_dim - model.num_classes
  return mlp_classifier(d_n, tuple(cfg.loss.ice.nuisance_hidden),
                        model.num_classes, float(cfg.loss.ice.nuisance_dropout))


def _nc_optimizer(cfg):
  # its choices, checked with the rest of the config before any data loads
  return losses.NUISANCE_OPTIMIZERS[cfg.loss.ice.nuisance_optimizer](
      float(cfg.loss.ice.nuisance_learning_rate))


def _ice_keys(rng, axis_name, dropout_nc: bool):
  """The iCE loss's keys ``(model, classifier steps, classifier logits,
  label permutation)`` from the step's ``rng``: all None without one (eval),
  the classifier's None without its dropout; per device where the draw is
  per example."""
  if rng is None:
    return None, None, None, None
  r_model, r_steps, r_nc, r_perm = jax.random.split(rng, 4)
  r_model = local_key(r_model, axis_name)
  r_steps = local_key(r_steps, axis_name) if dropout_nc else None
  r_nc = local_key(r_nc, axis_name) if dropout_nc else None
  return r_model, r_steps, r_nc, r_perm


def _ice_nuisance_labels(y, shuffled: bool, r_perm, axis_name):
  """``y'`` of the network's nuisance term: ``y`` or, with
  ``loss.ice.nuisance_labels='shuffled'``, ``y`` permuted in the batch."""
  if not shuffled:
    return y
  if r_perm is None:
    raise ValueError("loss.ice.nuisance_labels='shuffled' needs the step's "
                     "rng (pass rng to the objective's loss).")
  return shuffled_labels(y, r_perm, axis_name)


def _ice_objective(cfg) -> Objective:
  # iCE's terms are in losses/_ice.py; a map of all its parts:
  # docs/papers.md#independence-cross-entropy-ice.
  ice = cfg.loss.ice
  alternating = ice.minmax == "alternating"
  k = int(ice.nuisance_steps)
  nc_opt = _nc_optimizer(cfg)
  weights = (float(ice.semantic_weight), float(ice.nuisance_weight),
             float(ice.mle_weight))
  glow = ice.likelihood == "glow"
  shuffled = ice.nuisance_labels == "shuffled"
  n_bins = int(ice.n_bins)
  dropout_nc = float(ice.nuisance_dropout) > 0
  smoothing = float(cfg.loss.label_smoothing)   # on the semantic CE only

  def nc_of(model):
    return nuisance_classifier(cfg, model)

  def as_nc_input(z_n):
    return z_n.reshape(z_n.shape[0], -1, 1, 1)

  def init_loss_params(rng, model, params, x):
    del rng, params, x
    if glow:     # the model's own prior (its split-prior convs are params)
      return {}
    return {"prior": losses.init_prior_params(model.latent_dim -
                                              model.num_classes)}

  def init_aux(rng, model, params, x):
    z, _ = model.forward(params, x)
    nc = nc_of(model)
    nc_params = nc.init(rng, as_nc_input(model.split(z)[1]))
    return {"params": nc_params, "opt_state": nc_opt.init(nc_params)}

  def nuisance_steps(model, aux, z_n, labels, axis_name, rng):
    nc = nc_of(model)
    if rng is None:
      apply_fn = lambda p, zn: nc.logits(p, as_nc_input(zn))
    else:
      apply_fn = lambda p, zn, key: nc.logits_train(p, as_nc_input(zn),
                                                    key)[0]
    return losses.nuisance_updates(
        aux["params"], aux["opt_state"], jax.lax.stop_gradient(z_n), labels,
        apply_fn, nc_opt, k, rng=rng, axis_name=axis_name)

  def loss(model, params, loss_params, aux, batch, axis_name, rng=None):
    # aux: the whole state {"params", "opt_state"} when alternating (the
    # classifier steps run here, on this forward's z_n), else its params.
    x, y = batch["image"], batch["label"]
    r_model, r_steps, r_nc, r_perm = _ice_keys(rng, axis_name, dropout_nc)
    out = model.forward_train(params, x, r_model, axis_name)
    z, logdet = out["z"], out["logdet"]
    z_n = model.split(z)[1]
    z_s = out["logits"]          # after the logit BatchNorm, if any
    nc = nc_of(model)
    dim = model.latent_dim            # the flow's entries (fixed channels too)
    bpd_dim = dim if ice.mle_bits_per_dim else None
    mle = None
    if glow:
      mle = losses.glow_nll(logdet, out["log_prior"], dim, n_bins,
                            bits_per_dim=ice.mle_bits_per_dim)
    y_nuis = _ice_nuisance_labels(y, shuffled, r_perm, axis_name)
    if alternating:
      nc_params, nc_opt_state, nc_loss = nuisance_steps(model, aux, z_n, y,
                                                        axis_name, r_steps)
      if r_nc is None:
        nc_logits = nc.logits(nc_params, as_nc_input(z_n))
      else:
        nc_logits = nc.logits_train(nc_params, as_nc_input(z_n), r_nc)[0]
      value, metrics = losses.ice_network_loss(
          z_s, z_n, logdet, y, nc_logits, loss_params.get("prior"),
          weights=weights, bits_per_dim_dim=bpd_dim, mle=mle,
          nuisance_labels=y_nuis, label_smoothing=smoothing)
      metrics = dict(metrics, nuisance_classifier_loss=nc_loss)
      new_aux = {"params": nc_params, "opt_state": nc_opt_state}
    else:
      # One pass: the classifier minimises its CE, the network sees the
      # reversed gradient scaled by the nuisance weight.
      nc_logits = nc.logits(
          aux, as_nc_input(losses.gradient_reversal(z_n, weights[1])))
      value, metrics = losses.ice_network_loss(
          z_s, z_n, logdet, y, nc_logits, loss_params.get("prior"),
          weights=(weights[0], 0.0, weights[2]), bits_per_dim_dim=bpd_dim,
          mle=mle, label_smoothing=smoothing)
      nc_ce = losses.nuisance_classifier_loss(nc_logits, y)
      value = value + nc_ce
      metrics = dict(metrics, nuisance_ce=nc_ce)
    metrics = dict(metrics, loss=value, accuracy=_accuracy(z_s, y),
                   nuisance_accuracy=_accuracy(nc_logits, y))
    metrics[UPDATES] = out["updates"]
    if alternating:
      return value, metrics, new_aux
    return value, metrics

  return Objective("ice", loss, init_loss_params=init_loss_params,
                   init_aux=init_aux,
                   updates_aux=alternating,
                   aux_in_grad=not alternating, aux_optimizer=nc_opt)


# --------------------------------------------------------------- differential
def _differential_objective(cfg) -> Objective:
  per_device = cfg.loss.differential.pairs == "per_device"

  def loss(model, params, loss_params, aux_params, batch, axis_name,
           rng=None):
    del loss_params, aux_params
    logits, updates = model.logits_train(params, batch["image"],
                                         local_key(rng, axis_name), axis_name)
    if logits.shape[-1] != 2:
      raise ValueError("config.loss.name='differential' needs a model with two "
                       f"logits (num_classes=2), got {logits.shape[-1]}.")
    scores = losses.binary_scores(logits)
    value, metrics = losses.differential_loss_from_batch(
        scores, batch["label"], axis_name=None if per_device else axis_name)
    metrics = dict(metrics, loss=value,
                   accuracy=_accuracy(logits, batch["label"]))
    metrics[UPDATES] = updates
    return value, metrics

  return Objective("differential", loss)


_OBJECTIVES = {"ce": _ce_objective, "ice": _ice_objective,
               "differential": _differential_objective}


def make_objective(cfg) -> Objective:
  """The :class:`Objective` named by ``cfg.loss.name``."""
  name = cfg.loss.name
  if name not in _OBJECTIVES:
    raise ValueError(f"config.loss.name={name!r} is not one of "
                     f"{sorted(_OBJECTIVES)}.")
  return _OBJECTIVES[name](cfg)
