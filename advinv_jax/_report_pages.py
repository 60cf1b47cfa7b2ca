"""The robustness report's pages: matplotlib figures (PNG bytes), report.md
and a self-contained report.html (figures as base64 data URIs).

Pure functions of the report dict (and the metamer images); the numbers
come from :mod:`advinv_jax.report`, nothing is recomputed here.
"""
from __future__ import annotations

import base64
import html as _html
import io
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

_NORM = {"linf": "ℓ∞", "l2": "ℓ2"}


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _png(fig) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=90)
  _plt().close(fig)
  return buf.getvalue()


def _pct(v, digits=1) -> str:
  return "n/a" if v is None else f"{100 * v:.{digits}f}%"


def _num(v, fmt=".3g") -> str:
  return "n/a" if v is None else format(v, fmt)


def _pct_ci(v, ci, digits=1) -> str:
  """``'64.1% [58.1, 69.7]'``: an accuracy with its 95% interval."""
  if v is None:
    return "n/a"
  if not ci:
    return _pct(v, digits)
  return (f"{100 * v:.{digits}f}% [{100 * ci[0]:.{digits}f}, "
          f"{100 * ci[1]:.{digits}f}]")


def figure_files(report) -> List[str]:
  """The PNG files :func:`draw_figures` makes for this report."""
  out = ["robust_accuracy.png", "minimal_perturbations.png"]
  if report.get("autoattack"):
    out.append("autoattack_per_attack.png")
  if report.get("invariance"):
    out += ["metamers.png", "nuisance_interpolation.png"]
  if (report.get("invariance_search") or {}).get("grid"):
    out.append("model_metamers.png")
  return out


# -------------------------------------------------------------- figures
def _robust_accuracy_fig(report):
  plt = _plt()
  norms = [n for n in ("linf", "l2") if n in report["pgd"]]
  fig, axes = plt.subplots(1, len(norms), figsize=(4.2 * len(norms), 3.2),
                           squeeze=False)
  for ax, norm in zip(axes[0], norms):
    sec = report["pgd"][norm]
    eps = [0.0] + list(sec["eps"])
    ci = np.asarray([report["clean_accuracy_ci"]] + sec["robust_accuracy_ci"])
    ax.plot(eps, 100 * np.asarray([report["clean_accuracy"]]
                                  + sec["robust_accuracy"]), "o-",
            label=f"PGD-{sec['steps']} (n={report['num_examples']})")
    ax.fill_between(eps, 100 * ci[:, 0], 100 * ci[:, 1], color="C0",
                    alpha=0.15, label="95% interval (Wilson)")
    aa = report.get("autoattack", {}).get(norm)
    if aa:
      aci = 100 * np.asarray(aa["robust_accuracy_ci"])
      ra = 100 * np.asarray(aa["robust_accuracy"])
      ax.errorbar(aa["eps"], ra, yerr=[ra - aci[:, 0], aci[:, 1] - ra],
                  fmt="s", color="C3", markersize=7, capsize=3,
                  label=f"AutoAttack {aa['settings']['version']} "
                        f"(n={aa['num_examples']})")
    df = report.get("deepfool", {}).get(norm)
    if df and df["norms"]:
      # Robust accuracy implied by DeepFool's minimal norms: an upper bound.
      grid = np.linspace(0.0, max(eps), 50)
      nrm = np.asarray([np.inf if v is None else v for v in df["norms"]])
      share = 100 * report["clean_accuracy"] * np.asarray(
          [np.mean(nrm > g) for g in grid])
      ax.plot(grid, share, ":", color="C2", label="DeepFool (upper bound)")
    ax.set_xlabel(f"{_NORM[norm]} eps")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle("Robust accuracy vs eps", fontsize=9)
  fig.tight_layout()
  return _png(fig)


def _minimal_fig(report):
  plt = _plt()
  norms = [n for n in ("l2", "linf") if n in report.get("deepfool", {})]
  fig, axes = plt.subplots(1, max(1, len(norms)),
                           figsize=(4.2 * max(1, len(norms)), 3.0),
                           squeeze=False)
  for ax, norm in zip(axes[0], norms):
    for i, name in enumerate(("deepfool", "fmn")):
      sec = report.get(name, {}).get(norm)
      if not sec:
        continue
      v = np.asarray([x for x in sec["norms"] if x is not None])
      if v.size:
        ax.hist(v, bins=20, alpha=0.5, color=f"C{i}",
                label=f"{name} (median of found "
                      f"{_num(sec.get('median_norm_found'))}, found "
                      f"{_pct(sec['success_rate'], 0)})")
    ax.set_xlabel(f"minimal {_NORM[norm]} perturbation")
    ax.set_ylabel("inputs")
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
    else:                                 # nothing found on any input
      ax.text(0.5, 0.5, "none found", ha="center",
              va="center", transform=ax.transAxes, fontsize=8)
  fig.suptitle("Minimal adversarial perturbations (correctly classified "
               "inputs)", fontsize=9)
  fig.tight_layout()
  return _png(fig)


def _autoattack_fig(report):
  plt = _plt()
  cols = [(norm, k) for norm, aa in report["autoattack"].items()
          for k in range(len(aa["eps"]))]
  fig, axes = plt.subplots(1, len(cols), figsize=(3.6 * len(cols), 2.8),
                           squeeze=False)
  for ax, (norm, k) in zip(axes[0], cols):
    aa = report["autoattack"][norm]
    counts = aa["per_attack_success"][k]
    bars = ax.bar(range(len(counts)), counts, color="C3")
    ax.bar_label(bars, labels=[str(c) for c in counts], fontsize=7)
    ax.set_ylim(0, 1.15 * max(1, max(counts)))
    ax.set_xticks(range(len(counts)))
    ax.set_xticklabels(aa["attacks"], rotation=30, fontsize=7)
    ax.set_ylabel("inputs broken first")
    ax.set_title(f"{_NORM[norm]} eps={aa['eps'][k]:g}: robust "
                 f"{_pct(aa['robust_accuracy'][k])}", fontsize=8)
  fig.suptitle("AutoAttack: inputs each member broke first (0: it broke "
               "none of those left)", fontsize=9)
  fig.tight_layout()
  return _png(fig)


def _to_image(x, bounds):
  """``[H, W, C]`` -> something ``imshow`` takes (grey or RGB in [0, 1]);
  a vector input is shown as the nearest square."""
  x = np.asarray(x, np.float64)
  lo, hi = (0.0, 1.0) if bounds is None else bounds
  x = np.nan_to_num(x, nan=lo, posinf=hi, neginf=lo)
  x = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
  if x.ndim != 3:
    d = x.size
    s = int(np.ceil(np.sqrt(d)))
    x = np.concatenate([x.ravel(), np.zeros(s * s - d)]).reshape(s, s, 1)
  if x.shape[-1] == 3:
    return x, None
  return x[..., 0], "gray"


def _grid_fig(rows: Sequence[np.ndarray], row_labels: Sequence[str], bounds,
              title: str, col_labels: Optional[Sequence[str]] = None,
              invalid: Optional[Sequence[Tuple[int, int]]] = None):
  plt = _plt()
  nr, nc = len(rows), len(rows[0])
  fig, axes = plt.subplots(nr, nc, figsize=(1.1 * nc + 1.0, 1.1 * nr + 0.6),
                           squeeze=False)
  bad = set(invalid or ())
  for i, row in enumerate(rows):
    for j in range(nc):
      ax = axes[i, j]
      img, cmap = _to_image(row[j], bounds)
      ax.imshow(img, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if (i, j) in bad:
        for sp in ax.spines.values():
          sp.set_edgecolor("red")
          sp.set_linewidth(3)
        ax.set_xlabel("INVALID", color="red", fontsize=7)
      if j == 0:
        ax.set_ylabel(row_labels[i], fontsize=7)
      if i == 0 and col_labels is not None:
        ax.set_title(col_labels[j], fontsize=7)
  fig.suptitle(title, fontsize=8)
  fig.tight_layout()
  return _png(fig)


def draw_figures(report, images: Dict[str, Any], bounds) -> Dict[str, bytes]:
  """``{file name: PNG bytes}`` for :func:`figure_files`. ``images``:
  ``metamers`` = (A, B, metamers) arrays and ``interpolation``
  ``[T, P, ...]`` (invertible models)."""
  out = {"robust_accuracy.png": _robust_accuracy_fig(report),
         "minimal_perturbations.png": _minimal_fig(report)}
  if report.get("autoattack"):
    out["autoattack_per_attack.png"] = _autoattack_fig(report)
  inv = report.get("invariance")
  if inv and "metamers" in images:
    g = inv["grid"]
    xa, xb, met = images["metamers"]
    out["metamers.png"] = _grid_fig(
        [xa, xb, met], ["logits src (A)", "nuisance src (B)", "metamer"],
        bounds, f"Metamers F^-1(z_s(A), z_n(B)), columns y(A)|y(B) -> "
                f"prediction (that of A); "
                f"{_pct(inv['metamer_validity']['valid_share'])} of "
                f"{inv['metamer_validity']['num']} valid (red: invalid)",
        col_labels=[f"{a}|{b}->{p}" for a, b, p in zip(
            g["logits_source_label"], g["nuisance_source_label"],
            g["metamer_prediction"])],
        invalid=[(2, j) for j, v in enumerate(g["valid"]) if not v])
    frames = images["interpolation"]
    steps = frames.shape[0]
    ip = inv["interpolation"]
    bad_ends = [(p, steps - 1) for p, v in enumerate(ip["valid"]) if not v]
    out["nuisance_interpolation.png"] = _grid_fig(
        [frames[:, p] for p in range(frames.shape[1])],
        [f"pair {p}" for p in range(frames.shape[1])], bounds,
        "Nuisance interpolation: z_s(A) fixed, z_n moved from A's (t=0) to "
        "B's (t=1)" + (" (red: invalid end point)" if bad_ends else ""),
        col_labels=[f"t={t:.2f}" for t in np.linspace(0, 1, steps)],
        invalid=bad_ends)
  search = report.get("invariance_search")
  if search and "model_metamers" in images:
    out["model_metamers.png"] = _model_metamer_fig(search, images, bounds)
  return out


def _model_metamer_fig(search, images, bounds):
  """The optimised metamers' grid: A, B, and x (A's logits, from B)."""
  g = search["grid"]
  xa, xb, met = images["model_metamers"]
  oracle = g["oracle_label"] or [None] * len(g["metamer_prediction"])
  return _grid_fig(
      [xa, xb, met], ["logits src (A)", "start (B)", "model metamer"],
      bounds, f"Model metamers: x from B, in the box, whose logits match A's "
              f"({search['steps']} Adam steps); columns y(A)|y(B) -> model's "
              "class / oracle's class of x",
      col_labels=[f"{a}|{b}->{p}/{'?' if o is None else o}"
                  for a, b, p, o in zip(g["logits_source_label"],
                                        g["nuisance_source_label"],
                                        g["metamer_prediction"], oracle)])


# ----------------------------------------------------------------- text
def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]):
  return {"header": list(header), "rows": [[str(c) for c in r] for r in rows]}


def _card_rows(card) -> List[List[str]]:
  """The reproducibility card as ``[item, value]`` rows."""
  def given(v):
    return "not given" if v is None else str(v)

  def settings(d, prefix=""):
    return ", ".join(settings(v, f"{prefix}{k}.") if isinstance(v, dict)
                     else f"{prefix}{k} {v!r}" if isinstance(v, str)
                     else f"{prefix}{k} {v}" for k, v in d.items())

  inp = card["inputs"]
  which = f"{inp['num']} inputs"
  if inp.get("of") is not None:
    which += f" of {inp['of']}"
  which += (f", indices {inp['indices']}" if inp.get("indices") else
            ", indices not given")
  if inp.get("indices_note"):
    which += f" ({inp['indices_note']})"
  sw, fp = card["software"], card["fingerprints"]
  rows = [["model", given(card["model"])],
          ["model config", settings(card["model_config"])
           if card.get("model_config") else "not given"],
          ["loss", given(card["loss"])]]
  if card.get("differential_bias") is not None:
    rows.append(["decision bias (differential)",
                 f"{card['differential_bias']:g}"])
  rows += [
      ["checkpoint step", given(card["checkpoint_step"])],
      ["data", f"{given(card['dataset'])}, split {given(card['split'])}"],
      ["inputs", which],
      ["seeds", f"training {given(card['seeds']['training'])}, report key "
                f"{card['seeds']['report_key']}"],
      ["bounds, eps units", card["eps_units"]]]
  for name, a in card["attacks"].items():
    rows.append([f"attack {name}", settings(a)])
  rows += [
      ["advinv_jax", f"{given(sw['advinv_jax'])}, commit "
                     f"{sw['git_commit'] or 'not available'}"],
      ["jax, jaxlib, XLA", f"{sw['jax']}, {given(sw['jaxlib'])}, "
                           f"{given(sw['xla'])} ({sw['backend']}"
                           + (f" {sw['platform_version']}"
                              if sw.get("platform_version")
                              and sw["platform_version"] != sw["backend"]
                              else "") + ")"],
      ["device", f"{sw['device_count']} x {sw['device_kind']}"
                 + (f" on {sw['process_count']} processes"
                    if sw["process_count"] > 1 else "")
                 + (f"; host CPU {sw['host_cpu']}" if sw.get("host_cpu")
                    else "")],
      ["params sha256", fp["params_sha256"] or fp["params_note"]],
      ["inputs sha256", fp["inputs_sha256"]]]
  return rows


def _aa_log_table(aa) -> List[Any]:
  """AutoAttack's log: per eps, each member's running robust accuracy,
  inputs broken, time and passes; then the largest perturbation, the pixel
  ranges and the flags."""
  out = []
  for k, eps in enumerate(aa["eps"]):
    log = aa["log"][k]
    rows = [["clean", "", _pct_ci(log["clean_accuracy"],
                                  aa["clean_accuracy_ci"]), "", ""]]
    for m in log["members"]:
      rows.append([m["attack"], str(m["broken"]),
                   _pct_ci(m["robust_accuracy_after"],
                           m["robust_accuracy_after_ci"]),
                   _num(m["seconds"], ".1f"),
                   f"{m['forward_passes']} / {m['backward_passes']}"])
    out.append(_table(
        [f"{_NORM[aa['norm_name']]} eps={eps:g}: member", "broke",
         "robust acc. after [95%]", "seconds",
         "passes fwd / bwd (examples)"], rows))
    lp = log["largest_perturbation"]
    out.append(
        f"Largest perturbation of an adversarial example "
        f"{_num(lp, '.4g')} (eps {eps:g}); inputs in "
        f"[{log['input_range'][0]:.4g}, {log['input_range'][1]:.4g}], "
        f"returned points in [{log['adversarial_range'][0]:.4g}, "
        f"{log['adversarial_range'][1]:.4g}]; flags: "
        f"{', '.join(log['flags_fired']) or 'none fired'}.")
  return out


def _sections(report) -> List[Tuple[str, List[Any]]]:
  """``[(title, [paragraph str | table dict | ('figure', file)])]``, in
  reading order."""
  return [sec for part in (_card_section, _headline_section,
                           _autoattack_sections, _pgd_section,
                           _minimal_section, _invariance_sections)
          for sec in part(report)]


def _card_section(report) -> List[Tuple[str, List[Any]]]:
  """The reproducibility card (when the report has one)."""
  out = []
  if report.get("card"):
    out.append(("Reproducibility card", [
        _table(["item", "value"], _card_rows(report["card"])),
        "The full config is in report.json (card.config); accuracies are "
        "given with their Wilson 95% intervals [low, high]."]))
  return out


def _headline_section(report) -> List[Tuple[str, List[Any]]]:
  """The headline: the strongest attack's robust accuracy."""
  out = []
  h = report["headline"] or {}
  if h.get("source"):
    s = h["settings"]
    what = (f"AutoAttack ({s['version']}; APGD {s['steps']} steps, "
            f"{s['num_targets']} targets, Square {s['queries']} queries, "
            f"FAB-T {s.get('fab_steps', '?')} steps)"
            if h["source"] == "autoattack"
            else f"PGD-{s['steps']} ({s['restarts']} restart(s))")
    ra = _pct_ci(h["robust_accuracy"], h.get("robust_accuracy_ci"))
    line = (f"**Robust accuracy {ra}** at {_NORM[h['norm']]} eps = "
            f"{h['eps']:g} on {h['num_examples']} test inputs (clean "
            f"{_pct_ci(h['clean_accuracy'], h.get('clean_accuracy_ci'))}), "
            f"by {what}.")
    if h.get("pgd_robust_accuracy") is not None:
      line += f" PGD on the same inputs: {_pct(h['pgd_robust_accuracy'])}."
    out.append(("Headline", [line]))
  return out


def _autoattack_sections(report) -> List[Tuple[str, List[Any]]]:
  """AutoAttack's table and, when recorded, its log."""
  out = []
  aa_rows, aa_logs = [], []
  for norm, aa in report.get("autoattack", {}).items():
    for k, eps in enumerate(aa["eps"]):
      aa_rows.append([_NORM[norm], f"{eps:g}",
                      _pct_ci(aa["robust_accuracy"][k],
                              aa["robust_accuracy_ci"][k]),
                      _pct(aa["pgd_robust_accuracy"][k]),
                      ", ".join(f"{a}: {c}" for a, c in zip(
                          aa["attacks"], aa["per_attack_success"][k])),
                      ", ".join(f for f, v in aa["flags"][k].items() if v)
                      or "none"])
    if aa.get("log"):
      aa_logs += _aa_log_table(dict(aa, norm_name=norm))
  if aa_rows:
    any_aa = next(iter(report["autoattack"].values()))
    out.append(("AutoAttack", [
        f"Worst case per input over {', '.join(any_aa['attacks'])}, each run "
        f"only on the inputs still robust; {any_aa['num_examples']} inputs.",
        _table(["norm", "eps", "robust acc. [95%]", "PGD same inputs",
                "inputs broken first by", "sanity flags"], aa_rows),
        ("figure", "autoattack_per_attack.png")]))
    if aa_logs:
      out.append(("AutoAttack log", aa_logs))
  return out


def _pgd_section(report) -> List[Tuple[str, List[Any]]]:
  """The PGD sweep: robust accuracy vs eps."""
  out = []
  pgd_rows = []
  for norm, sec in report["pgd"].items():
    for k, eps in enumerate(sec["eps"]):
      pgd_rows.append([_NORM[norm], f"{eps:g}",
                       _pct_ci(sec["robust_accuracy"][k],
                               sec["robust_accuracy_ci"][k]),
                       _pct(sec["attack_success_ratio"][k])])
  steps = {sec["steps"] for sec in report["pgd"].values()}
  out.append(("Robust accuracy vs eps (PGD sweep)", [
      "Clean accuracy "
      f"{_pct_ci(report['clean_accuracy'], report.get('clean_accuracy_ci'))}"
      f" on {report['num_examples']} inputs. The PGD sweep is the fast "
      "curve: an upper bound on robust accuracy, at most as strong as "
      "AutoAttack.",
      _table(["norm", "eps", "robust acc. [95%]",
              "attack success (of correct)"], pgd_rows),
      ("figure", "robust_accuracy.png"),
      f"Robust accuracy (%) vs eps: PGD-{'/'.join(map(str, sorted(steps)))} "
      "with its 95% band, AutoAttack's points with their intervals, and the "
      "DeepFool curve (the share of inputs whose minimal perturbation "
      "exceeds eps: an upper bound that PGD should not exceed)."]))
  return out


def _minimal_section(report) -> List[Tuple[str, List[Any]]]:
  """DeepFool's and FMN's minimal perturbations."""
  out = []
  min_rows = []
  for name in ("deepfool", "fmn"):
    for norm, sec in report.get(name, {}).items():
      min_rows.append([name, _NORM[norm], _num(sec.get("median_norm_found")),
                       _num(sec["mean_norm_found"]),
                       f"{_pct(sec['success_rate'])} "
                       f"({sec.get('num_found', '?')} of {sec['num_correct']})",
                       _num(sec["median_norm"])])
  out.append(("Minimal perturbations", [
      "On the correctly classified inputs. Median and mean over the inputs "
      "where the attack found a perturbation; the last column is the median "
      "over all of them with a not-found input counted as an infinite "
      "perturbation (n/a when more than half were not found).",
      _table(["attack", "norm", "median (found)", "mean (found)",
              "found (of correct)", "median (all, not found = inf)"],
             min_rows),
      ("figure", "minimal_perturbations.png")]))
  return out


def _invariance_sections(report) -> List[Tuple[str, List[Any]]]:
  """Metamers, the nuisance classifier and the invariance search."""
  out = []
  inv = report.get("invariance")
  if inv:
    v = inv["metamer_validity"]
    out.append(("Metamers (invariance)", [
        f"Metamers F^-1(z_s(A), z_n(B)) for {v['num']} pairs: "
        f"**{_pct(v['valid_share'])} valid** (finite, logits and nuisance "
        f"round-trip within {v['tol']:g}). Largest logit drift "
        f"{_num(v['logit_drift_max'])}, median {_num(v['logit_drift_median'])}"
        f"; largest z_n round-trip error {_num(v['z_n_error_max'])}; "
        f"{_pct(v['out_of_bounds_share'])} of metamer pixels outside the "
        f"bounds (largest overshoot {_num(v['overshoot_max'])}). Same "
        f"prediction as the logits source: "
        f"{_pct(inv['metamer_same_prediction_as_logits_source'])}.",
        _oracle_text(inv.get("oracle_judgement"),
                     (report.get("invariance_search") or {}).get("oracle")),
        ("figure", "metamers.png"),
        ("figure", "nuisance_interpolation.png"),
        f"Nuisance interpolation: each row keeps z_s (the logits) of an "
        f"input A and moves z_n in {inv['interpolation']['steps']} steps "
        f"from A's (t=0) to that of an input B of another class (t=1); "
        f"every frame should be classified as A."
        + ("" if all(inv["interpolation"]["valid"]) else
           " Red frames: end points whose metamer is invalid.")]))
    nc = inv["nuisance_classifier"]
    model_acc = ""
    if nc.get("model_accuracy") is not None:
      model_acc = (f"; the model itself classifies the same "
                   f"{nc['num_test']} images with "
                   + _pct_ci(nc["model_accuracy"],
                             nc.get("model_accuracy_ci")))
    out.append(("Nuisance classifier", [
        f"An MLP trained on z_n of {nc['num_train']} inputs predicts the "
        f"label of {nc['num_test']} others with **"
        f"{_pct_ci(nc['test_accuracy'], nc.get('test_accuracy_ci'))}** "
        f"accuracy (train {_pct(nc['train_accuracy'])}){model_acc}; chance "
        f"(the majority class) is {_pct(nc['majority_class_accuracy'])}. "
        + _chance_text(nc)]))
  if report.get("invariance_search"):
    out.append(("Invariance vs sensitivity (any model)",
                _search_section(report["invariance_search"])))
  return out

def _oracle_text(j, oracle) -> str:
  """The oracle's reading of metamers (its summary ``j``), one paragraph."""
  if not j:
    why = ((oracle or {}).get("why")
           or "the report had no training images to train one")
    return (f"Oracle: none ({why}): what the metamers look like is judged "
            "by eye only.")
  who = ""
  if oracle and oracle.get("available"):
    who = (f" ({oracle['architecture']}, test accuracy "
           f"{_pct(oracle['test_accuracy'])}, trained apart, never attacked)")
  return (f"**The oracle**{who} reads {_pct(j['as_nuisance_source'])} of "
          f"them as the nuisance source B's class, "
          f"{_pct(j['as_logits_source'])} as the logits source A's, "
          f"{_pct(j['as_other'])} as another class; "
          f"{_pct(j['in_bounds_share'])} of their pixels lie in the box "
          f"(largest overshoot {_num(j['overshoot_max'])}); median l2 "
          f"distance to A {_num(j['l2_to_logits_source_median'])}, to B "
          f"{_num(j['l2_to_nuisance_source_median'])}.")


def _search_section(search) -> List[Any]:
  """Invariance by optimisation: the oracle, model metamers, and the
  invariance-vs-sensitivity table (or the line saying it is off)."""
  if "off" in search:
    return [search["off"]]
  rows = []
  for r in search["rows"]:
    rows.append([_NORM[r["norm"]] if r["eps"] is not None else "box only",
                 "∞" if r["eps"] is None else f"{r['eps']:g}",
                 _pct(r["autoattack_robust_accuracy"]),
                 _pct(r["invariance_rate"]), _pct(r["matched"]),
                 _pct(r["same_class_as_logits_source"]),
                 _pct(r["oracle_reads_nuisance_source"]),
                 _num(r["median_distance"])])
  return [
      f"For {search['num_pairs']} report pairs (A, B) of different classes, "
      f"projected Adam ({search['steps']} steps, lr {search['lr']:g}) finds "
      "an x within eps of B whose logits match A's (relative l2 error <= "
      f"{search['tol']:g}). The model cannot tell x from A; an invariance "
      "success is an x the oracle still reads as B's class. At small eps a "
      "success is also a targeted sensitivity example; in the whole box "
      "(the model metamers of A started at B) only the oracle separates a "
      "real change of class from an invariance of the model.",
      _oracle_text(search.get("box_metamers"), search["oracle"]),
      _table(["norm", "eps", "AutoAttack robust acc.", "invariance rate",
              "logits matched", "model reads A's class", "oracle reads B",
              "median distance to B"], rows),
      ("figure", "model_metamers.png")]


def _chance_text(nc) -> str:
  """Whether the nuisance classifier's interval lies above chance."""
  ci = nc.get("test_accuracy_ci") or [nc["test_accuracy"]] * 2
  if ci[0] > nc["majority_class_accuracy"]:
    return ("Above chance (its whole 95% interval): z_n carries label "
            "information the logits ignore (a lower bound on I(y; z_n)).")
  return ("Not distinguishable from chance at this sample size (its 95% "
          "interval reaches the majority-class rate).")


def markdown(report) -> str:
  """report.md: warnings first, then the sections; figures by file name."""
  lines = ["# Robustness report", ""]
  if report["warnings"]:
    lines += ["## Warnings", ""] + [f"- **{w}**" for w in report["warnings"]]
    lines.append("")
  else:
    lines += ["No warnings.", ""]
  for title, parts in _sections(report):
    lines += [f"## {title}", ""]
    for p in parts:
      if isinstance(p, str):
        lines += [p, ""]
      elif isinstance(p, dict):
        lines.append("| " + " | ".join(p["header"]) + " |")
        lines.append("|" + "---|" * len(p["header"]))
        lines += ["| " + " | ".join(r) + " |" for r in p["rows"]]
        lines.append("")
      else:
        lines += [f"![{p[1]}]({p[1]})", ""]
  lines.append(f"Report computed in {report['seconds']:.0f} s; all numbers "
               "in report.json.")
  return "\n".join(lines) + "\n"


def _md_inline(text: str) -> str:
  """Escapes text for HTML and turns **bold** into <b>."""
  parts = _html.escape(text).split("**")
  return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


_CSS = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;
padding:0 1em;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #bbb;padding:3px 8px;font-size:90%}
th{background:#eee}.warn{background:#fdd;border:2px solid #c00;
padding:.5em 1em}.ok{background:#dfd;padding:.3em 1em}img{max-width:100%}"""


def html(report, figures: Dict[str, bytes]) -> str:
  """report.html: self-contained (figures as base64 PNG data URIs)."""
  out = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
         "<title>Robustness report</title>", f"<style>{_CSS}</style>",
         "</head><body><h1>Robustness report</h1>"]
  if report["warnings"]:
    out.append("<div class='warn'><h2>Warnings</h2><ul>")
    out += [f"<li>{_html.escape(w)}</li>" for w in report["warnings"]]
    out.append("</ul></div>")
  else:
    out.append("<p class='ok'>No warnings.</p>")
  for title, parts in _sections(report):
    out.append(f"<h2>{_html.escape(title)}</h2>")
    for p in parts:
      if isinstance(p, str):
        out.append(f"<p>{_md_inline(p)}</p>")
      elif isinstance(p, dict):
        out.append("<table><tr>" + "".join(
            f"<th>{_html.escape(c)}</th>" for c in p["header"]) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{_html.escape(c)}</td>" for c in r)
                + "</tr>" for r in p["rows"]]
        out.append("</table>")
      elif p[1] in figures:
        data = base64.b64encode(figures[p[1]]).decode()
        out.append(f"<p><img alt='{p[1]}' "
                   f"src='data:image/png;base64,{data}'></p>")
  out.append(f"<p>Report computed in {report['seconds']:.0f} s; all numbers "
             "in report.json.</p></body></html>")
  return "\n".join(out) + "\n"
