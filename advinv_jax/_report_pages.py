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


def figure_files(report) -> List[str]:
  """The PNG files :func:`draw_figures` makes for this report."""
  out = ["robust_accuracy.png", "minimal_perturbations.png"]
  if report.get("autoattack"):
    out.append("autoattack_per_attack.png")
  if report.get("invariance"):
    out += ["metamers.png", "nuisance_interpolation.png"]
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
    ax.plot(eps, [report["clean_accuracy"]] + sec["robust_accuracy"], "o-",
            label=f"PGD-{sec['steps']} (n={report['num_examples']})")
    aa = report.get("autoattack", {}).get(norm)
    if aa:
      ax.plot(aa["eps"], aa["robust_accuracy"], "s", color="C3",
              markersize=8,
              label=f"AutoAttack {aa['settings']['version']} "
                    f"(n={aa['num_examples']})")
    df = report.get("deepfool", {}).get(norm)
    if df and df["norms"]:
      # Robust accuracy implied by DeepFool's minimal norms: an upper bound.
      grid = np.linspace(0.0, max(eps), 50)
      nrm = np.asarray([np.inf if v is None else v for v in df["norms"]])
      share = report["clean_accuracy"] * np.asarray(
          [np.mean(nrm > g) for g in grid])
      ax.plot(grid, share, ":", color="C2", label="DeepFool (upper bound)")
    ax.set_xlabel(f"{_NORM[norm]} eps")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
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
                label=f"{name} (median {_num(sec['median_norm'])}, "
                      f"found {_pct(sec['success_rate'], 0)})")
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
    ax.bar(range(len(counts)), counts, color="C3")
    ax.set_xticks(range(len(counts)))
    ax.set_xticklabels(aa["attacks"], rotation=30, fontsize=7)
    ax.set_ylabel("inputs broken first")
    ax.set_title(f"{_NORM[norm]} eps={aa['eps'][k]:g}: robust "
                 f"{_pct(aa['robust_accuracy'][k])}", fontsize=8)
  fig.suptitle("AutoAttack: which attack broke each input", fontsize=9)
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
    out["nuisance_interpolation.png"] = _grid_fig(
        [frames[:, p] for p in range(frames.shape[1])],
        [f"pair {p}" for p in range(frames.shape[1])], bounds,
        "z_s(A) fixed, z_n interpolated A -> B (red: invalid end point)",
        col_labels=[f"t={t:.2f}" for t in np.linspace(0, 1, steps)],
        invalid=[(p, steps - 1) for p, v in enumerate(ip["valid"]) if not v])
  return out


# ----------------------------------------------------------------- text
def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]):
  return {"header": list(header), "rows": [[str(c) for c in r] for r in rows]}


def _sections(report) -> List[Tuple[str, List[Any]]]:
  """``[(title, [paragraph str | table dict | ('figure', file)])]``."""
  out = []
  h = report["headline"] or {}
  if h.get("source"):
    s = h["settings"]
    what = (f"AutoAttack ({s['version']}; APGD {s['steps']} steps, "
            f"{s['num_targets']} targets, Square {s['queries']} queries, "
            f"FMN-T {s['fmn_steps']} steps)" if h["source"] == "autoattack"
            else f"PGD-{s['steps']} ({s['restarts']} restart(s))")
    line = (f"**Robust accuracy {_pct(h['robust_accuracy'])}** at "
            f"{_NORM[h['norm']]} eps = {h['eps']:g} on {h['num_examples']} "
            f"test inputs (clean {_pct(h['clean_accuracy'])}), by {what}.")
    if h.get("pgd_robust_accuracy") is not None:
      line += f" PGD on the same inputs: {_pct(h['pgd_robust_accuracy'])}."
    out.append(("Headline", [line]))
  aa_rows = []
  for norm, aa in report.get("autoattack", {}).items():
    for k, eps in enumerate(aa["eps"]):
      aa_rows.append([_NORM[norm], f"{eps:g}", _pct(aa["robust_accuracy"][k]),
                      _pct(aa["pgd_robust_accuracy"][k]),
                      ", ".join(f"{a}: {c}" for a, c in zip(
                          aa["attacks"], aa["per_attack_success"][k])),
                      ", ".join(f for f, v in aa["flags"][k].items() if v)
                      or "none"])
  if aa_rows:
    any_aa = next(iter(report["autoattack"].values()))
    out.append(("AutoAttack", [
        f"Worst case per input over {', '.join(any_aa['attacks'])}, each run "
        f"only on the inputs still robust; {any_aa['num_examples']} inputs.",
        _table(["norm", "eps", "robust acc.", "PGD same inputs",
                "inputs broken first by", "sanity flags"], aa_rows),
        ("figure", "autoattack_per_attack.png")]))
  pgd_rows = []
  for norm, sec in report["pgd"].items():
    for k, eps in enumerate(sec["eps"]):
      pgd_rows.append([_NORM[norm], f"{eps:g}",
                       _pct(sec["robust_accuracy"][k]),
                       _pct(sec["attack_success_ratio"][k])])
  out.append(("Robust accuracy vs eps (PGD sweep)", [
      f"Clean accuracy {_pct(report['clean_accuracy'])} on "
      f"{report['num_examples']} inputs.",
      _table(["norm", "eps", "robust acc.", "attack success (of correct)"],
             pgd_rows),
      ("figure", "robust_accuracy.png")]))
  min_rows = []
  for name in ("deepfool", "fmn"):
    for norm, sec in report.get(name, {}).items():
      min_rows.append([name, _NORM[norm], _num(sec["median_norm"]),
                       _num(sec["mean_norm_found"]),
                       _pct(sec["success_rate"]), sec["num_correct"]])
  out.append(("Minimal perturbations", [
      _table(["attack", "norm", "median", "mean (found)", "found",
              "inputs"], min_rows),
      ("figure", "minimal_perturbations.png")]))
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
        ("figure", "metamers.png"),
        ("figure", "nuisance_interpolation.png")]))
    nc = inv["nuisance_classifier"]
    out.append(("Nuisance classifier", [
        f"An MLP trained on z_n of {nc['num_train']} inputs predicts the "
        f"label of {nc['num_test']} others with **{_pct(nc['test_accuracy'])}"
        f"** accuracy (train {_pct(nc['train_accuracy'])}); chance (the "
        f"majority class) is {_pct(nc['majority_class_accuracy'])}. Far "
        "above chance: z_n carries label information the logits ignore "
        "(a lower bound on I(y; z_n))."]))
  return out


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
