"""The ``config.report`` section: what the robustness report measures.

The report (``advinv_jax/report.py``) puts the sensitivity side (the
attacks of this package: PGD sweeps, minimal perturbations, AutoAttack)
beside the invariance side (metamers, interpolations and the nuisance
probe of ``advinv_jax.invariance``). Its settings live here, below the
training code, so that every layer that checks a whole config (training
validates the config it is given) sees the complete schema.
"""
from __future__ import annotations

import ml_collections

from advinv_jax import _settings as S
from advinv_jax.attacks._common import LOOPS, LOSSES

# The AutoAttack versions the report runs (of autoattack's: the standard
# headline, or it with the extra members).
AUTOATTACK_VERSIONS = ("standard", "plus")


def report_defaults() -> ml_collections.ConfigDict:
  """The ``config.report`` section (its fast settings; ``full=True``:
  :data:`REPORT_FULL`)."""
  r = ml_collections.ConfigDict()
  r.enabled = True
  r.num_examples = 256
  r.linf_eps = (0.01, 0.02, 0.05, 0.1)
  r.l2_eps = (0.1, 0.25, 0.5, 1.0)
  r.pgd_steps = 20
  r.pgd_restarts = 1
  r.pgd_loss = "ce"          # ce | margin
  r.attack_loop = "fori"     # fori | unrolled | scan | "" (platform default)
  r.deepfool_steps = 50
  r.deepfool_candidates = 9
  r.fmn_steps = 0            # > 0: also FMN minimal perturbations
  r.num_metamers = 8
  r.interpolation_steps = 8
  r.interpolation_pairs = 4
  r.nuisance_classifier_steps = 500
  r.nuisance_classifier_hidden = (256,)
  r.nuisance_classifier_lr = 1e-3
  r.nuisance_classifier_batch_size = 128
  # AutoAttack (the report's robust-accuracy headline) with AutoAttack's
  # own member settings, on the first autoattack_num_examples report images
  # at these eps (empty: skip a norm); report.full=True adds inputs and
  # every eps of linf_eps / l2_eps (REPORT_FULL). Rolled loops: the step
  # counts cost run time only, not compile time.
  r.autoattack_version = "standard"  # standard | plus
  r.autoattack_num_examples = 256
  r.autoattack_linf_eps = (0.05,)
  r.autoattack_l2_eps = (0.5,)
  r.autoattack_steps = 100     # APGD iterations
  r.autoattack_num_targets = 9  # APGD-T / FAB-T targets
  r.autoattack_queries = 5000   # Square's budget
  r.autoattack_fab_steps = 100  # FAB-T iterations
  r.autoattack_fmn_steps = 100  # FMN(-T) iterations (members by name only)
  # Metamer validity: a metamer is valid when finite and its logits (and,
  # relative to |z_n|, its nuisance) round-trip within metamer_tol; the
  # report warns below metamer_min_valid valid.
  r.metamer_tol = 1e-3
  r.metamer_min_valid = 0.99
  # A metamer is an image of the data's box (a clipped metamer is not a
  # metamer). The report warns when more than metamer_max_out_of_bounds of
  # the metamer pixels lie outside the bounds or one lies beyond them by
  # more than metamer_max_overshoot, printing the share inside and the
  # largest overshoot. Defaults: the box goal the demo is held to (>= 95%
  # of the pixels inside, overshoot <= 0.1).
  r.metamer_max_out_of_bounds = 0.05
  r.metamer_max_overshoot = 0.1
  # Invariance for any model (advinv_jax/_report_invariance.py): an oracle
  # of another architecture, trained on the first oracle_num_train training
  # images for oracle_steps steps (at most oracle_epochs passes; 0: no
  # oracle is trained, the report says so), judges model metamers that
  # projected Adam finds for invariance_pairs report pairs (0: no search,
  # the report says so) in invariance_steps steps of rate invariance_lr.
  r.invariance_pairs = 32
  r.invariance_steps = 500
  r.invariance_lr = 0.03
  r.oracle_steps = 1000
  r.oracle_num_train = 20000
  r.oracle_epochs = 10
  r.full = False
  return r


# report.full=True: these values replace the report's fast settings (and
# AutoAttack runs at every eps of report.linf_eps / report.l2_eps).
REPORT_FULL = dict(
    num_examples=1000, pgd_steps=100, pgd_restarts=5, deepfool_steps=100,
    fmn_steps=100, num_metamers=16, nuisance_classifier_steps=2000,
    autoattack_num_examples=1000, autoattack_steps=100,
    autoattack_num_targets=9, autoattack_queries=5000,
    autoattack_fab_steps=100, autoattack_fmn_steps=100)


def validate_report(r, *, direct: bool = False) -> None:
  """Checks the report's settings: the one rule set for ``config.report``
  and for a report called directly.

  Args:
    r: ``config.report`` (a ConfigDict), or with ``direct=True`` a report's
      resolved settings (a dict: ``advinv_jax.report.report_settings``,
      whose ``validate_settings`` checks the value types first).
    direct: the settings of a report that runs now: its attacks need
      steps, while ``num_examples=0`` (all the images given) and an empty
      eps tuple (skip that norm) are allowed. Without it, an enabled report
      section needs inputs and at least one budget of each norm.

  Raises:
    ConfigError (a ValueError): one, naming the field and the fix.
  """
  for f in ("pgd_restarts", "deepfool_candidates", "nuisance_classifier_lr",
            "nuisance_classifier_batch_size", "autoattack_steps",
            "autoattack_num_targets", "autoattack_queries",
            "autoattack_fab_steps", "autoattack_fmn_steps", "metamer_tol",
            "num_metamers", "interpolation_pairs",
            "nuisance_classifier_steps", "invariance_steps", "invariance_lr",
            "oracle_num_train", "oracle_epochs"):
    S.check_positive(f"report.{f}", r[f])
  for f in ("num_examples", "pgd_steps", "fmn_steps",
            "autoattack_num_examples", "invariance_pairs", "oracle_steps"):
    S.check_at_least(f"report.{f}", r[f], 0)
  S.check_sizes("report.nuisance_classifier_hidden",
                r["nuisance_classifier_hidden"])
  S.check_at_least("report.interpolation_steps", r["interpolation_steps"], 2)
  for f in ("metamer_min_valid", "metamer_max_out_of_bounds"):
    S.check_in(f"report.{f}", r[f], 0.0, 1.0, "[]")
  S.check_at_least("report.metamer_max_overshoot", r["metamer_max_overshoot"],
                   0)
  for f in ("linf_eps", "l2_eps", "autoattack_linf_eps", "autoattack_l2_eps"):
    if any(e < 0 for e in r[f]):
      raise S.ConfigError(f"config.report.{f}={r[f]} has a negative eps; "
                          "attack budgets must be >= 0.")
  S.check_one_of("report.pgd_loss", r["pgd_loss"], LOSSES)
  S.check_one_of("report.attack_loop", r["attack_loop"], LOOPS + ("",))
  S.check_one_of("report.autoattack_version", r["autoattack_version"],
                 AUTOATTACK_VERSIONS)
  if r["enabled"] or direct:
    for f in (() if direct else ("num_examples",)) + ("pgd_steps",
                                                      "deepfool_steps"):
      S.check_positive(f"report.{f}", r[f])
  if r["enabled"] and not direct:
    for f in ("linf_eps", "l2_eps"):
      if not r[f]:
        raise S.ConfigError(f"config.report.{f} is empty: give at least one "
                            "attack budget, or set "
                            "config.report.enabled=False.")


# Reports written before the oracle and the invariance search existed had
# neither.
S.register_section(S.Section(
    "report", report_defaults, validate_report,
    value_before={"invariance_pairs": 0, "oracle_steps": 0}))
