"""Evaluation of a trained model: accuracies and latent geometry of each split, and the final reliability and
robustness metrics.

The trainer calls :func:`evaluate` at every evaluated epoch and :func:`final_metrics` once after the last;
:func:`lpc.runs.analyze_run` calls the same two on a saved run, so a run and its re-analysis measure alike.
"""
from __future__ import annotations

import sys
import time
from typing import Any

import torch
from torch import nn

from .config import Config
from .data import Dataset
from .model import Classifier


@torch.no_grad()
def predict(model: nn.Module, data: Dataset, split: str, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and latents of a whole split in eval mode, clean (unaugmented) inputs."""
    was_training = model.training
    model.eval()
    x, _ = data.split(split)
    logits, latents = [], []
    for start in range(0, len(x), batch_size):
        out, z = model(data.normalize(x[start:start + batch_size]))
        logits.append(out.float())
        latents.append(z.float())
    model.train(was_training)
    return torch.cat(logits), torch.cat(latents)


def evaluate(model: Classifier, data: Dataset, config: Config, *, geometry: bool = True) -> dict[str, Any]:
    """Accuracies on the three splits and, when ``config.eval.geometry``, the latent geometry of train and test."""
    record: dict[str, Any] = {}
    outputs = {}
    for split in ("train", "val", "test"):
        logits, z = predict(model, data, split)
        outputs[split] = (logits, z)
        record[f"{split}_accuracy"] = (logits.argmax(1) == data.split(split)[1]).double().mean().item()
    if geometry and config.eval.geometry:
        record.update(_geometry(model, data, config, outputs))
    return record


def _geometry(model, data, config, outputs) -> dict[str, Any]:
    from .metrics.geometry import geometry_summary

    values = {}
    for split in ("train", "test"):
        logits, z = outputs[split]
        y = data.split(split)[1]
        keep = _subsample(len(z), config.eval.geometry_max_samples, config.seed)
        summary = geometry_summary(z[keep], y[keep], logits=logits[keep], W=model.head.classifier.weight.detach(),
                                   entropy=config.eval.entropy, entropy_k=config.eval.entropy_k)
        values.update({f"{k}_{split}": v for k, v in summary.items()})
    return values


def _subsample(n: int, limit: int, seed: int) -> torch.Tensor | slice:
    if n <= limit:
        return slice(None)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:limit].sort().values


def classifier_pressure(model: Classifier, gamma: float) -> dict[str, float]:
    """The classifier's scale r (mean norm of its weight rows) and the pressure γ/r² on the latents.

    Under (W, z) → (cW, z/c) the logits are unchanged and γ||z||² falls by c²: what the compression term
    does depends on γ relative to r², not on γ alone (see :class:`lpc.losses.AutoGamma`).
    """
    scale = model.head.classifier.weight.detach().double().norm(dim=1).mean().item()
    return {"classifier_scale": scale, "pressure": gamma / scale ** 2}


def final_metrics(model: Classifier, data: Dataset, config: Config, *, progress: bool = False) -> dict[str, Any]:
    """Reliability (misclassification and OOD AUROCs) and robustness scores, as ``config.eval`` switches them.

    With ``progress`` each phase (AUROCs, DeepFool, PGD-L2, bisection, Lipschitz) shows a progress bar when
    stderr is a terminal and writes one line with its duration to stderr (a study worker's ``run.log``).
    """
    phase = evaluation_phases(progress)
    values: dict[str, Any] = {}
    model.eval()
    if config.eval.reliability:
        with phase("AUROCs", 2) as advance:
            outputs = {s: predict(model, data, s) for s in ("train", "test")}
            advance(1)
            values.update(_reliability(model, data, config, outputs))
            advance(1)
    if config.eval.robustness:
        values.update(_robustness(model, data, config, phase))
    return values


def evaluation_phases(enabled: bool):
    """``phase(name, total)``: a context manager around one phase of the final evaluation, yielding ``advance(n)``.

    Enabled, it draws a tqdm bar (with the time left) when stderr is a terminal -- never into a study worker's
    log file -- and writes ``lpc: <name> took <s> s`` to stderr when the phase ends.
    """
    import contextlib

    @contextlib.contextmanager
    def phase(name: str, total: int):
        if not enabled:
            yield lambda n: None
            return
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc=name, leave=False, dynamic_ncols=True, disable=not sys.stderr.isatty())
        started = time.perf_counter()
        try:
            yield bar.update
        finally:
            bar.close()
        log_line(f"lpc: {name} took {time.perf_counter() - started:.1f} s", bar)

    return phase


def log_line(message: str, bar=None) -> None:
    """One line to the run's log (stderr; a study worker's run.log), above the progress bar when there is one."""
    if hasattr(bar, "write"):
        bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


def _reliability(model, data, config, outputs) -> dict[str, Any]:
    from .metrics.reliability import (collect_outputs, fit_reference_gaussians, misclassification_summary,
                                      ood_auroc_from_outputs)

    (logits_tr, z_tr), (logits_te, z_te) = outputs["train"], outputs["test"]
    temperature = config.eval.odin_temperature
    fitted = fit_reference_gaussians(z_tr, data.y_train, logits_tr)  # once, for both AUROC families
    values = misclassification_summary(z_tr, data.y_train, logits_tr, z_te, data.y_test, logits_te,
                                       temperature=temperature, fitted=fitted)
    # batched: a whole CIFAR test set through a ResNet in one call would not fit in memory
    logits_ood, z_ood = collect_outputs(model, ood_inputs(data, config.seed), batch_size=1024)
    ood = (logits_te, z_te, logits_ood.float(), z_ood.float(), fitted)
    if fitted is not None:
        values.update(ood_auroc_from_outputs(*ood, temperature=temperature))
    else:  # no correctly classified training sample: no reference for the Mahalanobis score
        values["ood_auroc_mahalanobis"] = None
        for score in ("odin", "msp"):
            values.update(ood_auroc_from_outputs(*ood, score=score, temperature=temperature))
    return values


def ood_inputs(data: Dataset, seed: int) -> torch.Tensor:
    """A built-in out-of-distribution set that needs no download: the test images with their pixels
    shuffled by one fixed permutation (same pixel statistics, no digit structure). Normalised inputs."""
    x = data.normalize(data.x_test)
    flat = x.reshape(len(x), -1)
    generator = torch.Generator().manual_seed(10_000 + seed)
    permutation = torch.randperm(flat.shape[1], generator=generator).to(flat.device)
    return flat[:, permutation].reshape(x.shape)


def _robustness(model, data, config, phase=None) -> dict[str, Any]:
    from .metrics.robustness import robustness_summary

    e = config.eval
    x = data.normalize(data.x_test)
    return robustness_summary(model, x, n=e.robustness_inputs, seed=config.seed, overshoot=e.deepfool_overshoot,
                              max_iter=e.deepfool_max_iter, pgd_steps=e.pgd_steps, pgd_restarts=e.pgd_restarts,
                              pgd_search_steps=e.pgd_search_steps, pgd_per_round=e.pgd_per_round, progress=phase)
