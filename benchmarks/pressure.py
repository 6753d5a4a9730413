"""Robust, or only robust to DeepFool? The IB head across γ set points against no_pen and lin_pen.

    python benchmarks/pressure.py                          # embedded digits + digits-14px, 5 set points, 2 seeds
    python benchmarks/pressure.py --datasets mnist --targets 0.9,0.3 --seeds 1   # a quick look

``lpc.AutoGamma`` holds the training batches' mean true-class probability at its set point
(``gamma.target``); the lower the set point, the higher the pressure γ/r² on the latents (r: the
classifier's scale). Every run is configs/mnist.yaml unchanged except for the data, the head and, for ib,
the set point (the default is 0.9, make demo's 0.3). The datasets: ``mnist``, the embedded digits, and
``digits-14px`` from benchmarks/schedules.py (the digits average-pooled to 14x14), which nothing was tuned on.

Per dataset and variant (mean over seeds): validation and test accuracy, binarity σ̄ of the training
latents (Eq. 26: the two-point criterion is σ̄ ≤ 0.1), NC1, the final pressure, and the three minimal
perturbation radii ||r||/||x|| on the same 100 test inputs: DeepFool (the paper's measure), the PGD-L2
radius and the bisection radius along the best PGD direction (neither of which a flat or saturated
network can inflate: both only count perturbations checked to flip the prediction); ``mask`` is the
masking ratio DeepFool / PGD-L2, near 1 where DeepFool finds the nearest boundary. Robustness ratios are
against no_pen's on the same dataset. Choose between settings on the validation column; the test column
is reported beside it.

Writes lpc run folders under ``--out`` (``<dataset>/<variant>/seed=<s>``; finished ones are not trained
again), ``results.jsonl``, and the figure ``pressure.png`` (robustness against pressure, DeepFool and PGD-L2
as separate lines; σ̄ below). ``python benchmarks/peers.py --pressure <out>`` checks the PGD radius of the
most collapsed model of the sweep against foolbox's attacks.
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
from schedules import build_dataset  # noqa: E402

from lpc.config import apply_overrides, load_config  # noqa: E402
from lpc.data import load_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "mnist.yaml"
BASELINES = ("no_pen", "lin_pen")
KEYS = ("val_accuracy", "test_accuracy", "binarity_sigma_train", "nc1_train", "pressure", "true_class_prob",
        "robustness_deepfool", "robustness_pgd_l2", "robustness_bisection")


def variant_name(head: str, target: float | None) -> str:
    return head if target is None else f"{head}@{target:g}"


def run_config(dataset: str, head: str, target: float | None, seed: int, epochs: float):
    base = load_config(CONFIG)
    o = base.optim
    scaled = lambda n: max(1, round(n * epochs))  # noqa: E731  (--epochs scales the run and its lr decay alike)
    changes = {"model.head": head, "seed": seed, "optim.lr": o.lrs[0], "device": "cpu",
               "optim.epochs": scaled(o.epochs), "optim.lr_decay_start": scaled(o.lr_decay_start),
               "optim.lr_decay_every": scaled(o.lr_decay_every), "eval.log_every": scaled(base.eval.log_every),
               "eval.entropy": False}
    if target is not None:
        changes["gamma.target"] = target
    return apply_overrides(base, changes)


def _data(dataset: str):
    return load_data(load_config(CONFIG).data) if dataset == "mnist" else build_dataset(dataset)


def _one(job: tuple[str, str, float | None, int, float, str]) -> dict:
    from lpc.trainer import train
    torch.set_num_threads(1)
    dataset, head, target, seed, epochs, out = job
    started = time.perf_counter()
    folder = Path(out) / dataset / variant_name(head, target) / f"seed={seed}"
    s = train(run_config(dataset, head, target, seed, epochs), folder, data=_data(dataset), progress=False)
    return {"dataset": dataset, "variant": variant_name(head, target), "head": head, "target": target,
            "seed": seed, "epochs": s.get("epochs"), "status": s["status"], "run": str(folder),
            **{k: s.get(k) for k in KEYS}, "seconds": time.perf_counter() - started}


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
    return float(np.mean(values)) if values else float("nan")


def summarise(rows: list[dict]) -> list[dict]:
    """One entry per (dataset, variant): means over seeds, robustness ratios against no_pen's."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset and r["status"] == "finished"]
        base = [r for r in mine if r["variant"] == "no_pen"]
        for variant in dict.fromkeys(r["variant"] for r in mine):
            runs = [r for r in mine if r["variant"] == variant]
            entry = {"dataset": dataset, "variant": variant, "target": runs[0]["target"], "n": len(runs),
                     **{k: _mean(runs, k) for k in KEYS}}
            entry["masking_ratio"] = _mean([{"m": r["robustness_deepfool"] / r["robustness_pgd_l2"]} for r in runs
                                            if r["robustness_pgd_l2"]], "m")
            for key in ("robustness_deepfool", "robustness_pgd_l2", "robustness_bisection"):
                entry[key + "_ratio"] = entry[key] / _mean(base, key) if base else float("nan")
            out.append(entry)
    return out


def table(entries: list[dict]) -> list[str]:
    lines = ["| dataset | variant | n | val acc % | test acc % | σ̄ | NC1 | pressure γ/r² | DeepFool | PGD-L2 | "
             "bisection | mask (DF/PGD) | ×no_pen DF / PGD / bis. |", "|" + "---|" * 13]
    for e in entries:
        lines.append(
            f"| {e['dataset']} | {e['variant']} | {e['n']} | {100 * e['val_accuracy']:.2f} | "
            f"{100 * e['test_accuracy']:.2f} | {e['binarity_sigma_train']:.3f} | {e['nc1_train']:.4f} | "
            f"{e['pressure']:.3g} | {e['robustness_deepfool']:.4f} | {e['robustness_pgd_l2']:.4f} | "
            f"{e['robustness_bisection']:.4f} | {e['masking_ratio']:.2f} | {e['robustness_deepfool_ratio']:.2f} / "
            f"{e['robustness_pgd_l2_ratio']:.2f} / {e['robustness_bisection_ratio']:.2f} |")
    return lines


def figure(entries: list[dict], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(e["dataset"] for e in entries))
    fig, axes = plt.subplots(2, len(datasets), figsize=(5 * len(datasets), 7), squeeze=False, sharex="col")
    for col, dataset in enumerate(datasets):
        ib = sorted((e for e in entries if e["dataset"] == dataset and e["target"] is not None),
                    key=lambda e: e["pressure"])
        top, bottom = axes[0, col], axes[1, col]
        x = [e["pressure"] for e in ib]
        for key, label, style in (("robustness_deepfool", "DeepFool", "o-"), ("robustness_pgd_l2", "PGD-L2", "s-"),
                                  ("robustness_bisection", "bisection", "^:")):
            line, = top.plot(x, [e[key] for e in ib], style, label=f"ib {label}")
            for e in ib:
                top.annotate(f"{e['target']:g}", (e["pressure"], e["robustness_deepfool"]), fontsize=7,
                             textcoords="offset points", xytext=(3, 3)) if key == "robustness_deepfool" else None
            for base, dash in zip(BASELINES, ("--", ":")):
                found = [e for e in entries if e["dataset"] == dataset and e["variant"] == base]
                if found and key != "robustness_bisection":
                    top.axhline(found[0][key], color=line.get_color(), ls=dash, lw=1,
                                label=f"{base} {label}")
        bottom.plot(x, [e["binarity_sigma_train"] for e in ib], "o-", color="k", label="ib σ̄")
        for base, dash in zip(BASELINES, ("--", ":")):
            found = [e for e in entries if e["dataset"] == dataset and e["variant"] == base]
            if found:
                bottom.axhline(found[0]["binarity_sigma_train"], color="gray", ls=dash, label=f"{base} σ̄")
        bottom.axhline(0.1, color="red", lw=0.8, label="two-point criterion 0.1")
        top.set_title(f"{dataset}: ||r|| / ||x|| (labels: ib's set point)")
        bottom.set_title("binarity σ̄ of the training latents")
        bottom.set_xlabel("pressure γ / r² at the last epoch (ib)")
        bottom.set_ylim(0, None)
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="mnist,digits-14px")
    parser.add_argument("--targets", default="0.9,0.7,0.5,0.3,0.2", help="ib set points (gamma.target)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=float, default=1.0, help="multiple of configs/mnist.yaml's epochs")
    parser.add_argument("--workers", type=int, default=max(1, mp.cpu_count()))
    parser.add_argument("--out", type=Path, default=Path("runs/pressure"))
    args = parser.parse_args()
    targets = [float(t) for t in args.targets.split(",")]
    variants = [("ib", t) for t in targets] + [(b, None) for b in BASELINES]
    jobs = [(d, h, t, s, args.epochs, str(args.out)) for d in args.datasets.split(",") for h, t in variants
            for s in range(args.seeds)]
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"{len(jobs)} runs, {args.workers} workers", file=sys.stderr, flush=True)
    rows = []
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for i, row in enumerate(pool.imap_unordered(_one, jobs), 1):
            rows.append(row)
            print(f"[{i}/{len(jobs)}] {row['dataset']} {row['variant']} seed {row['seed']}: {row['status']}, "
                  f"test {row['test_accuracy']}, σ̄ {row['binarity_sigma_train']} ({row['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)
    order = {(d, variant_name(h, t), s): i for i, (d, h, t, s, *_) in enumerate(jobs)}
    rows.sort(key=lambda r: order[r["dataset"], r["variant"], r["seed"]])
    (args.out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    entries = summarise(rows)
    print("\n".join(table(entries)))
    print(f"\nfigure: {figure(entries, args.out / 'pressure.png')}")
    print(f"{len(rows)} runs in {time.perf_counter() - started:.0f} s ({args.epochs:g} x the config's epochs); "
          f"config {CONFIG.relative_to(ROOT)}; {machine_line(extra=f'| {args.workers} workers x 1 thread')}")


if __name__ == "__main__":
    main()
