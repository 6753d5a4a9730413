"""Datasets as tensors (embedded MNIST digits, .npz, ImageFolder, CIFAR/SVHN), checked once, augmented in batches.

Images are kept as uint8 (N, C, H, W) on the training device and turned into normalised float batches
only when a batch is drawn; flips, crops and noise act on whole batches, never per sample in Python.
CIFAR-10, CIFAR-100 and SVHN are read once through torchvision and cached beside the data as one uint8
tensor file (``<root>/<name>.lpc-uint8.pt``, loaded with ``weights_only=True``), so later runs start in
seconds.
"""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._extras import require
from .config import DataConfig


class DataError(ValueError):
    """Data that cannot be used as given; the message names the array or file and what is wrong."""


@dataclass
class Dataset:
    """Train / validation / test splits as tensors, with the training set's per-channel mean and std.

    ``x_*`` are uint8 images (N, C, H, W) in [0, 255], or float tensors (N, C, H, W) / (N, D) used as given.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: torch.Tensor  # broadcastable to one input, in the units of to_float()
    std: torch.Tensor

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x_train.dim() == 4

    def to(self, device: torch.device | str) -> "Dataset":
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return Dataset(**moved)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw stored inputs → the normalised float inputs the model sees."""
        return normalize(x, self.mean, self.std)

    @property
    def normalization(self) -> Normalization:
        """This data's normalisation as a module (to record with a run, or to put in front of its model)."""
        return Normalization(self.mean, self.std)

    def with_normalization(self, normalization: Normalization) -> Dataset:
        """The same splits normalised with another data's statistics (a run's, for evaluating it on this data)."""
        return replace(self, mean=normalization.mean.to(self.mean.device),
                                   std=normalization.std.to(self.std.device))


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Raw stored inputs (uint8 images in [0, 255] or floats) → ``(to_float(x) - mean) / std``."""
    return (to_float(x) - mean) / std


class Normalization(nn.Module):
    """The input normalisation a model was trained with: per-channel mean and std of the training set
    (per feature for flat vectors), in the units of :func:`to_float`.

    ``Normalization(mean, std)(raw)`` gives the inputs the model expects; ``nn.Sequential(normalization,
    model)`` is a model fed raw inputs. A run records it in ``summary.json`` (:meth:`to_dict`), so that its
    folder holds everything needed to use the model without its training data.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("std", std.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.mean, self.std)

    def to_dict(self) -> dict[str, list[float]]:
        """``{"mean": [...], "std": [...]}``, one float per channel (float32 values, exact in JSON)."""
        return {"mean": self.mean.reshape(-1).tolist(), "std": self.std.reshape(-1).tolist()}

    @classmethod
    def from_dict(cls, values: dict[str, list[float]], in_shape: tuple[int, ...]) -> "Normalization":
        """The inverse of :meth:`to_dict` for inputs of ``in_shape`` ((C, H, W) images or (D,) vectors)."""
        shape = (-1, 1, 1) if len(in_shape) == 3 else (-1,)
        return cls(*(torch.tensor(values[key], dtype=torch.float32).reshape(shape) for key in ("mean", "std")))


# ---------------------------------------------------------------- loading

def load_data(config: DataConfig, *, download: bool = False) -> Dataset:
    """Loads and checks the dataset that ``config`` names (on the CPU; move it with ``Dataset.to``).

    ``download`` fetches CIFAR-10 / CIFAR-100 / SVHN through torchvision when they are missing; without it
    a missing dataset is a :class:`DataError` that gives the command to run.
    """
    if config.name == "mnist":
        with resources.as_file(resources.files("lpc") / "datasets" / "mnist_digits.npz") as path:
            arrays = _read_npz(path)
    elif config.name == "npz":
        arrays = _read_npz(Path(config.path))
    elif config.name == "imagefolder":
        arrays = _read_imagefolder(Path(config.path))
    else:
        arrays = read_torchvision(config.name, config.path, download=download)
    return from_arrays(arrays, name=config.name if config.name != "npz" else Path(config.path).stem,
                       val_fraction=config.val_fraction, split_seed=config.split_seed)


def from_arrays(arrays: dict[str, np.ndarray], *, name: str = "data", val_fraction: float = 0.1,
                split_seed: int = 0) -> Dataset:
    """Builds a :class:`Dataset` from ``x_train, y_train, x_test, y_test`` (optionally ``x_val, y_val``).

    Images may be N×H×W, N×H×W×C or N×C×H×W (uint8 or float), or flat vectors N×D. Without a validation
    set, a stratified ``val_fraction`` of train is held out (seeded by ``split_seed``).
    """
    for key in ("x_train", "y_train", "x_test", "y_test"):
        if key not in arrays:
            raise DataError(f"data: missing array '{key}' (need x_train, y_train, x_test, y_test; "
                            f"optional x_val, y_val); found {sorted(arrays)}")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DataError("data: x_val and y_val must be given together")
    splits = ["train", "test"] + (["val"] if "x_val" in arrays else [])
    xs = {s: _as_layout(np.asarray(arrays[f"x_{s}"]), f"x_{s}") for s in splits}
    ys = {s: _as_labels(np.asarray(arrays[f"y_{s}"]), f"y_{s}") for s in splits}
    shapes = {xs[s].shape[1:] for s in splits}
    if len(shapes) > 1:
        raise DataError(f"data: inputs of the splits have different shapes {sorted(shapes)}")
    for s in splits:
        if len(xs[s]) != len(ys[s]):
            raise DataError(f"data: x_{s} has {len(xs[s])} rows but y_{s} has {len(ys[s])} labels")
        if len(xs[s]) == 0:
            raise DataError(f"data: x_{s} is empty")
        if xs[s].dtype.kind == "f" and not np.isfinite(xs[s]).all():
            raise DataError(f"data: x_{s} contains NaN or Inf values")
    num_classes = int(ys["train"].max()) + 1
    for s in splits:
        bad = (ys[s] < 0) | (ys[s] >= num_classes)
        if bad.any():
            raise DataError(f"data: y_{s} has label {int(ys[s][bad][0])} outside 0..{num_classes - 1} "
                            f"(the classes seen in y_train)")
    missing = np.setdiff1d(np.arange(num_classes), ys["train"])
    if len(missing):
        raise DataError(f"data: class {int(missing[0])} has no training example (labels must be 0..K-1)")
    if num_classes < 2:
        raise DataError("data: y_train has a single class; a classifier needs at least two")
    if "val" not in xs:
        train_idx, val_idx = stratified_split(ys["train"], val_fraction, split_seed)
        xs["val"], ys["val"] = xs["train"][val_idx], ys["train"][val_idx]
        xs["train"], ys["train"] = xs["train"][train_idx], ys["train"][train_idx]
    tensors = {f"x_{s}": torch.from_numpy(np.ascontiguousarray(xs[s])) for s in xs}
    tensors.update({f"y_{s}": torch.from_numpy(ys[s].astype(np.int64)) for s in ys})
    mean, std = _channel_stats(tensors["x_train"])
    return Dataset(name=name, num_classes=num_classes, mean=mean, std=std, **tensors)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with ``fraction`` of every class held out, at least one per class."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(fraction * len(idx)))
        n = min(max(n, 1), len(idx) - 1) if len(idx) > 1 else 0
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def _as_layout(x: np.ndarray, key: str) -> np.ndarray:
    if x.dtype == object or x.dtype.kind not in "uif":
        raise DataError(f"data: {key} must be numeric, got dtype {x.dtype}")
    if x.dtype.kind in "ui" and x.dtype != np.uint8:
        if x.min() < 0 or x.max() > 255:
            raise DataError(f"data: {key} has integer values outside 0..255")
        x = x.astype(np.uint8)
    if x.dtype.kind == "f":
        x = x.astype(np.float32)
    if x.ndim == 2:  # flat vectors
        return x
    if x.ndim == 3:  # N, H, W
        return x[:, None]
    if x.ndim == 4:
        if x.shape[1] in (1, 3, 4):  # N, C, H, W
            return x
        if x.shape[-1] in (1, 3, 4):  # N, H, W, C
            return np.transpose(x, (0, 3, 1, 2))
        raise DataError(f"data: {key} has shape {x.shape}; expected N×H×W, N×H×W×C or N×C×H×W with C in 1, 3, 4")
    raise DataError(f"data: {key} must have 2, 3 or 4 dimensions (N×D, N×H×W, N×H×W×C, N×C×H×W), got shape {x.shape}")


def _as_labels(y: np.ndarray, key: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"data: {key} must be a vector of integer labels, got shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise DataError(f"data: {key} contains NaN or Inf values")
        if (y != np.round(y)).any():
            raise DataError(f"data: {key} must hold integer class labels, found {y[y != np.round(y)][0]}")
    elif y.dtype.kind not in "ui":
        raise DataError(f"data: {key} must hold integer class labels, got dtype {y.dtype}")
    return y.astype(np.int64)


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dtype == torch.uint8 and x.dim() == 4:
        return _uint8_channel_stats(x)
    dims = (0, 2, 3) if x.dim() == 4 else (0,)
    x = to_float(x)
    mean = x.double().mean(dim=dims)
    std = x.double().std(dim=dims).clamp_min(1e-6)  # constant pixels (MNIST borders) would divide by zero
    shape = (-1, 1, 1) if x.dim() == 4 else (-1,)
    return mean.float().reshape(shape), std.float().reshape(shape)


def _uint8_channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and std of uint8 images from their 256-bin histograms: no float copy of the
    whole training set (5 s and 1 GB for CIFAR-10 the direct way, 0.3 s this way)."""
    counts = torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=256) for c in range(x.shape[1])]).double()
    values = torch.arange(256, dtype=torch.float64) / 255.0
    n = counts.sum(dim=1)
    mean = (counts * values).sum(dim=1) / n
    var = (counts * (values - mean[:, None]) ** 2).sum(dim=1) / (n - 1).clamp_min(1)
    std = var.sqrt().clamp_min(1e-6)
    return mean.float().reshape(-1, 1, 1), std.float().reshape(-1, 1, 1)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"data: file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except (ValueError, OSError) as error:
        raise DataError(f"data: cannot read {path} as .npz ({error})") from None


def _read_imagefolder(root: Path) -> dict[str, np.ndarray]:
    ImageFolder = require("torchvision.datasets", "reading an image folder").ImageFolder

    arrays, classes = {}, None
    for split in ("train", "val", "test"):
        folder = root / split
        if not folder.is_dir():
            if split == "val":
                continue
            raise DataError(f"data: ImageFolder root {root} needs '{split}/' with one subfolder per class")
        dataset = ImageFolder(str(folder))
        if classes is None:
            classes = dataset.classes
        elif dataset.classes != classes:
            raise DataError(f"data: {folder} has classes {dataset.classes}, but train/ has {classes}")
        images = [np.asarray(dataset.loader(p).convert("RGB")) for p, _ in dataset.samples]
        if len({im.shape for im in images}) > 1:
            raise DataError(f"data: images in {folder} differ in size; resize them to one size first")
        arrays[f"x_{split}"] = np.stack(images)
        arrays[f"y_{split}"] = np.asarray(dataset.targets, dtype=np.int64)
    return arrays


# torchvision datasets of the paper: display name, folder under the root, files torchvision reads, download size
TORCHVISION = {
    "cifar10": ("CIFAR-10", "cifar-10-batches-py",
                [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"], "170 MB"),
    "cifar100": ("CIFAR-100", "cifar-100-python", ["train", "test", "meta"], "170 MB"),
    "svhn": ("SVHN", "", ["train_32x32.mat", "test_32x32.mat"], "180 MB"),  # no "extra" split, as the paper
}
CACHE_FORMAT = 1  # bump when the cached arrays change meaning


def data_root(path: str | Path | None) -> Path:
    """Where torchvision datasets live: ``data.path`` / ``--data-root``, else ``$LPC_DATA``, else ``./data``."""
    return Path(path or os.environ.get("LPC_DATA") or "data").expanduser().absolute()


def cache_path(name: str, root: str | Path | None) -> Path:
    return data_root(root) / f"{name}.lpc-uint8.pt"


def read_torchvision(name: str, root: str | Path | None = None, *, download: bool = False) -> dict[str, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` of CIFAR-10, CIFAR-100 or SVHN as uint8 N×C×H×W images and int64 labels.

    The first call decodes torchvision's files (checking their checksums) and writes the arrays to
    :func:`cache_path`; later calls read that file alone. The cache remembers the size of every source file
    and is rebuilt when one changes. With ``download``, missing files are fetched first.
    """
    if name not in TORCHVISION:
        raise DataError(f"data: '{name}' is not a torchvision dataset lpc reads; choose from {', '.join(TORCHVISION)}")
    root = data_root(root)
    cache = cache_path(name, root)
    sources = _source_sizes(name, root)
    arrays = _read_cache(cache, name, sources)
    if arrays is not None:
        return arrays
    arrays = _decode_torchvision(name, root, download)
    _write_cache(cache, name, arrays, _source_sizes(name, root))
    return arrays


def _source_sizes(name: str, root: Path) -> dict[str, int]:
    _, folder, files, _ = TORCHVISION[name]
    paths = {f"{folder}/{f}" if folder else f: root / folder / f for f in files}
    return {key: path.stat().st_size for key, path in paths.items() if path.is_file()}


def _read_cache(cache: Path, name: str, sources: dict[str, int]) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when there is no usable cache (missing, corrupt, or its sources changed)."""
    if not cache.is_file():
        return None
    try:
        state = torch.load(cache, map_location="cpu", weights_only=True)
        if state.get("format") != CACHE_FORMAT or state.get("dataset") != name:
            return None
        # raw files may be deleted once cached; those still present must be the ones the cache was built from
        if any(state["sources"].get(key) != size for key, size in sources.items()):
            return None
        return {k: state[k].numpy() for k in ("x_train", "y_train", "x_test", "y_test")}
    except Exception as error:  # a truncated or foreign file: rebuild it from the sources
        print(f"lpc: ignoring unreadable cache {cache} ({type(error).__name__}); decoding the dataset again",
              file=sys.stderr)
        return None


def _write_cache(cache: Path, name: str, arrays: dict[str, np.ndarray], sources: dict[str, int]) -> None:
    state = {"format": CACHE_FORMAT, "dataset": name, "sources": sources,
             **{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}}
    try:
        # a temporary file and a rename: processes that build the cache at once never see half a file
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(state, handle)
            os.replace(tmp, cache)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as error:  # a read-only data folder: train anyway, decode again next time
        print(f"lpc: cannot write the cache {cache} ({error}); the next run will decode the dataset again",
              file=sys.stderr)


def _decode_torchvision(name: str, root: Path, download: bool) -> dict[str, np.ndarray]:
    datasets = require("torchvision.datasets", f"reading {name}")

    title, folder, files, size = TORCHVISION[name]
    if download:
        root.mkdir(parents=True, exist_ok=True)
    try:
        if name == "svhn":
            train, test = (datasets.SVHN(str(root), split=s, download=download) for s in ("train", "test"))
            # torchvision maps SVHN's label 10 to the digit 0 and returns N×C×H×W
            return {"x_train": train.data, "y_train": train.labels.astype(np.int64),
                    "x_test": test.data, "y_test": test.labels.astype(np.int64)}
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        train, test = cls(str(root), train=True, download=download), cls(str(root), train=False, download=False)
        # torchvision returns N×H×W×C; stored channel-first
        return {"x_train": np.ascontiguousarray(train.data.transpose(0, 3, 1, 2)),
                "y_train": np.asarray(train.targets, dtype=np.int64),
                "x_test": np.ascontiguousarray(test.data.transpose(0, 3, 1, 2)),
                "y_test": np.asarray(test.targets, dtype=np.int64)}
    except RuntimeError as error:
        where = root / folder if folder else root
        missing = [f for f in files if not (where / f).is_file()]
        command = f"lpc download {name} --data-root {root}"
        if download:
            raise DataError(f"data: {title} under '{root}' is still unreadable after downloading ({error})") from None
        if missing:
            raise DataError(f"data: {title} not found under '{root}' (missing {where / missing[0]}); download it "
                            f"({size}) with: {command}   (or add --download to lpc train, or point --data-root, "
                            f"data.path or LPC_DATA at the folder that holds it)") from None
        raise DataError(f"data: {title} under '{root}' is corrupted (checksum mismatch: {error}); download it "
                        f"again with: {command}") from None
    except OSError as error:  # no network, a full disk, a refused URL
        raise DataError(f"data: downloading {title} into '{root}' failed ({type(error).__name__}: {error})") from None


# ---------------------------------------------------------------- batches

def augment(x: torch.Tensor, *, flip: bool, crop_padding: int, pad_fill: torch.Tensor | float, noise_std: float,
            generator: torch.Generator) -> torch.Tensor:
    """Random flip, padded random crop and Gaussian noise on a normalised batch, all on its device.

    ``pad_fill`` is the value (per channel, broadcastable to (C, 1, 1)) written into the padding.
    Flat vectors (N, D) only get the noise.
    """
    n = x.shape[0]
    if x.dim() == 4:
        if flip:
            mask = torch.rand(n, device=x.device, generator=generator) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(3), x)
        if crop_padding > 0:
            x = random_crop(x, crop_padding, pad_fill, generator)
    if noise_std > 0:
        x = x + noise_std * torch.randn(x.shape, device=x.device, generator=generator)
    return x


def random_crop(x: torch.Tensor, padding: int, fill: torch.Tensor | float, generator: torch.Generator) -> torch.Tensor:
    """Pads by ``padding`` with ``fill`` and crops back to H×W at a random offset per sample (two gathers, no loop)."""
    n, c, h, w = x.shape
    padded = x.new_empty(n, c, h + 2 * padding, w + 2 * padding)
    padded[:] = fill.reshape(-1, 1, 1) if torch.is_tensor(fill) else fill
    padded[:, :, padding:padding + h, padding:padding + w] = x
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * padding))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))
