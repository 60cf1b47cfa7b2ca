"""advinv_jax.losses: cross-entropy, iCE (Jacobsen et al.) and differential
training (Nar et al.).

Public API::

  cross_entropy(logits[B,C], labels[B], label_smoothing=0., weights=None)
  # iCE (Definition 7): network minimises w_s CE(z_s) - w_n CE(D(z_n)) + w_m MLE
  prior = init_prior_params(D)
  factorial_gaussian_nll(z_n, mean, log_std) -> [B]
  mle_nuisance_term(z_n, logdet, prior, bits_per_dim_dim=None) -> [B]
  loss, metrics = ice_network_loss(z_s, z_n, logdet, labels, D(z_n), prior,
                                   weights=(1., .05, 1.))
  nuisance_classifier_loss(D(stop_gradient(z_n)), labels)
  nc_params, nc_opt_state, last = nuisance_updates(..., apply_fn, opt, k)
  gradient_reversal(z_n, scale)
  # differential training (binary, scalar scores s; predict sign(s + b))
  differential_loss(s_pos[P], s_neg[N]); differential_loss_from_batch(s, y)
  midpoint_bias(s_pos, s_neg); max_accuracy_bias(s, y); decision_bias(s, y,
  rule); binary_scores(logits[B,2])
  b = differential_bias(model_or_logits_fn, params, split, batch_size, rule)
  logits_fn = with_bias(model_or_logits_fn, b)    # logits + [0, b]
"""
from advinv_jax.losses._classification import binary_scores, cross_entropy
from advinv_jax.losses._differential import (BiasedLogits,
                                             add_binary_bias,
                                             decision_bias,
                                             differential_bias,
                                             differential_loss,
                                             differential_loss_from_batch,
                                             max_accuracy_bias,
                                             midpoint_bias, with_bias)
from advinv_jax.losses._ice import (factorial_gaussian_nll, glow_nll,
                                    gradient_reversal, ice_network_loss, init_prior_params,
                                    mle_nuisance_term, nuisance_classifier_loss,
                                    nuisance_updates)
from advinv_jax.losses._settings import (LOSSES, NUISANCE_OPTIMIZERS,
                                         loss_defaults, validate_loss)

__all__ = [
    "LOSSES",
    "NUISANCE_OPTIMIZERS",
    "loss_defaults",
    "validate_loss",
    "BiasedLogits",
    "add_binary_bias",
    "binary_scores",
    "cross_entropy",
    "decision_bias",
    "differential_bias",
    "differential_loss",
    "differential_loss_from_batch",
    "factorial_gaussian_nll",
    "glow_nll",
    "gradient_reversal",
    "ice_network_loss",
    "init_prior_params",
    "max_accuracy_bias",
    "midpoint_bias",
    "mle_nuisance_term",
    "nuisance_classifier_loss",
    "nuisance_updates",
    "with_bias",
]
