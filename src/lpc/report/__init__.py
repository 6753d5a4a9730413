"""The report of a study: tables, statistics, figures, report.md and report.html. Reads results only, never trains.

From a study directory (see :mod:`lpc.study`) :func:`build_report` reads ``results.csv`` (every run, with
``selected``), ``study.yaml``, ``study.json`` and, for the figures, the selected runs' ``history.jsonl`` and
``latents.npz``, and writes::

    selection.csv              per (head, seed): the learning rate chosen on validation (and the one test
                               accuracy would have chosen)
    aggregate.csv              per head and metric: mean, std (ddof=1), n over the selected runs
    claims.csv / claims.md     one row per claim of the paper and head of the IB family: effect, paired p and its
                               Holm-adjusted p, verdict with and without the correction
                               (C2 by binarity σ̄, C3 by PGD-L2), and the masking ratio DeepFool / PGD-L2
    table1.csv / table1.md     Σ_W, coefficient of variation of latent norms, entropy (paper Table 1), and their
                               scale-free counterparts Σ_W/Σ_T and the entropy of z/rms(z)
    table2.csv / table2.md     robustness, accuracy, misclassification AUROCs (paper Table 2), and the masking
                               ratio DeepFool / PGD-L2
    significance.csv / .md / .json   Welch's t-test of every head against no_pen
    figures/*.png              latent histograms of ib, lin_pen, no_pen (Fig. 1), binarity (Fig. 2), neural
                               collapse (Fig. 3), accuracy, γ and pressure of the IB heads
    report.md, report.html     the claims table first, then everything above; the HTML is self-contained
                               (images inlined as base64)

Its modules, in the order data flows through them: :mod:`~lpc.report.statistics` (tests, Holm, claims and
verdicts), :mod:`~lpc.report.figures` (matplotlib), :mod:`~lpc.report.render` (formatting, Markdown, HTML, CSV).
"""
from __future__ import annotations

from pathlib import Path

from ..study import StudyError, aggregate, read_results, selection_table
from .figures import (BINARITY, COLLAPSE, FIGURE1_HEADS, GAMMA, MAX_NODES, make_figures, plot_latent_comparison,
                      plot_latent_histograms)
from .render import (MASKING_TEXT, ROLES, TABLE1, TABLE2, fmt, format_mean_std, format_p, masking_sentences,
                     mean_std, metric_table, write_report, write_tables)
from .statistics import (ALPHA, BASELINE, CLAIMS, IB_FAMILY, MASKING, MASKING_LIMIT, MISSING, NO_SEPARATION,
                         OVERSTATES, PAPER_MEASURE, PAPER_TABLE2, SIGNIFICANCE, TWO_POINT_SIGMA, VERDICT_RULE, VERDICTS,
                         Claim, claim_effects, claim_verdict, claims_table, corrected, holm, masking_verdict,
                         paired_test, significance_table, welch_test, with_masking_ratio)

__all__ = ["build_report",
           # statistics
           "ALPHA", "BASELINE", "CLAIMS", "IB_FAMILY", "MASKING", "MASKING_LIMIT", "MISSING", "NO_SEPARATION",
           "OVERSTATES", "PAPER_MEASURE", "PAPER_TABLE2", "SIGNIFICANCE", "TWO_POINT_SIGMA", "VERDICT_RULE", "VERDICTS",
           "Claim", "claim_effects", "claim_verdict", "claims_table", "corrected", "holm", "masking_verdict",
           "paired_test", "significance_table", "welch_test", "with_masking_ratio",
           # figures
           "BINARITY", "COLLAPSE", "FIGURE1_HEADS", "GAMMA", "MAX_NODES", "make_figures", "plot_latent_comparison",
           "plot_latent_histograms",
           # render
           "MASKING_TEXT", "ROLES", "TABLE1", "TABLE2", "fmt", "format_mean_std", "format_p",
           "masking_sentences", "mean_std", "metric_table", "write_report", "write_tables"]


def build_report(study_dir: str | Path) -> dict[str, Path]:
    """Writes every table, figure and report file of the study in ``study_dir``; returns their paths."""
    out = Path(study_dir)
    if not out.is_dir():
        raise StudyError(f"{out}: no such study directory")
    rows = read_results(out / "results.csv")
    if not rows:
        raise StudyError(f"{out / 'results.csv'}: no runs")
    rows = with_masking_ratio(rows)
    selected = [r for r in rows if r.get("selected")]
    heads = list(dict.fromkeys(r["head"] for r in rows))
    stats = aggregate(rows)
    notes: list[str] = []  # what the report could not show, and why; filled by every step below

    selection = selection_table(rows)
    n_selected = {h: sum(1 for r in selected if r["head"] == h) for h in heads}
    table1 = metric_table(heads, stats, n_selected, TABLE1, notes, "Table 1")
    table2 = metric_table(heads, stats, n_selected, TABLE2, notes, "Table 2")
    significance = significance_table(rows)
    claims = claims_table(rows)
    if BASELINE not in heads:
        notes.append(f"Significance tests skipped: the baseline head `{BASELINE}` is not in this study.")
    files = write_tables(out, heads, stats, selection, table1, table2, significance, claims)

    figures = make_figures(out, rows, notes)
    files.update({p.name: p for p, _ in figures})

    files.update(write_report(out, rows, heads, stats, n_selected, selection, table1, table2, significance, claims,
                              figures, notes))
    return files
