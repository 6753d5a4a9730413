"""Tables, statistics, figures and the report of a study. Reads results only, never trains.

From a study directory (see :mod:`lpc.study`) :func:`build_report` reads ``results.csv`` (every run, with
``selected``), ``study.yaml``, ``study.json`` and, for the figures, the selected runs' ``history.jsonl`` and
``latents.npz``, and writes::

    selection.csv              per (head, seed): the learning rate chosen on validation (and the one test
                               accuracy would have chosen)
    aggregate.csv              per head and metric: mean, std (ddof=1), n over the selected runs
    table1.csv / table1.md     Σ_W, coefficient of variation of latent norms, entropy (paper Table 1)
    table2.csv / table2.md     robustness, accuracy, misclassification AUROCs (paper Table 2)
    significance.csv / .md / .json   Welch's t-test of every head against no_pen
    figures/*.png              latent histograms (Fig. 1), binarity (Fig. 2), neural collapse (Fig. 3), accuracy
    report.md, report.html     everything above; the HTML is self-contained (images inlined as base64)
"""
from __future__ import annotations

import base64
import html
import io
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write_bytes, read_json, write_csv, write_json
from .study import (AGGREGATION_RULE, SELECTION_RULE, Stat, StudyError, aggregate, read_history, read_results,
                    selection_table)

BASELINE = "no_pen"
# (summary key, column title, scale): Table 1 is measured on the training-set latents, as in the paper
TABLE1 = [("sigma_w_train", "Σ_W", 1.0), ("norm_coeff_var_train", "coeff. of var.", 1.0),
          ("entropy_train", "entropy", 1.0)]
TABLE2 = [("robustness_deepfool", "robustness (DeepFool)", 1.0), ("robustness_pgd_l2", "PGD-L2", 1.0),
          ("robustness_bisection", "bisection", 1.0), ("deepfool_flip_rate", "DeepFool flip rate", 1.0),
          ("test_accuracy", "test accuracy (%)", 100.0), ("auroc_mahalanobis", "AUROC Mahalanobis", 1.0),
          ("auroc_odin", "AUROC ODIN", 1.0)]
SIGNIFICANCE = ["test_accuracy", "robustness_deepfool", "auroc_mahalanobis", "auroc_odin"]
BINARITY = [("binarity_loglik_train", "ℓ̄ (log-likelihood, Eq. 25)", False),
            ("binarity_sigma_train", "σ̄ (mode std, Eq. 26)", True),
            ("binarity_peak_distance_train", "μ̄ (peak distance / σ, Eq. 27)", True)]
COLLAPSE = [("nc1_per_dim_train", "NC1 / P = Tr(Σ_W Σ_B⁺)/K/P", True), ("equinorm_train", "equinorm (CoV of class-mean norms)", True),
            ("equiangularity_train", "equiangularity (std of cosines)", True),
            ("max_angle_train", "max-angle (mean |cos + 1/(K-1)|)", True)]
MAX_NODES = 16  # latent histograms shown for at most this many latent dimensions


def build_report(study_dir: str | Path) -> dict[str, Path]:
    """Writes every table, figure and report file of the study in ``study_dir``; returns their paths."""
    out = Path(study_dir)
    if not out.is_dir():
        raise StudyError(f"{out}: no such study directory")
    rows = read_results(out / "results.csv")
    if not rows:
        raise StudyError(f"{out / 'results.csv'}: no runs")
    selected = [r for r in rows if r.get("selected")]
    heads = list(dict.fromkeys(r["head"] for r in rows))
    stats = aggregate(rows)
    notes: list[str] = []
    files: dict[str, Path] = {}

    selection = selection_table(rows)
    files["selection.csv"] = _write_csv(out / "selection.csv", selection)
    files["aggregate.csv"] = _write_csv(out / "aggregate.csv", [
        {"head": h, "metric": k, "mean": s.mean, "std": s.std, "n": s.n} for h in heads for k, s in stats[h].items()])
    n_selected = {h: sum(1 for r in selected if r["head"] == h) for h in heads}
    table1 = _metric_table(heads, stats, n_selected, TABLE1, notes, "Table 1")
    table2 = _metric_table(heads, stats, n_selected, TABLE2, notes, "Table 2")
    significance = significance_table(rows)
    if BASELINE not in heads:
        notes.append(f"Significance tests skipped: the baseline head `{BASELINE}` is not in this study.")
    files["table1.csv"] = _write_csv(out / "table1.csv", table1["csv"])
    files["table2.csv"] = _write_csv(out / "table2.csv", table2["csv"])
    files["significance.csv"] = _write_csv(out / "significance.csv", significance)
    write_json(out / "significance.json", significance)
    files["significance.json"] = out / "significance.json"

    doc1 = _Doc()
    doc1.p("Latent geometry at the last epoch, measured on the **training-set** latents (`*_train` values, as "
           f"the paper's Table 1). Each cell: {AGGREGATION_RULE}.")
    doc1.table(table1["header"], table1["rows"])
    atomic_write_bytes(out / "table1.md", doc1.markdown().encode())
    doc2 = _Doc()
    doc2.p("Robustness (minimal perturbation norm / input norm on test inputs; DeepFool as the paper, and the "
           "masking-proof PGD-L2 and bisection scores with DeepFool's flip rate), test accuracy at the last epoch "
           f"(%), and misclassification AUROCs on the test set (Mahalanobis / ODIN, T=100). Each cell: {AGGREGATION_RULE}.")
    doc2.table(table2["header"], table2["rows"])
    atomic_write_bytes(out / "table2.md", doc2.markdown().encode())
    doc3 = _Doc()
    _significance_section(doc3, significance)
    atomic_write_bytes(out / "significance.md", doc3.markdown().encode())
    files.update({"table1.md": out / "table1.md", "table2.md": out / "table2.md",
                  "significance.md": out / "significance.md"})

    figures = make_figures(out, rows, notes)
    files.update({p.name: p for p, _ in figures})

    doc = _report(out, rows, heads, stats, n_selected, selection, table1, table2, significance, figures, notes)
    atomic_write_bytes(out / "report.md", doc.markdown(out).encode())
    atomic_write_bytes(out / "report.html", doc.html(out, title=_title(rows)).encode())
    files.update({"report.md": out / "report.md", "report.html": out / "report.html"})
    return files


# ---------------------------------------------------------------- tables and statistics

def fmt(value: Any) -> str:
    """Numbers for tables: 4 significant digits, scientific when tiny or huge; missing values as '–'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4g}"


def mean_std(stat: Stat | None, n_head: int | None = None, scale: float = 1.0) -> str:
    if stat is None:
        return "–"
    text = fmt(stat.mean * scale) + (f" ± {fmt(stat.std * scale)}" if stat.n > 1 else "")
    return text + (f" (n={stat.n})" if n_head is not None and stat.n != n_head else "")


def _metric_table(heads, stats, n_selected, columns, notes, name) -> dict[str, Any]:
    missing = [key for key, _, _ in columns if not any(key in stats[h] for h in heads)]
    if missing:
        notes.append(f"{name}: no values for {', '.join(f'`{k}`' for k in missing)} in results.csv "
                     "(metric switched off in the config's eval section, or not computed); shown as '–'.")
    header = ["head", "n", *(title for _, title, _ in columns)]
    table_rows, csv_rows = [], []
    for head in heads:
        table_rows.append([head, str(n_selected[head]),
                           *(mean_std(stats[head].get(k), n_selected[head], scale) for k, _, scale in columns)])
        row: dict[str, Any] = {"head": head, "n": n_selected[head]}
        for key, _, _ in columns:
            s = stats[head].get(key)
            row.update({f"{key}_mean": s.mean if s else None, f"{key}_std": s.std if s else None,
                        f"{key}_n": s.n if s else 0})
        csv_rows.append(row)
    return {"header": header, "rows": table_rows, "csv": csv_rows}


def significance_table(rows: list[dict[str, Any]], *, baseline: str = BASELINE,
                       metrics: list[str] = SIGNIFICANCE) -> list[dict[str, Any]]:
    """Welch's t-test (unequal variances, two-sided) of each head's selected runs against ``baseline``'s.

    ``p`` and ``t`` are None, with a ``note``, when either side has fewer than two values or both have
    zero variance (the test is undefined there).
    """
    from scipy import stats as scipy_stats

    selected = [r for r in rows if r.get("selected")]
    heads = list(dict.fromkeys(r["head"] for r in rows))
    if baseline not in heads:
        return []

    def values(head, metric):
        return [float(r[metric]) for r in selected if r["head"] == head and _is_number(r.get(metric))]

    table = []
    for head in heads:
        if head == baseline:
            continue
        for metric in metrics:
            a, b = values(head, metric), values(baseline, metric)
            entry = {"head": head, "metric": metric, "mean": float(np.mean(a)) if a else None,
                     "mean_baseline": float(np.mean(b)) if b else None, "n": len(a), "n_baseline": len(b),
                     "t": None, "p": None, "note": None}
            if len(a) < 2 or len(b) < 2:
                entry["note"] = f"n<2 ({len(a)} vs {len(b)} seeds): no test"
            elif np.var(a) == 0 and np.var(b) == 0:
                entry["note"] = "zero variance in both groups: no test"
            else:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    t, p = scipy_stats.ttest_ind(a, b, equal_var=False)
                entry["t"], entry["p"] = float(t), float(p)
                if caught:  # e.g. nearly identical values: scipy warns of precision loss
                    entry["note"] = "scipy: " + str(caught[0].message).split(". ")[0]
            table.append(entry)
    return table


def _significance_section(doc: "_Doc", table: list[dict[str, Any]]) -> None:
    doc.p(f"Welch's t-test (two-sided, unequal variances; `scipy.stats.ttest_ind(equal_var=False)`) of each head "
          f"against `{BASELINE}`, over the validation-selected run of each seed; n = seeds per group. "
          "No correction for multiple comparisons.")
    if not table:
        doc.p(f"Not computed: the study has no `{BASELINE}` runs.")
        return
    doc.table(["head", "metric", "mean", f"mean ({BASELINE})", "n", f"n ({BASELINE})", "t", "p", "note"],
              [[r["head"], r["metric"], fmt(r["mean"]), fmt(r["mean_baseline"]), str(r["n"]), str(r["n_baseline"]),
                fmt(r["t"]), "–" if r["p"] is None else f"{r['p']:.3g}", r["note"] or ""] for r in table])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    write_csv(path, rows)
    return path


# ---------------------------------------------------------------- figures

def make_figures(out: Path, rows: list[dict[str, Any]], notes: list[str]) -> list[tuple[Path, str]]:
    """Draws the figures it has data for into ``out/figures``; a missing figure adds a note instead."""
    import matplotlib

    matplotlib.use("Agg")
    (out / "figures").mkdir(exist_ok=True)
    selected = [r for r in rows if r.get("selected")]
    heads = list(dict.fromkeys(r["head"] for r in selected))
    histories = {}
    for r in selected:
        try:
            histories[r["run"]] = read_history(out / r["run"])
        except Exception as error:  # a broken history costs its curves, not the report
            notes.append(f"{r['run']}/history.jsonl unreadable ({error}); left out of the figures.")
            histories[r["run"]] = []
    figures = []
    for draw in (_figure_latents, _figure_binarity, _figure_collapse, _figure_accuracy):
        made = draw(out, selected, heads, histories, notes)
        if made is not None:
            figures.append(made)
    return figures


def _colors(heads):
    from .heads import HEADS
    import matplotlib.pyplot as plt

    order = list(HEADS) + [h for h in heads if h not in HEADS]
    cmap = plt.get_cmap("tab10")
    return {h: cmap(order.index(h) % 10) for h in heads}


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def plot_latent_histograms(z: np.ndarray, y: np.ndarray, path: Path, *, title: str,
                           max_nodes: int | None = None) -> Path:
    """Figure 1 of the paper: one histogram per latent node, stacked by class, written as PNG to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = min(z.shape[1], max_nodes or MAX_NODES)
    cols = min(4, shown)
    rows_ = math.ceil(shown / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(3.2 * cols, 2.4 * rows_ + 0.4), squeeze=False,
                             layout="constrained")
    classes = np.unique(y)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i in range(rows_ * cols):
        ax = axes[i // cols][i % cols]
        if i >= shown:
            ax.axis("off")
            continue
        values = z[:, i]
        bins = np.linspace(values.min(), values.max(), 61) if values.max() > values.min() else 61
        ax.hist([values[y == c] for c in classes], bins=bins, stacked=True,
                color=[cmap(j % cmap.N) for j in range(len(classes))], label=[str(c) for c in classes])
        ax.set_title(f"node {i}", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(title="class", fontsize=6, title_fontsize=7, ncol=2)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, path)
    return path


def _figure_latents(out, selected, heads, histories, notes):
    runs = sorted((r for r in selected if r["head"] == "ib"), key=lambda r: r["seed"])
    run = next((r for r in runs if (out / r["run"] / "latents.npz").exists()), None)
    if run is None:
        notes.append("Figure 1 (latent histograms) skipped: no selected `ib` run with latents.npz "
                     "(the study has no ib head, every ib run diverged, or eval.save_latents is off).")
        return None
    with np.load(out / run["run"] / "latents.npz") as arrays:
        z, y = arrays["z_train"], arrays["y_train"]
    if z.shape[1] > MAX_NODES:
        notes.append(f"Figure 1 shows the first {MAX_NODES} of {z.shape[1]} latent dimensions.")
    path = out / "figures" / "fig1_latent_histograms.png"
    plot_latent_histograms(z, y, path, title=f"Latent histograms per node, ib head (lr={run['lr']:g}, "
                                             f"seed={run['seed']}), training set")
    return path, (f"Figure 1: histograms of the training-set latents z of the selected ib run (seed {run['seed']}, "
                  f"lr {run['lr']:g}) at the last epoch, one panel per node, stacked by class. Under latent point "
                  "collapse every class sits at one of two values in each node (paper, Fig. 1).")


def _curves(selected, head, histories, key):
    """Mean and std over the selected seeds of ``key`` per evaluated epoch."""
    by_epoch: dict[int, list[float]] = {}
    for r in selected:
        if r["head"] != head:
            continue
        for record in histories.get(r["run"], []):
            if _is_number(record.get(key)):
                by_epoch.setdefault(int(record["epoch"]), []).append(float(record[key]))
    epochs = sorted(by_epoch)
    mean = np.array([np.mean(by_epoch[e]) for e in epochs])
    std = np.array([np.std(by_epoch[e], ddof=1) if len(by_epoch[e]) > 1 else 0.0 for e in epochs])
    return np.array(epochs), mean, std


def _panel_figure(out, selected, heads, histories, panels, name, title, tpt=False):
    import matplotlib.pyplot as plt

    colors = _colors(heads)
    present = [(k, label, log) for k, label, log in panels
               if any(len(_curves(selected, h, histories, k)[0]) for h in heads)]
    if not present:
        return None
    fig, axes = plt.subplots(len(present), 1, figsize=(8, 2.4 * len(present) + 0.4), sharex=True, squeeze=False,
                             layout="constrained")
    for ax, (key, label, log) in zip(axes[:, 0], present):
        positive = True
        for head in heads:
            epochs, mean, std = _curves(selected, head, histories, key)
            if not len(epochs):
                continue
            positive = positive and bool((mean > 0).all())
            ax.plot(epochs, mean, marker=".", color=colors[head], label=head)
            ax.fill_between(epochs, mean - std, mean + std, color=colors[head], alpha=0.15, linewidth=0)
            if tpt:
                onsets = [r["tpt_epoch"] for r in selected if r["head"] == head and _is_number(r.get("tpt_epoch"))]
                if onsets:
                    ax.axvline(float(np.mean(onsets)), color=colors[head], linestyle="--", linewidth=1)
        if log and positive:
            ax.set_yscale("log")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    axes[-1, 0].set_xlabel("epoch")
    fig.suptitle(title)
    path = out / "figures" / name
    _save(fig, path)
    return path, [k for k, _, _ in present]


def _figure_binarity(out, selected, heads, histories, notes):
    made = _panel_figure(out, selected, heads, histories, BINARITY, "fig2_binarity.png",
                         "Binarity of the latent nodes (2-mode GMM per node, training set)")
    if made is None:
        notes.append("Figure 2 (binarity) skipped: no `binarity_*_train` values in the histories (eval.geometry off?).")
        return None
    return made[0], ("Figure 2: mean over nodes of a two-mode Gaussian mixture fitted per latent node on the training "
                     "set — average log-likelihood ℓ̄, mode standard deviation σ̄ and peak distance μ̄ (Appendix D, "
                     "Eqs. 25–27) over epochs; mean over the selected seeds, band ± 1 std.")


def _figure_collapse(out, selected, heads, histories, notes):
    made = _panel_figure(out, selected, heads, histories, COLLAPSE, "fig3_neural_collapse.png",
                         "Neural collapse: NC1 per dimension and NC2 (training set)", tpt=True)
    if made is None:
        notes.append("Figure 3 (neural collapse) skipped: no NC values in the histories (eval.geometry off?).")
        return None
    reached = [h for h in heads if any(r["head"] == h and _is_number(r.get("tpt_epoch")) for r in selected)]
    onset = (f"dashed lines: mean TPT onset (train accuracy ≥ 99.9%) of {', '.join(reached)}" if reached
             else "no head reached the TPT (train accuracy ≥ 99.9%), so no onset is marked")
    return made[0], ("Figure 3: NC1 normalised by the latent width, Tr(Σ_W Σ_B⁺)/K/P, and the NC2 metrics "
                     f"(Appendix E) over epochs, mean over the selected seeds; {onset}.")


def _figure_accuracy(out, selected, heads, histories, notes):
    panels = [("train_accuracy", "train accuracy", False), ("test_accuracy", "test accuracy", False)]
    made = _panel_figure(out, selected, heads, histories, panels, "fig4_accuracy.png", "Accuracy over epochs")
    if made is None:
        notes.append("Accuracy curves skipped: no history.jsonl in the selected runs.")
        return None
    return made[0], "Accuracy curves: train and test accuracy (clean inputs) per evaluated epoch, mean over the selected seeds."


# ---------------------------------------------------------------- the report document

class _Doc:
    """A few block types rendered both as Markdown and as self-contained HTML."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def items(self, lines: list[str]):
        self.blocks.append(("ul", lines))

    def table(self, header: list[str], rows: list[list[str]]):
        self.blocks.append(("table", header, rows))

    def image(self, path: Path, caption: str):
        self.blocks.append(("img", path, caption))

    def code(self, text: str, summary: str | None = None):
        self.blocks.append(("code", text, summary))

    def markdown(self, root: Path | None = None) -> str:
        parts = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                parts.append("#" * block[1] + " " + block[2])
            elif kind == "p":
                parts.append(block[1])
            elif kind == "ul":
                parts.append("\n".join(f"- {line}" for line in block[1]))
            elif kind == "table":
                header, rows = block[1], block[2]
                cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
                lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
                parts.append("\n".join(lines))
            elif kind == "img":
                path = block[1].relative_to(root) if root else block[1]
                parts.append(f"![{block[2]}]({path.as_posix()})\n\n*{block[2]}*")
            elif kind == "code":
                parts.append("```yaml\n" + block[1].rstrip() + "\n```")
        return "\n\n".join(parts) + "\n"

    def html(self, root: Path, title: str) -> str:
        e = html.escape
        body = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                body.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
            elif kind == "p":
                body.append(f"<p>{_inline(block[1])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline(line)}</li>" for line in block[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{e(str(c))}</th>" for c in block[1])
                rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in block[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(block[1].read_bytes()).decode()
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{e(block[1].name)}">'
                            f"<figcaption>{e(block[2])}</figcaption></figure>")
            elif kind == "code":
                pre = f"<pre>{e(block[1])}</pre>"
                body.append(f"<details><summary>{e(block[2])}</summary>{pre}</details>" if block[2] else pre)
        style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
                 "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
                 "th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left}th{background:#f3f3f3}"
                 "img{max-width:100%}figcaption{font-size:0.9em;color:#555}pre{background:#f6f6f6;padding:1em;"
                 "overflow:auto;font-size:0.8em}code{background:#f3f3f3;padding:0 0.2em}")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _inline(text: str) -> str:
    """Markdown's `code` and **bold** in HTML; everything else escaped."""
    import re

    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _title(rows) -> str:
    datasets = sorted({str(r["dataset"]) for r in rows if r.get("dataset")})
    return f"lpc study: {', '.join(datasets) or 'results'}"


def _report(out, rows, heads, stats, n_selected, selection, table1, table2, significance, figures, notes) -> _Doc:
    doc = _Doc()
    doc.h(1, _title(rows))
    invocations = _invocations(out, notes)
    last = invocations[-1] if invocations else {}
    status = {h: {s: sum(1 for r in rows if r["head"] == h and r.get("status") == s)
                  for s in ("finished", "diverged", "failed", "missing")} for h in heads}
    devices = sorted({str(r["device"]) for r in rows if r.get("device")})
    versions = last.get("versions") or {}
    if not versions:
        v = next((r for r in rows if r.get("lpc_version")), {})
        versions = {"lpc": v.get("lpc_version"), "torch": v.get("torch_version"), "python": v.get("python_version")}
    compute = sum(r["wall_seconds"] for r in rows if _is_number(r.get("wall_seconds")))
    wall = sum(i.get("wall_seconds", 0.0) for i in invocations)
    doc.items([
        f"runs: {len(rows)} ({sum(s['finished'] for s in status.values())} finished, "
        f"{sum(s['diverged'] for s in status.values())} diverged, "
        f"{sum(s['failed'] + s['missing'] for s in status.values())} failed or missing)",
        f"heads: {', '.join(heads)}; learning rates: {', '.join(f'{x:g}' for x in sorted({r['lr'] for r in rows}))}; "
        f"seeds: {', '.join(str(s) for s in sorted({r['seed'] for r in rows}))}",
        f"device: {', '.join(devices) or 'unknown'}; engine: {last.get('engine', 'unknown')}, "
        f"{last.get('workers', '?')} worker(s) × {last.get('threads_per_run', '?')} torch thread(s)",
        "versions: " + (", ".join(f"{k} {v}" for k, v in versions.items() if v) or "unknown"),
        (f"wall time: {wall:.1f} s over {len(invocations)} invocation(s) of `lpc study`; " if invocations
         else "wall time of the study: unknown (no study.json); ") + f"training time summed over runs: {compute:.1f} s",
    ])
    doc.h(2, "Selection and aggregation")
    doc.p(f"**Selection rule**: {SELECTION_RULE}. **Aggregation**: {AGGREGATION_RULE}. "
          "`lr (by test)` is what choosing on test accuracy (the authors' script) would have picked.")
    doc.table(["head", "seed", "lr (selected)", "val accuracy", "test accuracy", "lr (by test)", "usable / runs"],
              [[s["head"], str(s["seed"]), fmt(s["lr"]), fmt(s["val_accuracy"]), fmt(s["test_accuracy"]),
                fmt(s["lr_by_test"]), f"{s['usable']} / {s['candidates']}"] for s in selection])
    doc.h(3, "Runs per head")
    doc.table(["head", "runs", "finished", "diverged", "failed / missing", "n (selected seeds)"],
              [[h, str(sum(status[h].values())), str(status[h]["finished"]), str(status[h]["diverged"]),
                str(status[h]["failed"] + status[h]["missing"]), str(n_selected[h])] for h in heads])
    bad = [r for r in rows if r.get("status") != "finished"]
    if bad:
        doc.p("Runs that did not finish (never selected):")
        doc.items([f"`{r['run']}`: {r.get('status')} — {r.get('reason') or 'no reason recorded'}" for r in bad])

    doc.h(2, "Table 1: latent point collapse")
    doc.p("Measured on the **training-set** latents at the last epoch (`sigma_w_train`, `norm_coeff_var_train`, "
          "`entropy_train`; Kozachenko–Leonenko entropy with k = eval.entropy_k), as the paper's Table 1.")
    doc.table(table1["header"], table1["rows"])
    doc.h(2, "Table 2: robustness, accuracy, reliability")
    doc.p("Robustness: minimal perturbation norm divided by the input norm, on `eval.robustness_inputs` random test "
          "inputs — DeepFool (the paper's measure), and PGD-L2 and bisection, which gradient masking cannot inflate, "
          "with DeepFool's flip rate (share of inputs whose label it actually flipped). Accuracy: test set, last "
          "epoch, in %. AUROC: misclassification detection on the test set by Mahalanobis distance and ODIN "
          "(T = eval.odin_temperature, no input perturbation).")
    doc.table(table2["header"], table2["rows"])
    doc.h(2, f"Significance against {BASELINE}")
    _significance_section(doc, significance)

    doc.h(2, "Figures")
    for path, caption in figures:
        doc.image(path, caption)
    if not figures:
        doc.p("No figure could be drawn (see the notes).")

    doc.h(2, "All aggregated metrics")
    doc.p(f"Every numeric value of summary.json over the selected runs: {AGGREGATION_RULE}. "
          "`(n=k)` marks a metric that only k of the head's seeds have.")
    metrics = list(dict.fromkeys(k for h in heads for k in stats[h]))
    doc.table(["metric", *heads], [[k, *(mean_std(stats[h].get(k), n_selected[h]) for h in heads)] for k in metrics])

    if notes:
        doc.h(2, "Notes")
        doc.items(notes)
    doc.h(2, "Configuration")
    study_yaml = out / "study.yaml"
    if study_yaml.exists():
        doc.p("The resolved base config and the grid (`study.yaml`); each run overrides `model.head`, `optim.lr` "
              "and `seed`, and keeps its own `config.yaml`.")
        doc.code(study_yaml.read_text(), "study.yaml")
    else:
        doc.p("No study.yaml in this directory: the configuration of each run is in its `config.yaml`.")
    return doc


def _invocations(out: Path, notes: list[str]) -> list[dict[str, Any]]:
    path = out / "study.json"
    if not path.exists():
        notes.append("No study.json: engine, versions and wall time of the study are unknown; "
                     "versions are taken from the runs' summaries.")
        return []
    try:
        return list(read_json(path).get("invocations", []))
    except Exception as error:
        notes.append(f"study.json unreadable ({error}).")
        return []
