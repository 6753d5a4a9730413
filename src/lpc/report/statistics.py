"""Statistics of a study's selected runs: per-seed effects, Welch and paired t-tests, Holm's correction,
the paper's claims with their verdicts, and the masking ratio DeepFool / PGD-L2.

Pure functions of the rows of ``results.csv`` (dicts): nothing here reads or writes files; the only text is
the verdicts' words and the rule that gives them (:data:`VERDICT_RULE`).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._extras import require

BASELINE = "no_pen"
MISSING = "—"  # a value the study does not have
SIGNIFICANCE = ["test_accuracy", "robustness_deepfool", "auroc_mahalanobis", "auroc_odin"]
ALPHA = 0.05  # significance level of the claims' verdicts
# The two-point criterion of C2: σ̄ (Eq. 26) is measured on per-dimension standardised latents, so σ̄ ≤ 0.1 says
# that each node's values sit at two points whose spread is at most a tenth of the node's std (mean over nodes)
TWO_POINT_SIGMA = 0.1
# (derived key, numerator, denominator), per run: DeepFool's radius over PGD-L2's. DeepFool follows the gradient
# and stops at its linearised boundary, so a flat or noisy gradient inflates its radius; PGD-L2 searches the
# radius by attacking, which masking cannot inflate. A ratio near 1 says DeepFool measured the same thing
MASKING = ("masking_ratio", "robustness_deepfool", "robustness_pgd_l2")
MASKING_LIMIT = 1.2  # above it, DeepFool overstates a head's robustness (when the baseline's ratio is below it)
OVERSTATES = "DeepFool overstates"
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
    scipy_stats = require("scipy.stats", "lpc report's statistics")

    a, b = list(_per_seed(selected, head, metric).values()), list(_per_seed(selected, baseline, metric).values())
    entry = {"head": head, "metric": metric, "mean": float(np.mean(a)) if a else None,
             "mean_baseline": float(np.mean(b)) if b else None, "n": len(a), "n_baseline": len(b),
             "t": None, "p": None, "note": None}
    if len(a) < 2 or len(b) < 2:
        entry["note"] = f"n<2 ({len(a)} vs {len(b)} seeds): no test"
    elif np.var(a) == 0 and np.var(b) == 0:
        entry["note"] = "zero variance in both groups: no test"
    else:
        # one group without spread (two seeds with the same test accuracy are common): Welch's test is then a
        # one-sample t-test against that value, exact, but scipy warns of "catastrophic cancellation"
        flat = [name for name, values in ((head, a), (baseline, b)) if np.ptp(values) == 0]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if flat:
                warnings.filterwarnings("ignore", message="Precision loss occurred")
            t, p = scipy_stats.ttest_ind(a, b, equal_var=False)
        entry["t"], entry["p"] = float(t), float(p)
        notes = [f"{name}: the same value on every seed" for name in flat]
        notes += ["scipy: " + str(w.message).split(". ")[0] for w in caught[:1]]  # e.g. nearly identical values
        entry["note"] = "; ".join(notes) or None
    return entry


def _per_seed(selected: list[dict[str, Any]], head: str, metric: str) -> dict[int, float]:
    """seed -> ``metric`` of the head's selected run, for the runs that have a finite value."""
    return {r["seed"]: float(r[metric]) for r in selected if r["head"] == head and is_number(r.get(metric))}


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
    if not (is_number(ratio) and is_number(ratio_baseline)):
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
    return a / b if is_number(a) and is_number(b) and b != 0 else None


def paired_test(selected: list[dict[str, Any]], head: str, baseline: str, metric: str) -> dict[str, Any]:
    """:func:`welch_test`'s entry, with ``t`` and ``p`` of a paired t-test (two-sided) on the per-seed differences
    head − baseline over the seeds both have, and ``test`` naming the test used.

    In a study the same seed gives both heads the same data order and backbone initialisation, so their values
    are paired, not independent samples. With fewer than two shared seeds the Welch test of all values stays,
    and ``note`` says why.
    """
    scipy_stats = require("scipy.stats", "lpc report's statistics")

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
    classes = sorted({r["num_classes"] for r in selected if is_number(r.get("num_classes"))})
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


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool: a value to compute with (a missing cell of results.csv is None)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
