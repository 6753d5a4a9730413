"""The command line: ``lpc train`` (and later commands); the only reader of sys.argv."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lpc", description="Latent point collapse: train and measure IB-layer classifiers.")
    parser.add_argument("--version", action="version", version=f"lpc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one run (one head, learning rate and seed)",
                                description="Train one run and write config.yaml, history.jsonl, model.pt, "
                                            "latents.npz and summary.json into --out. Re-running the same "
                                            "command in the same --out resumes from the last checkpoint.")
    train.add_argument("--config", required=True, type=Path, help="YAML config, e.g. configs/mnist.yaml")
    train.add_argument("--head", help="head name (overrides model.head): ib, wide_ib, narrow_ib, no_pen, "
                                      "no_pen_dropout, lin_pen, nonlin_pen, nonlin_pen_l1")
    train.add_argument("--lr", type=float, help="learning rate (overrides optim.lr)")
    train.add_argument("--seed", type=int, help="random seed for initialisation and data order (overrides seed)")
    train.add_argument("--epochs", type=int, help="number of epochs (overrides optim.epochs)")
    train.add_argument("--data", help="a .npz file (x_train, y_train, x_test, y_test[, x_val, y_val]) or an "
                                      "ImageFolder root with train/ and test/ (overrides data.name/data.path)")
    train.add_argument("--data-root", type=Path, help="folder that holds CIFAR-10 / CIFAR-100 / SVHN when data.name "
                                                      "is cifar10, cifar100 or svhn (overrides data.path; default "
                                                      "$LPC_DATA, else ./data)")
    train.add_argument("--download", action="store_true",
                       help="download that torchvision dataset into the data root when it is missing")
    train.add_argument("--device", help="cpu, cuda, cuda:1, ... or auto (overrides device)")
    train.add_argument("--out", type=Path, help="output folder (default: runs/<data>/<head>/lr=<lr>/seed=<seed>)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any other config value, e.g. --set gamma.max=1e4 (repeatable)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    download = commands.add_parser("download", help="download CIFAR-10, CIFAR-100 or SVHN and cache them as tensors",
                                   description="Download a dataset of the paper through torchvision (CIFAR-10, "
                                               "CIFAR-100; SVHN train and test, no 'extra'), check it, and cache "
                                               "it beside the files as uint8 tensors for fast starts.")
    download.add_argument("dataset", choices=("cifar10", "cifar100", "svhn"))
    download.add_argument("--data-root", type=Path, help="folder to download into (default: $LPC_DATA, else ./data)")
    analyze = commands.add_parser("analyze", help="recompute every metric of a finished run",
                                  description="Load RUN_DIR's model and recompute accuracies, latent geometry, "
                                              "reliability and robustness; print them as JSON and write "
                                              "RUN_DIR/analysis.json (or --out).")
    analyze.add_argument("run_dir", type=Path, help="a folder written by lpc train or lpc study")
    analyze.add_argument("--data", help="evaluate on this .npz / ImageFolder instead of the run's own data "
                                        "(normalised with the run's statistics, not this data's)")
    analyze.add_argument("--device", default="auto", help="cpu, cuda, ... or auto")
    analyze.add_argument("--out", type=Path, help="JSON file to write (default: RUN_DIR/analysis.json)")
    _add_study_parsers(commands)
    plot = commands.add_parser("plot", help="draw figures of a run")
    plot_kinds = plot.add_subparsers(dest="kind", required=True)
    latents = plot_kinds.add_parser("latents", help="Figure 1: histogram of every latent node, coloured by class",
                                    description="Draw one histogram per latent node of RUN_DIR/latents.npz, stacked "
                                                "by class (the paper's Figure 1), into RUN_DIR/latents.png or --out.")
    latents.add_argument("run_dir", type=Path, help="a folder written by lpc train or lpc study")
    latents.add_argument("--split", choices=("train", "test"), default="train")
    latents.add_argument("--max-nodes", type=int, default=16, help="draw at most this many nodes (default 16)")
    latents.add_argument("--out", type=Path, help="PNG file (default: RUN_DIR/latents.png)")
    return parser


def _add_study_parsers(commands) -> None:
    study = commands.add_parser(
        "study", help="run the ablation grid (heads x learning rates x seeds) and write the report",
        description="Train every (head, lr, seed) of the grid with the same code as `lpc train`, into "
                    "OUT/runs/<head>/lr=<lr>/seed=<s>/; for each (head, seed) select the lr with the best "
                    "validation accuracy at the last epoch (ties: the smaller lr); aggregate the selected runs "
                    "over seeds (mean, sample std, n); write results.csv, tables, figures, report.md and "
                    "report.html. Re-running the same command skips finished runs and resumes interrupted ones.")
    study.add_argument("--config", required=True, type=Path, help="YAML base config, e.g. configs/mnist.yaml")
    study.add_argument("--heads", default="all", help="'all' (default) or a comma list, e.g. ib,no_pen")
    study.add_argument("--lrs", default="all", help="'all' (default: the config's optim.lrs) or a comma list, e.g. 1e-3,2e-3")
    study.add_argument("--seeds", type=int, default=3, help="number of seeds; runs use seeds 0..N-1 (default 3)")
    study.add_argument("--data", help="a .npz file or an ImageFolder root (overrides data.name/data.path)")
    study.add_argument("--epochs", type=int, help="number of epochs (overrides optim.epochs)")
    study.add_argument("--device", help="cpu, cuda or auto (overrides device)")
    study.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any other config value, e.g. --set gamma.max=1e4 (repeatable)")
    study.add_argument("--out", type=Path, help="study folder (default: studies/<data>)")
    study.add_argument("--engine", default="local", choices=("local", "ray"),
                       help="local: worker processes on this machine (default); ray: one Ray task per run "
                            "(RAY_ADDRESS selects a cluster, else a local Ray instance)")
    study.add_argument("--workers", type=int, help="runs at once (default: one per GPU, else one per two CPU cores)")
    study.add_argument("--threads", type=int, help="torch threads per run (default: CPU cores // workers)")
    study.add_argument("--cpus-per-run", type=float, help="Ray: CPUs per run (default: --threads)")
    study.add_argument("--gpus-per-run", type=float, help="Ray: GPUs per run (default: 1 with CUDA, else 0)")
    study.add_argument("--runs-per-device", type=int, default=1, metavar="K",
                       help="K concurrent runs per GPU (default 1); with CUDA MPS their kernels overlap")
    study.add_argument("--data-root", help="folder of CIFAR/SVHN files (overrides data.path)")
    study.add_argument("--download", action="store_true", help="download CIFAR/SVHN into the data root first")
    study.add_argument("--tensorboard", action="store_true",
                       help="also write TensorBoard event files per run (needs the tensorboard package)")
    study.add_argument("--quiet", action="store_true", help="no progress bar")
    study.set_defaults(head=None, lr=None, seed=None)  # lets _resolve read the shared flags
    report = commands.add_parser("report", help="rebuild the tables, figures and report of a study",
                                 description="Rebuild selection.csv, aggregate.csv, table1/2, significance, "
                                             "figures/, report.md and report.html of a study folder from its "
                                             "results.csv and run folders (never trains).")
    report.add_argument("dir", type=Path, help="a folder written by lpc study")


def _resolve(args):
    from .config import ConfigError, apply_overrides, load_config, parse_override

    config = load_config(args.config)
    overrides = dict(parse_override(text) for text in args.set)
    for flag, key in (("head", "model.head"), ("lr", "optim.lr"), ("seed", "seed"), ("epochs", "optim.epochs"),
                      ("device", "device")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if args.data is not None:
        path = Path(args.data)
        overrides["data.name"] = "imagefolder" if path.is_dir() else "npz"
        overrides["data.path"] = str(path.resolve())  # the same data from any folder or cluster node
    if getattr(args, "data_root", None) is not None:
        if args.data is not None:
            raise ConfigError("--data names a file or folder of your own, --data-root the folder of CIFAR/SVHN; "
                              "give one of them")
        overrides["data.path"] = str(Path(args.data_root).expanduser().resolve())
    return apply_overrides(config, overrides)


def _default_out(config) -> Path:
    data = config.data.name if config.data.name != "npz" else Path(config.data.path).stem
    return Path("runs") / data / config.model.head / f"lr={config.optim.lr:g}" / f"seed={config.seed}"


def cmd_train(args) -> int:
    from .data import DataError, load_data
    from .distributed import from_env
    from .model import build_model
    from .trainer import train

    config = _resolve(args)
    where = from_env()  # under torchrun: this process's rank among the ones training this run
    if args.download and where.enabled:
        raise DataError(f"download before starting several processes: lpc download {config.data.name}"
                        + (f" --data-root {config.data.path}" if config.data.path else ""))
    data = load_data(config.data, download=args.download)
    build_model(config, data.in_shape, data.num_classes)  # rejects a bad head/backbone before anything is written
    out = args.out or _default_out(config)
    summary = train(config, out, data=data, progress=not args.quiet)
    if where.is_main:
        keys = ("head", "status", "train_accuracy", "val_accuracy", "test_accuracy", "tpt_epoch", "wall_seconds")
        print(json.dumps({k: summary.get(k) for k in keys}))
        print(f"run files in {out}", file=sys.stderr)
    return 0 if summary["status"] == "finished" else 1


def cmd_download(args) -> int:
    from .data import cache_path, data_root, read_torchvision

    arrays = read_torchvision(args.dataset, args.data_root, download=True)
    print(json.dumps({"dataset": args.dataset, "root": str(data_root(args.data_root)),
                      "train": len(arrays["x_train"]), "test": len(arrays["x_test"]),
                      "image_shape": list(arrays["x_train"].shape[1:]),
                      "cache": str(cache_path(args.dataset, args.data_root))}))
    return 0


def cmd_plot(args) -> int:
    import numpy as np

    from .files import RunFileError
    from .report import plot_latent_histograms

    path = args.run_dir / "latents.npz"
    if not path.is_file():
        raise RunFileError(f"{path}: file not found (runs save it unless eval.save_latents is false)")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            z, y = arrays[f"z_{args.split}"], arrays[f"y_{args.split}"]
    except (OSError, ValueError, KeyError) as error:
        raise RunFileError(f"{path}: truncated or corrupt ({error})") from None
    out = args.out or args.run_dir / "latents.png"
    plot_latent_histograms(z, y, out, max_nodes=args.max_nodes,
                           title=f"Latent histograms per node, {args.run_dir} ({args.split} set)")
    print(out)
    return 0


def cmd_analyze(args) -> int:
    from .config import DataConfig
    from .data import load_data
    from .files import write_json
    from .runs import analyze_run

    data = None
    if args.data is not None:
        path = Path(args.data)
        data = load_data(DataConfig(name="imagefolder" if path.is_dir() else "npz", path=str(path)))
    values = analyze_run(args.run_dir, data=data, device=args.device)
    write_json(args.out or args.run_dir / "analysis.json", values)
    print(json.dumps(values, indent=2))
    return 0


def cmd_study(args) -> int:
    from .data import load_data
    from .model import build_model
    from .report import build_report
    from .study import RunSpec, StudyError, parse_list, plan, run_study

    try:
        config = _resolve(args)
        study = plan(config, heads=parse_list(args.heads, str, "--heads"), lrs=parse_list(args.lrs, float, "--lrs"),
                     seeds=args.seeds)
        # bad data or heads are rejected before anything is written; a download happens once, here
        data = load_data(config.data, download=args.download)
        for head in study.heads:
            build_model(study.run_config(RunSpec(head, study.lrs[0], 0)), data.in_shape, data.num_classes)
        out = args.out or Path("studies") / (config.data.name if config.data.name != "npz"
                                             else Path(config.data.path).stem)
        del data
        outcome = run_study(study, out, engine=args.engine, workers=args.workers, threads=args.threads,
                            cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                            runs_per_device=args.runs_per_device, progress=not args.quiet,
                            tensorboard=args.tensorboard)
        build_report(out)
    except StudyError as error:
        print(f"lpc: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(out), "runs": outcome.total, "already_done": outcome.skipped,
                      "finished": outcome.finished, "diverged": outcome.diverged, "failed": len(outcome.failed),
                      "wall_seconds": round(outcome.wall_seconds, 1)}))
    print(f"report in {out / 'report.html'}", file=sys.stderr)
    return 1 if outcome.failed else 0


def cmd_report(args) -> int:
    from .report import build_report
    from .study import StudyError

    try:
        files = build_report(args.dir)
    except StudyError as error:
        print(f"lpc: error: {error}", file=sys.stderr)
        return 2
    print(f"report in {files['report.html']}", file=sys.stderr)
    return 0


# What each command imports beyond torch and numpy: checked (not imported) before it starts, so a core-only
# install gets one line naming the extra instead of a traceback, possibly after minutes of training
_COMMAND_NEEDS = {"train": ("yaml", "tqdm"), "analyze": ("yaml",), "study": ("yaml", "tqdm", "scipy", "matplotlib"),
                  "report": ("yaml", "scipy", "matplotlib"), "download": ("torchvision",), "plot": ("matplotlib",)}


def main(argv: list[str] | None = None) -> int:
    from ._extras import MissingExtra, check, extra_of, message
    from .config import ConfigError
    from .data import DataError
    from .files import RunFileError

    args = _parser().parse_args(argv)
    try:
        check(f"lpc {args.command}", _COMMAND_NEEDS.get(args.command, ()))
        return {"train": cmd_train, "analyze": cmd_analyze, "study": cmd_study,
                "report": cmd_report, "download": cmd_download, "plot": cmd_plot}[args.command](args)
    except (ConfigError, DataError, RunFileError) as error:
        print(f"lpc: error: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        # a core-only install (torch + numpy) reaching a harness dependency: one line naming the extra
        extra = error.extra if isinstance(error, MissingExtra) else extra_of(error.name)
        if extra is None or not isinstance(error, (ModuleNotFoundError, MissingExtra)):
            raise
        print(f"lpc: error: {message(f'lpc {args.command}', error.name or '?', extra)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lpc: interrupted", file=sys.stderr)
        return 130
