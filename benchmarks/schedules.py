"""γ schedules across datasets and budgets, compared and chosen on validation data: the paper's per-epoch ramp
against ``auto`` (lpc.AutoGamma), each against no_pen and lin_pen.

    python benchmarks/schedules.py --schedules auto     # the default: 6 datasets x 3 budgets, ib/no_pen/lin_pen, 2 seeds
    python benchmarks/schedules.py --budgets 1 --seeds 1 --datasets digits-1k   # one cell, quickly
    python benchmarks/schedules.py --schedules auto,auto+gamma.floor=0.01 --compact  # a variant of auto
    python benchmarks/schedules.py --schedules auto+model.head=wide_ib      # another head in IB's place

Budgets scale configs/mnist.yaml's 150 epochs, so 4x is 600 epochs: a run of the 4x cells dominates the cost.

Does a γ schedule keep the IB head's accuracy, and does it collapse the latents, on data and budgets it was not
tuned on? Every run uses configs/mnist.yaml unchanged except for the data, the head, ``gamma.schedule`` and the
budget. The datasets are built here from the embedded digits or generated, so that they differ from the default
in size, input shape, classes and optimizer steps per epoch (nothing is shipped):

* ``digits-1k``: 1,000 training images (100 per class), 8 steps per epoch;
* ``digits-14px``: every image average-pooled to 14x14, 55 steps per epoch;
* ``noisy-vectors``: 4,000 images flattened, their pixels shuffled by one fixed permutation (no spatial
  structure left) and Gaussian noise of std 0.3 added (train, validation and test), 32 steps per epoch;
* ``sk-digits``: scikit-learn's bundled 8x8 digits (1,797 images; 400 for test), 10 steps per epoch;
* ``signals``: 10,000 generated 1-D signals of 128 samples, 10 classes (5 frequencies, as sines or as square
  waves, random phase and amplitude) under Gaussian noise of std 0.8; 57 steps per epoch;
* ``pairs100``: two embedded digits side by side, 100 classes (10 a + b), 7,000 training pairs; the
  validation and test pairs are made of the embedded validation and test digits.

By name only: ``labels-0``, ``labels-10``, ``labels-30``, the embedded digits with 0, 10 or 30% of the training
labels moved to another class at random (validation and test labels clean): does IB lose where the network must
memorise noise? ``signals@<std>``: the signals under another noise level (``signals`` is ``signals@0.8``). And
``madelon100``: scikit-learn's ``make_classification`` with 100 classes (two clusters each on the vertices of a
20-dimensional hypercube, 40 features, 1% of labels flipped; 9,000 training vectors), added after the floor, the
guard and the widths were chosen, as a check on data no choice has seen (no choice is made on it);
``madelon100@<sep>`` spreads the hypercube (``class_sep``, 1 in ``madelon100``).

Every dataset has a validation split (the embedded one, or a stratified 10% of train held out), and every
choice is made on it: the first schedule listed is the incumbent, and :func:`choose` replaces it only by one that
meets the bar on validation in as many cells and is more accurate on validation, run by run, by more than two
paired standard errors. The test split appears once, for the chosen schedule. Each gap to a
baseline is the mean over seeds ± its paired standard error (every head trains with the same seeds), so a miss
of the bar can be told from noise: on the signals' 800 validation vectors one run's accuracy alone varies by
~1.5 points.

A budget of b scales ``optim.epochs``, ``optim.lr_decay_start`` and ``optim.lr_decay_every`` (the lr decay
keeps its place in the run) and ``eval.log_every`` by b. Three schedules: ``paper`` is the per-epoch ramp of
Appendix C as the former embedded default tuned it by hand to these digits over 40 epochs (γ x1.35 per epoch up
to 1e3, classifier lr x50), kept per epoch whatever the budget; ``ramp`` is the budget-aware schedule
without feedback, γ growing geometrically per optimizer step from 1e-2 to 1e3 over the first half of the run
(AutoGamma with its feedback switched off: a set point it always exceeds); ``auto`` is the config's controller.
The bar (issue 16): IB's mean accuracy ≥ no_pen's − 1 point and ≥ lin_pen's − 0.5, and NC1(ib) on the training
latents (Tr(Σ_W Σ_B⁺)/K) ≤ 0.3 x NC1(no_pen).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_line  # noqa: E402

from lpc.config import apply_overrides, load_config, parse_override  # noqa: E402
from lpc.data import from_arrays, load_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "mnist.yaml"
DATASETS = ("digits-1k", "digits-14px", "noisy-vectors", "sk-digits", "signals", "pairs100")
# --datasets only: the embedded digits with a fraction of the training labels (never validation or test) moved to
# another class at random, to test whether the IB layer loses where the network must memorise noise
LABEL_NOISE = {"labels-0": 0.0, "labels-10": 0.1, "labels-30": 0.3}


def _embedded() -> dict[str, np.ndarray]:
    data = load_data(load_config(CONFIG).data)
    return {f"{k}_{s}": getattr(data, f"{k}_{s}").numpy() for s in ("train", "val", "test") for k in ("x", "y")}


def _per_class(y: np.ndarray, n_per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n_per_class] for c in np.unique(y)]))


def build_dataset(name: str):
    """One of :data:`DATASETS` as an lpc Dataset (deterministic)."""
    a = _embedded()
    if name == "digits-1k":
        keep = _per_class(a["y_train"], 100, seed=1)
        a["x_train"], a["y_train"] = a["x_train"][keep], a["y_train"][keep]
    elif name == "digits-14px":
        for s in ("train", "val", "test"):
            x = a[f"x_{s}"].astype(np.float32)
            a[f"x_{s}"] = np.round(x.reshape(len(x), 1, 14, 2, 14, 2).mean(axis=(3, 5))).astype(np.uint8)
    elif name == "noisy-vectors":
        keep = _per_class(a["y_train"], 400, seed=2)
        a["x_train"], a["y_train"] = a["x_train"][keep], a["y_train"][keep]
        rng = np.random.default_rng(3)
        permutation = rng.permutation(a["x_train"][0].size)
        for s in ("train", "val", "test"):
            x = a[f"x_{s}"].reshape(len(a[f"x_{s}"]), -1)[:, permutation].astype(np.float32) / 255.0
            a[f"x_{s}"] = (x + 0.3 * rng.standard_normal(x.shape)).astype(np.float32)
    elif name == "sk-digits":
        from sklearn.datasets import load_digits
        digits = load_digits()
        order = np.random.default_rng(4).permutation(len(digits.target))
        x, y = (digits.images[order] * 16).clip(0, 255).astype(np.uint8), digits.target[order].astype(np.int64)
        a = {"x_train": x[400:], "y_train": y[400:], "x_test": x[:400], "y_test": y[:400]}
    elif name == "signals" or name.startswith("signals@"):
        noise = float(name.partition("@")[2] or 0.8)
        a = {}
        rng = np.random.default_rng(5)
        t = np.arange(128) / 128
        for split, n in (("train", 8000), ("test", 2000)):
            y = rng.integers(0, 10, n)
            phase = 2 * np.pi * ((2 + y % 5 + rng.uniform(-0.4, 0.4, n))[:, None] * t + rng.uniform(0, 1, n)[:, None])
            wave = np.where(y[:, None] < 5, np.sin(phase), np.sign(np.sin(phase))) * rng.uniform(0.5, 1.5, (n, 1))
            a[f"x_{split}"] = (wave + noise * rng.standard_normal((n, 128))).astype(np.float32)
            a[f"y_{split}"] = y.astype(np.int64)
    elif name == "pairs100":
        rng = np.random.default_rng(6)
        # each split pairs its own digits: a validation set held out of the training pairs would share their
        # images and overrate every model (by 7-8 points, measured)
        for split, n in (("train", 7000), ("test", 2000), ("val", 1000)):
            x, y = a.pop(f"x_{split}"), a.pop(f"y_{split}")
            i, j = rng.integers(0, len(y), n), rng.integers(0, len(y), n)
            a[f"x_{split}"], a[f"y_{split}"] = np.concatenate([x[i], x[j]], axis=-1), 10 * y[i] + y[j]
    elif name == "madelon100" or name.startswith("madelon100@"):
        from sklearn.datasets import make_classification
        # scikit-learn's defaults (class_sep 1, 1% of labels flipped, 2 clusters per class) but for the classes:
        # every class is two Gaussian clusters on vertices of a 20-dimensional hypercube, seen through 10 redundant
        # and 10 noise features
        x, y = make_classification(n_samples=12_000, n_features=40, n_informative=20, n_redundant=10,
                                   n_classes=100, n_clusters_per_class=2,
                                   class_sep=float(name.partition("@")[2] or 1.0), random_state=8)
        a = {"x_train": x[:10_000].astype(np.float32), "y_train": y[:10_000],
             "x_test": x[10_000:].astype(np.float32), "y_test": y[10_000:]}
    elif name in LABEL_NOISE:
        rng = np.random.default_rng(7)
        flip = rng.random(len(a["y_train"])) < LABEL_NOISE[name]
        a["y_train"] = np.where(flip, (a["y_train"] + rng.integers(1, 10, len(flip))) % 10, a["y_train"])
    else:
        named = DATASETS + tuple(LABEL_NOISE) + ("signals@<std>", "madelon100", "madelon100@<sep>")
        # not SystemExit: raised in a pool worker, that would end the worker and lose its task, and the pool would
        # wait for it forever; an exception travels back to the command
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(named)}")
    return from_arrays(a, name=name)


SCHEDULES = {"paper": {"gamma.schedule": "paper", "gamma.factor": 1.35, "gamma.max": 1e3, "gamma.init": 1e-2,
                       "optim.classifier_lr_mult": 50, "optim.classifier_lr_scaling": "none"},
             "auto": {"gamma.schedule": "auto"},
             # 1e-2 to 1e3 (5 decades) in the first half of the run: speed 10
             "ramp": {"gamma.schedule": "auto", "gamma.target": 1e-9, "gamma.width": 1e-9, "gamma.floor": 1e-2,
                      "gamma.max": 1e3, "gamma.speed": 10.0}}


def run_config(head: str, schedule: str, budget: float, seed: int):
    base = load_config(CONFIG)
    o = base.optim
    scaled = lambda epochs: max(1, round(epochs * budget))  # noqa: E731
    # a variant changes the config last: auto+gamma.floor=0.01, or auto+model.head=lin_pen for another head
    name, *changes = schedule.split("+")
    return apply_overrides(base, {
        **SCHEDULES.get(name, {}), "model.head": head, "seed": seed, "optim.lr": o.lrs[0],
        "optim.epochs": scaled(o.epochs), "optim.lr_decay_start": scaled(o.lr_decay_start),
        "optim.lr_decay_every": scaled(o.lr_decay_every), "eval.log_every": scaled(base.eval.log_every),
        "eval.entropy": False, "eval.reliability": False, "eval.robustness": False, "eval.save_latents": False,
        "device": "cpu", **dict(parse_override(c) for c in changes)})


def _one(job: tuple[str, str, str, float, int], keep: Path | None = None) -> dict:
    from lpc.trainer import train
    torch.set_num_threads(1)
    dataset, head, schedule, budget, seed = job
    data = build_dataset(dataset)
    started = time.perf_counter()
    label = head if schedule == "-" else f"{head}-{schedule}"
    out_dir = keep / f"{dataset}-{label}-x{budget:g}-seed{seed}" if keep else None
    s = train(run_config(head, schedule, budget, seed), out_dir, data=data, progress=False)
    return {"dataset": dataset, "head": head, "schedule": schedule, "budget": budget, "seed": seed,
            "status": s["status"], "test_accuracy": s.get("test_accuracy"), "val_accuracy": s.get("val_accuracy"),
            "nc1_train": s.get("nc1_train"), "binarity_sigma_train": s.get("binarity_sigma_train"),
            "tpt_epoch": s.get("tpt_epoch"), "epochs": s["epochs"], "gamma_final": s.get("gamma_final"),
            "gamma_backoffs": s.get("gamma_backoffs"),
            "train_accuracy": s.get("train_accuracy"), "seconds": time.perf_counter() - started}


def _mean(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else float("nan")


BASELINES = ("no_pen", "lin_pen")  # trained once per cell with the config as is; lin_pen is IB without the γ term


def _cell(rows: list[dict], dataset: str, budget: float, schedule: str) -> dict | None:
    """IB's runs of one schedule in one (dataset, budget) cell against the baselines', as mean accuracies in % on
    validation and test, and NC1 on the training latents."""
    pick = lambda head, sch: [r for r in rows if (r["dataset"], r["budget"], r["head"], r["schedule"]) ==  # noqa: E731
                              (dataset, budget, head, sch)]
    runs = {"ib": pick("ib", schedule), **{b: pick(b, "-") for b in BASELINES}}
    if not runs["ib"] or not runs["no_pen"]:
        return None
    cell = {"runs": runs, "epochs": runs["ib"][0]["epochs"]}
    for head, rs in runs.items():
        for split in ("val", "test"):
            cell[f"{split}_{head}"] = 100 * _mean(r[f"{split}_accuracy"] for r in rs) if rs else float("nan")
        cell[f"nc1_{head}"] = _mean(r["nc1_train"] for r in rs) if rs else float("nan")
    for base in BASELINES:
        by_seed = {r["seed"]: r for r in runs[base]}
        for split in ("val", "test"):
            gaps = [100 * (r[f"{split}_accuracy"] - by_seed[r["seed"]][f"{split}_accuracy"])
                    for r in runs["ib"] if r["seed"] in by_seed]
            cell[f"se_{split}_{base}"] = paired_standard_error(gaps)
    return cell


def paired_standard_error(gaps: list[float]) -> float:
    """The standard error of the mean of IB's per-seed gaps to a baseline trained with the same seed (NaN below two
    seeds): it holds both the seeds' spread and the evaluation split's sampling noise, which the pairing shares."""
    if len(gaps) < 2:
        return float("nan")
    return float(np.std(gaps, ddof=1) / math.sqrt(len(gaps)))


def meets_bar(cell: dict, split: str) -> bool:
    """Issue 16's bar on ``split``: IB ≥ no_pen − 1 point and ≥ lin_pen − 0.5 (the compression term itself costs
    nothing), NC1(ib) ≤ 0.3 × NC1(no_pen). A missing lin_pen baseline is not held against IB."""
    ib, lin = cell[f"{split}_ib"], cell[f"{split}_lin_pen"]
    return (ib >= cell[f"{split}_no_pen"] - 1 and (math.isnan(lin) or ib >= lin - 0.5)
            and cell["nc1_ib"] <= 0.3 * cell["nc1_no_pen"])


def _cells(rows: list[dict]) -> list[tuple[str, float]]:
    order = DATASETS + tuple(LABEL_NOISE)
    return sorted({(r["dataset"], r["budget"]) for r in rows},
                  key=lambda c: (order.index(c[0]) if c[0] in order else len(order), c[0], c[1]))


def choose(rows: list[dict], schedules: list[str]) -> str:
    """The schedule chosen on validation data; test accuracy never enters. The first schedule listed is the
    incumbent (the current default). Another replaces it only if it meets the bar on validation in at least as
    many cells and its validation accuracy, paired with the incumbent's run by run (same dataset, budget and
    seed), is higher by more than two standard errors: a default does not move on noise, nor for accuracy bought
    by giving up the collapse. Of several such, the highest mean gain wins."""
    def on_bar(schedule):
        return sum(meets_bar(c, "val") for c in (_cell(rows, d, b, schedule) for d, b in _cells(rows)) if c)

    def val_runs(schedule):
        return {(r["dataset"], r["budget"], r["seed"]): r["val_accuracy"] for r in rows
                if r["head"] == "ib" and r["schedule"] == schedule}

    incumbent, cells = schedules[0], on_bar(schedules[0])
    reference = val_runs(incumbent)
    chosen, best = incumbent, 0.0
    for schedule in schedules[1:]:
        runs = val_runs(schedule)
        gains = [100 * (runs[k] - reference[k]) for k in runs if k in reference]
        se = paired_standard_error(gains)
        if on_bar(schedule) >= cells and gains and _mean(gains) - 2 * se > 0 and _mean(gains) > best:
            chosen, best = schedule, _mean(gains)
    return chosen


def table(rows: list[dict], steps: dict[str, int], schedules: list[str]) -> list[str]:
    """Every schedule on validation (the split choices are made on); test accuracy only for the chosen one."""
    chosen = choose(rows, schedules)
    lines = [f"Validation accuracy (%), every schedule; chosen on validation: {chosen}", "",
             "| dataset | steps/epoch | epochs | schedule | IB | no_pen | lin_pen | Δ no_pen | Δ lin_pen | NC1 ratio | "
             "bar |", "|" + "---|" * 11]
    for dataset, budget in _cells(rows):
        for schedule in schedules:
            if (c := _cell(rows, dataset, budget, schedule)) is not None:
                lines.append(_row(c, dataset, steps[dataset], schedule, "val"))
    lines += ["", f"Test accuracy (%), reported once, for the schedule chosen on validation ({chosen})", "",
              lines[2], lines[3]]
    for dataset, budget in _cells(rows):
        if (c := _cell(rows, dataset, budget, chosen)) is not None:
            lines.append(_row(c, dataset, steps[dataset], chosen, "test"))
    return lines


def _row(c: dict, dataset: str, steps: int, schedule: str, split: str) -> str:
    ib, base, lin = c[f"{split}_ib"], c[f"{split}_no_pen"], c[f"{split}_lin_pen"]
    gap = lambda b, value: f"{ib - value:+.2f}" + (  # noqa: E731
        f" ± {c[f'se_{split}_{b}']:.2f}" if math.isfinite(c[f"se_{split}_{b}"]) else "")
    return (f"| {dataset} | {steps} | {c['epochs']} | {schedule} | {ib:.2f} | {base:.2f} | {lin:.2f} | "
            f"{gap('no_pen', base)} | {gap('lin_pen', lin)} | {c['nc1_ib'] / c['nc1_no_pen']:.2f} | "
            f"{'yes' if meets_bar(c, split) else 'NO'} |")


def _compact_entry(c: dict, split: str) -> str:
    ratio = c["nc1_ib"] / c["nc1_no_pen"]

    def gap(base):
        se = c[f"se_{split}_{base}"]
        return f"{c[f'{split}_ib'] - c[f'{split}_{base}']:+.1f}" + (f" ± {se:.1f}" if math.isfinite(se) else "")
    return (f"{gap('no_pen')} / {gap('lin_pen')} / {ratio:.{2 if ratio < 10 else 0}f}"
            + ("" if meets_bar(c, split) else " ✗"))


def compact_table(rows: list[dict], schedules: list[str]) -> list[str]:
    """One line per schedule on validation, one column per (dataset, budget): IB's gain over no_pen and over lin_pen
    in points (± its paired standard error) and its NC1 as a fraction of no_pen's; ✗ marks a cell that misses the
    bar. The last line is the schedule chosen on validation, on test."""
    cells, chosen = _cells(rows), choose(rows, schedules)
    epochs = {(r["dataset"], r["budget"]): r["epochs"] for r in rows}
    lines = ["| schedule | split | " + " | ".join(f"{d} {epochs[d, b]} ep." for d, b in cells) + " | cells ok |",
             "|" + "---|" * (len(cells) + 3)]
    for schedule, split in [(s, "val") for s in schedules] + [(chosen, "test")]:
        found = [_cell(rows, dataset, budget, schedule) for dataset, budget in cells]
        entries = [_compact_entry(c, split) if c else "" for c in found]
        passed = sum(meets_bar(c, split) for c in found if c)
        label = f"{schedule} (chosen)" if split == "test" else schedule
        lines.append(f"| {label} | {split} | " + " | ".join(entries) + f" | {passed}/{sum(c is not None for c in found)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--budgets", default="0.25,1,4", help="multiples of configs/mnist.yaml's epochs")
    parser.add_argument("--schedules", default="auto",
                        help=f"any of {', '.join(SCHEDULES)}, each optionally with config changes for the IB runs "
                             "joined by '+', e.g. auto+gamma.floor=0.01+optim.classifier_lr_scaling=none")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--compact", action="store_true",
                        help="one line per schedule (accuracy gains ± standard error / NC1 ratio per cell) instead of one "
                             "per cell")
    parser.add_argument("--workers", type=int, default=max(1, mp.cpu_count()))
    parser.add_argument("--out", type=Path, default=Path("runs/schedules.jsonl"),
                        help="JSONL of every run; runs already there are not trained again")
    parser.add_argument("--keep", type=Path, default=None,
                        help="also write each run's folder (history.jsonl with γ, confidence and validation accuracy "
                             "at every evaluation, summary.json) under this directory; a folder that already holds the "
                             "same run (same config) is read back or resumed, as lpc train does, not trained again")
    args = parser.parse_args()
    datasets, schedules = args.datasets.split(","), args.schedules.split(",")
    budgets = [float(b) for b in args.budgets.split(",")]
    # built here first, so that an unknown name stops the command before any run is trained
    steps = {d: math.ceil(len(build_dataset(d).x_train) / load_config(CONFIG).optim.batch_size) for d in datasets}
    jobs = [(d, base, "-", b, s) for d in datasets for b in budgets for s in range(args.seeds)  # config as is
            for base in BASELINES]
    jobs += [(d, "ib", sch, b, s) for d in datasets for b in budgets for sch in schedules
             for s in range(args.seeds)]
    done = []
    if args.out.exists():
        done = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    key = lambda r: (r["dataset"], r["head"], r["schedule"], r["budget"], r["seed"])  # noqa: E731
    seen = {key(r) for r in done}
    todo = [j for j in jobs if j not in seen]
    # the longest runs first, so that the workers finish together
    todo.sort(key=lambda j: -j[3])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"{len(jobs)} runs, {len(todo)} to train, {args.workers} workers", file=sys.stderr, flush=True)
    with mp.get_context("spawn").Pool(args.workers) as pool, args.out.open("a") as sink:
        for i, row in enumerate(pool.imap_unordered(functools.partial(_one, keep=args.keep), todo), 1):
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            done.append(row)
            print(f"[{i}/{len(todo)}] {row['dataset']} {row['head']} {row['schedule']} x{row['budget']:g} "
                  f"seed {row['seed']}: val {row['val_accuracy']:.4f} nc1 {row['nc1_train']:.3f} "
                  f"({row['seconds']:.0f} s)", file=sys.stderr, flush=True)
    wanted = {tuple(j) for j in jobs}
    rows = [r for r in done if key(r) in wanted]
    print("\n".join(compact_table(rows, schedules) if args.compact else table(rows, steps, schedules)))
    print(f"\n{len(rows)} runs ({len(todo)} trained now in {time.perf_counter() - started:.0f} s); "
          f"config {CONFIG.relative_to(ROOT)}; {machine_line(extra=f'| {args.workers} workers x 1 thread')}")


if __name__ == "__main__":
    main()
