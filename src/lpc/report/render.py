"""The report's text: number formatting, the tables as CSV and Markdown, and ``report.md`` / ``report.html``
(one document, rendered both ways).

Numbers in the Markdown and HTML tables are rounded (:func:`format_mean_std`); the CSVs keep full precision.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from ..files import atomic_write_bytes, read_json, write_csv, write_json
from ..study import AGGREGATION_RULE, SELECTION_RULE, Stat
from .statistics import ALPHA, BASELINE, MASKING_LIMIT, MISSING, OVERSTATES, VERDICT_RULE, is_number

# (summary key, column title, scale): Table 1 is measured on the training-set latents, as in the paper; the
# last two columns are ours and do not move under a rescaling (W, z) -> (cW, z/c) of the network
TABLE1 = [("sigma_w_train", "Σ_W", 1.0), ("norm_coeff_var_train", "coeff. of var.", 1.0),
          ("entropy_train", "entropy", 1.0), ("sigma_w_rel_train", "Σ_W / Σ_T (scale-free)", 1.0),
          ("entropy_rel_train", "entropy of z / rms(z) (scale-free)", 1.0)]
TABLE2 = [("robustness_deepfool", "robustness (DeepFool)", 1.0), ("robustness_pgd_l2", "PGD-L2", 1.0),
          ("robustness_bisection", "bisection", 1.0), ("deepfool_flip_rate", "DeepFool flip rate", 1.0),
          ("masking_ratio", "masking ratio DeepFool / PGD-L2", 1.0),
          ("test_accuracy", "test accuracy (%)", 100.0), ("auroc_mahalanobis", "AUROC Mahalanobis", 1.0),
          ("auroc_odin", "AUROC ODIN", 1.0)]
MASKING_TEXT = (f"**Masking ratio**: DeepFool's radius / PGD-L2's, per run, then over the seeds; DeepFool overstates "
                f"a head's robustness when the head's mean ratio is above ×{MASKING_LIMIT:g} while {BASELINE}'s is "
                "below (a flat or noisy gradient moves DeepFool's linearised boundary out; PGD-L2 attacks until the "
                "label flips).")
ROLES = {"main": "", "secondary": "secondary: ", "paper": "paper's measure: ", "masking": ""}  # measure prefix


def fmt(value: Any) -> str:
    """A single number for tables: 4 significant digits, scientific when tiny or huge; missing as MISSING."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4g}"


def format_mean_std(mean: float | None, std: float | None) -> str:
    """``mean ± std`` with the std rounded to two significant digits and the mean to the same decimal place.

    Magnitudes below 1e-3 or from 1e5 up share one power of ten. A std of NaN or None (one seed) leaves the
    mean alone at 4 significant digits (:func:`fmt`); a zero std reads ``± 0``.

    >>> format_mean_std(0.1747, 0.002415), format_mean_std(97.3712, 0.4312), format_mean_std(3.176e-12, 9.552e-13)
    ('0.1747 ± 0.0024', '97.37 ± 0.43', '(3.18 ± 0.96)e-12')
    """
    if mean is None or not math.isfinite(mean):
        return MISSING
    if std is None or not math.isfinite(std):
        return fmt(float(mean))
    if std == 0:
        return f"{fmt(float(mean))} ± 0"
    std = abs(std)
    magnitude = max(abs(mean), std)
    exponent = math.floor(math.log10(magnitude)) if magnitude < 1e-3 or magnitude >= 1e5 else 0
    m, s = mean / 10 ** exponent, std / 10 ** exponent
    decimals = 1 - math.floor(math.log10(s))
    if round(s, decimals) >= 10 ** (2 - decimals):  # 0.0996 rounds to 0.100: one digit too many
        decimals -= 1
    m, s = round(m, decimals) + 0.0, round(s, decimals)  # + 0.0 turns -0.0 into 0.0
    shown = max(decimals, 0)
    text = f"{m:.{shown}f} ± {s:.{shown}f}"
    return f"({text})e{exponent:+03d}" if exponent else text


def mean_std(stat: Stat | None, n_head: int | None = None, scale: float = 1.0) -> str:
    """A table cell of :class:`Stat`: rounded mean ± std, and ``(n=k)`` when only k of the head's n seeds have it."""
    if stat is None:
        return MISSING
    text = format_mean_std(stat.mean * scale, stat.std * scale if stat.n > 1 else None)
    return text + (f" (n={stat.n})" if n_head is not None and stat.n != n_head else "")


def format_p(p: float | None) -> str:
    return MISSING if p is None else f"{p:.2g}"


def metric_table(heads, stats, n_selected, columns, notes, name) -> dict[str, Any]:
    """Table ``name`` over ``columns`` (key, title, scale): rounded ``header`` and ``rows`` for Markdown and HTML,
    full-precision ``csv`` rows; a column that no head has adds a line to ``notes``."""
    missing = [key for key, _, _ in columns if not any(key in stats[h] for h in heads)]
    if missing:
        notes.append(f"{name}: no values for {', '.join(f'`{k}`' for k in missing)} in results.csv "
                     f"(metric switched off in the config's eval section, or not computed by the lpc that ran the study); "
                     f"shown as '{MISSING}'.")
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


def write_tables(out: Path, heads: list[str], stats: dict[str, dict[str, Stat]], selection: list[dict[str, Any]],
                 table1: dict[str, Any], table2: dict[str, Any], significance: list[dict[str, Any]],
                 claims: list[dict[str, Any]]) -> dict[str, Path]:
    """Writes the tables of the study into ``out`` as CSV (full precision) and Markdown (rounded); returns their
    paths by file name."""
    files: dict[str, Path] = {}
    files["selection.csv"] = _write_csv(out / "selection.csv", selection)
    files["aggregate.csv"] = _write_csv(out / "aggregate.csv", [
        {"head": h, "metric": k, "mean": s.mean, "std": s.std, "n": s.n} for h in heads for k, s in stats[h].items()])
    files["table1.csv"] = _write_csv(out / "table1.csv", table1["csv"])
    files["table2.csv"] = _write_csv(out / "table2.csv", table2["csv"])
    files["significance.csv"] = _write_csv(out / "significance.csv", significance)
    files["claims.csv"] = _write_csv(out / "claims.csv", claims)
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
           f"(%), and misclassification AUROCs on the test set (Mahalanobis / ODIN, T=100). {MASKING_TEXT} "
           f"Each cell: {AGGREGATION_RULE}.")
    doc2.table(table2["header"], table2["rows"])
    atomic_write_bytes(out / "table2.md", doc2.markdown().encode())
    doc3 = _Doc()
    _significance_section(doc3, significance)
    atomic_write_bytes(out / "significance.md", doc3.markdown().encode())
    doc4 = _Doc()
    _claims_section(doc4, claims)
    atomic_write_bytes(out / "claims.md", doc4.markdown().encode())
    files.update({"table1.md": out / "table1.md", "table2.md": out / "table2.md",
                  "significance.md": out / "significance.md", "claims.md": out / "claims.md"})
    return files


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    write_csv(path, rows)
    return path


def masking_sentences(table: list[dict[str, Any]]) -> list[str]:
    """One sentence per head of :func:`~lpc.report.statistics.claims_table` whose robustness DeepFool overstates
    (:func:`~lpc.report.statistics.masking_verdict`)."""
    return [f"DeepFool overstates the robustness of {r['head']}: its radius is ×{r['mean']:.3g} the PGD-L2 radius, "
            f"{r['baseline']}'s ×{r['mean_baseline']:.3g} (masking ratio, mean over seeds; above ×{MASKING_LIMIT:g} "
            f"for {r['head']}, below for {r['baseline']}), so C3 follows PGD-L2."
            for r in table if r["role"] == "masking" and r["verdict"] == OVERSTATES]


def _claims_section(doc: "_Doc", table: list[dict[str, Any]]) -> None:
    doc.p(f"Each claim of the paper, for each head of the IB family the paper makes it for, against `{BASELINE}` "
          "(C1 and C2 also against `lin_pen`, the same linear layer without the compression term). **Effect**: per "
          "seed, the head's value divided by the baseline's (×), or their difference (in points for accuracy), over "
          "the seeds both have, as mean ± std (ddof=1); for C2's σ̄ the two heads' mean σ̄ in brackets; for a "
          "property of the head alone the head's own value, the baseline's in brackets. **p**: a paired t-test "
          "(two-sided) on the per-seed differences head − baseline, since one seed gives both heads the same data "
          "order and backbone initialisation; Welch's t-test of all values (two-sided, unequal variances) where "
          "fewer than two seeds are shared, marked *Welch*. **Holm p**: p adjusted by Holm–Bonferroni across "
          "every row whose verdict rests on a p-value (the main and secondary rows against a baseline with a test; "
          "not the paper's measure, the masking ratio or a property of the head alone), which keeps the chance of "
          f"any false *held* among them at {ALPHA:.0%}; the verdict uses it, and a verdict that the correction "
          "changed names the uncorrected one in brackets (*mixed (held without Holm)*). **n**: seeds of head / "
          "baseline. "
          "The paper's column gives the size its claim needs and its own numbers. Rows marked *secondary* and the "
          "paper's measure are shown beside the row that decides the claim. " + MASKING_TEXT +
          f" **Verdict**: {VERDICT_RULE}.")
    if not table:
        doc.p(f"Not computed: the study has no `{BASELINE}` runs, or no head of the IB family.")
        return
    doc.table(["claim", "head vs baseline", "measure", "effect (mean ± std over seeds)", "paper", "p", "Holm p",
               "n", "verdict"],
              [[r["text"], f"{r['head']} vs {r['baseline']}", ROLES[r["role"]] + r["measure"], _effect_cell(r),
                r["paper"], _p_cell(r), format_p(r["p_holm"]), f"{r['n']} / {r['n_baseline']}", _verdict_cell(r)]
               for r in table])
    sentences = masking_sentences(table)
    if sentences:
        doc.p(" ".join(sentences))


def _p_cell(row: dict[str, Any]) -> str:
    return format_p(row["p"]) + (" Welch" if row["test"] == "Welch" and row["p"] is not None else "")


def _verdict_cell(row: dict[str, Any]) -> str:
    """The verdict, and the uncorrected one in brackets where Holm's correction changed it."""
    if row["verdict"] == row["verdict_uncorrected"]:
        return row["verdict"]
    return f"{row['verdict']} ({row['verdict_uncorrected']} without Holm)"


def _effect_cell(row: dict[str, Any]) -> str:
    text = format_mean_std(row["effect_mean"], row["effect_std"])
    if text == MISSING:
        return text
    if row["effect"] == "ratio" and row.get("threshold") is not None:  # the head's own value is judged too
        return f"×{text} ({row['head']}: {fmt(row['mean'])}, {row['baseline']}: {fmt(row['mean_baseline'])})"
    if row["effect"] == "ratio":
        return "×" + text
    if row["effect"] == "value":
        return f"{text} ({row['baseline']}: {fmt(row['mean_baseline'])})"
    return ("+" if row["effect_mean"] > 0 else "") + text + (" points" if row["effect"] == "points" else "")


def _significance_section(doc: "_Doc", table: list[dict[str, Any]]) -> None:
    doc.p(f"Welch's t-test (two-sided, unequal variances; `scipy.stats.ttest_ind(equal_var=False)`) of each head "
          f"against `{BASELINE}`, over the validation-selected run of each seed; n = seeds per group. "
          "No correction for multiple comparisons.")
    if not table:
        doc.p(f"Not computed: the study has no `{BASELINE}` runs.")
        return
    doc.table(["head", "metric", "mean", f"mean ({BASELINE})", "n", f"n ({BASELINE})", "t", "p", "note"],
              [[r["head"], r["metric"], fmt(r["mean"]), fmt(r["mean_baseline"]), str(r["n"]), str(r["n_baseline"]),
                fmt(r["t"]), format_p(r["p"]), r["note"] or ""] for r in table])


def write_report(out: Path, rows, heads, stats, n_selected, selection, table1, table2, significance, claims,
                 figures, notes) -> dict[str, Path]:
    """Writes ``report.md`` and the self-contained ``report.html`` (images inlined) into ``out``."""
    doc = _report_document(out, rows, heads, stats, n_selected, selection, table1, table2, significance, claims,
                           figures, notes)
    atomic_write_bytes(out / "report.md", doc.markdown(out).encode())
    atomic_write_bytes(out / "report.html", doc.html(out, title=_title(rows)).encode())
    return {"report.md": out / "report.md", "report.html": out / "report.html"}


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


def _report_document(out, rows, heads, stats, n_selected, selection, table1, table2, significance, claims, figures,
            notes) -> _Doc:
    doc = _Doc()
    doc.h(1, _title(rows))
    doc.h(2, "Claims of the paper")
    _claims_section(doc, claims)
    doc.h(2, "Study")
    invocations = _invocations(out, notes)
    last = invocations[-1] if invocations else {}
    status = {h: {s: sum(1 for r in rows if r["head"] == h and r.get("status") == s)
                  for s in ("finished", "diverged", "failed", "missing")} for h in heads}
    devices = sorted({str(r["device"]) for r in rows if r.get("device")})
    versions = last.get("versions") or {}
    if not versions:
        v = next((r for r in rows if r.get("lpc_version")), {})
        versions = {"lpc": v.get("lpc_version"), "torch": v.get("torch_version"), "python": v.get("python_version")}
    compute = sum(r["wall_seconds"] for r in rows if is_number(r.get("wall_seconds")))
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

    _accuracy_drops_section(doc, rows)

    doc.h(2, "Table 1: latent point collapse")
    doc.p("Measured on the **training-set** latents at the last epoch (`sigma_w_train`, `norm_coeff_var_train`, "
          "`entropy_train`; Kozachenko–Leonenko entropy with k = eval.entropy_k), as the paper's Table 1. "
          "A rescaling (W, z) → (cW, z/c) of the penultimate layer and the classifier leaves every prediction "
          "unchanged but divides Σ_W by c² and shifts the entropy by −P·log c, so the paper's first and third "
          "columns can shrink without any collapse; the last two columns cannot be moved that way.")
    doc.items([
        "**Σ_W / Σ_T** (`sigma_w_rel_train`) = tr(Σ_W) / tr(Σ_T): the share of the latent variance that lies "
        "within classes; it falls to 0 only when every class sits at one point, whatever the size of z.",
        "**entropy of z / rms(z)** (`entropy_rel_train`) = entropy − P·log rms(z): the entropy of the latent "
        "cloud's shape at unit size, so a drop means the points concentrated, not that z shrank.",
    ])
    doc.table(table1["header"], table1["rows"])
    doc.h(2, "Table 2: robustness, accuracy, reliability")
    doc.p("Robustness: minimal perturbation norm divided by the input norm, on `eval.robustness_inputs` random test "
          "inputs — DeepFool (the paper's measure), and PGD-L2 and bisection, which gradient masking cannot inflate, "
          "with DeepFool's flip rate (share of inputs whose label it actually flipped). " + MASKING_TEXT +
          " Accuracy: test set, last epoch, in %. AUROC: misclassification detection on the test set by Mahalanobis "
          "distance and ODIN (T = eval.odin_temperature, no input perturbation).")
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


def _accuracy_drops_section(doc: _Doc, rows: list[dict[str, Any]]) -> None:
    doc.h(3, "Runs whose training accuracy collapsed")
    doc.p("A run is listed when its training accuracy fell more than 5 points below its best while γ rose "
          "(`accuracy_drop_epoch`, `accuracy_drop_gamma` in its summary.json): the compression outran the classifier.")
    if not any("accuracy_drop_epoch" in r for r in rows):
        doc.p("Not recorded: these runs were trained by an lpc without this check.")
        return
    drops = [r for r in rows if is_number(r.get("accuracy_drop_epoch"))]
    if not drops:
        doc.p("None.")
        return
    doc.table(["head", "lr", "seed", "epoch", "γ", "selected"],
              [[r["head"], fmt(r["lr"]), str(r["seed"]), str(r["accuracy_drop_epoch"]),
                fmt(r.get("accuracy_drop_gamma")), "yes" if r.get("selected") else "no"] for r in drops])


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
