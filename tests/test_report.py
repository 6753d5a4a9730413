"""lpc report on synthetic studies: tables against numpy, Welch's test against its formula and scipy, the claims
table and its verdict rule, rounding, figures, HTML."""
import base64
import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from lpc.cli import main
from lpc.report import (MISSING, NO_SEPARATION, OVERSTATES, PAPER_MEASURE, build_report, claim_verdict,
                        format_mean_std, format_p, masking_verdict, welch_test)
from lpc.study import RunSpec, collect_results, write_results

HEADS = ["ib", "no_pen", "lin_pen"]
EPOCHS = [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]  # ≥ 8 evaluations per run, as the embedded default
DROP = ("ib", 0.002, 1)  # the run whose training accuracy collapsed while γ rose (never selected: lr 0.002)
PNG = b"\x89PNG\r\n\x1a\n"
GEOMETRY = ["binarity_loglik_train", "binarity_sigma_train", "binarity_peak_distance_train", "nc1_per_dim_train",
            "equinorm_train", "equiangularity_train", "max_angle_train"]


def synthetic_study(root: Path, *, files: bool = True, new_keys: bool = True) -> dict:
    """3 heads × 2 lrs × 3 seeds of fake run folders. lr 0.001 always wins on validation while lr 0.002 has
    the better test accuracy; lin_pen diverges at both lrs for seeds 1 and 2 (so n = 1). With ``files``, the
    runs also have history.jsonl (accuracy and geometry curves, and γ diagnostics for ib) and latents.npz
    (ib: 4 nodes on a hypercube; lin_pen 4 nodes, no_pen 20 backbone features). ``new_keys=False`` leaves out
    what older lpc versions did not write (scale-free collapse, γ diagnostics, accuracy drops). ib's binarity σ̄
    meets the two-point criterion (≤ 0.1), the baselines' does not; ib's DeepFool radius is ×40–80 no_pen's,
    but 100–140 times its own PGD-L2 radius (masking), so that its PGD-L2 radius lies below no_pen's, whose
    DeepFool radius is 1–1.1 times its PGD-L2 radius. Returns the planted values of the runs that must be
    selected, per head and metric."""
    rng = np.random.default_rng(1)
    planted: dict = {h: {} for h in HEADS}
    for head in HEADS:
        for seed in range(3):
            for lr in (0.001, 0.002):
                folder = root / RunSpec(head, lr, seed).path
                folder.mkdir(parents=True)
                if head == "lin_pen" and seed > 0:
                    summary = {"status": "diverged", "reason": f"loss became nan at epoch 7 (seed {seed})"}
                else:
                    offset = {"ib": 0.0, "no_pen": -0.05, "lin_pen": -0.1}[head]
                    deepfool = rng.uniform(0.6, 0.8) if head == "ib" else rng.uniform(0.01, 0.015)
                    masking = rng.uniform(100, 140) if head == "ib" else rng.uniform(1.0, 1.1)
                    summary = {"status": "finished", "reason": None, "tpt_epoch": 10 + 5 * seed,
                               "train_accuracy": 1.0, "val_accuracy": 0.9 if lr == 0.001 else 0.8,
                               "test_accuracy": 0.85 + offset + 0.01 * rng.normal() + (0.05 if lr == 0.002 else 0),
                               "sigma_w_train": 10 ** rng.uniform(-13, -11) if "ib" in head else rng.uniform(0.1, 1),
                               "norm_coeff_var_train": rng.uniform(0.01, 0.2), "entropy_train": rng.normal(-80, 2),
                               "robustness_deepfool": deepfool, "robustness_pgd_l2": deepfool / masking,
                               "robustness_bisection": rng.uniform(0.1, 0.5),
                               "deepfool_flip_rate": 1.0, "auroc_mahalanobis": rng.uniform(0.8, 0.9),
                               "auroc_odin": rng.uniform(0.7, 0.9), "num_classes": 3,
                               "nc1_train": rng.uniform(0.001, 0.01) if head == "ib" else rng.uniform(0.5, 1.0),
                               "code_vertices_train": 3 if head == "ib" else 2,
                               "code_decode_accuracy_train": rng.uniform(0.995, 1.0) if head == "ib"
                               else rng.uniform(0.6, 0.7),
                               "binarity_sigma_train": rng.uniform(0.03, 0.07) if head == "ib"
                               else rng.uniform(0.4, 0.6)}
                    if new_keys:
                        drop = (head, lr, seed) == DROP
                        summary.update({"sigma_w_rel_train": rng.uniform(1e-4, 1e-3) if head == "ib"
                                        else rng.uniform(0.2, 0.4), "entropy_rel_train": rng.normal(-3, 0.1),
                                        "accuracy_drop_epoch": 14 if drop else None,
                                        "accuracy_drop_gamma": 123.4 if drop else None})
                    if lr == 0.001:
                        for key, value in summary.items():
                            planted[head].setdefault(key, []).append(value)
                summary.update({"head": head, "lr": lr, "seed": seed, "dataset": "synthetic", "device": "cpu",
                                "wall_seconds": 1.0})
                (folder / "summary.json").write_text(json.dumps(summary))
                if files and summary["status"] == "finished":
                    history = [{"epoch": e, "train_accuracy": min(1.0, 0.5 + e / 20), "test_accuracy": 0.4 + e / 50,
                                **{k: float(rng.uniform(0.1, 1.0)) for k in GEOMETRY}} for e in EPOCHS]
                    if head == "ib" and new_keys:
                        for record in history:
                            gamma, scale = 0.01 * 1.35 ** record["epoch"], 1.0 + 0.1 * record["epoch"]
                            record.update({"gamma": gamma, "classifier_scale": scale, "pressure": gamma / scale ** 2,
                                           "true_class_prob": min(0.99, 0.5 + record["epoch"] / 40)})
                    (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
                    y = np.repeat(np.arange(3), 30)
                    if head == "ib":
                        codes = np.array([[1, 1, -1, 1], [-1, 1, 1, 1], [1, -1, -1, -1]], dtype=np.float32)
                        z = codes[y] + 0.01 * rng.normal(size=(len(y), 4)).astype(np.float32)
                    else:
                        z = rng.normal(size=(len(y), 4 if head == "lin_pen" else 20)).astype(np.float32) + y[:, None]
                    np.savez(folder / "latents.npz", z_train=z, y_train=y, z_test=z, y_test=y,
                             pred_train=y, pred_test=y)
    write_results(root / "results.csv", collect_results(root))
    return planted


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def edit_results(root):
    """Yields each row of results.csv for the loop to change; writes them back when the loop ends."""
    rows = read_csv(root / "results.csv")
    yield from rows
    with open(root / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


class TagChecker(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.images = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def welch(a, b):
    """Welch's t-test written out: t with the Welch–Satterthwaite degrees of freedom, two-sided p."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return t, 2 * stats.t.sf(abs(t), df)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    planted = synthetic_study(root)
    return root, planted, build_report(root)


def test_tables_are_the_mean_and_sample_std_of_the_validation_selected_runs(study):
    root, planted, _ = study
    selection = read_csv(root / "selection.csv")
    assert {(s["head"], s["seed"]): (s["lr"], s["lr_by_test"]) for s in selection if s["lr"]} == {
        (h, str(seed)): ("0.001", "0.002") for h in HEADS for seed in range(3) if h != "lin_pen" or seed == 0}
    table1 = {r["head"]: r for r in read_csv(root / "table1.csv")}
    table2 = {r["head"]: r for r in read_csv(root / "table2.csv")}
    for head in HEADS:
        n = 1 if head == "lin_pen" else 3
        assert int(table1[head]["n"]) == n and int(table2[head]["n"]) == n
        for table, key in ((table1, "sigma_w_train"), (table1, "entropy_train"), (table2, "robustness_deepfool"),
                           (table2, "test_accuracy"), (table2, "auroc_odin")):
            values = np.array(planted[head][key])
            assert float(table[head][f"{key}_mean"]) == pytest.approx(values.mean(), rel=1e-12)
            if n > 1:
                assert float(table[head][f"{key}_std"]) == pytest.approx(values.std(ddof=1), rel=1e-12)
            else:
                assert table[head][f"{key}_std"] in ("", "nan")
    md = (root / "table1.md").read_text()
    assert ("| head | n | Σ_W | coeff. of var. | entropy | Σ_W / Σ_T (scale-free) | entropy of z / rms(z) "
            "(scale-free) |") in md and "training-set" in md
    assert re.search(r"\| ib \| 3 \| \(\d\.\d+ ± \d\.\d+\)e-1[123] \|", md)  # tiny: one shared power of ten
    rel = np.array(planted["ib"]["sigma_w_rel_train"])
    assert float(table1["ib"]["sigma_w_rel_train_mean"]) == pytest.approx(rel.mean(), rel=1e-12)
    assert format_mean_std(rel.mean(), rel.std(ddof=1)) in md
    md2 = (root / "table2.md").read_text()
    ib_accuracy = np.array(planted["ib"]["test_accuracy"]) * 100
    assert f"| ib | 3 | " in md2 and format_mean_std(ib_accuracy.mean(), ib_accuracy.std(ddof=1)) in md2
    assert "| lin_pen | 1 | " in md2 and "| 1 ± 0 |" in md2  # one seed: no std; zero std: ± 0


def test_welch_t_test_against_no_pen(study):
    root, planted, _ = study
    table = json.loads((root / "significance.json").read_text())
    ib = {r["metric"]: r for r in table if r["head"] == "ib"}
    assert set(ib) == {"test_accuracy", "robustness_deepfool", "auroc_mahalanobis", "auroc_odin"}
    for metric, row in ib.items():
        t, p = welch(planted["ib"][metric], planted["no_pen"][metric])
        assert row["t"] == pytest.approx(t, rel=1e-9) and row["p"] == pytest.approx(p, rel=1e-6)
        assert (row["n"], row["n_baseline"]) == (3, 3)
    assert ib["robustness_deepfool"]["p"] < 0.01  # planted: ib's robustness is far above no_pen's
    lin = [r for r in table if r["head"] == "lin_pen"]
    assert lin and all(r["p"] is None and r["t"] is None and r["n"] == 1 and "n<2" in r["note"] for r in lin)
    assert "| lin_pen | test_accuracy |" in (root / "significance.md").read_text()


def test_welch_test_against_a_baseline_with_one_value_on_every_seed_is_a_one_sample_test():
    # make demo's no_pen had 96.45% test accuracy on both seeds; scipy then warns of "catastrophic cancellation",
    # which the report used to print as if the p-value were unreliable
    a, b = [0.961, 0.9605, 0.9625], [0.9645, 0.9645, 0.9645]
    rows = [{"head": head, "seed": seed, "test_accuracy": value}
            for head, values in (("ib", a), ("no_pen", b)) for seed, value in enumerate(values)]
    entry = welch_test(rows, "ib", "no_pen", "test_accuracy")
    t = (np.mean(a) - b[0]) / (np.std(a, ddof=1) / np.sqrt(len(a)))
    assert entry["t"] == pytest.approx(t, rel=1e-9)
    assert entry["p"] == pytest.approx(2 * stats.t.sf(abs(t), len(a) - 1), rel=1e-9)
    assert entry["note"] == "no_pen: the same value on every seed"


def test_report_html_is_self_contained_with_png_figures(study):
    root, _, files = study
    page = (root / "report.html").read_text()
    checker = TagChecker()
    checker.feed(page)
    assert page.startswith("<!DOCTYPE html>") and not checker.errors and checker.stack == []
    assert '<img src="data:image/png;base64,' in page
    assert len(checker.images) == 5  # latent histograms, binarity, neural collapse, accuracy, γ
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    for name in ("fig1_latent_histograms.png", "fig2_binarity.png", "fig3_neural_collapse.png", "fig4_accuracy.png",
                 "fig5_gamma_pressure.png"):
        assert (root / "figures" / name).read_bytes().startswith(PNG) and files[name] == root / "figures" / name
    assert "<table>" in page and "<td>ib</td>" in page and "src=\"figures/" not in page
    md = (root / "report.md").read_text()
    for text in ("Selection rule", "validation accuracy", "ties go to the smaller", "ddof=1",
                 "Table 1", "Table 2", "Significance against no_pen", "](figures/fig3_neural_collapse.png)"):
        assert text in md
    # runs per head, divergences and their reasons
    assert "| lin_pen | 6 | 2 | 4 | 0 | 1 |" in md
    assert "`runs/lin_pen/lr=0.002/seed=2`: diverged — loss became nan at epoch 7 (seed 2)" in md
    assert md.count(": diverged — ") == 4


def test_missing_data_skips_figures_with_a_note(tmp_path):
    synthetic_study(tmp_path, files=False, new_keys=False)  # also as an older lpc: no scale-free keys, no drops
    for row in edit_results(tmp_path):  # as if eval.geometry and eval.robustness were switched off
        for key in ("sigma_w_train", "norm_coeff_var_train", "entropy_train", "robustness_deepfool"):
            row.pop(key)
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Figure 1 (latent histograms) skipped" in md and "Figure 2 (binarity) skipped" in md
    assert "Figure 3 (neural collapse) skipped" in md and "Accuracy curves skipped" in md
    assert ("Table 1: no values for `sigma_w_train`, `norm_coeff_var_train`, `entropy_train`, "
            "`sigma_w_rel_train`, `entropy_rel_train`") in md
    assert f"| ib | 3 | {' | '.join([MISSING] * 5)} |" in (tmp_path / "table1.md").read_text()
    assert "Not recorded: these runs were trained by an lpc without this check." in md
    claims = md[md.index("## Claims of the paper"):md.index("## Study")]  # rows stay, without values or verdict
    assert (f"| ib vs no_pen | Σ_W / Σ_T (train, scale-free) | {MISSING} | ≤ ×0.1 (Table 1: Σ_W 1e-12–1e-10 vs "
            f"0.007–0.03, not scale-free) | {MISSING} | {MISSING} | 0 / 0 | {MISSING} |") in claims
    assert "| ib vs no_pen | NC1 (train) | ×" in claims
    assert "data:image/png" not in (tmp_path / "report.html").read_text()
    assert not list((tmp_path / "figures").glob("*.png"))


def test_lpc_report_rebuilds_from_results(study, tmp_path_factory, capsys):
    root, _, _ = study
    first = (root / "table2.csv").read_text()
    for name in ("report.html", "report.md", "table2.csv", "figures/fig1_latent_histograms.png"):
        (root / name).unlink()
    assert main(["report", str(root)]) == 0
    assert (root / "table2.csv").read_text() == first
    assert (root / "report.html").exists() and (root / "figures" / "fig1_latent_histograms.png").exists()
    empty = tmp_path_factory.mktemp("empty")
    assert main(["report", str(empty)]) == 2
    assert "results.csv: not found" in capsys.readouterr().err


@pytest.mark.parametrize("mean, std, text", [
    (0.1747, 0.002415, "0.1747 ± 0.0024"),  # the std's two significant digits set the mean's last decimal
    (97.3712, 0.4312, "97.37 ± 0.43"),
    (0.5, 0.0996, "0.50 ± 0.10"),  # 0.0996 rounds up to a new decade: still two digits, not 0.100
    (3562.544, 272.49, "3560 ± 270"),  # digits left of the point
    (3.176e-12, 9.552e-13, "(3.18 ± 0.96)e-12"),  # tiny: one shared power of ten
    (6.599e-11, 1.276e-10, "(0.7 ± 1.3)e-10"),  # the larger of the two sets the power
    (2.5e6, 1.2e5, "(2.50 ± 0.12)e+06"),
    (-0.0001, 0.02, "0.000 ± 0.020"),  # no "-0.000"
    (2.0, 0.0, "2 ± 0"),
    (0.123456, float("nan"), "0.1235"),  # one seed: 4 significant digits, no std
    (float("nan"), 0.1, MISSING),
])
def test_mean_std_is_rounded_to_two_significant_digits_of_the_std(mean, std, text):
    assert format_mean_std(mean, std) == text


@pytest.mark.parametrize("effects, effect, direction, size, p, verdict", [
    ([40.0, 50.0, 60.0], "ratio", +1, 29.0, 0.001, "held"),
    ([40.0, 50.0, 60.0], "ratio", +1, 29.0, 0.2, "mixed"),  # big enough, but not significant
    ([3.0, 4.0, 5.0], "ratio", +1, 29.0, 0.001, "mixed"),  # significant, but short of the paper's size
    ([0.5, 0.8], "ratio", +1, 29.0, 0.001, "not held"),  # the other way
    ([1e-3, 2e-3], "ratio", -1, 0.1, 0.01, "held"),
    ([1e-3, 2e-3], "ratio", -1, 0.1, None, "mixed"),  # no test possible (n < 2 on one side)
    ([0.3, 0.5], "ratio", -1, 0.1, 0.01, "mixed"),
    ([0.4, 0.6], "points", +1, None, 0.03, "held"),
    ([-0.4, -0.6], "points", +1, None, 0.03, "not held"),
    ([0.0, 0.0], "difference", +1, None, None, "not held"),  # no effect at all
    ([10, 10, 10], "value", +1, 10.0, None, "held"),  # C2: every seed reaches the paper's value
    ([10, 9, 10], "value", +1, 10.0, None, "mixed"),
    ([0.9, 0.95], "value", +1, 0.99, 0.001, "not held"),
    ([], "ratio", +1, 29.0, None, MISSING),
])
def test_verdict_rule(effects, effect, direction, size, p, verdict):
    assert claim_verdict(effects, effect=effect, direction=direction, size=size, p=p) == verdict


def holm_by_hand(p):
    """Holm's step-down adjustment written out: the k-th smallest p times (m - k + 1), running maximum, cap 1."""
    order = np.argsort(p)
    scaled = np.minimum(1.0, (len(p) - np.arange(len(p))) * np.asarray(p)[order])
    adjusted = np.empty(len(p))
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def test_holm_matches_the_hand_computation():
    from lpc.report import holm

    p = [0.04, 0.001, 0.03, 0.5, 0.012, 0.03]
    assert holm(p) == pytest.approx(holm_by_hand(p).tolist(), abs=1e-15)
    # by the definition: 0.001 × 6, 0.012 × 5, the two 0.03 × 4 (then capped below by the running maximum), ...
    assert holm(p) == pytest.approx([0.12, 0.006, 0.12, 0.5, 0.06, 0.12])


def test_claims_table_opens_the_report_with_effects_welch_p_and_verdicts(study):
    root, planted, files = study
    md = (root / "report.md").read_text()
    sections = re.findall(r"^## (.+)$", md, flags=re.M)
    assert sections[:2] == ["Claims of the paper", "Study"]
    first_table = md[md.index("\n|"):]
    assert first_table.startswith("\n| claim | head vs baseline | measure | effect (mean ± std over seeds) | paper | "
                                  "p | Holm p | n | verdict |")
    assert "adjusted by Holm–Bonferroni across every row whose verdict rests on a p-value" in md
    assert "**held** when the effect points the paper's way" in md  # the rule is stated beside the table
    page = (root / "report.html").read_text()
    first = page.index("<table>")  # the page's first table is the claims table, before the study's details
    assert page[first:].startswith("<table><thead><tr><th>claim</th>") and first < page.index("Selection rule")
    assert files["claims.csv"] == root / "claims.csv" and (root / "claims.md").exists()
    table = read_csv(root / "claims.csv")
    rows = {(r["head"], r["baseline"], r["metric"]): r for r in table}
    assert {h for h, _, _ in rows} == {"ib"}  # wide_ib and narrow_ib are not in this study
    ib, no_pen, lin_pen = (planted[h] for h in HEADS)
    # the family of the correction: the main and secondary rows that compare against a baseline with a p-value
    family = [r for r in table if r["role"] in ("main", "secondary") and r["effect"] != "value" and r["p"]]
    assert [r for r in table if r["p_holm"]] == family and len(family) > 5
    holm = dict(zip((id(r) for r in family), holm_by_hand([float(r["p"]) for r in family])))
    for r in family:
        assert float(r["p_holm"]) == pytest.approx(holm[id(r)], rel=1e-12)

    def check(key, effects, a, b, verdict):
        row = rows[key]
        assert float(row["effect_mean"]) == pytest.approx(np.mean(effects), rel=1e-12)
        assert float(row["effect_std"]) == pytest.approx(np.std(effects, ddof=1), rel=1e-12)
        t, p = stats.ttest_rel(a, b)  # seeds 0, 1, 2 on both sides: paired by seed
        diff = np.subtract(a, b)  # the paired t written out: mean difference over its standard error
        assert t == pytest.approx(diff.mean() / (diff.std(ddof=1) / np.sqrt(len(diff))), rel=1e-12)
        assert row["test"] == "paired"
        assert float(row["t"]) == pytest.approx(t, rel=1e-9) and float(row["p"]) == pytest.approx(p, rel=1e-9)
        assert row["verdict"] == verdict(float(row["p_holm"]) if row["p_holm"] else None), (key, effects, p)
        return p

    # seeds 0, 1, 2 of ib and no_pen are paired by seed
    deepfool = np.divide(ib["robustness_deepfool"], no_pen["robustness_deepfool"])
    assert deepfool.min() > 29.3  # planted above the paper's smallest ratio for ib (×29)
    p = check(("ib", "no_pen", "robustness_deepfool"), deepfool, ib["robustness_deepfool"],
              no_pen["robustness_deepfool"], lambda p_holm: PAPER_MEASURE)  # shown, but not what decides C3
    assert p < 0.05 and rows[("ib", "no_pen", "robustness_deepfool")]["p_holm"] == ""  # not in the family
    points = 100 * (np.array(ib["test_accuracy"]) - no_pen["test_accuracy"])
    assert points.mean() > 0
    p = check(("ib", "no_pen", "test_accuracy"), points, ib["test_accuracy"], no_pen["test_accuracy"],
              lambda p_holm: "held" if p_holm < 0.05 else "mixed")
    rel = np.divide(ib["sigma_w_rel_train"], no_pen["sigma_w_rel_train"])
    check(("ib", "no_pen", "sigma_w_rel_train"), rel, ib["sigma_w_rel_train"], no_pen["sigma_w_rel_train"],
          lambda p_holm: "held" if p_holm < 0.05 else "mixed")
    # against lin_pen only seed 0 exists on both sides: no paired test, Welch says why; no test, so at best mixed
    row = rows[("ib", "lin_pen", "sigma_w_rel_train")]
    assert float(row["effect_mean"]) == pytest.approx(ib["sigma_w_rel_train"][0] / lin_pen["sigma_w_rel_train"][0])
    assert row["p"] == "" and row["verdict"] == "mixed" and (row["n"], row["n_baseline"]) == ("3", "1")
    assert row["test"] == "Welch" and row["test_note"].startswith("1 seed(s) shared with lin_pen: Welch, not paired")
    pgd = np.divide(ib["robustness_pgd_l2"], no_pen["robustness_pgd_l2"])
    assert pgd.max() < 1  # planted: masking alone lifts ib's DeepFool radius
    check(("ib", "no_pen", "robustness_pgd_l2"), pgd, ib["robustness_pgd_l2"], no_pen["robustness_pgd_l2"],
          lambda p_holm: "not held")
    # a verdict the correction changed says so, in the CSV and in the table
    changed = [r for r in family if r["verdict"] != r["verdict_uncorrected"]]
    assert changed  # the planted study has a row whose p < 0.05 does not survive the correction
    for r in changed:
        assert float(r["p"]) < 0.05 <= float(r["p_holm"])
        assert (r["verdict_uncorrected"], r["verdict"]) == ("held", "mixed")
        assert f"| mixed (held without Holm) |" in md
    assert all(r["verdict"] == r["verdict_uncorrected"] for r in table if r not in changed)
    # C2's secondary rows: every ib seed sits on K = 3 vertices and decodes at ≥ 0.995; no_pen on 2 (< 0.7)
    assert rows[("ib", "no_pen", "code_vertices_train")]["verdict"] == "held"
    assert rows[("ib", "no_pen", "code_decode_accuracy_train")]["verdict"] == "held"
    assert rows[("ib", "no_pen", "code_vertices_train")]["role"] == "secondary"
    claims = md[md.index("## Claims of the paper"):md.index("## Study")]
    assert "| ib vs no_pen | secondary: vertices occupied (train) | 3 ± 0 (no_pen: 2) |" in claims
    cell = "×" + format_mean_std(deepfool.mean(), deepfool.std(ddof=1))
    p = format_p(float(rows[("ib", "no_pen", "robustness_deepfool")]["p"]))
    assert (f"| ib vs no_pen | paper's measure: robustness DeepFool | {cell} | ≥ ×29 (×29–52, DeepFool, Table 2) "
            f"| {p} | {MISSING} | 3 / 3 | {PAPER_MEASURE} |") in claims
    assert f"| {format_mean_std(points.mean(), points.std(ddof=1))} points |".replace("| ", "| +", 1) in claims


@pytest.mark.parametrize("effects, p, values, verdict", [
    ([0.1, 0.12], 0.001, [0.05, 0.06], "held"),  # separates from the baseline and meets σ̄ ≤ 0.1 on every seed
    ([0.1, 0.12], 0.001, [0.05, 0.3], "mixed"),  # meets the criterion on one seed of two
    ([0.6, 0.7], 0.001, [0.3, 0.35], "not held"),  # separates, but no seed sits at two points
    ([0.1, 0.12], 0.2, [0.05, 0.06], "mixed"),  # at two points, but not significantly below the baseline
    ([1.1, 1.3], 0.001, [0.05, 0.06], "not held"),  # the baseline is more binary still
    ([0.1, 0.12], 0.001, [], MISSING),
])
def test_verdict_rule_with_the_two_point_threshold(effects, p, values, verdict):
    assert claim_verdict(effects, effect="ratio", direction=-1, size=None, p=p, threshold=0.1,
                         values=values) == verdict


@pytest.mark.parametrize("values, baseline, verdict", [
    ([3, 3], [2, 2], "held"),
    ([3, 3], [3, 3], f"held {NO_SEPARATION}"),
    ([3, 2], [3, 3], f"mixed {NO_SEPARATION}"),
    ([3, 3], [3, 2], "held"),  # the baseline reaches K on one seed only: it still separates on the other
    ([2, 2], [3, 3], "not held"),
])
def test_a_property_the_baseline_has_too_does_not_separate_heads(values, baseline, verdict):
    assert claim_verdict(values, effect="value", direction=+1, size=3.0, p=None, baseline_values=baseline) == verdict


@pytest.mark.parametrize("ratio, baseline, verdict", [
    (1.45, 1.03, OVERSTATES), (1.45, 1.3, f"{OVERSTATES}, baseline too"), (1.2, 1.0, "DeepFool does not overstate"),
    (0.8, 1.5, "DeepFool does not overstate"), (None, 1.0, MISSING), (1.45, None, MISSING),
])
def test_masking_verdict(ratio, baseline, verdict):
    assert masking_verdict(ratio, baseline) == verdict


def test_c2_is_judged_by_binarity_sigma_against_lin_pen_and_no_pen(study):
    root, planted, _ = study
    table = read_csv(root / "claims.csv")
    rows = {(r["head"], r["baseline"], r["metric"]): r for r in table}
    ib, no_pen, lin_pen = (np.array(planted[h]["binarity_sigma_train"]) for h in HEADS)
    assert ib.max() <= 0.1 < min(no_pen.min(), lin_pen.min())  # planted: only ib sits at two points per node
    row = rows[("ib", "no_pen", "binarity_sigma_train")]
    assert (row["claim"], row["role"], row["effect"], float(row["threshold"])) == ("C2", "main", "ratio", 0.1)
    assert float(row["effect_mean"]) == pytest.approx(np.mean(ib / no_pen), rel=1e-12)
    assert float(row["p"]) == pytest.approx(stats.ttest_rel(ib, no_pen).pvalue, rel=1e-9)
    assert float(row["p_holm"]) < 0.05 and row["verdict"] == "held"
    row = rows[("ib", "lin_pen", "binarity_sigma_train")]  # one lin_pen seed: no test, so not held outright
    assert float(row["effect_mean"]) == pytest.approx(ib[0] / lin_pen[0], rel=1e-12)
    assert row["p"] == "" and row["verdict"] == "mixed"
    # σ̄ decides C2: its rows come before the secondary ones
    c2 = [(r["metric"], r["role"]) for r in table if r["claim"] == "C2"]
    assert c2 == [("binarity_sigma_train", "main")] * 2 + [("code_vertices_train", "secondary"),
                                                            ("code_decode_accuracy_train", "secondary")]
    md = (root / "report.md").read_text()
    claims = md[md.index("## Claims of the paper"):md.index("## Study")]
    ratio = ib / no_pen
    assert (f"| ib vs no_pen | binarity σ̄ (train, Eq. 26, scale-free) | ×{format_mean_std(ratio.mean(), ratio.std(ddof=1))}"
            f" (ib: {ib.mean():.4g}, no_pen: {no_pen.mean():.4g}) |") in claims
    assert "two-point criterion σ̄ ≤ 0.1: every node's values sit at two points whose spread is at most 0.1" in claims


def test_c3_follows_pgd_not_deepfool_and_the_report_names_the_masking(study):
    root, planted, _ = study
    rows = {(r["head"], r["baseline"], r["metric"]): r for r in read_csv(root / "claims.csv")}
    ib, no_pen = planted["ib"], planted["no_pen"]
    assert np.mean(np.divide(ib["robustness_deepfool"], no_pen["robustness_deepfool"])) > 29  # DeepFool: held
    assert rows[("ib", "no_pen", "robustness_pgd_l2")]["verdict"] == "not held"  # PGD-L2: ib below no_pen
    assert rows[("ib", "no_pen", "robustness_pgd_l2")]["role"] == "main"
    assert rows[("ib", "no_pen", "robustness_bisection")]["role"] == "secondary"
    assert rows[("ib", "no_pen", "robustness_deepfool")]["verdict"] == PAPER_MEASURE
    # the masking ratio: per run DeepFool / PGD-L2, then mean ± std over the seeds, in Table 2 for every head
    masking = {h: np.divide(planted[h]["robustness_deepfool"], planted[h]["robustness_pgd_l2"]) for h in HEADS}
    table2 = {r["head"]: r for r in read_csv(root / "table2.csv")}
    for head, ratios in masking.items():
        assert float(table2[head]["masking_ratio_mean"]) == pytest.approx(ratios.mean(), rel=1e-12)
        assert int(table2[head]["masking_ratio_n"]) == len(ratios)
        if len(ratios) > 1:
            assert float(table2[head]["masking_ratio_std"]) == pytest.approx(ratios.std(ddof=1), rel=1e-12)
    assert "| masking ratio DeepFool / PGD-L2 |" in (root / "table2.md").read_text()
    row = rows[("ib", "no_pen", "masking_ratio")]
    assert float(row["effect_mean"]) == pytest.approx(masking["ib"].mean(), rel=1e-12)
    assert float(row["mean_baseline"]) == pytest.approx(masking["no_pen"].mean(), rel=1e-12)
    assert masking["ib"].mean() > 1.2 > masking["no_pen"].mean() and row["verdict"] == OVERSTATES
    sentence = (f"DeepFool overstates the robustness of ib: its radius is ×{masking['ib'].mean():.3g} the PGD-L2 "
                f"radius, no_pen's ×{masking['no_pen'].mean():.3g}")
    md = (root / "report.md").read_text()
    assert sentence in md[md.index("## Claims of the paper"):md.index("## Study")]
    assert sentence in (root / "claims.md").read_text()


def test_flat_sigma_baselines_on_k_vertices_and_unmasked_deepfool(tmp_path):
    """ib's σ̄ at 0.3 (one point per class, not two per node), no_pen on K vertices decoding perfectly, and ib's
    DeepFool radius at 1.05 × its PGD-L2 radius: C2 is not held, its secondary rows say they do not separate the
    heads, and PGD-L2 holds C3 with no masking sentence."""
    synthetic_study(tmp_path, files=False)
    for row in edit_results(tmp_path):
        if row["status"] != "finished":
            continue
        if row["head"] == "ib":
            row["binarity_sigma_train"] = 0.3 + 0.01 * int(row["seed"])
            row["robustness_pgd_l2"] = float(row["robustness_deepfool"]) / 1.05
        elif row["head"] == "no_pen":
            row["code_vertices_train"], row["code_decode_accuracy_train"] = 3, 1.0
    build_report(tmp_path)
    rows = {(r["head"], r["baseline"], r["metric"]): r for r in read_csv(tmp_path / "claims.csv")}
    sigma = rows[("ib", "no_pen", "binarity_sigma_train")]
    assert float(sigma["effect_mean"]) < 0.7 and float(sigma["p"]) < 0.05  # separates from no_pen ...
    assert sigma["verdict"] == "not held"  # ... but no seed sits at two points
    assert rows[("ib", "lin_pen", "binarity_sigma_train")]["verdict"] == "not held"
    for metric in ("code_vertices_train", "code_decode_accuracy_train"):
        assert rows[("ib", "no_pen", metric)]["verdict"] == f"held {NO_SEPARATION}"
    md = (tmp_path / "report.md").read_text()
    claims = md[md.index("## Claims of the paper"):md.index("## Study")]
    assert f"| ib vs no_pen | secondary: vertices occupied (train) | 3 ± 0 (no_pen: 3) | " in claims
    assert f"| 3 / 3 | held {NO_SEPARATION} |" in claims
    assert rows[("ib", "no_pen", "robustness_pgd_l2")]["verdict"] == "held"  # ×40–80 no_pen's, p < 0.05
    assert rows[("ib", "no_pen", "masking_ratio")]["verdict"] == "DeepFool does not overstate"
    assert float(rows[("ib", "no_pen", "masking_ratio")]["effect_mean"]) == pytest.approx(1.05, rel=1e-9)
    assert "DeepFool overstates the robustness" not in md


def test_figure1_compares_heads_and_the_gamma_figure_and_accuracy_drops_are_reported(study):
    root, _, _ = study
    md = (root / "report.md").read_text()
    caption = md[md.index("*Figure 1:"):]
    assert "ib, lin_pen, no_pen, one column per head" in caption and "(nodes 0–3)" in caption
    assert "no_pen shows its first 4 of 20 dimensions" in caption
    assert "](figures/fig5_gamma_pressure.png)" in md and "γ figure skipped" not in md
    # the collapsed run: listed with its epoch and γ, though never selected
    section = md[md.index("### Runs whose training accuracy collapsed"):md.index("## Table 1")]
    assert "| head | lr | seed | epoch | γ | selected |" in section and "| ib | 0.002 | 1 | 14 | 123.4 | no |" in section
    results = read_csv(root / "results.csv")
    assert {"accuracy_drop_epoch", "accuracy_drop_gamma"} <= set(results[0])
    assert [(r["head"], r["lr"], r["seed"]) for r in results if r["accuracy_drop_epoch"]] == [("ib", "0.002", "1")]


def test_no_accuracy_drop_reads_none_and_old_histories_skip_the_gamma_figure(tmp_path):
    synthetic_study(tmp_path, files=False)
    for row in edit_results(tmp_path):
        row["accuracy_drop_epoch"] = row["accuracy_drop_gamma"] = ""
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    section = md[md.index("### Runs whose training accuracy collapsed"):md.index("## Table 1")]
    assert section.rstrip().endswith("None.")
    assert "γ figure skipped: the IB runs' histories have no `gamma`" in md


def test_docstring_examples_run():
    import doctest

    import lpc.report.render
    import lpc.report.statistics

    for module in (lpc.report.statistics, lpc.report.render):  # the package only re-exports their functions
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
