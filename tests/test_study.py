"""lpc study: the grid, selection by validation, aggregation, the study directory, both engines, resume."""
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import blobs, tiny_config
from lpc import HEADS
from lpc.cli import main
from lpc.config import ConfigError
from lpc.study import (RunSpec, StudyError, StudyLock, _alive, aggregate, claim, collect_results, parse_list, plan,
                       read_results, write_results)

ROOT = Path(__file__).resolve().parents[1]
WALL = {"wall_seconds"}


def write_run(out, head, lr, seed, **summary):
    """A fake run folder: only summary.json, as train writes it."""
    folder = out / RunSpec(head, lr, seed).path
    folder.mkdir(parents=True)
    values = {"head": head, "lr": lr, "seed": seed, "status": "finished", "reason": None, **summary}
    (folder / "summary.json").write_text(json.dumps(values))


# ---------------------------------------------------------------- grid, selection, aggregation (no training)

def test_plan_lays_out_every_head_lr_and_seed():
    config = tiny_config(**{"optim.lrs": [1e-4, 2e-3]})
    study = plan(config, seeds=2)
    assert study.heads == list(HEADS) and study.lrs == [1e-4, 2e-3]
    runs = study.runs()
    assert len(runs) == len(HEADS) * 2 * 2 and {r.seed for r in runs} == {0, 1}
    assert RunSpec("ib", 1e-4, 1).path == "runs/ib/lr=0.0001/seed=1"
    assert RunSpec("no_pen", 2e-3, 0).path == "runs/no_pen/lr=0.002/seed=0"
    run = study.run_config(RunSpec("wide_ib", 2e-3, 1))
    assert (run.model.head, run.optim.lr, run.seed) == ("wide_ib", 2e-3, 1)
    assert plan(config, heads=["ib"], lrs=[0.5], seeds=1).runs() == [RunSpec("ib", 0.5, 0)]
    assert parse_list("ib, no_pen", str, "--heads") == ["ib", "no_pen"] and parse_list("all", float, "--lrs") == "all"
    with pytest.raises(ConfigError, match="did you mean 'no_pen'"):
        plan(config, heads=["nopen"])
    with pytest.raises(ConfigError, match="--lrs"):
        parse_list("1e-3,fast", float, "--lrs")
    with pytest.raises(ConfigError, match="not distinct"):
        plan(config, lrs=[1e-3, 1.0000001e-3])


def test_selection_uses_validation_not_test(tmp_path):
    # ib seed 0: lr 0.001 is best on validation, lr 0.002 best on test -> 0.001 (the paper's rule)
    write_run(tmp_path, "ib", 0.001, 0, val_accuracy=0.90, test_accuracy=0.80)
    write_run(tmp_path, "ib", 0.002, 0, val_accuracy=0.85, test_accuracy=0.95)
    # a diverged run never wins, whatever its last numbers
    write_run(tmp_path, "ib", 0.004, 0, val_accuracy=0.99, test_accuracy=0.99, status="diverged", reason="NaN")
    # ib seed 1: a tie on validation goes to the smaller lr
    write_run(tmp_path, "ib", 0.001, 1, val_accuracy=0.70, test_accuracy=0.60)
    write_run(tmp_path, "ib", 0.002, 1, val_accuracy=0.70, test_accuracy=0.65)
    write_run(tmp_path, "ib", 0.004, 1, val_accuracy=0.50, test_accuracy=0.99)
    # no_pen seed 0: everything diverged -> nothing selected
    write_run(tmp_path, "no_pen", 0.001, 0, status="diverged", reason="loss became nan")
    rows = collect_results(tmp_path)
    write_results(tmp_path / "results.csv", rows)
    chosen = {(r["head"], r["seed"]): r["lr"] for r in read_results(tmp_path / "results.csv") if r["selected"]}
    assert chosen == {("ib", 0): 0.001, ("ib", 1): 0.001}
    assert sum(r["selected"] for r in rows) == 2 and all(isinstance(r["selected"], bool) for r in rows)


def test_aggregate_is_mean_and_sample_std_of_the_selected_runs(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(4, 3))
    for seed in range(4):
        extra = {} if seed == 3 else {"sigma_w_train": float(values[seed, 2])}  # one seed lacks a metric
        write_run(tmp_path, "ib", 0.01, seed, val_accuracy=0.9, test_accuracy=float(values[seed, 0]),
                  robustness_deepfool=float(values[seed, 1]), tpt_epoch=None, **extra)
        write_run(tmp_path, "ib", 0.02, seed, val_accuracy=0.5, test_accuracy=100.0, robustness_deepfool=100.0)
    write_run(tmp_path, "no_pen", 0.01, 0, val_accuracy=0.9, test_accuracy=0.3)
    stats = aggregate(collect_results(tmp_path))
    ib = stats["ib"]
    assert ib["test_accuracy"].n == 4
    assert ib["test_accuracy"].mean == pytest.approx(values[:, 0].mean(), abs=1e-12)
    assert ib["test_accuracy"].std == pytest.approx(values[:, 0].std(ddof=1), abs=1e-12)
    assert ib["robustness_deepfool"].std == pytest.approx(values[:, 1].std(ddof=1), abs=1e-12)
    assert ib["sigma_w_train"].n == 3 and ib["sigma_w_train"].mean == pytest.approx(values[:3, 2].mean())
    assert ib["lr"].mean == 0.01 and "seed" not in ib and "tpt_epoch" not in ib  # no finite tpt value
    assert stats["no_pen"]["test_accuracy"].n == 1 and math.isnan(stats["no_pen"]["test_accuracy"].std)


def test_results_csv_round_trips_every_value(tmp_path):
    write_run(tmp_path, "ib", 1e-4, 0, val_accuracy=0.1 + 0.2, test_accuracy=1 / 3, tpt_epoch=None, epochs=7,
              device="cpu", nc1_train=1.2345678901234567e-13)
    rows = collect_results(tmp_path)
    write_results(tmp_path / "results.csv", rows)
    back = read_results(tmp_path / "results.csv")[0]
    assert back["val_accuracy"] == 0.1 + 0.2 and back["test_accuracy"] == 1 / 3
    assert back["nc1_train"] == 1.2345678901234567e-13 and back["epochs"] == 7 and back["tpt_epoch"] is None
    assert back["device"] == "cpu" and back["selected"] is True and back["run"] == "runs/ib/lr=0.0001/seed=0"


# ---------------------------------------------------------------- the study directory

def test_a_directory_holds_one_study(tmp_path):
    config = tiny_config(**{"data.path": "x.npz"})
    claim(tmp_path, plan(config, heads=["ib"], lrs=[0.01], seeds=1))
    claim(tmp_path, plan(config, heads=["ib"], lrs=[0.01], seeds=1))  # the same study: fine
    with pytest.raises(StudyError, match=r"different study \(differs in grid.seeds\)"):
        claim(tmp_path, plan(config, heads=["ib"], lrs=[0.01], seeds=2))
    other = tiny_config(**{"data.path": "x.npz", "optim.epochs": 5})
    with pytest.raises(StudyError, match="config.optim.epochs"):
        claim(tmp_path, plan(other, heads=["ib"], lrs=[0.01], seeds=1))


def test_cli_refuses_another_study_with_exit_2(tmp_path, tiny_npz, capsys):
    config = tiny_config(**{"data.path": str(tiny_npz)})
    config.save(tmp_path / "tiny.yaml")
    out = tmp_path / "study"
    claim(out, plan(config, heads=["ib"], lrs=[0.01], seeds=1))
    code = main(["study", "--config", str(tmp_path / "tiny.yaml"), "--heads", "ib,no_pen", "--lrs", "0.01",
                 "--seeds", "1", "--out", str(out), "--quiet"])
    assert code == 2
    assert "holds a different study (differs in grid.heads)" in capsys.readouterr().err
    assert not (out / "runs").exists()
    assert main(["study", "--config", str(tmp_path / "tiny.yaml"), "--heads", "ibb", "--out", str(out)]) == 2
    assert "--heads: unknown value 'ibb' (did you mean 'ib'?)" in capsys.readouterr().err


def test_lock_refuses_a_live_study_and_takes_over_a_dead_ones(tmp_path):
    lock = tmp_path / "study.lock"
    host = socket.gethostname()
    lock.write_text(json.dumps({"host": host, "pid": os.getpid(), "since": "now"}))  # this process: alive
    with pytest.raises(StudyError, match=f"in use by a running study \\(host {host}, pid {os.getpid()}"):
        with StudyLock(tmp_path):
            pass
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1}))  # cannot check another host's processes
    with pytest.raises(StudyError, match="host elsewhere"):
        with StudyLock(tmp_path):
            pass
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"host": host, "pid": dead.pid}))
    warnings = []
    with StudyLock(tmp_path, warn=warnings.append):
        held = json.loads(lock.read_text())
        assert held["pid"] == os.getpid() and held["host"] == host
    assert len(warnings) == 1 and "stale lock" in warnings[0] and f"pid {dead.pid}" in warnings[0]
    assert not lock.exists()  # released


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, tiny_npz, capsys):
    try:
        import torch.utils.tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed")
    except ImportError:
        pass
    config = tiny_config(**{"data.path": str(tiny_npz)})
    config.save(tmp_path / "tiny.yaml")
    code = main(["study", "--config", str(tmp_path / "tiny.yaml"), "--heads", "ib", "--lrs", "0.01", "--seeds", "1",
                 "--out", str(tmp_path / "s"), "--tensorboard", "--quiet"])
    assert code == 2 and "--tensorboard needs the tensorboard package" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------- real studies on the tiny data

GRID = ["--heads", "ib,no_pen", "--lrs", "0.01", "--seeds", "1", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The user's own .npz through `lpc study --data`, run once, uninterrupted, with the local engine."""
    root = tmp_path_factory.mktemp("study")
    x, y = blobs(80)
    np.savez(root / "mine.npz", x_train=x[:180], y_train=y[:180], x_test=x[180:], y_test=y[180:])
    # long enough (20 epochs, a checkpoint every 2) that a study can be killed in the middle of a run
    tiny_config(**{"data.path": "unused.npz", "optim.epochs": 20, "eval.log_every": 2}).save(root / "tiny.yaml")
    args = ["study", "--config", str(root / "tiny.yaml"), "--data", str(root / "mine.npz"), *GRID]
    code = main([*args, "--workers", "2", "--out", str(root / "local")])
    assert code == 0
    return root, args


def numbers(path):
    return [{k: v for k, v in row.items() if k not in WALL} for row in read_results(path)]


def test_study_on_a_users_npz_end_to_end(tiny_study):
    root, _ = tiny_study
    out = root / "local"
    rows = read_results(out / "results.csv")
    assert [(r["head"], r["lr"], r["seed"], r["status"], r["selected"]) for r in rows] == [
        ("ib", 0.01, 0, "finished", True), ("no_pen", 0.01, 0, "finished", True)]
    assert all(r["dataset"] == "mine" and r["epochs"] == 20 and r["test_accuracy"] > 0.5 for r in rows)
    for r in rows:
        folder = out / r["run"]
        assert {"config.yaml", "history.jsonl", "summary.json", "latents.npz", "run.log"} <= {p.name for p in folder.iterdir()}
        log = (folder / "run.log").read_text()
        assert log.count("lpc 0.1.0: ") == 1 and "finished" in log  # the run's own progress went to its log
    study_yaml = (out / "study.yaml").read_text()
    assert "mine.npz" in study_yaml and "- ib" in study_yaml
    invocation = json.loads((out / "study.json").read_text())["invocations"][-1]
    assert invocation["engine"] == "local" and invocation["runs_trained"] == 2 and invocation["threads_per_run"] == 1
    for name in ("report.html", "report.md", "table1.csv", "table1.md", "table2.csv", "table2.md", "significance.csv"):
        assert (out / name).stat().st_size > 0
    # the same command again trains nothing and keeps the numbers
    before = (out / "results.csv").read_text()
    assert main([*tiny_study[1], "--workers", "2", "--out", str(out)]) == 0
    assert (out / "results.csv").read_text() == before
    assert json.loads((out / "study.json").read_text())["invocations"][-1]["runs_trained"] == 0


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path, tiny_npz, capsys):
    config = tiny_config(**{"data.path": str(tiny_npz), "optim.epochs": 2})
    config.save(tmp_path / "tiny.yaml")
    out = tmp_path / "study"
    study = plan(config, heads=["ib", "no_pen"], lrs=[0.01], seeds=1)
    claim(out, study)
    # a foreign run already in ib's folder: train refuses it, so that run fails
    broken = out / "runs/ib/lr=0.01/seed=0"
    broken.mkdir(parents=True)
    tiny_config(**{"data.path": str(tiny_npz), "optim.epochs": 9}).save(broken / "config.yaml")
    code = main(["study", "--config", str(tmp_path / "tiny.yaml"), "--heads", "ib,no_pen", "--lrs", "0.01",
                 "--seeds", "1", "--workers", "1", "--threads", "1", "--out", str(out), "--quiet"])
    assert code == 1
    assert "run runs/ib/lr=0.01/seed=0 failed: RunFileError" in capsys.readouterr().err
    rows = {r["head"]: r for r in read_results(out / "results.csv")}
    assert rows["ib"]["status"] == "failed" and "different config" in rows["ib"]["reason"] and not rows["ib"]["selected"]
    assert rows["no_pen"]["status"] == "finished" and rows["no_pen"]["selected"]
    assert "Traceback" in (broken / "run.log").read_text()
    assert "`runs/ib/lr=0.01/seed=0`: failed — RunFileError" in (out / "report.md").read_text()


@pytest.mark.slow
def test_ray_engine_gives_the_same_numbers_as_the_local_one(tiny_study):
    pytest.importorskip("ray", reason="the Ray engine needs ray (pip install 'lpc[ray]')")
    root, args = tiny_study
    code = main([*args, "--workers", "2", "--engine", "ray", "--out", str(root / "ray")])
    assert code == 0
    assert json.loads((root / "ray" / "study.json").read_text())["invocations"][-1]["engine"] == "ray"
    assert numbers(root / "ray" / "results.csv") == numbers(root / "local" / "results.csv")
    for run in ("runs/ib/lr=0.01/seed=0", "runs/no_pen/lr=0.01/seed=0"):
        assert (root / "ray" / run / "history.jsonl").read_text() == (root / "local" / run / "history.jsonl").read_text()


@pytest.mark.slow
def test_killed_study_resumes_to_the_same_results(tiny_study, capsys):
    root, args = tiny_study
    out = root / "killed"
    command = [sys.executable, "-m", "lpc", *args, "--workers", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    study = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runs = [out / "runs/ib/lr=0.01/seed=0", out / "runs/no_pen/lr=0.01/seed=0"]
    deadline = time.time() + 120
    while True:  # kill it once the first run has finished and the second is half-way (has a checkpoint)
        done = [r for r in runs if (r / "summary.json").exists()]
        if len(done) == 1 and ((runs[1] if done[0] == runs[0] else runs[0]) / "checkpoint.pt").exists():
            break
        assert study.poll() is None, study.stderr.read().decode()
        assert time.time() < deadline and len(done) < 2, "could not catch the study between two runs"
        time.sleep(0.01)
    study.send_signal(signal.SIGKILL)
    study.wait()
    study.stderr.close()
    first, second = (runs[0], runs[1]) if done[0] == runs[0] else (runs[1], runs[0])
    assert not (out / "results.csv").exists() and not (second / "summary.json").exists()  # killed mid-run
    assert json.loads((out / "study.lock").read_text())["pid"] == study.pid  # the dead study's lock is left
    # the worker process notices its study is gone and stops, so no run is trained twice at once
    worker = int((first / "run.log").read_text().split(" pid=")[1].split()[0])
    deadline = time.time() + 10
    while _alive(worker):
        assert time.time() < deadline, "the worker outlived its killed study"
        time.sleep(0.1)
    stopped_at = len((second / "history.jsonl").read_text().splitlines())

    assert main([*args, "--workers", "1", "--out", str(out)]) == 0
    assert "taking over the stale lock" in capsys.readouterr().err
    assert numbers(out / "results.csv") == numbers(root / "local" / "results.csv")
    assert (first / "run.log").read_text().count("lpc 0.1.0: ") == 1  # the finished run was not retrained
    # the interrupted run resumed from its checkpoint: started twice, one history with every epoch once
    assert 1 <= stopped_at < 10
    epochs = [json.loads(line)["epoch"] for line in (second / "history.jsonl").read_text().splitlines()]
    assert epochs == list(range(2, 21, 2))
    assert (second / "run.log").read_text().count("lpc 0.1.0: ") == 2
    assert not (out / "study.lock").exists()


def test_an_absurd_learning_rate_diverges_and_the_report_lists_it(tmp_path, tiny_npz):
    config = tiny_config(**{"data.path": str(tiny_npz), "optim.epochs": 3, "gamma.init": 1e30, "gamma.max": 1e30})
    config.save(tmp_path / "tiny.yaml")
    out = tmp_path / "study"
    code = main(["study", "--config", str(tmp_path / "tiny.yaml"), "--heads", "ib,no_pen", "--lrs", "1e30,0.01",
                 "--seeds", "1", "--workers", "1", "--threads", "1", "--out", str(out), "--quiet"])
    assert code == 0  # a diverged run is a result, not a failure of the study
    rows = {(r["head"], r["lr"]): r for r in read_results(out / "results.csv")}
    diverged = rows[("ib", 1e30)]
    assert diverged["status"] == "diverged" and "epoch 1" in diverged["reason"] and not diverged["selected"]
    assert rows[("ib", 0.01)]["selected"]
    report = (out / "report.md").read_text()
    assert "runs/ib/lr=1e+30/seed=0" in report and "diverged" in report


@pytest.mark.slow
def test_two_concurrent_studies_never_run_a_run_twice(tmp_path, tiny_npz):
    config = tiny_config(**{"data.path": str(tiny_npz), "optim.epochs": 30})
    config.save(tmp_path / "tiny.yaml")
    out = tmp_path / "study"
    command = [sys.executable, "-m", "lpc", "study", "--config", str(tmp_path / "tiny.yaml"), "--heads", "ib,no_pen",
               "--lrs", "0.01", "--seeds", "1", "--workers", "1", "--threads", "1", "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / "study.lock").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert first.wait(timeout=120) == 0, first.stderr.read()
    assert second.returncode == 2 and "lock" in second.stderr.lower()
    for head in ("ib", "no_pen"):  # each run was trained by exactly one process
        log = (out / f"runs/{head}/lr=0.01/seed=0/run.log").read_text()
        assert log.count("lpc 0.1.0: ") == 1
