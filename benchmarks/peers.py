"""Agreement of lpc's robustness and reliability metrics with the field's reference libraries.

    pip install -e '.[peers]'          # foolbox, pytorch-ood (never needed by lpc itself or its tests)
    python benchmarks/peers.py [--runs runs/peers] [--threads 1] [--device cpu] [--set key=value ...]
    python benchmarks/peers.py --pressure runs/pressure     # also the most collapsed model of pressure.py

Trains make demo's embedded run (configs/mnist.yaml, set point 0.3) with the ``ib`` and ``no_pen`` heads, or
loads them from ``--runs`` when they are already there, and prints for each model and metric lpc's value, the
peer's value and the largest per-input difference, then the machine and the seconds each side took. With
``--pressure``, the ib run of benchmarks/pressure.py's sweep with the smallest binarity σ̄ (the most collapsed
latents, where DeepFool and PGD part ways) is checked too, on its own dataset.

Inputs are what ``lpc train`` measures: the robustness metrics on the 100 test inputs that
``select_inputs(100, N_test, seed=config.seed)`` draws, normalised as the model sees them; the AUROCs on the
whole test set (2,000 digits), Gaussians fitted on the correctly classified training latents.

Conventions (stated because the peers' defaults differ):

* DeepFool vs foolbox ``L2DeepFoolAttack``: both reference the network's own prediction (foolbox gets
  ``Misclassification(prediction)``), both take the ``candidates = 10`` largest classes of the *original*
  logits, ``steps = max_iter = 50``, ``overshoot = 0.02`` applied to the accumulated total and a step slack of
  1e-4; foolbox adds 1e-8 to gradient norms. Printed: mean ||r||/||x|| and max per-input |difference|.
* Minimal L2 radius: lpc's ``pgd_l2_radius`` (its defaults, then ``lpc train``'s cheaper settings from the
  config) against the smallest per input of foolbox's minimal-norm attacks: FMN-L2 and DDN (1,000 steps
  each), C&W-L2 untargeted (5 x 200 steps) and C&W-L2 targeted at each of the other 9 classes (5 x 100 steps
  each; initial constant 1 for both). Untargeted attacks follow the runner-up class, whose boundary need
  not be the nearest; lpc's PGD tries every target for that reason, and so does the targeted C&W. Every
  radius on both sides is the norm of a perturbation checked to flip the prediction, so each is an upper
  bound on the true minimal radius; a ratio lpc/peer above 1 means the peers found a smaller one. Printed:
  mean radius / ||x||, and the ratio's mean, largest and smallest over the inputs.
* Boxes: lpc's attacks do not clip (inputs are normalised, not pixels). foolbox needs bounds; it gets the
  data's range widened by that range on each side, so that the box does not bind (the count of peer
  perturbations that touch it is printed), and C&W's Adam step is divided by 3, the box's width in data
  ranges, so that its step per pixel is the one it takes on a box of the data's range.
* ODIN (T from the config, 100, no input perturbation: pytorch-ood ``ODIN(eps=0)``) and MSP (pytorch-ood
  ``MaxSoftmax``): pytorch-ood scores outliers (higher = more likely wrong), lpc confidence (higher = more
  likely right); the peer's AUROC is pytorch-ood's own ``metrics.functional.auroc`` with the wrong
  predictions as its positives. Per-input difference: |lpc score + peer score|.
* Mahalanobis: lpc (the paper, Sec. 3.2) scores the distance to the *predicted* class; pytorch-ood's
  ``Mahalanobis`` the *closest* class. Both are printed, each with both libraries: the predicted-class peer
  score is computed from pytorch-ood's fitted ``mu`` and ``precision``. pytorch-ood's covariance is the sum
  of centred outer products (not divided by N) plus 1e-6 I, inverted in float32; lpc's is the ML estimate
  with a float64 pseudo-inverse. Per-input difference: max relative difference of the distances, the
  peer's rescaled by sqrt(2 N).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from machine import machine_line

from lpc import load_run
from lpc.config import apply_overrides, load_config, parse_override
from lpc.data import load_data
from lpc.metrics.reliability import (auroc, collect_outputs, fit_class_gaussians, mahalanobis_distance,
                                     mahalanobis_score, misclassification_summary, msp_score, odin_score)
from lpc.metrics.robustness import deepfool, pgd_l2_radius, select_inputs
from lpc.trainer import train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mnist.yaml"
HEADS = ("ib", "no_pen")
# The benchmark measures its own metrics: the run's final evaluation is switched off to train faster.
# make demo's training (set point 0.3): its ib is the collapsed model on which DeepFool and PGD part ways
TRAIN_OVERRIDES = {"gamma.target": 0.3, "eval.robustness": False, "eval.reliability": False,
                   "eval.geometry": False, "eval.entropy": False}
BOX_MARGIN = 1.0    # peers' box = data range widened by this many data ranges on each side
CW_SEARCH = 5                       # C&W binary-search steps over the constant (foolbox default 9)
CW_STEPS, CW_TARGETED_STEPS = 200, 100   # C&W Adam steps per constant (foolbox default 10,000)
MIN_NORM_STEPS = 1000               # FMN and DDN iterations (foolbox default 100)


def peers():
    """The peer libraries, or one line saying how to install them."""
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # foolbox imports GitPython, which wants a git binary
    try:
        import foolbox
        import pytorch_ood
    except ImportError as error:
        print(f"benchmarks/peers.py: needs the peer libraries ({error.name} is missing): "
              f"pip install -e '.[peers]'", file=sys.stderr)
        return None
    return foolbox, pytorch_ood


class Logits(nn.Module):
    """lpc models return (logits, z); the peers want one output."""

    def __init__(self, model: nn.Module, index: int):
        super().__init__()
        self.model, self.index = model, index

    def forward(self, x):
        return self.model(x)[self.index]


def trained(head: str, runs: Path, overrides: dict, device: str):
    """Trains the run into ``runs/head`` unless it is already there, then loads it."""
    config = apply_overrides(load_config(CONFIG), {"model.head": head, "device": device, **TRAIN_OVERRIDES,
                                                   **overrides})
    out = runs / head
    t0 = time.perf_counter()
    was_there = (out / "summary.json").exists()
    summary = train(config, out, progress=False)
    if summary.get("status") != "finished":
        raise SystemExit(f"{out}: training did not finish ({summary.get('reason')})")
    how = f"loaded from {out}" if was_there else f"trained into {out} in {time.perf_counter() - t0:.0f} s"
    model, config = load_run(out, device=device)
    return model, config, summary, how


def most_collapsed(sweep: Path):
    """The finished ib run of benchmarks/pressure.py's ``results.jsonl`` with the smallest binarity σ̄."""
    import json
    from pressure import _data  # the sweep's datasets are built in the benchmarks, not stored in the run folder
    rows = [json.loads(line) for line in (sweep / "results.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["head"] == "ib" and r["status"] == "finished" and r["binarity_sigma_train"] is not None]
    if not rows:
        raise SystemExit(f"{sweep / 'results.jsonl'}: no finished ib run")
    best = min(rows, key=lambda r: r["binarity_sigma_train"])
    model, config = load_run(best["run"], device="cpu")
    summary = {"test_accuracy": best["test_accuracy"]}
    how = (f"the most collapsed run of {sweep} ({best['dataset']}, set point {best['target']:g}, seed {best['seed']}, "
           f"σ̄ {best['binarity_sigma_train']:.3f})")
    return model, config, summary, how, _data(best["dataset"])


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def row(model: str, metric: str, ours: float, peer: float, diff: str, who: str) -> None:
    print(f"{model:<7} {metric:<36} {ours:>8.4f} {peer:>8.4f}  {diff:<44} {who}")


def robustness_rows(name, model, config, x, bounds, fb, seconds):
    """DeepFool and the minimal L2 radius against foolbox, on the inputs ``lpc train`` attacks."""
    logits = Logits(model, 0).eval()
    with torch.no_grad():
        pred = logits(x).argmax(1)
    x_norm = x.flatten(1).norm(dim=1)
    e = config.eval

    res, seconds["lpc deepfool"] = timed(deepfool, model, x, overshoot=e.deepfool_overshoot,
                                         max_iter=e.deepfool_max_iter, num_candidates=10)
    fb_model = fb.PyTorchModel(logits, bounds=bounds)
    criterion = fb.criteria.Misclassification(pred)
    attack = fb.attacks.L2DeepFoolAttack(steps=e.deepfool_max_iter, candidates=10, overshoot=e.deepfool_overshoot)
    (_, adv, _), seconds["foolbox deepfool"] = timed(attack, fb_model, x, criterion, epsilons=None)
    r_peer = adv - x
    rel_ours, rel_peer = res.relative_norm, r_peer.flatten(1).norm(dim=1) / x_norm
    row(name, "DeepFool ||r||/||x||, mean", float(rel_ours.mean()), float(rel_peer.mean()),
        f"||r||/||x|| {float((rel_ours - rel_peer).abs().max()):.1e}, r {float((res.r - r_peer).abs().max()):.1e}",
        "foolbox L2DeepFoolAttack")

    # Peer minimal-norm attacks; the smallest successful perturbation per input is the reference. An
    # untargeted attack follows the runner-up class, whose boundary need not be the nearest (lpc's PGD tries
    # every class for that reason), so C&W is also run targeted at each other class.
    with torch.no_grad():
        order = logits(x).argsort(1, descending=True)
    cw = dict(binary_search_steps=CW_SEARCH, initial_const=1.0, stepsize=1e-2 / (1 + 2 * BOX_MARGIN))
    peer_runs = [("FMN", fb.attacks.L2FMNAttack(steps=MIN_NORM_STEPS), criterion),
                 ("DDN", fb.attacks.DDNAttack(steps=MIN_NORM_STEPS), criterion),
                 ("C&W", fb.attacks.L2CarliniWagnerAttack(steps=CW_STEPS, **cw), criterion)]
    peer_runs += [("C&W targeted", fb.attacks.L2CarliniWagnerAttack(steps=CW_TARGETED_STEPS, **cw),
                   fb.criteria.TargetedMisclassification(order[:, k])) for k in range(1, order.shape[1])]
    radii: dict[str, Tensor] = {}
    touching = 0
    for who, attack, goal in peer_runs:
        torch.manual_seed(0)
        (_, adv, _), spent = timed(attack, fb_model, x, goal, epsilons=None)
        seconds[f"foolbox {who}"] = seconds.get(f"foolbox {who}", 0.0) + spent
        with torch.no_grad():
            flips = logits(adv).argmax(1) != pred   # checked here, not taken from the attack's word
        radius = torch.where(flips, (adv - x).flatten(1).norm(dim=1), torch.full_like(x_norm, math.inf))
        radii[who] = torch.minimum(radii.get(who, radius), radius)
        touching += int(((adv <= bounds[0] + 1e-6) | (adv >= bounds[1] - 1e-6)).flatten(1).any(1).sum())
    best, which = torch.stack(list(radii.values())).min(dim=0)
    wins = ", ".join(f"{who} {int((which == i).sum())}" for i, who in enumerate(radii))
    means = ", ".join(f"{who} {float((r / x_norm).mean()):.4f}" for who, r in radii.items())
    print(f"{'':<10}peers' mean radius/||x||: {means}")
    print(f"{'':<10}smallest on: {wins} inputs; peer points on the box's faces: {touching}")

    # lpc train's cheaper settings, passed as lpc.evaluation passes them to robustness_summary
    settings = {"defaults": {}, "train settings": {"steps": e.pgd_steps, "restarts": e.pgd_restarts,
                                                   "search_steps": e.pgd_search_steps, "per_round": e.pgd_per_round}}
    for label, kwargs in settings.items():
        out, seconds[f"lpc pgd ({label})"] = timed(pgd_l2_radius, model, x, seed=config.seed, **kwargs)
        ratio = out.radius / best
        ok = ratio.isfinite()
        row(name, f"PGD-L2 radius/||x||, {label}", float(out.relative_radius.mean()), float((best / x_norm).mean()),
            f"lpc/peer mean {float(ratio[ok].mean()):.4f}, max {float(ratio[ok].max()):.4f}, "
            f"min {float(ratio[ok].min()):.4f}" + ("" if bool(ok.all()) else f" ({int((~ok).sum())} unflipped)"),
            "foolbox: smallest of the 4 above")


def reliability_rows(name, model, config, data, seconds):
    """ODIN, MSP and Mahalanobis misclassification AUROC against pytorch-ood, on the whole test set."""
    from pytorch_ood.detector import ODIN, Mahalanobis, MaxSoftmax
    from pytorch_ood.metrics.functional import auroc as peer_auroc

    t0 = time.perf_counter()
    x_train, x_test = data.normalize(data.x_train), data.normalize(data.x_test)
    logits_tr, z_tr = collect_outputs(model, x_train)
    logits_te, z_te = collect_outputs(model, x_test)
    pred = logits_te.argmax(1)
    correct = pred == data.y_test
    ok_tr = logits_tr.argmax(1) == data.y_train
    temperature = config.eval.odin_temperature
    ours = misclassification_summary(z_tr, data.y_train, logits_tr, z_te, data.y_test, logits_te,
                                     temperature=temperature)
    fitted = fit_class_gaussians(z_tr[ok_tr], data.y_train[ok_tr])
    closest = auroc(mahalanobis_score(z_te, fitted), correct)
    seconds["lpc AUROCs"] = seconds.get("lpc AUROCs", 0.0) + time.perf_counter() - t0

    # pytorch-ood runs the model itself; its scores are outlier scores, its positives the wrong predictions.
    t0 = time.perf_counter()
    labels = torch.where(correct, 0, -1)
    logits = Logits(model, 0).eval()
    odin = ODIN(logits, eps=0.0, temperature=temperature).predict(x_test).detach()
    msp = MaxSoftmax(logits).predict(x_test).detach()
    maha = Mahalanobis(Logits(model, 1).eval()).fit_features(z_tr[ok_tr], data.y_train[ok_tr])
    maha_closest = maha.predict(x_test)
    centred = z_te - maha.mu[pred]
    maha_pred = 0.5 * ((centred @ maha.precision) * centred).sum(1)   # same form as its own per-class score
    seconds["pytorch-ood AUROCs"] = seconds.get("pytorch-ood AUROCs", 0.0) + time.perf_counter() - t0

    n_fit = int(ok_tr.sum())
    to_distance = lambda s: (2 * n_fit * s.double()).clamp_min(0).sqrt()  # noqa: E731  (cov is a sum over N)
    d_pred = mahalanobis_distance(z_te, fitted, pred)
    d_closest = mahalanobis_distance(z_te, fitted).min(dim=1).values
    cases = [
        (f"ODIN AUROC (T={temperature:g}, no perturbation)", ours["auroc_odin"], odin,
         (odin_score(logits_te, temperature=temperature) + odin.double()).abs().max(), "ODIN(eps=0)"),
        ("MSP AUROC", ours["auroc_msp"], msp, (msp_score(logits_te) + msp.double()).abs().max(), "MaxSoftmax"),
        ("Mahalanobis AUROC, predicted class", ours["auroc_mahalanobis"], maha_pred,
         ((to_distance(maha_pred) - d_pred).abs() / d_pred).max(), "Mahalanobis mu/precision"),
        ("Mahalanobis AUROC, closest class", closest, maha_closest,
         ((to_distance(maha_closest) - d_closest).abs() / d_closest).max(), "Mahalanobis"),
    ]
    for metric, our_value, peer_scores, diff, who in cases:
        unit = "relative distance" if "Mahalanobis" in metric else "score"
        row(name, metric, our_value, float(peer_auroc(peer_scores, labels)), f"{unit} {float(diff):.1e}",
            f"pytorch-ood {who}")
    print(f"{'':<10}wrong test predictions (the AUROCs' negatives): {int((~correct).sum())} of {len(correct)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/peers"),
                        help="where the two models are trained, or loaded from when already there")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the fastest for this small MLP on a shared CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for both runs, e.g. --set optim.epochs=20")
    parser.add_argument("--pressure", type=Path,
                        help="also check the most collapsed ib run of benchmarks/pressure.py's --out folder")
    args = parser.parse_args()
    libs = peers()
    if libs is None:
        return 0  # `make bench` runs every benchmark; this one is optional
    foolbox, _ = libs
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    overrides = dict(parse_override(text) for text in args.set)

    seconds: dict[str, float] = {}
    print(machine_line(torch.device(args.device),
                       extra=f"foolbox {foolbox.__version__} pytorch-ood {_version('pytorch-ood')}"))
    print(f"{'model':<7} {'metric':<36} {'lpc':>8} {'peer':>8}  {'largest per-input difference':<44} peer")
    models = [(head, lambda head=head: (*trained(head, args.runs, overrides, args.device), None)) for head in HEADS]
    if args.pressure is not None:
        models.append(("ib*", lambda: most_collapsed(args.pressure)))
    for head, load in models:
        model, config, summary, how, data = load()
        model = model.to(args.device)
        data = (load_data(config.data) if data is None else data).to(args.device)
        x_all = data.normalize(data.x_test)
        idx = select_inputs(config.eval.robustness_inputs, len(x_all), seed=config.seed).to(x_all.device)
        x = x_all[idx]
        lo, hi = float(x_all.min()), float(x_all.max())
        bounds = (lo - BOX_MARGIN * (hi - lo), hi + BOX_MARGIN * (hi - lo))
        print(f"{head}: {how}; test accuracy {summary['test_accuracy']:.4f}; {len(x)} attacked inputs")
        robustness_rows(head, model, config, x, bounds, foolbox, seconds)
        reliability_rows(head, model, config, data, seconds)
    print("seconds (all models): " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
          + f"; total {time.perf_counter() - started:.0f}")
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import version
    return version(dist)


if __name__ == "__main__":
    sys.exit(main())
