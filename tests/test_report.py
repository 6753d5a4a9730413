"""lpc report on synthetic studies: tables against numpy, Welch's test against its formula, figures, HTML."""
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
from lpc.report import build_report
from lpc.study import RunSpec, collect_results, write_results

HEADS = ["ib", "no_pen", "lin_pen"]
EPOCHS = [5, 10, 15, 20]
PNG = b"\x89PNG\r\n\x1a\n"
GEOMETRY = ["binarity_loglik_train", "binarity_sigma_train", "binarity_peak_distance_train", "nc1_per_dim_train",
            "equinorm_train", "equiangularity_train", "max_angle_train"]


def synthetic_study(root: Path, *, files: bool = True) -> dict:
    """3 heads × 2 lrs × 3 seeds of fake run folders. lr 0.001 always wins on validation while lr 0.002 has
    the better test accuracy; lin_pen diverges at both lrs for seeds 1 and 2 (so n = 1). With ``files``, the
    runs also have history.jsonl (accuracy and geometry curves) and ib runs latents.npz. Returns the planted
    values of the runs that must be selected, per head and metric."""
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
                    summary = {"status": "finished", "reason": None, "tpt_epoch": 10 + 5 * seed,
                               "train_accuracy": 1.0, "val_accuracy": 0.9 if lr == 0.001 else 0.8,
                               "test_accuracy": 0.85 + offset + 0.01 * rng.normal() + (0.05 if lr == 0.002 else 0),
                               "sigma_w_train": 10 ** rng.uniform(-13, -11) if "ib" in head else rng.uniform(0.1, 1),
                               "norm_coeff_var_train": rng.uniform(0.01, 0.2), "entropy_train": rng.normal(-80, 2),
                               "robustness_deepfool": rng.uniform(0.5, 0.8) if head == "ib" else rng.uniform(0.01, 0.02),
                               "robustness_pgd_l2": rng.uniform(0.1, 0.5), "robustness_bisection": rng.uniform(0.1, 0.5),
                               "deepfool_flip_rate": 1.0, "auroc_mahalanobis": rng.uniform(0.8, 0.9),
                               "auroc_odin": rng.uniform(0.7, 0.9)}
                    if lr == 0.001:
                        for key, value in summary.items():
                            planted[head].setdefault(key, []).append(value)
                summary.update({"head": head, "lr": lr, "seed": seed, "dataset": "synthetic", "device": "cpu",
                                "wall_seconds": 1.0})
                (folder / "summary.json").write_text(json.dumps(summary))
                if files and summary["status"] == "finished":
                    history = [{"epoch": e, "train_accuracy": min(1.0, 0.5 + e / 20), "test_accuracy": 0.4 + e / 50,
                                **{k: float(rng.uniform(0.1, 1.0)) for k in GEOMETRY}} for e in EPOCHS]
                    (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
                    if head == "ib":
                        y = np.repeat(np.arange(3), 30)
                        codes = np.array([[1, 1, -1, 1], [-1, 1, 1, 1], [1, -1, -1, -1]], dtype=np.float32)
                        z = codes[y] + 0.01 * rng.normal(size=(len(y), 4)).astype(np.float32)
                        np.savez(folder / "latents.npz", z_train=z, y_train=y, z_test=z, y_test=y,
                                 pred_train=y, pred_test=y)
    write_results(root / "results.csv", collect_results(root))
    return planted


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


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
    assert "| head | n | Σ_W | coeff. of var. | entropy |" in md and "training-set" in md
    assert re.search(r"\| ib \| 3 \| \d\.\d+e-1[123] ± \d\.\d+e-1[1-4] \|", md)
    md2 = (root / "table2.md").read_text()
    ib_accuracy = np.array(planted["ib"]["test_accuracy"]) * 100
    assert f"{ib_accuracy.mean():.4g} ± {ib_accuracy.std(ddof=1):.4g}" in md2


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


def test_report_html_is_self_contained_with_png_figures(study):
    root, _, files = study
    page = (root / "report.html").read_text()
    checker = TagChecker()
    checker.feed(page)
    assert page.startswith("<!DOCTYPE html>") and not checker.errors and checker.stack == []
    assert '<img src="data:image/png;base64,' in page
    assert len(checker.images) == 4  # latent histograms, binarity, neural collapse, accuracy
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    for name in ("fig1_latent_histograms.png", "fig2_binarity.png", "fig3_neural_collapse.png", "fig4_accuracy.png"):
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
    synthetic_study(tmp_path, files=False)
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    for row in rows:  # as if eval.geometry and eval.robustness were switched off
        for key in ("sigma_w_train", "norm_coeff_var_train", "entropy_train", "robustness_deepfool"):
            row.pop(key)
    with open(tmp_path / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Figure 1 (latent histograms) skipped" in md and "Figure 2 (binarity) skipped" in md
    assert "Figure 3 (neural collapse) skipped" in md and "Accuracy curves skipped" in md
    assert "Table 1: no values for `sigma_w_train`, `norm_coeff_var_train`, `entropy_train`" in md
    assert "| ib | 3 | – | – | – |" in (tmp_path / "table1.md").read_text()
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
