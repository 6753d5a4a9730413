"""Shared fixtures: tiny datasets and configs that train in a second on a CPU."""
from pathlib import Path

import numpy as np
import pytest
import torch

from lpc.config import config_from_dict

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)  # tests run beside each other on 2 cores; one thread each is fastest overall
    yield


def blobs(n_per_class: int = 40, num_classes: int = 3, dim: int = 6, seed: int = 0, spread: float = 0.3):
    """Linearly separable Gaussian blobs as float32 vectors."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim)) * 3
    y = np.repeat(np.arange(num_classes), n_per_class)
    x = centres[y] + spread * rng.normal(size=(len(y), dim))
    order = rng.permutation(len(y))
    return x[order].astype(np.float32), y[order]


@pytest.fixture
def tiny_npz(tmp_path):
    x, y = blobs(80)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x[:180], y_train=y[:180], x_test=x[180:], y_test=y[180:])
    return path


def tiny_config(**overrides):
    """A config for flat-vector data that trains in well under a second."""
    values = {
        "data": {"name": "npz", "path": "unused.npz", "flip": False, "crop_padding": 0, "noise_std": 0.01},
        "model": {"backbone": "mlp", "mlp_hidden": [16], "head": "ib", "widths": {"intermediate": 4, "wide": 16, "narrow": 2}},
        "optim": {"lr": 1e-2, "epochs": 3, "batch_size": 32, "lr_decay_start": 2, "lr_decay_every": 1},
        "gamma": {"init": 1e-2, "factor": 2.0, "max": 1.0},
        "eval": {"log_every": 1, "geometry": False, "robustness": False, "reliability": False},
        "device": "cpu",
    }
    for dotted, value in overrides.items():
        node = values
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return config_from_dict(values)
