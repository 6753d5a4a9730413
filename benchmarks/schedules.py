"""γ schedules across datasets and budgets: the paper's per-epoch ramp against ``auto`` (lpc.AutoGamma).

    python benchmarks/schedules.py                      # 3 datasets x 3 budgets x 3 schedules + no_pen, 2 seeds
    python benchmarks/schedules.py --budgets 1 --seeds 1 --datasets digits-1k   # one cell, quickly
    python benchmarks/schedules.py --schedules auto,auto+gamma.init=0.01 --compact  # a variant of auto
    python benchmarks/schedules.py --schedules auto+model.head=lin_pen      # another head in IB's place

Budgets scale configs/mnist.yaml's 150 epochs, so 4x is 600: ``--schedules auto`` (with no_pen) took 11 minutes on
2 cores (3.5 for the 0.25x and 1x cells), and the default three schedules take roughly twice that.

Does a γ schedule keep the IB head's accuracy, and does it collapse the latents, on data and budgets it was not
tuned on? Every run uses configs/mnist.yaml unchanged except for the data, the head, ``gamma.schedule`` and the
budget. The datasets are built here from the embedded digits, so that they differ from the default in size,
input shape and optimizer steps per epoch (nothing is shipped):

* ``digits-1k``: 1,000 training images (100 per class), 8 steps per epoch;
* ``digits-14px``: every image average-pooled to 14x14, 55 steps per epoch;
* ``noisy-vectors``: 4,000 images flattened, their pixels shuffled by one fixed permutation (no spatial
  structure left) and Gaussian noise of std 0.3 added (train, validation and test), 32 steps per epoch.

Three more, by name with ``--datasets``, are further from the embedded digits:

* ``sk-digits``: scikit-learn's bundled 8x8 digits (1,797 images; 400 for test), 10 steps per epoch;
* ``signals``: 10,000 generated 1-D signals of 128 samples, 10 classes (5 frequencies, as sines or as square
  waves, random phase and amplitude) under Gaussian noise of std 0.8; 57 steps per epoch;
* ``pairs100``: two embedded digits side by side, 100 classes (10 a + b), 7,000 training images.

A budget of b scales ``optim.epochs``, ``optim.lr_decay_start`` and ``optim.lr_decay_every`` (the lr decay
keeps its place in the run) and ``eval.log_every`` by b. Three schedules: ``paper`` is the per-epoch ramp of
Appendix C as the former embedded default tuned it by hand to these digits over 40 epochs (γ x1.35 per epoch up
to 1e3, classifier lr x50), kept per epoch whatever the budget; ``ramp`` is the budget-aware schedule
without feedback, γ growing geometrically per optimizer step from 1e-2 to 1e3 over the first half of the run
(AutoGamma with its feedback switched off: a set point it always exceeds; 1e3 is the γ_max that kept
accuracy on the embedded digits over 200 epochs, issue 10); ``auto`` is the config's controller. Each line is the mean over seeds of the test accuracy, of NC1 on
the training latents (Tr(Σ_W Σ_B⁺)/K) and of the first evaluated epoch with training accuracy ≥ 99.9%
(``tpt``; '-' when a seed never got there), with the no_pen baseline trained once per cell. ``ok`` checks
issue 10's bar: IB accuracy ≥ no_pen's − 1 point and NC1(ib) ≤ 0.3 x NC1(no_pen).
"""
from __future__ import annotations

import argparse
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
DATASETS = ("digits-1k", "digits-14px", "noisy-vectors")
EXTRA_DATASETS = ("sk-digits", "signals", "pairs100")  # --datasets only: data unlike the embedded digits


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
    elif name == "signals":
        a = {}
        rng = np.random.default_rng(5)
        t = np.arange(128) / 128
        for split, n in (("train", 8000), ("test", 2000)):
            y = rng.integers(0, 10, n)
            phase = 2 * np.pi * ((2 + y % 5 + rng.uniform(-0.4, 0.4, n))[:, None] * t + rng.uniform(0, 1, n)[:, None])
            wave = np.where(y[:, None] < 5, np.sin(phase), np.sign(np.sin(phase))) * rng.uniform(0.5, 1.5, (n, 1))
            a[f"x_{split}"] = (wave + 0.8 * rng.standard_normal((n, 128))).astype(np.float32)
            a[f"y_{split}"] = y.astype(np.int64)
    elif name == "pairs100":
        rng = np.random.default_rng(6)
        for split, n in (("train", 7000), ("test", 2000)):
            x, y = a.pop(f"x_{split}"), a.pop(f"y_{split}")
            i, j = rng.integers(0, len(y), n), rng.integers(0, len(y), n)
            a[f"x_{split}"], a[f"y_{split}"] = np.concatenate([x[i], x[j]], axis=-1), 10 * y[i] + y[j]
        del a["x_val"], a["y_val"]
    else:
        raise SystemExit(f"unknown dataset {name!r}; choose from {', '.join(DATASETS + EXTRA_DATASETS)}")
    return from_arrays(a, name=name)


SCHEDULES = {"paper": {"gamma.schedule": "paper", "gamma.factor": 1.35, "gamma.max": 1e3, "gamma.init": 1e-2,
                       "optim.classifier_lr_mult": 50, "optim.classifier_lr_scaling": "none"},
             "auto": {"gamma.schedule": "auto"},
             "ramp": {"gamma.schedule": "auto", "gamma.target": 1e-9, "gamma.width": 1e-9, "gamma.init": 1e-2, "gamma.max": 1e3}}


def run_config(head: str, schedule: str, budget: float, seed: int):
    base = load_config(CONFIG)
    o = base.optim
    scaled = lambda epochs: max(1, round(epochs * budget))  # noqa: E731
    # a variant changes the config last: auto+gamma.init=0.01, or auto+model.head=lin_pen for another head
    name, *changes = schedule.split("+")
    return apply_overrides(base, {
        **SCHEDULES.get(name, {}), "model.head": head, "seed": seed, "optim.lr": o.lrs[0],
        "optim.epochs": scaled(o.epochs), "optim.lr_decay_start": scaled(o.lr_decay_start),
        "optim.lr_decay_every": scaled(o.lr_decay_every), "eval.log_every": scaled(base.eval.log_every),
        "eval.entropy": False, "eval.reliability": False, "eval.robustness": False, "eval.save_latents": False,
        "device": "cpu", **dict(parse_override(c) for c in changes)})


def _one(job: tuple[str, str, str, float, int]) -> dict:
    from lpc.train import train
    torch.set_num_threads(1)
    dataset, head, schedule, budget, seed = job
    data = build_dataset(dataset)
    started = time.perf_counter()
    s = train(run_config(head, schedule, budget, seed), None, data=data, progress=False)
    return {"dataset": dataset, "head": head, "schedule": schedule, "budget": budget, "seed": seed,
            "status": s["status"], "test_accuracy": s.get("test_accuracy"), "val_accuracy": s.get("val_accuracy"),
            "nc1_train": s.get("nc1_train"), "binarity_sigma_train": s.get("binarity_sigma_train"),
            "tpt_epoch": s.get("tpt_epoch"), "epochs": s["epochs"], "gamma_final": s.get("gamma_final"),
            "train_accuracy": s.get("train_accuracy"), "seconds": time.perf_counter() - started}


def _mean(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else float("nan")


def _cell(rows: list[dict], dataset: str, budget: float, schedule: str) -> dict | None:
    """IB's runs of one schedule in one (dataset, budget) cell against no_pen's, with issue 10's verdict."""
    pick = lambda head, sch: [r for r in rows if (r["dataset"], r["budget"], r["head"], r["schedule"]) ==  # noqa: E731
                              (dataset, budget, head, sch)]
    ib, base = pick("ib", schedule), pick("no_pen", "-")
    if not ib or not base:
        return None
    acc, acc0 = 100 * _mean(r["test_accuracy"] for r in ib), 100 * _mean(r["test_accuracy"] for r in base)
    nc1, nc10 = _mean(r["nc1_train"] for r in ib), _mean(r["nc1_train"] for r in base)
    return {"ib": ib, "base": base, "acc": acc, "acc0": acc0, "nc1": nc1, "nc10": nc10,
            "ok": acc >= acc0 - 1 and nc1 <= 0.3 * nc10}


def _cells(rows: list[dict]) -> list[tuple[str, float]]:
    order = DATASETS + EXTRA_DATASETS
    return sorted({(r["dataset"], r["budget"]) for r in rows}, key=lambda c: (order.index(c[0]), c[1]))


def table(rows: list[dict], steps: dict[str, int], schedules: list[str]) -> list[str]:
    lines = ["| dataset | steps/epoch | epochs | schedule | IB acc % | no_pen acc % | Δ points | NC1 IB | NC1 no_pen | "
             "NC1 ratio | tpt IB | tpt no_pen | final γ | ok |", "|" + "---|" * 14]
    tpt = lambda rs: "/".join(str(r["tpt_epoch"]) if r["tpt_epoch"] else "-" for r in rs)  # noqa: E731
    for dataset, budget in _cells(rows):
        for schedule in schedules:
            c = _cell(rows, dataset, budget, schedule)
            if c is None:
                continue
            lines.append(f"| {dataset} | {steps[dataset]} | {c['ib'][0]['epochs']} | {schedule} | {c['acc']:.2f} | "
                         f"{c['acc0']:.2f} | {c['acc'] - c['acc0']:+.2f} | {c['nc1']:.3f} | {c['nc10']:.3f} | "
                         f"{c['nc1'] / c['nc10']:.2f} | {tpt(c['ib'])} | {tpt(c['base'])} | "
                         f"{_mean(r['gamma_final'] for r in c['ib']):.3g} | {'yes' if c['ok'] else 'NO'} |")
    return lines


def _compact_entry(c: dict) -> str:
    ratio = c["nc1"] / c["nc10"]
    return f"{c['acc'] - c['acc0']:+.1f} / {ratio:.{2 if ratio < 10 else 0}f}" + ("" if c["ok"] else " ✗")


def compact_table(rows: list[dict], schedules: list[str]) -> list[str]:
    """One line per schedule, one column per (dataset, budget): IB's accuracy gain over no_pen in points and
    its NC1 as a fraction of no_pen's; ✗ marks a cell that misses issue 10's bar."""
    cells = _cells(rows)
    epochs = {(r["dataset"], r["budget"]): r["epochs"] for r in rows}
    lines = ["| schedule | " + " | ".join(f"{d} {epochs[d, b]} ep." for d, b in cells) + " | cells ok |",
             "|" + "---|" * (len(cells) + 2)]
    for schedule in schedules:
        found = [_cell(rows, dataset, budget, schedule) for dataset, budget in cells]
        entries = [_compact_entry(c) if c else "" for c in found]
        passed = sum(c["ok"] for c in found if c)
        lines.append(f"| {schedule} | " + " | ".join(entries) + f" | {passed}/{sum(c is not None for c in found)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--budgets", default="0.25,1,4", help="multiples of configs/mnist.yaml's epochs")
    parser.add_argument("--schedules", default="paper,ramp,auto",
                        help=f"any of {', '.join(SCHEDULES)}, each optionally with config changes for the IB runs "
                             "joined by '+', e.g. auto+gamma.init=0.01+optim.classifier_lr_scaling=none")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--compact", action="store_true",
                        help="one line per schedule (accuracy gain / NC1 ratio per cell) instead of one per cell")
    parser.add_argument("--workers", type=int, default=max(1, mp.cpu_count()))
    parser.add_argument("--out", type=Path, default=Path("runs/schedules.jsonl"),
                        help="JSONL of every run; runs already there are not trained again")
    args = parser.parse_args()
    datasets, schedules = args.datasets.split(","), args.schedules.split(",")
    budgets = [float(b) for b in args.budgets.split(",")]
    jobs = [(d, "no_pen", "-", b, s) for d in datasets for b in budgets for s in range(args.seeds)]  # config as is
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
        for i, row in enumerate(pool.imap_unordered(_one, todo), 1):
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            done.append(row)
            print(f"[{i}/{len(todo)}] {row['dataset']} {row['head']} {row['schedule']} x{row['budget']:g} "
                  f"seed {row['seed']}: test {row['test_accuracy']:.4f} nc1 {row['nc1_train']:.3f} "
                  f"({row['seconds']:.0f} s)", file=sys.stderr, flush=True)
    wanted = {tuple(j) for j in jobs}
    rows = [r for r in done if key(r) in wanted]
    steps = {d: math.ceil(len(build_dataset(d).x_train) / load_config(CONFIG).optim.batch_size) for d in datasets}
    print("\n".join(compact_table(rows, schedules) if args.compact else table(rows, steps, schedules)))
    print(f"\n{len(rows)} runs ({len(todo)} trained now in {time.perf_counter() - started:.0f} s); "
          f"config {CONFIG.relative_to(ROOT)}; {machine_line(extra=f'| {args.workers} workers x 1 thread')}")


if __name__ == "__main__":
    main()
