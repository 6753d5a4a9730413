"""The examples run end to end on a few hundred embedded digits: a plain loop and a LightningModule, both with
lpc.attach, lpc.IBLoss and lpc.AutoGamma."""
import math
import re
import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL = ["--train", "256", "--test", "200", "--epochs", "2", "--batch-size", "64"]


def _numbers(line: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"([a-z][a-z ]*?) ([-+0-9.e]+|nan|inf)(?=\s|$)", line)}


def test_resnet18_own_loop(capsys):
    runpy.run_path(str(EXAMPLES / "resnet18_own_loop.py"), run_name="example")["main"](SMALL)
    lines = capsys.readouterr().out.splitlines()
    epochs = [_numbers(line.split(":", 1)[1]) for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2
    for record in epochs:
        assert math.isfinite(record["loss"]) and record["gamma"] > 0
        assert all(0 <= record[f"{split} accuracy"] <= 1 for split in ("train", "val", "test"))
    assert epochs[1]["loss"] < epochs[0]["loss"]  # it learns
    assert lines[-1].startswith("latents: (200, 8)")  # the last test batch, in the 8-wide IB layer


def test_lightning_module(capsys):
    pytest.importorskip("lightning")
    module, results = runpy.run_path(str(EXAMPLES / "lightning_module.py"), run_name="example")["main"](SMALL)
    assert {"loss", "gamma", "val_loss", "val_accuracy"} <= set(results)
    # 2 epochs of 4 batches: γ's controller stepped once per training step, never in validation (eval mode)
    assert int(module.criterion.controller.num_steps) == 8 and module.criterion.controller.total_steps == 8
    assert results["gamma"] >= 0.1 - 1e-7 and math.isfinite(results["val_loss"]) and 0 <= results["val_accuracy"] <= 1
    assert "test accuracy" in capsys.readouterr().out
