"""Run folders read back: the trained model, its config and input normalisation, and every metric recomputed."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import Config, load_config
from .data import Dataset, Normalization, load_data
from .distributed import resolve_device
from .evaluation import evaluate, final_metrics
from .files import RunFileError, load_torch, read_json
from .model import build_model


def load_run(run_dir: str | Path, *, device: str | torch.device = "cpu",
             raw_inputs: bool = False) -> tuple[nn.Module, Config]:
    """The trained model of a run folder, in eval mode, and its resolved config.

    ``model(x)`` returns ``(logits, z)`` for inputs as the training pipeline feeds them: normalised by the
    training set's per-channel mean and std. With ``raw_inputs`` the model is
    ``nn.Sequential(load_normalization(run_dir), classifier)`` and takes raw inputs (uint8 images or the
    floats of the data file) instead; its ``[1]`` is the :class:`~lpc.model.Classifier`.
    The weights come from ``model.pt``, or from ``checkpoint.pt`` for a run that has not finished.
    """
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    summary = _summary(run_dir)
    if "in_shape" in summary and "num_classes" in summary:
        in_shape, num_classes = tuple(summary["in_shape"]), summary["num_classes"]
    else:  # an unfinished run: the shapes come from its data
        data = load_data(config.data)
        in_shape, num_classes = data.in_shape, data.num_classes
    if (run_dir / "model.pt").exists():
        state = load_torch(run_dir / "model.pt", map_location=device)
    elif (run_dir / "checkpoint.pt").exists():
        state = load_torch(run_dir / "checkpoint.pt", map_location=device)["model"]
    else:
        raise RunFileError(f"{run_dir}: no model.pt or checkpoint.pt (has this run started?)")
    model: nn.Module = build_model(config, in_shape, num_classes).to(device)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise RunFileError(f"{run_dir}: weights do not fit the model its config describes ({str(error).splitlines()[0]})") from None
    if raw_inputs:
        model = nn.Sequential(load_normalization(run_dir), model).to(device)
    return model.eval(), config


def load_normalization(run_dir: str | Path) -> Normalization:
    """The input normalisation a run trained with (per-channel mean and std of its training set).

    Read from ``summary.json``'s ``normalization`` entry; a run that has not finished, or one written before
    runs recorded it, has it recomputed from the data its config names.
    """
    run_dir = Path(run_dir)
    summary = _summary(run_dir)
    if "normalization" in summary and "in_shape" in summary:
        return Normalization.from_dict(summary["normalization"], tuple(summary["in_shape"]))
    return load_data(load_config(run_dir / "config.yaml").data).normalization


def _summary(run_dir: Path) -> dict[str, Any]:
    return read_json(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}


def analyze_run(run_dir: str | Path, *, data: Dataset | None = None, device: str = "auto") -> dict[str, Any]:
    """Recomputes accuracies, latent geometry, reliability and robustness of a run on its data (or ``data``).

    Inputs are normalised with the run's statistics (:func:`load_normalization`), never ``data``'s own: the
    model only knows the normalisation it was trained with.
    """
    target = resolve_device(device)
    model, config = load_run(run_dir, device=target)
    if data is None:
        data = load_data(config.data)
    data = data.with_normalization(load_normalization(run_dir)).to(target)
    torch.manual_seed(config.seed)
    values = evaluate(model, data, config)
    values.update(final_metrics(model, data, config))
    return {"run": str(run_dir), "head": config.model.head, "dataset": data.name, **values}
