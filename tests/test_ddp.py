"""One run on two processes: ``torchrun --nproc_per_node=2 -m lpc train`` with gloo on the CPU."""
import json
import math
import os
import subprocess
import time
import sys

import numpy as np
import pytest
import torch

from conftest import blobs, tiny_config

RUN_FILES = {"config.yaml", "history.jsonl", "summary.json", "model.pt", "checkpoint.pt", "latents.npz"}


@pytest.fixture
def ddp_yaml(tmp_path):
    x, y = blobs(100, num_classes=3, dim=6, seed=3)
    np.savez(tmp_path / "blobs.npz", x_train=x[:240], y_train=y[:240], x_test=x[240:], y_test=y[240:])
    config = tiny_config(**{"data.path": str(tmp_path / "blobs.npz"), "optim.epochs": 4, "eval.log_every": 2,
                            "optim.batch_size": 32, "model.head": "no_pen_dropout", "gamma.schedule": "auto",
                            # no accuracy gate: its threshold would turn the two runs' small numerical differences
                            # (another dropout draw per rank) into different γ paths; the all-reduce of every
                            # statistic it reads is checked in test_gamma.py
                            "gamma.target": 0.5, "gamma.accuracy": 0.0})
    path = tmp_path / "ddp.yaml"
    config.save(path)
    return path


def _lpc(args, cwd, launcher=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *launcher, "-m", "lpc", "train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_two_gloo_processes_train_one_run_like_one_process(tmp_path, ddp_yaml):
    work = tmp_path / "work"  # the processes' working directory: nothing may appear here
    work.mkdir()
    single = _lpc(["--config", str(ddp_yaml), "--out", str(tmp_path / "single"), "--quiet"], cwd=work)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = _lpc(["--config", str(ddp_yaml), "--out", str(tmp_path / "ddp"), "--quiet"], cwd=work,
               launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"))
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    a = json.loads((tmp_path / "single" / "summary.json").read_text())
    b = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert a["status"] == b["status"] == "finished"
    for key in ("train_accuracy", "val_accuracy", "test_accuracy"):  # separable blobs: both ~1.0
        assert b[key] >= 0.95 and abs(a[key] - b[key]) <= 0.05, (key, a[key], b[key])
    # the same number of optimisation steps: batch_size is the global batch, shared by the two ranks
    history = [json.loads(line) for line in (tmp_path / "ddp" / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [2, 4]

    # rank 0 alone writes: one set of run files, one printed summary, nothing anywhere else
    assert {p.name for p in (tmp_path / "ddp").iterdir()} == RUN_FILES
    assert {p.name for p in (tmp_path / "single").iterdir()} == RUN_FILES
    assert list(work.iterdir()) == []
    printed = [line for line in ddp.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1 and json.loads(printed[0])["status"] == "finished"
    assert ddp.stderr.count("run files in") == 1
    # the γ controller saw the same global batches on both ranks as the single process did: it moved alike
    gammas = [torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["gamma"]["log_gamma"].item()
              for name in ("single", "ddp")]
    assert gammas[1] > math.log(0.1) + 1 and gammas[1] == pytest.approx(gammas[0], abs=0.05)


def test_download_is_refused_under_torchrun(tmp_path, ddp_yaml, monkeypatch, capsys):
    from lpc.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    code = main(["train", "--config", str(ddp_yaml), "--download", "--out", str(tmp_path / "never")])
    assert code == 2 and "download before starting several processes" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


# Loaded by every process of the run (Python imports sitecustomize from sys.path at start-up): the rank named
# by LPC_FAULT_RANK raises in the phase LPC_FAULT_PHASE, as an unexpected bug there would.
FAULT_HOOK = '''
import os
if os.environ.get("RANK") == os.environ.get("LPC_FAULT_RANK"):
    import lpc.trainer as loop
    phase = os.environ["LPC_FAULT_PHASE"]
    name = {"step": "train_epoch", "evaluation": "evaluate"}[phase]
    original = getattr(loop, name)
    calls = []

    def faulty(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError(f"injected fault on rank {os.environ['RANK']} during a {phase}")
        return original(*args, **kwargs)

    setattr(loop, name, faulty)
'''


@pytest.mark.parametrize("rank, phase", [(0, "evaluation"), (1, "step")])
def test_an_error_on_any_rank_stops_every_rank_at_once(tmp_path, ddp_yaml, rank, phase):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAULT_HOOK)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "LPC_FAULT_RANK": str(rank),
           "LPC_FAULT_PHASE": phase, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "lpc", "train", "--config", str(ddp_yaml), "--out", str(tmp_path / "run"), "--quiet"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    seconds = time.perf_counter() - started
    assert run.returncode != 0
    assert f"injected fault on rank {rank} during a {phase}" in run.stderr, run.stderr[-3000:]
    assert seconds < 60, seconds  # the process group's timeout is two hours: nobody waited for it
