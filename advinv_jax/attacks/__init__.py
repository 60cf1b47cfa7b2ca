"""Attacks: sensitivity (eps-bounded and minimal-perturbation).

Public API::

  res = pgd(logits_fn, x, y, eps=0.1, norm="linf", steps=20, rng=key)
  res = fgsm(logits_fn, x, y, eps=0.1, norm="l2")
  res = deepfool(logits_fn, x, y, norm="l2")      # minimal perturbation
  res = fmn(logits_fn, x, y, norm="l2", steps=100)  # minimal, Fast Min-Norm
  res = fab(logits_fn, x, y, norm="l2", eps=0.5)   # FAB-T, minimal
  res = apgd(logits_fn, x, y, eps=0.1, loss="dlr", targeted=True, rng=key)
  res = square(logits_fn, x, y, eps=0.1, queries=5000, rng=key)  # no grads
  aa = autoattack(logits_fn, x, y, eps=0.1, norm="linf", rng=key)
  aa.robust_accuracy, aa.success, aa.attack_index, aa.attacks, aa.flags
  autoattack_warnings(aa)                       # the flags as sentences
  autoattack_log(aa)         # AutoAttack's log: per member accuracy, passes
  res.x_adv, res.success, res.perturbation_norm, res.bad_grad_steps
  success = eps_sweep(functools.partial(pgd, steps=20), logits_fn, x, y,
                      [0.01, 0.02], rng=key)       # bool[K, N], one jit
  robust_accuracy_curve(success, clean_correct); attack_success_ratio(...)
  res, warns = run_attack(pgd, logits_fn, x, y, eps=0.1, rng=key)  # checked

``logits_fn`` is any pure per-example ``f32[B, ...] -> f32[B, K]`` (images
``[B, H, W, C]``, vectors ``[B, D]``, any per-example shape), e.g.
``functools.partial(model.logits, params)``. Every attack is pure and
jittable as a whole (``jax.jit(lambda p, x, y, k: pgd(partial(model.logits,
p), x, y, eps=.1, rng=k))``); arguments are validated in Python first.
The invariance side (metamers, nuisance probe) is :mod:`advinv_jax.invariance`.
"""
from advinv_jax.attacks._apgd import apgd
from advinv_jax.attacks._autoattack import (AutoAttackResult, autoattack,
                                            autoattack_log,
                                            autoattack_warnings)
from advinv_jax.attacks._common import (AttackResult, attack_objective,
                                        default_loop, dlr_loss, margin,
                                        top_other_classes)
from advinv_jax.attacks._fab import fab
from advinv_jax.attacks._fmn import fmn
from advinv_jax.attacks._minimal import deepfool
from advinv_jax.attacks._pgd import fgsm, pgd
from advinv_jax.attacks._square import square
from advinv_jax.attacks._settings import REPORT_FULL, validate_report
from advinv_jax.attacks._sweep import (attack_success_ratio, check_adversarial,
                                       eps_sweep, gradient_warnings,
                                       monotonicity_warnings,
                                       robust_accuracy_curve, run_attack,
                                       shard_batch_attack)

__all__ = [
    "AttackResult", "AutoAttackResult", "apgd", "attack_objective",
    "attack_success_ratio", "autoattack", "autoattack_log",
    "autoattack_warnings", "check_adversarial", "deepfool", "default_loop",
    "dlr_loss", "eps_sweep", "fab", "fgsm", "fmn", "gradient_warnings",
    "margin", "monotonicity_warnings", "pgd", "robust_accuracy_curve",
    "run_attack", "shard_batch_attack", "square", "top_other_classes",
    "REPORT_FULL", "validate_report",
]
