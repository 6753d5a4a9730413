"""The IB layer's width against the number of classes, chosen on validation: is ``widths.intermediate: auto``
(2^(ceil(log2 K) - 1), lpc.heads.auto_width) as good as the best fixed width at 10, 26, 50 and 100 classes?

    python benchmarks/widths.py                       # 4 class counts x 2 budgets x 6 widths + baselines, 3 seeds
    python benchmarks/widths.py --classes 100 --budgets 20 --seeds 1

Data: K Gaussian clusters in 32 dimensions (means N(0, I), noise N(0, I); 40 training, 40 validation and 40 test
points per class), built here, nothing shipped. Every run is configs/mnist.yaml except the data, the head, the
width and the epochs (the lr decay keeps its place in the last fifth). Each line is the mean validation accuracy
over seeds; the best width per line is marked, and ``auto`` is judged against it and against no_pen. The test
split is not read.
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

from lpc.config import apply_overrides, load_config  # noqa: E402
from lpc.data import from_arrays  # noqa: E402
from lpc.heads import auto_width  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mnist.yaml"
WIDTHS = (4, 8, 16, 32, 64)


def clusters(num_classes: int, seed: int = 0, separation: float = 1.0):
    """K Gaussian clusters in 32 dimensions: means N(0, separation² I), unit noise; 40 points per class and split."""
    rng = np.random.default_rng(seed)
    means = (separation * rng.standard_normal((num_classes, 32))).astype(np.float32)
    arrays = {}
    for split, per_class in (("train", 40), ("val", 40), ("test", 40)):
        y = np.repeat(np.arange(num_classes), per_class)
        arrays[f"x_{split}"] = (means[y] + rng.standard_normal((len(y), 32))).astype(np.float32)
        arrays[f"y_{split}"] = y
    return from_arrays(arrays, name=f"clusters{num_classes}")


def _one(job):
    from lpc.trainer import train
    torch.set_num_threads(1)
    classes, epochs, head, width, seed = job
    base = load_config(CONFIG)
    config = apply_overrides(base, {
        "model.head": head, "model.widths.intermediate": width, "optim.epochs": epochs, "seed": seed,
        "optim.lr": base.optim.lrs[0], "optim.lr_decay_start": int(0.8 * epochs),
        "optim.lr_decay_every": max(1, epochs // 20), "eval.log_every": epochs, "eval.entropy": False,
        "eval.reliability": False, "eval.robustness": False, "eval.save_latents": False, "device": "cpu"})
    summary = train(config, None, data=clusters(classes), progress=False)
    return {"classes": classes, "epochs": epochs, "head": head, "width": width, "seed": seed,
            "val_accuracy": summary["val_accuracy"], "nc1_train": summary.get("nc1_train")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", default="10,26,50,100")
    parser.add_argument("--budgets", default="20,60", help="epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=max(1, mp.cpu_count()))
    parser.add_argument("--out", type=Path, default=Path("runs/widths.jsonl"), help="JSONL of every run")
    args = parser.parse_args()
    classes, budgets = [int(k) for k in args.classes.split(",")], [int(b) for b in args.budgets.split(",")]
    jobs = [(k, e, "ib", w, s) for k in classes for e in budgets for w in (*WIDTHS, "auto") for s in range(args.seeds)]
    jobs += [(k, e, h, "auto", s) for k in classes for e in budgets for h in ("no_pen", "lin_pen")
             for s in range(args.seeds)]
    started = time.perf_counter()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        rows = pool.map(_one, jobs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    mean = lambda k, e, h, w: 100 * np.mean([r["val_accuracy"] for r in rows  # noqa: E731
                                             if (r["classes"], r["epochs"], r["head"], r["width"]) == (k, e, h, w)])
    print("Validation accuracy (%), mean over seeds; * the best fixed width\n")
    print("| classes | epochs | " + " | ".join(f"width {w}" for w in WIDTHS) + " | auto (width) | no_pen | lin_pen "
          "(auto) | auto − best | auto − no_pen |")
    print("|" + "---|" * (len(WIDTHS) + 7))
    for k in classes:
        for e in budgets:
            fixed = {w: mean(k, e, "ib", w) for w in WIDTHS}
            best = max(fixed.values())
            cells = " | ".join(f"{v:.1f}{'*' if v == best else ''}" for v in fixed.values())
            auto, base, lin = mean(k, e, "ib", "auto"), mean(k, e, "no_pen", "auto"), mean(k, e, "lin_pen", "auto")
            print(f"| {k} | {e} | {cells} | {auto:.1f} ({auto_width(k)}) | {base:.1f} | {lin:.1f} | "
                  f"{auto - best:+.1f} | {auto - base:+.1f} |")
    print(f"\n{len(rows)} runs in {time.perf_counter() - started:.0f} s; config {CONFIG.name}; "
          f"{machine_line(extra=f'| {args.workers} workers x 1 thread')}")


if __name__ == "__main__":
    main()
