"""Where does the compression term cost accuracy? Class overlap, not the number of classes.

    python benchmarks/overlap.py                          # 2 class counts x 3 separations x 6 variants, 3 seeds
    python benchmarks/overlap.py --classes 10 --separations 0.5 --epochs 60,150 --seeds 1

Data: K Gaussian clusters in 32 dimensions (benchmarks/widths.py), whose means are drawn with standard deviation
``separation`` around unit noise: at 1.0 the classes barely touch (no_pen ~99% on validation with 10 classes),
at 0.5 they overlap (~75%). The overlap is the only thing that changes; the class count is the other axis.
Every run is configs/mnist.yaml except the data, the head, the set point and the epochs (the lr decay keeps its
place in the last quarter) and an evaluation every 5 epochs, where the guard (``gamma.guard``) reads validation
accuracy. Variants: no_pen, lin_pen (the same IB layer without γ), ib at the defaults (set point 0.9), ib at make
demo's set point 0.3, and each of the two without the guard. Each line is the mean validation accuracy over
seeds; every IB variant shows its gap to lin_pen (what the compression term itself costs) and its NC1 ratio. The
test split is not read.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_line  # noqa: E402
from widths import CONFIG, clusters  # noqa: E402

from lpc.config import apply_overrides, load_config  # noqa: E402

VARIANTS = {"no_pen": {"model.head": "no_pen"}, "lin_pen": {"model.head": "lin_pen"}, "ib": {"model.head": "ib"},
            "ib, no guard": {"model.head": "ib", "gamma.guard": 0.0},
            "ib@0.3": {"model.head": "ib", "gamma.target": 0.3},
            "ib@0.3, no guard": {"model.head": "ib", "gamma.target": 0.3, "gamma.guard": 0.0}}
IB_VARIANTS = [v for v in VARIANTS if v.startswith("ib")]


def _one(job):
    from lpc.trainer import train
    torch.set_num_threads(1)
    classes, separation, epochs, variant, seed = job
    base = load_config(CONFIG)
    config = apply_overrides(base, {
        **VARIANTS[variant], "optim.epochs": epochs, "seed": seed, "optim.lr": base.optim.lrs[0],
        "optim.lr_decay_start": int(0.76 * epochs), "optim.lr_decay_every": max(1, epochs // 12),
        "eval.log_every": 5, "eval.entropy": False, "eval.reliability": False, "eval.robustness": False,
        "eval.save_latents": False, "device": "cpu"})
    summary = train(config, None, data=clusters(classes, separation=separation), progress=False)
    return {"classes": classes, "separation": separation, "epochs": epochs, "variant": variant, "seed": seed,
            "val_accuracy": summary["val_accuracy"], "train_accuracy": summary["train_accuracy"],
            "nc1_train": summary.get("nc1_train"), "gamma_backoffs": summary.get("gamma_backoffs")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", default="10,100")
    parser.add_argument("--separations", default="1.0,0.64,0.5")
    parser.add_argument("--epochs", default="60")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=max(1, mp.cpu_count()))
    parser.add_argument("--out", type=Path, default=Path("runs/overlap.jsonl"), help="JSONL of every run")
    args = parser.parse_args()
    classes = [int(k) for k in args.classes.split(",")]
    separations = [float(s) for s in args.separations.split(",")]
    budgets = [int(e) for e in args.epochs.split(",")]
    cells = [(k, s, e) for k in classes for s in separations for e in budgets]
    jobs = [(*cell, v, seed) for cell in cells for v in VARIANTS for seed in range(args.seeds)]
    started = time.perf_counter()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        rows = pool.map(_one, jobs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def mean(cell, variant, key="val_accuracy"):
        return np.mean([r[key] for r in rows if (r["classes"], r["separation"], r["epochs"]) == cell
                        and r["variant"] == variant])

    print("Validation accuracy (%), mean over seeds; each IB variant: accuracy (Δ lin_pen) / NC1 ratio to no_pen's\n")
    print("| classes | separation | epochs | no_pen | lin_pen | " + " | ".join(IB_VARIANTS) + " |")
    print("|" + "---|" * (5 + len(IB_VARIANTS)))
    for cell in cells:
        base, lin = 100 * mean(cell, "no_pen"), 100 * mean(cell, "lin_pen")
        parts = [f"{100 * mean(cell, v):.1f} ({100 * mean(cell, v) - lin:+.1f}) / "
                 f"{mean(cell, v, 'nc1_train') / mean(cell, 'no_pen', 'nc1_train'):.2f}" for v in IB_VARIANTS]
        print(f"| {cell[0]} | {cell[1]:g} | {cell[2]} | {base:.1f} | {lin:.1f} | " + " | ".join(parts) + " |")
    print(f"\n{len(rows)} runs in {time.perf_counter() - started:.0f} s; config {CONFIG.name}; "
          f"{machine_line(extra=f'| {args.workers} workers x 1 thread')}")


if __name__ == "__main__":
    main()
