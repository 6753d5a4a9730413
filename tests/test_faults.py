"""Fault tolerance of `lpc train` with real processes: SIGKILL and resume, corrupt files, rejected input."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import tiny_config
from lpc.cli import main

VOLATILE = {"wall_seconds"}


def _train_cmd(config_path, out):
    return [sys.executable, "-m", "lpc", "train", "--config", str(config_path), "--out", str(out), "--quiet"]


def _summary(out):
    summary = json.loads((out / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in VOLATILE}


@pytest.fixture
def long_yaml(tmp_path, tiny_npz):
    # dropout and noise make the run depend on every RNG stream that a resume must restore
    config = tiny_config(**{"data.path": str(tiny_npz), "optim.epochs": 60, "eval.log_every": 1,
                            "model.head": "no_pen_dropout", "model.mlp_hidden": [256, 256], "optim.batch_size": 8})
    path = tmp_path / "long.yaml"
    config.save(path)
    return path


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_numbers(tmp_path, long_yaml):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd(long_yaml, reference), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_cmd(long_yaml, killed), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        history = killed / "history.jsonl"
        if history.exists() and len(history.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    subprocess.run(_train_cmd(long_yaml, killed), check=True, env=env, capture_output=True)
    assert _summary(killed) == _summary(reference)
    history = [json.loads(line) for line in (killed / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == list(range(1, 61))


def test_truncated_checkpoint_is_reported_by_path(tmp_path, tiny_npz, capsys):
    config = tiny_config(**{"data.path": str(tiny_npz), "optim.epochs": 2})
    path = tmp_path / "c.yaml"
    config.save(path)
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    (out / "summary.json").unlink()  # as if killed after the checkpoint was written
    checkpoint = out / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    assert main(["train", "--config", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt" in err and "Traceback" not in err


def test_diverged_run_names_epoch_gamma_and_lr(tmp_path, tiny_npz, capsys):
    config = tiny_config(**{"data.path": str(tiny_npz), "optim.lr": 1e30, "model.head": "ib", "optim.epochs": 3,
                            "gamma.init": 1e30, "gamma.max": 1e30})
    path = tmp_path / "c.yaml"
    config.save(path)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert "epoch 1" in summary["reason"] and "lr=1e+30" in summary["reason"]


@pytest.mark.parametrize("override,message", [
    ("optim.lrr=1", "did you mean 'optim.lr'"),
    ("model.backbone=resnet", "model.backbone: unknown value 'resnet'"),
    ("gamma.factor=-2", "gamma.factor must be positive"),
    ("model.widths.narrow=9999", "narrow (9999) is larger"),
    ("optim.epochs=0", "optim.epochs must be at least 1"),
    ("runtime.checkpoint_seconds=-1", "runtime.checkpoint_seconds must be >= 0"),
    ("optim.lr=.nan", "optim.lr: expected a finite number, got nan"),
    ("gamma.max=.inf", "gamma.max: expected a finite number, got inf"),
])
def test_each_bad_config_exits_2_and_writes_nothing(tmp_path, tiny_npz, override, message):
    config = tiny_config(**{"data.path": str(tiny_npz)})
    path = tmp_path / "c.yaml"
    config.save(path)
    out = tmp_path / "never"
    result = subprocess.run([sys.executable, "-m", "lpc", "train", "--config", str(path), "--out", str(out),
                             "--set", override], capture_output=True, text=True)
    assert result.returncode == 2
    lines = [l for l in result.stderr.strip().splitlines() if l]
    assert len(lines) == 1 and message in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_data_with_nan_or_inf_exits_2_and_writes_nothing(tmp_path, tiny_npz, bad):
    with np.load(tiny_npz) as stored:
        arrays = dict(stored)
    arrays["x_train"][5, 2] = bad
    np.savez(tmp_path / "bad.npz", **arrays)
    config = tiny_config(**{"data.path": str(tmp_path / "bad.npz")})
    config.save(tmp_path / "c.yaml")
    out = tmp_path / "never"
    result = subprocess.run(_train_cmd(tmp_path / "c.yaml", out), capture_output=True, text=True)
    assert result.returncode == 2
    lines = [l for l in result.stderr.strip().splitlines() if l]
    assert len(lines) == 1 and "x_train contains NaN or Inf" in lines[0]
    assert not out.exists()


@pytest.mark.slow
def test_ctrl_c_checkpoints_at_the_end_of_the_epoch_and_resumes_exactly(tmp_path, tiny_npz):
    from lpc.files import load_torch

    # evaluations only at the end: without the deferred interrupt there would be no checkpoint at all
    config = tiny_config(**{"data.path": str(tiny_npz), "optim.epochs": 200, "eval.log_every": 200,
                            "model.head": "no_pen_dropout", "model.mlp_hidden": [256, 256], "optim.batch_size": 8})
    path = tmp_path / "c.yaml"
    config.save(path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run(_train_cmd(path, reference), check=True, env=env, capture_output=True)

    process = subprocess.Popen(_train_cmd(path, interrupted), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (interrupted / "config.yaml").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # some epochs in
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (interrupted / "summary.json").exists()
    epoch = load_torch(interrupted / "checkpoint.pt")["epoch"]
    assert 0 < epoch < 200
    subprocess.run(_train_cmd(path, interrupted), check=True, env=env, capture_output=True)
    assert _summary(interrupted) == _summary(reference)


def _killed_in_epoch(config, out, monkeypatch, epoch):
    """Trains into ``out`` until ``epoch`` (1-based) starts, then dies there as SIGKILL would: no handler runs."""
    import lpc.trainer as loop

    original, calls = loop.train_epoch, []

    def die(*args, **kwargs):
        if len(calls) == epoch - 1:
            raise SystemExit("killed")
        calls.append(1)
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "train_epoch", die)
        with pytest.raises(SystemExit):
            loop.train(config, out, progress=False)


@pytest.mark.parametrize("seconds, saved_epoch", [(0, 5), (1e6, 3)])
def test_a_run_killed_between_evaluations_resumes_from_its_time_checkpoint(tmp_path, tiny_npz, monkeypatch,
                                                                           seconds, saved_epoch):
    from lpc.files import load_torch
    from lpc.trainer import train

    # evaluations at epochs 3 and 8; dropout and noise make the result depend on every resumed RNG stream
    config = tiny_config(**{"data.path": str(tiny_npz), "optim.epochs": 8, "eval.log_every": 3,
                            "model.head": "no_pen_dropout", "optim.batch_size": 16,
                            "runtime.checkpoint_seconds": seconds})
    reference = train(config, tmp_path / "reference", progress=False)
    killed = tmp_path / "killed"
    _killed_in_epoch(config, killed, monkeypatch, epoch=6)
    assert load_torch(killed / "checkpoint.pt")["epoch"] == saved_epoch  # 0 s: the end of epoch 5, else epoch 3's
    assert not (killed / "summary.json").exists()
    resumed = train(config, killed, progress=False)
    assert {k: v for k, v in resumed.items() if k not in VOLATILE} == \
        {k: v for k, v in reference.items() if k not in VOLATILE}
    assert (killed / "history.jsonl").read_bytes() == (tmp_path / "reference" / "history.jsonl").read_bytes()
