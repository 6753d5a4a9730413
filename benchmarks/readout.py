"""Where the IB layer loses on data whose classes overlap: in the layer, or in the features the backbone learned?

    python benchmarks/readout.py                              # signals, pairs100, the embedded digits; 3 seeds
    python benchmarks/readout.py --datasets signals --seeds 1 --schedule auto+gamma.target=0.3

Each network (ib, lin_pen, no_pen) trains exactly as in benchmarks/schedules.py at 1x (configs/mnist.yaml, one
of its datasets; ib with ``--schedule``, by default ``auto``). Then a fresh linear read-out, multinomial logistic
regression with an L2 penalty on standardised features (LBFGS), is fitted to the network's backbone features h
of the training set and scored on validation. The IB layer is a linear map of h too, so its classifier and the
read-out choose from the same functions of the same features: where a read-out of the IB network's *own*
features beats its IB head, the features still hold what the head loses, and the loss lies in what the
compression term does to the layer. Two penalties, fixed in advance (weak 1e-4, strong 1e-2), are both shown,
since choosing between them on validation would flatter the read-out. Validation accuracy only; the test split
is not read.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_line  # noqa: E402
from schedules import build_dataset, paired_standard_error, run_config  # noqa: E402

HEADS = ("ib", "lin_pen", "no_pen")
PENALTIES = {"weak": 1e-4, "strong": 1e-2}


def readout_accuracy(h_train: torch.Tensor, y_train: torch.Tensor, h_val: torch.Tensor, y_val: torch.Tensor,
                     penalty: float, iterations: int = 300) -> float:
    """Validation accuracy of multinomial logistic regression fitted to (h_train, y_train) with
    ``penalty`` · ‖W‖² added to the mean cross-entropy, on features standardised with the training statistics."""
    mean, std = h_train.mean(0), h_train.std(0) + 1e-6
    a, b = (h_train - mean) / std, (h_val - mean) / std
    linear = torch.nn.Linear(a.shape[1], int(y_train.max()) + 1)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(a), y_train) + penalty * linear.weight.pow(2).sum()
        loss.backward()
        return loss
    optimizer.step(closure)
    with torch.no_grad():
        return (linear(b).argmax(1) == y_val).float().mean().item()


def _one(job: tuple[str, str, str, int]) -> dict:
    from lpc.runs import load_run
    from lpc.trainer import train
    torch.set_num_threads(1)
    dataset, head, schedule, seed = job
    data = build_dataset(dataset)
    with tempfile.TemporaryDirectory() as run_dir:
        summary = train(run_config(head, schedule, 1.0, seed), run_dir, data=data, progress=False)
        model, _ = load_run(run_dir)
    features = {}
    with torch.no_grad():
        for split in ("train", "val"):
            x, y = data.split(split)
            features[split] = (model.backbone(data.normalize(x).float()), y)
    row = {"dataset": dataset, "head": head, "schedule": schedule, "seed": seed,
           "val_accuracy": summary["val_accuracy"], "nc1_train": summary.get("nc1_train")}
    for name, penalty in PENALTIES.items():
        row[f"readout_{name}"] = readout_accuracy(*features["train"], *features["val"], penalty)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="signals,pairs100,labels-0",
                        help="any of benchmarks/schedules.py's datasets (labels-0: the embedded digits)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--schedule", default="auto", help="ib's schedule as in benchmarks/schedules.py, e.g. "
                        "auto+gamma.target=0.3 (the baselines train as the config is)")
    parser.add_argument("--workers", type=int, default=max(1, mp.cpu_count()))
    parser.add_argument("--out", type=Path, default=Path("runs/readout.jsonl"), help="JSONL of every run")
    args = parser.parse_args()
    datasets = args.datasets.split(",")
    jobs = [(d, head, args.schedule if head == "ib" else "-", seed) for d in datasets for head in HEADS
            for seed in range(args.seeds)]
    started = time.perf_counter()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        rows = pool.map(_one, jobs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def runs(dataset, head):
        return sorted((r for r in rows if (r["dataset"], r["head"]) == (dataset, head)), key=lambda r: r["seed"])

    def gap(dataset, key):
        """ib's read-out over its own head, mean ± paired standard error over seeds, in points."""
        values = [100 * (r[key] - r["val_accuracy"]) for r in runs(dataset, "ib")]
        se = paired_standard_error(values)
        return f"{np.mean(values):+.2f}" + (f" ± {se:.2f}" if math.isfinite(se) else "")

    print("Validation accuracy (%), mean over seeds: each network's own head, and a linear read-out of its backbone "
          "features with a weak / strong L2 penalty\n")
    print("| dataset | " + " | ".join(f"{h} head | {h} read-out" for h in HEADS)
          + " | ib: read-out − head (weak) | (strong) |")
    print("|" + "---|" * (2 + 2 * len(HEADS) + 1))
    for dataset in datasets:
        cells = []
        for head in HEADS:
            rs = runs(dataset, head)
            cells.append(f"{100 * np.mean([r['val_accuracy'] for r in rs]):.2f}")
            cells.append(" / ".join(f"{100 * np.mean([r[f'readout_{n}'] for r in rs]):.2f}" for n in PENALTIES))
        print(f"| {dataset} | " + " | ".join(cells) + f" | {gap(dataset, 'readout_weak')} | "
              f"{gap(dataset, 'readout_strong')} |")
    print(f"\n{len(rows)} runs in {time.perf_counter() - started:.0f} s; seeds {args.seeds}; "
          f"{machine_line(extra=f'| {args.workers} workers x 1 thread')}")


if __name__ == "__main__":
    main()
