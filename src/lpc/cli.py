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
    train.add_argument("--device", help="cpu, cuda, cuda:1, ... or auto (overrides device)")
    train.add_argument("--out", type=Path, help="output folder (default: runs/<data>/<head>/lr=<lr>/seed=<seed>)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any other config value, e.g. --set gamma.max=1e4 (repeatable)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _resolve(args) -> "Config":
    from .config import apply_overrides, load_config, parse_override

    config = load_config(args.config)
    overrides = dict(parse_override(text) for text in args.set)
    for flag, key in (("head", "model.head"), ("lr", "optim.lr"), ("seed", "seed"), ("epochs", "optim.epochs"),
                      ("device", "device")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if args.data is not None:
        path = Path(args.data)
        overrides["data.name"] = "imagefolder" if path.is_dir() else "npz"
        overrides["data.path"] = str(path)
    return apply_overrides(config, overrides)


def _default_out(config) -> Path:
    data = config.data.name if config.data.name != "npz" else Path(config.data.path).stem
    return Path("runs") / data / config.model.head / f"lr={config.optim.lr:g}" / f"seed={config.seed}"


def cmd_train(args) -> int:
    from .data import load_data
    from .model import build_model
    from .train import train

    config = _resolve(args)
    data = load_data(config.data)
    build_model(config, data.in_shape, data.num_classes)  # rejects a bad head/backbone before anything is written
    out = args.out or _default_out(config)
    summary = train(config, out, data=data, progress=not args.quiet)
    keys = ("head", "status", "train_accuracy", "val_accuracy", "test_accuracy", "tpt_epoch", "wall_seconds")
    print(json.dumps({k: summary.get(k) for k in keys}))
    print(f"run files in {out}", file=sys.stderr)
    return 0 if summary["status"] == "finished" else 1


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError
    from .data import DataError
    from .files import RunFileError

    args = _parser().parse_args(argv)
    try:
        return {"train": cmd_train}[args.command](args)
    except (ConfigError, DataError, RunFileError) as error:
        print(f"lpc: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lpc: interrupted", file=sys.stderr)
        return 130
