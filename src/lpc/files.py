"""Atomic file writes and clean reads of the run files (JSON, JSONL, checkpoints); no pickle anywhere."""
from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


class RunFileError(RuntimeError):
    """A run file that is missing, truncated or corrupt; the message names the path."""


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Writes via a temporary file in the same folder, fsync, then rename: readers see the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files owner-only; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _plain(value: Any) -> Any:
    """JSON has no NaN/Inf: they are written as null, so files stay valid for every JSON reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return _plain(value.item())
    return value


def write_json(path: str | Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(_plain(value), indent=2) + "\n").encode())


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(_plain(r)) + "\n" for r in rows).encode())


def write_csv(path: str | Path, rows: list[dict], columns: list[str] | None = None) -> None:
    """One row per dict (columns: given, else every key in first-seen order); floats at full precision
    (``repr`` round-trips), missing values empty."""
    import csv

    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else repr(row[c]) if isinstance(row[c], float) else row[c]
                         for c in columns])
    atomic_write_bytes(path, buffer.getvalue().encode())


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFileError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFileError(f"{path}: truncated or corrupt JSON ({error})") from None


def save_torch(path: str | Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Loads tensors and plain containers only (``weights_only=True``); anything else is refused by path."""
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"{path}: file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated zips and refused globals
        raise RunFileError(f"{path}: cannot be loaded safely (truncated, corrupt, or needs arbitrary code: "
                           f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
