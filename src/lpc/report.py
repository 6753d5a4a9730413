"""Tables, statistics, figures and the report of a study. Reads results only, never trains.

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

Numbers in the Markdown and HTML tables are rounded (:func:`format_mean_std`); the CSVs keep full precision.
"""
from __future__ import annotations

import base64
import html
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write_bytes, read_json, write_csv, write_json
from .study import (AGGREGATION_RULE, SELECTION_RULE, Stat, StudyError, aggregate, read_history, read_results,
                    selection_table)

BASELINE = "no_pen"
MISSING = "—"  # a value the study does not have
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
SIGNIFICANCE = ["test_accuracy", "robustness_deepfool", "auroc_mahalanobis", "auroc_odin"]
BINARITY = [("binarity_loglik_train", "ℓ̄ (log-likelihood, Eq. 25)", False),
            ("binarity_sigma_train", "σ̄ (mode std, Eq. 26)", True),
            ("binarity_peak_distance_train", "μ̄ (peak distance / σ, Eq. 27)", True)]
COLLAPSE = [("nc1_per_dim_train", "NC1 / P = Tr(Σ_W Σ_B⁺)/K/P", True), ("equinorm_train", "equinorm (CoV of class-mean norms)", True),
            ("equiangularity_train", "equiangularity (std of cosines)", True),
            ("max_angle_train", "max-angle (mean |cos + 1/(K-1)|)", True)]
GAMMA = [("gamma", "γ", True), ("pressure", "pressure γ / r²", True),
         ("classifier_scale", "classifier scale r", True), ("true_class_prob", "true-class probability", False),
         ("train_accuracy", "train accuracy", False)]
MAX_NODES = 16  # latent histograms shown for at most this many latent dimensions
FIGURE1_HEADS = ("ib", "lin_pen", "no_pen")  # the paper's Fig. 1 contrast: IB, its layer without γ, no layer
ALPHA = 0.05  # significance level of the claims' verdicts
# The two-point criterion of C2: σ̄ (Eq. 26) is measured on per-dimension standardised latents, so σ̄ ≤ 0.1 says
# that each node's values sit at two points whose spread is at most a tenth of the node's std (mean over nodes)
TWO_POINT_SIGMA = 0.1
# (derived key, numerator, denominator), per run: DeepFool's radius over PGD-L2's. DeepFool follows the gradient
# and stops at its linearised boundary, so a flat or noisy gradient inflates its radius; PGD-L2 searches the
# radius by attacking, which masking cannot inflate. A ratio near 1 says DeepFool measured the same thing
MASKING = ("masking_ratio", "robustness_deepfool", "robustness_pgd_l2")
MASKING_LIMIT = 1.2  # above it, DeepFool overstates a head's robustness (when the baseline's ratio is below it)
MASKING_TEXT = (f"**Masking ratio**: DeepFool's radius / PGD-L2's, per run, then over the seeds; DeepFool overstates "
                f"a head's robustness when the head's mean ratio is above ×{MASKING_LIMIT:g} while {BASELINE}'s is "
                "below (a flat or noisy gradient moves DeepFool's linearised boundary out; PGD-L2 attacks until the "
                "label flips).")
OVERSTATES = "DeepFool overstates"
ROLES = {"main": "", "secondary": "secondary: ", "paper": "paper's measure: ", "masking": ""}  # measure prefix
NO_SEPARATION = "(baseline too: does not separate heads)"
PAPER_MEASURE = "not judged (paper's measure) — see PGD-L2"
VERDICTS = ("not held", "mixed", "held")  # weakest first

# The paper's Table 2 (means over its runs), so that each measured effect stands beside the paper's own:
# dataset -> head -> (DeepFool robustness, test accuracy in %, AUROC Mahalanobis, AUROC ODIN)
PAPER_TABLE2 = {
    "CIFAR-100": {"ib": (0.247, 77.9, 0.86, 0.86), "wide_ib": (0.114, 75.87, 0.86, 0.87),
                  "narrow_ib": (0.195, 74.9, 0.87, 0.81), "no_pen": (0.008, 77.02, 0.76, 0.80)},
    "CIFAR-10": {"ib": (0.725, 94.86, 0.91, 0.84), "wide_ib": (0.336, 94.85, 0.92, 0.92),
                 "narrow_ib": (0.526, 94.54, 0.90, 0.77), "no_pen": (0.014, 94.54, 0.85, 0.69)},
    "SVHN": {"ib": (0.847, 96.69, 0.91, 0.82), "wide_ib": (0.228, 96.65, 0.91, 0.89),
             "narrow_ib": (0.675, 96.65, 0.91, 0.84), "no_pen": (0.029, 96.40, 0.89, 0.71)},
}
IB_FAMILY = ("ib", "wide_ib", "narrow_ib")


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, tested on one summary key of the selected runs.

    ``effect`` says how a seed's value is compared with the baseline's value of the same seed: ``ratio``
    (head / baseline), ``points`` (100 × (head − baseline)), ``difference`` (head − baseline), or ``value``
    (the head's own value: a property the paper states of the head alone). ``direction`` +1 / −1: the paper
    expects the effect above / below no change (ratio 1, difference 0); ``size``: the value the paper's claim
    needs the mean effect to reach (None: any size; "K": the number of classes). ``threshold``: a value the
    head's own values must reach too, in the same direction, besides the effect against the baseline (C2's
    two-point criterion on σ̄). ``role``: ``main`` rows decide the claim; ``secondary`` rows are a second
    opinion beside them; ``paper`` is the paper's own measure, shown but not judged (DeepFool, which gradient
    masking can inflate); ``masking`` is judged by :func:`masking_verdict` instead of the claims' rule.
    """

    id: str
    text: str
    metric: str
    label: str
    effect: str
    direction: int
    size: float | str | None
    paper: str
    heads: tuple[str, ...] = IB_FAMILY
    baseline: str = BASELINE
    threshold: float | None = None
    role: str = "main"


def _paper_range(column: int, effect: str, head: str) -> tuple[float, str]:
    """The smallest effect of Table 2 over the paper's three datasets, and its range as text."""
    values = []
    for table in PAPER_TABLE2.values():
        a, b = table[head][column], table[BASELINE][column]
        values.append(a / b if effect == "ratio" else a - b)
    low, high = min(values), max(values)
    text = f"×{low:.2g}–{high:.2g}" if effect == "ratio" else f"{low:+.2f} to {high:+.2f}"
    return low, text


def _claims() -> list[Claim]:
    c1 = "C1 within-class variance vanishes, only for IB"
    c2 = "C2 binary code: two values per node, one hypercube vertex per class"
    claims = [
        Claim("C1", c1, "sigma_w_rel_train", "Σ_W / Σ_T (train, scale-free)", "ratio", -1, 0.1,
              "≤ ×0.1 (Table 1: Σ_W 1e-12–1e-10 vs 0.007–0.03, not scale-free)"),
        Claim("C1", c1, "nc1_train", "NC1 (train)", "ratio", -1, 0.1,
              "≤ ×0.1 (App. E, Fig. 3: an order of magnitude lower)"),
        Claim("C1", c1, "sigma_w_rel_train", "Σ_W / Σ_T (train, scale-free)", "ratio", -1, 0.1,
              "≤ ×0.1 (Table 1: Σ_W 1e-12–1e-10 vs lin_pen's 0.7–6.9)", baseline="lin_pen"),
    ]
    # C2 as Appendix D tests it: two points per node (σ̄, scale-free), and only for IB: lin_pen has the same
    # linear layer without γ, no_pen no layer at all
    claims += [Claim("C2", c2, "binarity_sigma_train", "binarity σ̄ (train, Eq. 26, scale-free)", "ratio", -1, None,
                     f"σ̄ ≤ {TWO_POINT_SIGMA:g} and below {baseline}'s (App. D, Fig. 2: IB's σ̄ shrinks, LINPEN's "
                     "does not)", baseline=baseline, threshold=TWO_POINT_SIGMA) for baseline in ("lin_pen", BASELINE)]
    # secondary: thresholding each node at a midpoint gives well-separated classes their own vertices whether or
    # not the values sit at two points, so these rows cannot show a binary code (no_pen reaches K too)
    claims += [
        Claim("C2", c2, "code_vertices_train", "vertices occupied (train)", "value", +1, "K",
              "K: one vertex per class (Sec. 2.2, App. D)", role="secondary"),
        Claim("C2", c2, "code_decode_accuracy_train", "nearest-vertex decoding accuracy (train)", "value", +1, 0.99,
              "≥ 0.99: every class on one vertex (App. D)", role="secondary"),
    ]
    c3 = "C3 robustness to minimal perturbations"
    for head in IB_FAMILY:  # the paper measured DeepFool only, which masking can inflate: PGD-L2 decides
        low, text = _paper_range(0, "ratio", head)
        paper = f"≥ ×{low:.2g} ({text}, DeepFool, Table 2)"
        claims += [Claim("C3", c3, "robustness_pgd_l2", "robustness PGD-L2", "ratio", +1, low, paper, (head,)),
                   Claim("C3", c3, "robustness_bisection", "robustness bisection", "ratio", +1, low, paper, (head,),
                         role="secondary"),
                   Claim("C3", c3, "robustness_deepfool", "robustness DeepFool", "ratio", +1, low, paper, (head,),
                         role="paper"),
                   Claim("C3", c3, MASKING[0], "masking ratio DeepFool / PGD-L2", "value", -1, MASKING_LIMIT,
                         f"≤ ×{MASKING_LIMIT:g} (ours: the paper ran DeepFool only)", (head,), role="masking")]
    _, text = _paper_range(1, "difference", "ib")
    claims.append(Claim("C4", "C4 small significant accuracy gain", "test_accuracy", "test accuracy", "points", +1,
                        None, f"> 0 ({text} points, Table 2)", ("ib",)))
    for head in IB_FAMILY:
        for column, metric, label in ((2, "auroc_mahalanobis", "AUROC Mahalanobis"), (3, "auroc_odin", "AUROC ODIN")):
            _, text = _paper_range(column, "difference", head)
            claims.append(Claim("C5", "C5 misclassification AUROC", metric, label, "difference", +1, None,
                                f"> 0 ({text}, Table 2)", (head,)))
    return claims


CLAIMS = _claims()
VERDICT_RULE = (
    f"**held** when the effect points the paper's way, reaches the paper's size where the paper states one, and "
    f"its Holm-adjusted p < {ALPHA}; **not held** when it points the other way (or not at all); **mixed** in "
    f"between (the right way, but adjusted p ≥ {ALPHA}, no test possible, or short of the paper's size). C2 is "
    "judged by binarity σ̄ "
    "(Eq. 26, on per-dimension standardised latents, so scale-free) and the two-point criterion "
    f"σ̄ ≤ {TWO_POINT_SIGMA:g}: every node's values sit at two points whose spread is at most {TWO_POINT_SIGMA:g} × "
    "the node's standard deviation (mean over nodes). A σ̄ row needs both the criterion and a σ̄ below the "
    f"baseline's: **held** when every seed of the head meets the criterion and the rule above holds, **not held** "
    "when no seed meets it or σ̄ is not below the baseline's, **mixed** otherwise. A property of the head alone "
    "(C2's secondary rows) is **held** when every seed reaches the paper's value, **not held** when none does, "
    f"**mixed** otherwise, and adds \"{NO_SEPARATION}\" when every seed of the baseline reaches it as well. C3 is "
    "decided by the PGD-L2 radius, which gradient masking cannot inflate; bisection is a secondary row, DeepFool "
    f"(the paper's measure) is shown but not judged. {MISSING} when the study lacks the values")


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
    claims = claims_table(rows)
    if BASELINE not in heads:
        notes.append(f"Significance tests skipped: the baseline head `{BASELINE}` is not in this study.")
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

    figures = make_figures(out, rows, notes)
    files.update({p.name: p for p, _ in figures})

    doc = _report(out, rows, heads, stats, n_selected, selection, table1, table2, significance, claims, figures,
                  notes)
    atomic_write_bytes(out / "report.md", doc.markdown(out).encode())
    atomic_write_bytes(out / "report.html", doc.html(out, title=_title(rows)).encode())
    files.update({"report.md": out / "report.md", "report.html": out / "report.html"})
    return files


# ---------------------------------------------------------------- tables and statistics

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


def _metric_table(heads, stats, n_selected, columns, notes, name) -> dict[str, Any]:
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


def significance_table(rows: list[dict[str, Any]], *, baseline: str = BASELINE,
                       metrics: list[str] = SIGNIFICANCE) -> list[dict[str, Any]]:
    """Welch's t-test (unequal variances, two-sided) of each head's selected runs against ``baseline``'s.

    ``p`` and ``t`` are None, with a ``note``, when either side has fewer than two values or both have
    zero variance (the test is undefined there).
    """
    selected = [r for r in rows if r.get("selected")]
    heads = list(dict.fromkeys(r["head"] for r in rows))
    if baseline not in heads:
        return []
    return [welch_test(selected, head, baseline, metric) for head in heads if head != baseline for metric in metrics]


def welch_test(selected: list[dict[str, Any]], head: str, baseline: str, metric: str) -> dict[str, Any]:
    """One entry of :func:`significance_table`: ``metric`` of ``head`` against ``baseline`` over ``selected``."""
    from scipy import stats as scipy_stats

    a, b = list(_per_seed(selected, head, metric).values()), list(_per_seed(selected, baseline, metric).values())
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
    return entry


def _per_seed(selected: list[dict[str, Any]], head: str, metric: str) -> dict[int, float]:
    """seed -> ``metric`` of the head's selected run, for the runs that have a finite value."""
    return {r["seed"]: float(r[metric]) for r in selected if r["head"] == head and _is_number(r.get(metric))}


def format_p(p: float | None) -> str:
    return MISSING if p is None else f"{p:.2g}"


# ---------------------------------------------------------------- the paper's claims

def claim_effects(selected: list[dict[str, Any]], head: str, claim: Claim) -> list[float]:
    """Per seed that both the head and the claim's baseline have: the head's effect (see :class:`Claim`)."""
    a = _per_seed(selected, head, claim.metric)
    if claim.effect == "value":
        return [a[s] for s in sorted(a)]
    b = _per_seed(selected, claim.baseline, claim.metric)
    seeds = sorted(a.keys() & b.keys())
    if claim.effect == "ratio":
        return [a[s] / b[s] for s in seeds if b[s] != 0]
    return [(100.0 if claim.effect == "points" else 1.0) * (a[s] - b[s]) for s in seeds]


def claim_verdict(effects: list[float], *, effect: str, direction: int, size: float | None,
                  p: float | None, alpha: float = ALPHA, threshold: float | None = None,
                  values: Sequence[float] = (), baseline_values: Sequence[float] = ()) -> str:
    """``held`` / ``mixed`` / ``not held`` (MISSING without effects) by :data:`VERDICT_RULE`.

    ``threshold``: the head's own ``values`` must reach it too (see :class:`Claim`); the verdict is the weaker
    of the two. ``baseline_values``: for a ``value`` effect, the baseline's own values; when every one of them
    reaches ``size`` as well, the verdict says that the property does not separate the heads.

    >>> claim_verdict([30.0, 40.0], effect="ratio", direction=+1, size=29.0, p=0.001)
    'held'
    >>> claim_verdict([3.0, 4.0], effect="ratio", direction=+1, size=29.0, p=0.001)
    'mixed'
    >>> claim_verdict([0.6, 0.7], effect="ratio", direction=-1, size=None, p=0.001, threshold=0.1, values=[0.3, 0.35])
    'not held'
    >>> claim_verdict([3, 3], effect="value", direction=+1, size=3, p=None, baseline_values=[3, 3])
    'held (baseline too: does not separate heads)'
    """
    if not effects:
        return MISSING
    if effect == "value":
        verdict = _reached(effects, direction, size)
        if verdict != "not held" and _reached(baseline_values, direction, size) == "held":
            verdict += " " + NO_SEPARATION
        return verdict
    mean = float(np.mean(effects))
    lean = direction * (mean - (1.0 if effect == "ratio" else 0.0))
    big_enough = size is None or direction * (mean - size) >= 0
    verdict = "not held" if lean <= 0 else "held" if big_enough and p is not None and p < alpha else "mixed"
    if threshold is None:
        return verdict
    reached = _reached(values, direction, threshold)
    return MISSING if reached == MISSING else min(verdict, reached, key=VERDICTS.index)


def _reached(values: Sequence[float], direction: int, size: float) -> str:
    """``held`` when every value reaches ``size`` in the paper's direction, ``not held`` when none does."""
    if not len(values):
        return MISSING
    reached = sum(direction * (v - size) >= 0 for v in values)
    return "held" if reached == len(values) else "not held" if reached == 0 else "mixed"


def masking_verdict(ratio: float | None, ratio_baseline: float | None, limit: float = MASKING_LIMIT) -> str:
    """Whether DeepFool overstates a head's robustness, from the mean masking ratios (DeepFool / PGD-L2) of the
    head and of its baseline: only a head above ``limit`` whose baseline is below it, since a ratio both share
    says more about the attack than about the head.

    >>> masking_verdict(1.45, 1.03)
    'DeepFool overstates'
    """
    if not (_is_number(ratio) and _is_number(ratio_baseline)):
        return MISSING
    if ratio <= limit:
        return "DeepFool does not overstate"
    return OVERSTATES if ratio_baseline < limit else f"{OVERSTATES}, baseline too"


def with_masking_ratio(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``rows`` with the masking ratio (:data:`MASKING`) of each run; None where either radius is
    missing or PGD-L2's is 0."""
    key, numerator, denominator = MASKING
    return [{**r, key: _quotient(r.get(numerator), r.get(denominator))} for r in rows]


def _quotient(a: Any, b: Any) -> float | None:
    return a / b if _is_number(a) and _is_number(b) and b != 0 else None


def paired_test(selected: list[dict[str, Any]], head: str, baseline: str, metric: str) -> dict[str, Any]:
    """:func:`welch_test`'s entry, with ``t`` and ``p`` of a paired t-test (two-sided) on the per-seed differences
    head − baseline over the seeds both have, and ``test`` naming the test used.

    In a study the same seed gives both heads the same data order and backbone initialisation, so their values
    are paired, not independent samples. With fewer than two shared seeds the Welch test of all values stays,
    and ``note`` says why.
    """
    from scipy import stats as scipy_stats

    entry = welch_test(selected, head, baseline, metric)
    a, b = _per_seed(selected, head, metric), _per_seed(selected, baseline, metric)
    seeds = sorted(a.keys() & b.keys())
    if len(seeds) < 2:
        reason = f"{len(seeds)} seed(s) shared with {baseline}: Welch, not paired"
        return {**entry, "test": "Welch", "note": "; ".join(filter(None, (reason, entry["note"])))}
    differences = np.array([a[s] - b[s] for s in seeds])
    entry.update(test="paired", t=None, p=None, note=None)
    if np.ptp(differences) == 0:
        entry["note"] = "the same difference on every seed: no test"
        return entry
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t, p = scipy_stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
    entry["t"], entry["p"] = float(t), float(p)
    if caught:
        entry["note"] = "scipy: " + str(caught[0].message).split(". ")[0]
    return entry


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given (Holm 1979).

    With the m p-values sorted ascending, p₍ᵢ₎ becomes max over j ≤ i of min(1, (m − j + 1) p₍ⱼ₎);
    rejecting where the adjusted p < α keeps the family-wise error rate at α under any dependence between
    the tests.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    m = len(p_values)
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda k: p_values[k])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def corrected(row: dict[str, Any]) -> bool:
    """Whether a row of :func:`claims_table` enters the Holm correction: the rows whose verdict rests on a
    p-value (main and secondary rows comparing against the baseline, with a test). The paper's measure and the
    masking ratio are shown, not tested, and a property of the head alone is judged by every seed reaching it."""
    return row["role"] in ("main", "secondary") and row["effect"] != "value" and row["p"] is not None


def claims_table(rows: list[dict[str, Any]], claims: list[Claim] = CLAIMS) -> list[dict[str, Any]]:
    """One entry per claim and head of the study that the claim is made for, with its effect over seeds
    (mean, std ddof=1), the paired test against the claim's baseline (:func:`paired_test`), its p-value adjusted
    by Holm–Bonferroni over the rows of the table that the correction covers (:func:`corrected`), and the
    verdict with the adjusted p (``verdict``) and with the raw one (``verdict_uncorrected``)."""
    selected = [r for r in with_masking_ratio(rows) if r.get("selected")]
    heads = set(r["head"] for r in rows)
    classes = sorted({r["num_classes"] for r in selected if _is_number(r.get("num_classes"))})
    table, judged = [], []
    for claim in claims:
        if claim.baseline not in heads:
            continue
        for head in (h for h in claim.heads if h in heads):
            effects = claim_effects(selected, head, claim)
            test = paired_test(selected, head, claim.baseline, claim.metric)
            size = claim.size
            if size == "K":  # the number of classes; unknown or mixed: no verdict
                size = float(classes[0]) if len(classes) == 1 else None
            table.append({
                "claim": claim.id, "text": claim.text, "head": head, "baseline": claim.baseline,
                "metric": claim.metric, "measure": claim.label, "role": claim.role, "effect": claim.effect,
                "effect_mean": float(np.mean(effects)) if effects else None,
                "effect_std": float(np.std(effects, ddof=1)) if len(effects) > 1 else None,
                "effect_n": len(effects), "mean": test["mean"], "mean_baseline": test["mean_baseline"],
                "n": test["n"], "n_baseline": test["n_baseline"], "test": test["test"], "test_note": test["note"],
                "t": test["t"], "p": test["p"], "p_holm": None,
                "paper_size": size, "threshold": claim.threshold, "paper": claim.paper})
            judged.append((claim, head, effects, size, test))
    family = [r for r in table if corrected(r)]
    for row, p in zip(family, holm([r["p"] for r in family])):
        row["p_holm"] = p
    for row, (claim, head, effects, size, test) in zip(table, judged):
        row["verdict_uncorrected"] = _row_verdict(claim, selected, head, effects, size, test, row["p"])
        row["verdict"] = _row_verdict(claim, selected, head, effects, size, test, row["p_holm"])
    return table


def _row_verdict(claim: Claim, selected, head: str, effects: list[float], size: float | None, test,
                 p: float | None) -> str:
    """The verdict cell of one row of :func:`claims_table`, by the claim's role, with the p-value ``p``."""
    if claim.role == "paper":
        return PAPER_MEASURE if effects else MISSING
    if claim.role == "masking":
        return masking_verdict(test["mean"], test["mean_baseline"], claim.size)
    if size is None and claim.effect == "value":  # "K" with the number of classes unknown or mixed
        return MISSING
    return claim_verdict(effects, effect=claim.effect, direction=claim.direction, size=size, p=p,
                         threshold=claim.threshold, values=list(_per_seed(selected, head, claim.metric).values()),
                         baseline_values=list(_per_seed(selected, claim.baseline, claim.metric).values()))


def masking_sentences(table: list[dict[str, Any]]) -> list[str]:
    """One sentence per head of :func:`claims_table` whose robustness DeepFool overstates (:func:`masking_verdict`)."""
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
    for draw in (_figure_latents, _figure_binarity, _figure_collapse, _figure_accuracy, _figure_gamma):
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
    for i in range(rows_ * cols):
        ax = axes[i // cols][i % cols]
        if i >= shown:
            ax.axis("off")
            continue
        _node_histogram(ax, z[:, i], y, classes)
        ax.set_title(f"node {i}", fontsize=9)
    axes[0][0].legend(title="class", fontsize=6, title_fontsize=7, ncol=2)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, path)
    return path


def plot_latent_comparison(latents: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, *, title: str,
                           nodes: int) -> Path:
    """Figure 1 across heads: one column per head (``name -> (z, y)``), one row per node 0..nodes-1, each panel
    a histogram stacked by class; a head with fewer nodes leaves its lower panels empty."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(latents)
    fig, axes = plt.subplots(nodes, len(names), figsize=(3.4 * len(names), 1.5 * nodes + 0.8), squeeze=False,
                             layout="constrained")
    classes = np.unique(np.concatenate([y for _, y in latents.values()]))
    for j, name in enumerate(names):
        z, y = latents[name]
        axes[0][j].set_title(name, fontsize=10)
        for i in range(nodes):
            ax = axes[i][j]
            if i >= z.shape[1]:
                ax.axis("off")
                continue
            _node_histogram(ax, z[:, i], y, classes)
            if j == 0:
                ax.set_ylabel(f"node {i}", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="class", loc="outside right upper", fontsize=7, title_fontsize=8)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, path)
    return path


def _node_histogram(ax, values: np.ndarray, y: np.ndarray, classes: np.ndarray) -> None:
    """Histogram of one node stacked by class, one filled step polygon per class (a bar per bin and class
    would be 600 artists per panel and dominate the report's time)."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    low, high = float(values.min()), float(values.max())
    edges = np.linspace(low, high, 61) if high > low else np.array([low - 0.5, high + 0.5])
    bottom = np.zeros(len(edges) - 1)
    for j, c in enumerate(classes):
        counts = np.histogram(values[y == c], bins=edges)[0]
        ax.stairs(bottom + counts, edges, baseline=bottom, fill=True, color=cmap(j % cmap.N), label=str(c))
        bottom = bottom + counts
    ax.tick_params(labelsize=7)


def _figure_latents(out, selected, heads, histories, notes):
    runs = {}
    for head in FIGURE1_HEADS:  # the selected run of the smallest seed that saved its latents
        candidates = sorted((r for r in selected if r["head"] == head), key=lambda r: r["seed"])
        run = next((r for r in candidates if (out / r["run"] / "latents.npz").exists()), None)
        if run is not None:
            runs[head] = run
    if not runs:
        notes.append(f"Figure 1 (latent histograms) skipped: no selected {', '.join(FIGURE1_HEADS)} run with "
                     "latents.npz (the study has none of these heads, they diverged, or eval.save_latents is off).")
        return None
    latents = {}
    for head, run in runs.items():
        with np.load(out / run["run"] / "latents.npz") as arrays:
            latents[f"{head} (lr={run['lr']:g}, seed={run['seed']})"] = (arrays["z_train"], arrays["y_train"])
    widths = {head: z.shape[1] for head, (z, _) in zip(runs, latents.values())}
    # the penultimate layers set the layout; no_pen's z is the wide backbone output, cut to the same nodes
    layer = [w for head, w in widths.items() if head != "no_pen"] or list(widths.values())
    nodes = min(MAX_NODES, max(layer))
    path = out / "figures" / "fig1_latent_histograms.png"
    plot_latent_comparison(latents, path, nodes=nodes,
                           title="Latent histograms per node (training set, last epoch)")
    cut = [f"{head} shows its first {nodes} of {w}" for head, w in widths.items() if w > nodes]
    missing = [h for h in FIGURE1_HEADS if h not in runs]
    return path, (f"Figure 1: histograms of the training-set latents z at the last epoch of the selected run of "
                  f"the smallest seed of {', '.join(runs)}, one column per head and one row per node (nodes 0–"
                  f"{nodes - 1}), stacked by class. " + (f"{'; '.join(cut)} dimensions (no_pen's z is the backbone's "
                  "feature vector, as it has no penultimate layer). " if cut else "") +
                  (f"Not shown (no selected run with latents): {', '.join(missing)}. " if missing else "") +
                  "Under latent point collapse every class sits at one of two values in each node (paper, Fig. 1); "
                  "each panel has its own x-axis.")


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


def _run_curve(history, key):
    """Epochs and values of ``key`` in one run's history records that have it."""
    points = [(int(r["epoch"]), float(r[key])) for r in history if _is_number(r.get(key))]
    return np.array([e for e, _ in points]), np.array([v for _, v in points])


def _panel_figure(out, selected, heads, histories, panels, name, title, tpt=False, per_run=False):
    """One panel per ``(key, label, log)`` that some head has, curves coloured by head: the mean over the selected
    seeds with a ± 1 std band, or (``per_run``) one line per selected run. Returns (path, keys shown) or None."""
    import matplotlib.pyplot as plt

    colors = _colors(heads)

    def curves(head, key):  # [(epochs, values, std or None)]
        if per_run:
            runs = sorted((r for r in selected if r["head"] == head), key=lambda r: r["seed"])
            return [(*_run_curve(histories.get(r["run"], []), key), None) for r in runs]
        return [_curves(selected, head, histories, key)]

    present = [(k, label, log) for k, label, log in panels
               if any(len(c[0]) for h in heads for c in curves(h, k))]
    if not present:
        return None
    fig, axes = plt.subplots(len(present), 1, figsize=(8, 2.4 * len(present) + 0.4), sharex=True, squeeze=False,
                             layout="constrained")
    for ax, (key, label, log) in zip(axes[:, 0], present):
        positive = True
        for head in heads:
            labelled = False
            for epochs, mean, std in curves(head, key):
                if not len(epochs):
                    continue
                positive = positive and bool((mean > 0).all())
                ax.plot(epochs, mean, marker="." if len(epochs) <= 50 else None, color=colors[head],
                        label=None if labelled else head, linewidth=1.2 if per_run else 1.5)
                labelled = True
                if std is not None:
                    ax.fill_between(epochs, mean - std, mean + std, color=colors[head], alpha=0.15, linewidth=0)
            if tpt:
                onsets = [r["tpt_epoch"] for r in selected if r["head"] == head and _is_number(r.get("tpt_epoch"))]
                if onsets:
                    ax.axvline(float(np.mean(onsets)), color=colors[head], linestyle="--", linewidth=1)
            if per_run:  # where a run's training accuracy collapsed while γ rose
                for r in selected:
                    if r["head"] == head and _is_number(r.get("accuracy_drop_epoch")):
                        ax.axvline(float(r["accuracy_drop_epoch"]), color=colors[head], linestyle=":", linewidth=1)
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


def _figure_gamma(out, selected, heads, histories, notes):
    ib_heads = [h for h in heads if _compresses(h)]
    if not ib_heads:
        return None
    made = _panel_figure(out, selected, ib_heads, histories, GAMMA, "fig5_gamma_pressure.png",
                         "γ, pressure and training accuracy of the IB heads", per_run=True)
    if made is None or "gamma" not in made[1]:
        notes.append("γ figure skipped: the IB runs' histories have no `gamma` (trained by an older lpc).")
        return None
    missing = [label for key, label, _ in GAMMA if key not in made[1]]
    return made[0], ("γ figure: the compression weight γ, the pressure γ / r² that it puts on the latents (r: mean "
                     "row norm of the classifier weights; a rescaling (W, z) → (cW, z/c) leaves the logits alone "
                     "and divides γ‖z‖² by c², so γ alone overstates the pull), r itself, the mean softmax "
                     "probability of the true class over the epoch's training batches, and the training accuracy, "
                     "one line per selected run of each IB head; γ, pressure and r on a log scale. Dotted lines: "
                     "epochs where a run's training accuracy fell more than 5 points below its best while γ rose."
                     + (f" Not in these histories: {', '.join(missing)}." if missing else ""))


def _compresses(head: str) -> bool:
    """Whether ``head`` is of the IB family (its loss has the compression term γ‖z‖²)."""
    from .heads import HEADS

    return head in HEADS and HEADS[head].compression


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


def _report(out, rows, heads, stats, n_selected, selection, table1, table2, significance, claims, figures,
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
    drops = [r for r in rows if _is_number(r.get("accuracy_drop_epoch"))]
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
