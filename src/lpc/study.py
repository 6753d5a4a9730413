"""The ablation study: a grid of runs (head × learning rate × seed), the engines that run it, selection by
validation accuracy and aggregation over seeds.

A study directory holds::

    study.yaml            the resolved base config and the grid; a directory holds one study only
    study.json            how and where each invocation ran (engine, workers, versions, wall time)
    study.lock            while a study runs: host and PID of its process
    runs/<head>/lr=<lr:g>/seed=<s>/   one ``lpc train`` run each (config.yaml, history.jsonl, summary.json,
                          checkpoint.pt, model.pt, latents.npz, run.log)
    results.csv           one row per run: every summary value, ``status`` and ``selected``

Selection follows the paper (Appendix C), not the authors' script: for each (head, seed) the learning rate
with the best *validation* accuracy at the last epoch is kept (the script picked by test accuracy). Ties go
to the smaller learning rate; diverged and failed runs are never selected. Aggregates are mean ± sample
standard deviation (ddof=1) over the selected runs of a head, one per seed, with n.

Every run goes through :func:`lpc.trainer.train`, the code path of ``lpc train``: a run is done when its
``summary.json`` says ``finished`` or ``diverged``; an interrupted run resumes from its last checkpoint.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import platform
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from . import __version__
from ._extras import require
from .config import Config, ConfigError, apply_overrides, check_choice, config_from_dict
from .files import RunFileError, atomic_write_bytes, read_json, write_csv, write_json

yaml = require("yaml", "lpc.study")

SELECTION_RULE = ("for each (head, seed), the learning rate with the highest validation accuracy at the last "
                  "epoch (paper, Appendix C; the authors' script used test accuracy); ties go to the smaller "
                  "learning rate; diverged and failed runs are never selected")
AGGREGATION_RULE = "mean ± sample standard deviation (ddof=1) over the selected run of each seed; n = number of seeds"
DONE = ("finished", "diverged")
FIRST_COLUMNS = ("head", "lr", "seed", "status", "selected", "train_accuracy", "val_accuracy", "test_accuracy",
                 "reason", "run")
WALL_COLUMNS = ("wall_seconds",)  # differ between otherwise identical runs


class StudyError(RuntimeError):
    """A study directory that cannot be used as asked (another study, a running study); one clear line."""


# ---------------------------------------------------------------- the grid

@dataclass(frozen=True)
class RunSpec:
    head: str
    lr: float
    seed: int

    @property
    def path(self) -> str:
        """Folder of the run, relative to the study directory."""
        return f"runs/{self.head}/lr={self.lr:g}/seed={self.seed}"


@dataclass
class Study:
    """A resolved base config and the grid swept over it: every head × every lr × seeds 0..seeds-1."""

    config: Config
    heads: list[str]
    lrs: list[float]
    seeds: int

    def runs(self) -> list[RunSpec]:
        """All runs, seed-major so that the first seeds of every head finish first."""
        return [RunSpec(h, lr, s) for s in range(self.seeds) for h in self.heads for lr in self.lrs]

    def run_config(self, spec: RunSpec) -> Config:
        return apply_overrides(self.config, {"model.head": spec.head, "optim.lr": spec.lr, "seed": spec.seed})

    def to_dict(self) -> dict[str, Any]:
        return {"grid": {"heads": list(self.heads), "lrs": [float(x) for x in self.lrs],
                         "seeds": list(range(self.seeds))},
                "config": self.config.to_dict()}


def plan(config: Config, *, heads: str | Iterable[str] = "all", lrs: str | Iterable[float] = "all",
         seeds: int = 3) -> Study:
    """The study grid. ``heads="all"`` is every registered head, ``lrs="all"`` is ``config.optim.lrs``;
    seeds are ``0 .. seeds-1``. Unknown heads and impossible values raise :class:`ConfigError`."""
    from .heads import HEADS

    heads = list(HEADS) if heads == "all" else list(dict.fromkeys(heads))
    for head in heads:
        check_choice("--heads", head, HEADS)
    lrs = list(config.optim.lrs) if lrs == "all" else [float(x) for x in lrs]
    lrs = list(dict.fromkeys(lrs))
    if not heads:
        raise ConfigError("--heads: no head given")
    if not lrs:
        raise ConfigError("--lrs: no learning rate given (optim.lrs is empty)")
    for lr in lrs:
        if not lr > 0 or not math.isfinite(lr):
            raise ConfigError(f"--lrs: learning rates must be positive, got {lr!r}")
    names = [f"{lr:g}" for lr in lrs]
    if len(set(names)) != len(names):
        raise ConfigError(f"--lrs: learning rates {lrs} are not distinct at 6 significant digits (folder names)")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds!r}")
    return Study(config=config, heads=heads, lrs=lrs, seeds=int(seeds))


def parse_list(text: str, kind: type, where: str) -> str | list:
    """``"all"`` or a comma-separated list (``"ib,no_pen"``, ``"1e-3,2e-3"``) from the command line."""
    if text.strip() == "all":
        return "all"
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise ConfigError(f"{where}: expected 'all' or a comma-separated list of {kind.__name__}, got {text!r}") from None


# ---------------------------------------------------------------- the study directory

def claim(out: str | Path, study: Study) -> None:
    """Writes ``study.yaml`` into a new directory, or checks that an existing one holds this same study."""
    out = Path(out)
    path = out / "study.yaml"
    mine = study.to_dict()
    if path.exists():
        try:
            theirs = yaml.safe_load(path.read_text()) or {}
            theirs = {"grid": theirs.get("grid"), "config": config_from_dict(theirs.get("config") or {}).to_dict()}
        except (yaml.YAMLError, ConfigError, AttributeError) as error:
            raise StudyError(f"{path}: unreadable study file ({error}); choose another --out") from None
        differences = _differences(theirs, mine)
        if differences:
            shown = ", ".join(differences[:5]) + (" ..." if len(differences) > 5 else "")
            raise StudyError(f"{out} holds a different study (differs in {shown}); choose another --out "
                             f"or re-run that study's command")
        return
    if (out / "runs").exists():
        raise StudyError(f"{out} has runs/ but no study.yaml; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, yaml.safe_dump(mine, sort_keys=False).encode())


def load_study(out: str | Path) -> Study:
    """The study that ``out/study.yaml`` describes."""
    path = Path(out) / "study.yaml"
    if not path.exists():
        raise StudyError(f"{out}: no study.yaml (not a study directory)")
    values = yaml.safe_load(path.read_text()) or {}
    grid = values.get("grid") or {}
    return plan(config_from_dict(values.get("config") or {}), heads=grid.get("heads", "all"),
                lrs=grid.get("lrs", "all"), seeds=len(grid.get("seeds", [0])))


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in list(dict.fromkeys([*a, *b])):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


class StudyLock:
    """``study.lock`` (host, PID, process start time) held while a study runs in a directory.

    A lock left by a dead process on this host is taken over with a warning; a live one, or one from another
    host (whose process we cannot check), is an error, so two studies never train the same run at once.
    """

    def __init__(self, out: str | Path, warn: Callable[[str], None] | None = None):
        self.path = Path(out) / "study.lock"
        self.warn = warn or (lambda text: print(f"lpc: warning: {text}", file=sys.stderr))
        self.mine = {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid()),
                     "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def __enter__(self) -> "StudyLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                return self
            holder = self._holder()
            if holder is not None and not self._stale(holder):
                raise StudyError(f"{self.path.parent} is in use by a running study (host {holder.get('host')}, "
                                 f"pid {holder.get('pid')}, since {holder.get('since')}); wait for it, or "
                                 f"delete {self.path} if that process is gone")
            who = "unreadable lock" if holder is None else f"pid {holder.get('pid')} on {holder.get('host')}"
            self.warn(f"taking over the stale lock {self.path} ({who} is not running)")
            self.path.unlink(missing_ok=True)
        raise StudyError(f"{self.path}: could not take the lock (another study keeps taking it)")

    def __exit__(self, *exc) -> None:
        if self._holder() == self.mine:
            self.path.unlink(missing_ok=True)

    def _create(self) -> bool:
        # a complete temporary file hard-linked into place: the lock appears atomically with its contents
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.mine))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _holder(self) -> dict | None:
        try:
            value = json.loads(self.path.read_text())
            return value if isinstance(value, dict) else None
        except (OSError, ValueError):
            return None

    def _stale(self, holder: dict) -> bool:
        if holder.get("host") != socket.gethostname():
            return False  # cannot see another host's processes
        pid = holder.get("pid")
        if not isinstance(pid, int) or not _alive(pid):
            return True
        start = holder.get("start")
        return start is not None and _process_start(pid) not in (None, start)  # the PID was reused


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if Path(f"/proc/{pid}/stat").exists():  # a zombie is dead for our purposes
        with contextlib.suppress(OSError, IndexError):
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _process_start(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), to tell a reused PID from the original."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def run_is_done(run_dir: str | Path) -> bool:
    """A run is done when its summary.json says finished or diverged; anything else is (re)started."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return False
    try:
        return read_json(path).get("status") in DONE
    except RunFileError:
        return False


# ---------------------------------------------------------------- running one run (in a worker process)

_DATA: dict[str, Any] = {}  # per worker process: data config (JSON) -> loaded Dataset, so data loads once


def execute_run(config_values: dict[str, Any], run_dir: str, threads: int) -> dict[str, Any]:
    """Trains one run of a study in the calling (worker) process; output goes to ``run_dir/run.log``.

    Returns ``{"status", "reason", "wall_seconds"}``; errors other than divergence are raised after their
    traceback is written to the log.
    """
    import torch

    from .data import load_data
    from .trainer import train

    torch.set_num_threads(max(1, int(threads)))
    config = config_from_dict(config_values)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "run.log", "a", buffering=1) as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] lpc {__version__}: {config.model.head} lr={config.optim.lr:g} "
              f"seed={config.seed} on {socket.gethostname()} pid={os.getpid()} threads={torch.get_num_threads()}")
        try:
            key = json.dumps(config_values["data"], sort_keys=True)
            if key not in _DATA:
                _DATA.clear()  # one dataset per study; never hold two
                _DATA[key] = load_data(config.data)
            summary = train(config, run_dir, data=_DATA[key], progress=True)
        except BaseException:
            traceback.print_exc()
            raise
        print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {summary['status']}"
              + (f": {summary['reason']}" if summary.get("reason") else ""))
    return {"status": summary["status"], "reason": summary.get("reason"), "wall_seconds": summary.get("wall_seconds")}


def _init_worker(threads: int, parent: int, gpus) -> None:
    """Local-engine worker start: torch threads, one GPU per worker, and exit when the study process dies."""
    if gpus is not None:
        with contextlib.suppress(Exception):
            os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get(timeout=5))  # before CUDA is first touched
    # a killed study must not leave workers training behind it: on Linux the kernel kills this worker when
    # the study process dies (prctl PR_SET_PDEATHSIG); elsewhere, and as a fallback, a thread watches the parent
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes
            import signal
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(3)
    import torch
    torch.set_num_threads(max(1, threads))

    def watch() -> None:
        while True:
            time.sleep(0.2)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


# ---------------------------------------------------------------- engines

def cpu_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def gpu_count() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_workers() -> int:
    """One worker per GPU; without GPUs one per two CPU cores (at least one)."""
    return gpu_count() or max(1, cpu_cores() // 2)


class LocalEngine:
    """Runs on this machine in ``workers`` spawned processes (a ``ProcessPoolExecutor``), each with
    ``threads`` torch threads and, when there are GPUs, its own GPU."""

    def __init__(self, workers: int, threads: int):
        import concurrent.futures
        import multiprocessing

        self._futures = concurrent.futures
        context = multiprocessing.get_context("spawn")
        gpus = None
        count = gpu_count()
        if count:
            gpus = context.Queue()
            for i in range(workers):
                gpus.put(i % count)
        self.pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                                           initializer=_init_worker,
                                                           initargs=(threads, os.getpid(), gpus))

    def submit(self, config_values, run_dir, threads):
        return self.pool.submit(execute_run, config_values, run_dir, threads)

    def wait(self, handles, timeout: float):
        done, _ = self._futures.wait(handles, timeout=timeout, return_when=self._futures.FIRST_COMPLETED)
        return list(done)

    def result(self, handle):
        return handle.result()

    def close(self, cancel: bool = False, wait: bool | None = None) -> None:
        self.pool.shutdown(wait=not cancel if wait is None else wait, cancel_futures=cancel)


class RayEngine:
    """Each run is a Ray task with ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs. Connects to the cluster
    in ``RAY_ADDRESS`` when set (lpc must be installed on its nodes), else starts a local instance."""

    def __init__(self, workers: int, threads: int, cpus_per_run: float, gpus_per_run: float):
        try:
            import ray
        except ImportError:
            raise StudyError("--engine ray needs Ray: pip install 'lpc[ray]' (or pip install ray)") from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            if os.environ.get("RAY_ADDRESS"):
                ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
            else:
                if gpus_per_run and not gpu_count():
                    raise StudyError(f"--gpus-per-run {gpus_per_run:g}: this machine has no GPU (set RAY_ADDRESS "
                                     "to use a cluster that has)")
                # GPUs are detected by Ray itself; CPUs are capped so that `workers` runs share this machine
                ray.init(num_cpus=max(1, math.ceil(workers * cpus_per_run)), include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
                self.started = True
        self.task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run)(execute_run)

    def submit(self, config_values, run_dir, threads):
        return self.task.remote(config_values, run_dir, threads)

    def wait(self, handles, timeout: float):
        done, _ = self.ray.wait(list(handles), num_returns=1, timeout=timeout)
        return done

    def result(self, handle):
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            raise (cause if isinstance(cause, BaseException) else RuntimeError(str(error).splitlines()[-1])) from None

    def close(self, cancel: bool = False, wait: bool | None = None) -> None:
        if self.started:
            self.ray.shutdown()


# ---------------------------------------------------------------- running a study

@dataclass
class StudyOutcome:
    out: Path
    total: int
    skipped: int  # already done before this invocation
    finished: int
    diverged: int
    failed: dict[str, str]  # run path -> error
    wall_seconds: float


def run_study(study: Study, out: str | Path, *, engine: str = "local", workers: int | None = None,
              threads: int | None = None, cpus_per_run: float | None = None, gpus_per_run: float | None = None,
              runs_per_device: int = 1, progress: bool = True, tensorboard: bool = False) -> StudyOutcome:
    """Runs every run of ``study`` that is not done yet into ``out`` and writes ``results.csv``.

    ``workers`` runs at once (default :func:`default_workers`), each with ``threads`` torch threads
    (default cores // workers, at least 1). With ``engine="ray"`` each run is a Ray task asking for
    ``cpus_per_run`` CPUs (default: ``threads``) and ``gpus_per_run`` GPUs (default: 1 with CUDA, else 0).
    ``runs_per_device`` K packs K concurrent runs onto each GPU (default workers = GPUs × K; Ray asks for
    1/K GPU per run): the paper's batch of 128 leaves a large GPU mostly idle, and CUDA MPS
    (``nvidia-cuda-mps-control -d``) lets the K processes' kernels overlap instead of time-slicing.
    Re-running skips done runs and resumes interrupted ones; ``out`` is locked meanwhile.
    """
    check_choice("--engine", engine, ("local", "ray"))
    if runs_per_device < 1:
        raise ConfigError(f"--runs-per-device must be at least 1, got {runs_per_device}")
    if tensorboard:
        require_tensorboard()
    out = Path(out)
    workers = int(workers or (gpu_count() * runs_per_device or default_workers()))
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    threads = int(threads or max(1, cpu_cores() // workers))
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with StudyLock(out):
        claim(out, study)
        specs = study.runs()
        todo = [s for s in specs if not run_is_done(out / s.path)]
        failed: dict[str, str] = {}
        counts = {"finished": 0, "diverged": 0}
        if todo:
            if engine == "ray":
                cpus = float(cpus_per_run if cpus_per_run is not None else threads)
                gpus = float(gpus_per_run if gpus_per_run is not None else (1 / runs_per_device if gpu_count() else 0))
                runner = RayEngine(workers, threads, cpus, gpus)
                threads = max(1, int(cpus))
            else:
                runner = LocalEngine(workers, threads)
            _drive(runner, study, out, todo, len(specs), workers, threads, failed, counts, progress, tensorboard)
        rows = collect_results(out, study, failed=failed)
        write_results(out / "results.csv", rows)
        wall = time.perf_counter() - started
        _record_invocation(out, engine=engine, workers=workers, threads=threads, trained=len(todo),
                           wall_seconds=wall, rows=rows)
    return StudyOutcome(out=out, total=len(specs), skipped=len(specs) - len(todo), finished=counts["finished"],
                        diverged=counts["diverged"], failed=failed, wall_seconds=wall)


def _drive(runner, study, out, todo, total, workers, threads, failed, counts, progress, tensorboard) -> None:
    tqdm = require("tqdm.auto", "lpc study's progress bar").tqdm

    queue = list(todo)
    running: dict[Any, RunSpec] = {}
    bar = tqdm(total=total, initial=total - len(todo), desc="study", unit="run", disable=not progress,
               dynamic_ncols=True, file=sys.stderr)

    def show() -> None:
        bar.set_postfix(running=len(running), diverged=counts["diverged"], failed=len(failed), refresh=True)

    clean = False
    try:
        while queue or running:
            while queue and len(running) < workers:  # keep exactly the runs in flight that can run
                spec = queue.pop(0)
                try:
                    running[runner.submit(study.run_config(spec).to_dict(), str((out / spec.path).resolve()),
                                          threads)] = spec
                except Exception as error:  # e.g. a broken process pool after a worker was killed
                    failed[spec.path] = f"{type(error).__name__}: {error}".splitlines()[0]
                    bar.update(1)
            show()
            for handle in runner.wait(list(running), timeout=1.0):
                spec = running.pop(handle)
                try:
                    result = runner.result(handle)
                    counts[result["status"]] = counts.get(result["status"], 0) + 1
                    if tensorboard:
                        write_tensorboard(out / spec.path)
                except Exception as error:  # one broken run does not stop the study; it is reported
                    failed[spec.path] = f"{type(error).__name__}: {error}".splitlines()[0]
                    bar.write(f"lpc: run {spec.path} failed: {failed[spec.path]} (see its run.log)", file=sys.stderr)
                bar.update(1)
            show()
        clean = True
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too: each finishes its epoch, checkpoints and stops; wait for that,
        # because workers die with this process
        bar.write("lpc: interrupted; running runs checkpoint at the end of their epoch", file=sys.stderr)
        runner.close(cancel=True, wait=True)
        raise
    finally:
        bar.close()
        runner.close(cancel=not clean)


def _record_invocation(out: Path, *, engine, workers, threads, trained, wall_seconds, rows) -> None:
    path = out / "study.json"
    try:
        record = read_json(path) if path.exists() else {}
    except RunFileError:
        record = {}
    invocations = record.get("invocations", []) if isinstance(record, dict) else []
    invocations.append({
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(), "engine": engine,
        "workers": workers, "threads_per_run": threads, "runs_trained": trained, "wall_seconds": wall_seconds,
        "devices": sorted({str(r["device"]) for r in rows if r.get("device")}),
        "versions": versions(), "command": " ".join(["lpc", *sys.argv[1:]])})
    write_json(path, {"invocations": invocations})


def versions() -> dict[str, str]:
    import torch
    return {"lpc": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


# ---------------------------------------------------------------- TensorBoard (optional)

def require_tensorboard() -> None:
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise StudyError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None


def write_tensorboard(run_dir: str | Path) -> None:
    """Writes ``run_dir/tensorboard/`` event files from history.jsonl: every numeric field per epoch."""
    import shutil

    from torch.utils.tensorboard import SummaryWriter

    run_dir = Path(run_dir)
    target = run_dir / "tensorboard"
    shutil.rmtree(target, ignore_errors=True)  # rewritten whole: no duplicate points on a resumed study
    with SummaryWriter(log_dir=str(target)) as writer:
        for record in read_history(run_dir):
            for key, value in record.items():
                if key != "epoch" and _is_number(value):
                    writer.add_scalar(key, value, int(record["epoch"]))


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``history.jsonl`` (an empty list when the file is missing)."""
    path = Path(run_dir) / "history.jsonl"
    if not path.exists():
        return []
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise RunFileError(f"{path}: line {i + 1} is not valid JSON") from None
    return rows


# ---------------------------------------------------------------- results, selection, aggregation

def collect_results(out: str | Path, study: Study | None = None, *,
                    failed: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per run of the study (default: every ``runs/*/lr=*/seed=*`` folder): its summary.json,
    ``run`` (folder relative to ``out``), and ``selected`` by :func:`select_by_validation`. Runs without a
    summary get status ``failed`` (with the error, when known) or ``missing``."""
    out = Path(out)
    failed = failed or {}
    if study is not None:
        specs = study.runs()
    else:
        specs = sorted((_spec_from_path(p.relative_to(out)) for p in out.glob("runs/*/lr=*/seed=*") if p.is_dir()),
                       key=lambda s: (s.seed, s.head, s.lr))
    rows = []
    for spec in specs:
        path = out / spec.path / "summary.json"
        row: dict[str, Any] = {"head": spec.head, "lr": spec.lr, "seed": spec.seed}
        if path.exists():
            summary = read_json(path)
            row.update({k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
            row.update({"head": spec.head, "lr": spec.lr, "seed": spec.seed})
        else:
            row["status"] = "failed" if spec.path in failed else "missing"
            row["reason"] = failed.get(spec.path)
        row["run"] = spec.path
        rows.append(row)
    return select_by_validation(rows)


def _spec_from_path(relative: Path) -> RunSpec:
    head, lr, seed = relative.parts[1:4]
    return RunSpec(head, float(lr.split("=", 1)[1]), int(seed.split("=", 1)[1]))


def select_by_validation(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``rows`` with ``selected``: per (head, seed), the finished run with the highest
    ``val_accuracy``; ties go to the smaller ``lr``. Diverged, failed and unscored runs are never selected."""
    rows = [{**r, "selected": False} for r in rows]
    best: dict[tuple, dict] = {}
    for row in rows:
        if row.get("status") != "finished" or not _is_number(row.get("val_accuracy")):
            continue
        key = (row["head"], row["seed"])
        current = best.get(key)
        if current is None or (row["val_accuracy"], -row["lr"]) > (current["val_accuracy"], -current["lr"]):
            best[key] = row
    for row in best.values():
        row["selected"] = True
    return rows


def selection_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (head, seed): the learning rate that won on validation, and the one test accuracy would have
    picked (the authors' script), for comparison."""
    table = []
    for head, seed in dict.fromkeys((r["head"], r["seed"]) for r in rows):
        group = [r for r in rows if r["head"] == head and r["seed"] == seed]
        chosen = next((r for r in group if r.get("selected")), None)
        scored = [r for r in group if r.get("status") == "finished" and _is_number(r.get("test_accuracy"))]
        by_test = max(scored, key=lambda r: (r["test_accuracy"], -r["lr"]), default=None)
        table.append({"head": head, "seed": seed, "lr": chosen["lr"] if chosen else None,
                      "val_accuracy": chosen.get("val_accuracy") if chosen else None,
                      "test_accuracy": chosen.get("test_accuracy") if chosen else None,
                      "lr_by_test": by_test["lr"] if by_test else None,
                      "candidates": len(group), "usable": sum(r.get("status") == "finished" for r in group)})
    return table


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # sample standard deviation (ddof=1); NaN when n < 2
    n: int


def aggregate(rows: list[dict[str, Any]], *, selected_only: bool = True) -> dict[str, dict[str, Stat]]:
    """Per head, :class:`Stat` of every numeric value over its (selected) runs, ignoring missing / non-finite
    values (so ``n`` is per metric). ``seed`` is an index and not aggregated."""
    result: dict[str, dict[str, Stat]] = {}
    for head in dict.fromkeys(r["head"] for r in rows):
        group = [r for r in rows if r["head"] == head and (r.get("selected") or not selected_only)]
        keys = list(dict.fromkeys(k for r in group for k in r))
        stats = {}
        for key in keys:
            if key in ("seed", "selected"):
                continue
            values = np.array([r[key] for r in group if _is_number(r.get(key))], dtype=float)
            if len(values):
                std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
                stats[key] = Stat(float(values.mean()), std, len(values))
        result[head] = stats
    return result


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def write_results(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """``results.csv``: fixed leading columns, then every other key sorted; floats at full precision."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    columns = [c for c in FIRST_COLUMNS if c in keys] + sorted(k for k in keys if k not in FIRST_COLUMNS)
    write_csv(path, rows, columns)


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Rows of ``results.csv`` with numbers, booleans and empty cells (None) restored."""
    path = Path(path)
    if not path.exists():
        raise StudyError(f"{path}: not found (run `lpc study` first)")
    with open(path, newline="") as handle:
        return [{k: _parse_cell(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _parse_cell(text: str | None) -> Any:
    if text is None or text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text
