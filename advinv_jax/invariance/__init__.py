"""Invariance: where a classifier cannot see a change that matters.

Two routes to the same question (Jacobsen et al. 2019, "Excessive
invariance causes adversarial vulnerability"):

* analytic, for invertible models ``z = F(x) = (z_s, z_n)``: metamers
  ``F^-1(z_s(A), z_n(B))`` and their numerical validity, the nuisance
  interpolation, the post-hoc nuisance probe (``_analytic``, ``_probe``);
* by optimisation, for any differentiable model (a ``logits_fn`` or a
  ``features_fn``): model metamers (Feather et al. 2023) and the
  invariance attack, with the invariance rate per distance (``_optimize``);

and one judge for both: an independent oracle classifier, trained once and
cached, that reads what a metamer looks like (``_oracle``). The
adversarial-spheres counter-example (Sec. 5) is
:func:`norm_classifier_counterexample`.

Usage::

  orc = train_oracle(x_tr, y_tr, cache_dir=workdir, rng=key,
                     architecture=oracle_architecture(model))
  x_met = metameric_sample(model, params, x_a, x_b)     # invertible
  res = model_metamer(functools.partial(model.logits, params), x_a, x_b)
  summarize_judgement(judge_metamers(orc.logits, res.x, x_a, x_b, y_a, y_b))
  rates = invariance_rate(logits_fn, orc.logits, x_a, x_b, y_b,
                          [1.0, 2.0, float("inf")])
"""
from advinv_jax.invariance._analytic import (DEFAULT_METAMER_TOL,
                                             MetamerValidity, metamer_latent,
                                             metamer_validity,
                                             metameric_sample,
                                             norm_classifier_counterexample,
                                             nuisance_interpolation,
                                             out_of_bounds,
                                             summarize_validity)
from advinv_jax.invariance._optimize import (DEFAULT_MATCH_TOL,
                                             InvarianceAttackResult,
                                             MetamerSearch, feature_layers,
                                             invariance_attack,
                                             invariance_rate, match_features,
                                             model_features, model_metamer,
                                             noise_like)
from advinv_jax.invariance._oracle import (ORACLE_BATCH_SIZE, ORACLE_MODELS,
                                           ORACLE_STEPS, Oracle,
                                           OracleJudgement, judge_metamers,
                                           oracle_architecture,
                                           summarize_judgement, train_oracle)
from advinv_jax.invariance._probe import (nuisance_classifier_logits,
                                          train_nuisance_classifier)

__all__ = [
    "DEFAULT_MATCH_TOL", "DEFAULT_METAMER_TOL", "InvarianceAttackResult",
    "MetamerSearch", "MetamerValidity", "ORACLE_BATCH_SIZE", "ORACLE_MODELS",
    "ORACLE_STEPS", "Oracle",
    "OracleJudgement", "feature_layers", "invariance_attack",
    "invariance_rate", "judge_metamers", "match_features", "metamer_latent",
    "metamer_validity", "metameric_sample", "model_features",
    "model_metamer", "noise_like", "norm_classifier_counterexample",
    "nuisance_classifier_logits", "nuisance_interpolation",
    "oracle_architecture", "out_of_bounds", "summarize_judgement",
    "summarize_validity", "train_nuisance_classifier", "train_oracle",
]
