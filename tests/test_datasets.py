"""CIFAR-10, CIFAR-100 and SVHN through torchvision, from tiny files written in their real on-disk formats.

Only torchvision's checksum check is bypassed (the tiny files cannot match the real MD5s); everything else,
from torchvision's readers to the tensor cache and a ResNet-18 epoch, runs as on the real data.
"""
import json
import os
import pickle

import numpy as np
import pytest
import scipy.io
import torch

from lpc.cli import main
from lpc.config import DataConfig
from lpc.data import DataError, cache_path, load_data, read_torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _no_checksums(monkeypatch):
    from torchvision.datasets import cifar, svhn

    exists = lambda fpath, md5=None: os.path.isfile(fpath)  # noqa: E731
    monkeypatch.setattr(cifar, "check_integrity", exists)
    monkeypatch.setattr(svhn, "check_integrity", exists)


def _images(rng, n):
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)  # N, C, H, W


def write_cifar10(root, per_batch=14, test=20, seed=0):
    """cifar-10-batches-py/: five training batches, a test batch and batches.meta, pickled as the originals."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = test if name == "test_batch" else per_batch
        x = _images(rng, n)
        y = (np.arange(n) + len(ys)) % 10
        with open(folder / name, "wb") as fh:  # rows of 3072 bytes: the red plane, then green, then blue
            pickle.dump({"batch_label": name, "data": x.reshape(n, -1), "labels": y.tolist(),
                         "filenames": [f"{i}.png" for i in range(n)]}, fh)
        xs.append(x)
        ys.append(y)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch,
                     "num_vis": 3072}, fh)
    return {"x_train": np.concatenate(xs[:5]), "y_train": np.concatenate(ys[:5]), "x_test": xs[5], "y_test": ys[5]}


def write_cifar100(root, train=120, test=30, seed=1):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for name, n in (("train", train), ("test", test)):
        x = _images(rng, n)
        fine = np.arange(n) % 100
        with open(folder / name, "wb") as fh:
            pickle.dump({"filenames": [f"{i}.png" for i in range(n)], "batch_label": name,
                         "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(),
                         "data": x.reshape(n, -1)}, fh)
        out[f"x_{name}"], out[f"y_{name}"] = x, fine
    with open(folder / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)],
                     "coarse_label_names": [f"c{i}" for i in range(20)]}, fh)
    return out


def write_svhn(root, train=40, test=20, seed=2):
    """train_32x32.mat / test_32x32.mat: X is H×W×C×N uint8, y is N×1 with 10 standing for the digit 0."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, n in (("train", train), ("test", test)):
        x = _images(rng, n)
        digits = np.arange(n) % 10
        scipy.io.savemat(root / f"{name}_32x32.mat",
                         {"X": x.transpose(2, 3, 1, 0), "y": np.where(digits == 0, 10, digits)[:, None].astype(np.uint8)})
        out[f"x_{name}"], out[f"y_{name}"] = x, digits
    return out


WRITERS = {"cifar10": write_cifar10, "cifar100": write_cifar100, "svhn": write_svhn}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_real_formats_read_as_uint8_nchw_and_cached(tmp_path, name, monkeypatch):
    truth = WRITERS[name](tmp_path)
    arrays = read_torchvision(name, tmp_path)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(arrays[key], truth[key]), key  # same pixels, channel-first; SVHN's 10 is 0
    assert arrays["x_train"].dtype == np.uint8 and arrays["y_train"].dtype == np.int64
    assert cache_path(name, tmp_path).is_file()
    # later runs read the cache alone, never torchvision (whose readers would fail now)
    from torchvision import datasets
    for cls in ("CIFAR10", "CIFAR100", "SVHN"):
        monkeypatch.setattr(datasets, cls, None)
    again = read_torchvision(name, tmp_path)
    assert all(np.array_equal(again[k], truth[k]) for k in truth)
    data = load_data(DataConfig(name=name, path=str(tmp_path), val_fraction=0.1))
    assert data.in_shape == (3, 32, 32) and data.x_train.dtype == torch.uint8
    assert len(data.x_train) + len(data.x_val) == len(truth["x_train"]) and len(data.x_test) == len(truth["x_test"])
    assert data.num_classes == (100 if name == "cifar100" else 10)
    # the training set's statistics, computed exactly from uint8 histograms
    expected = data.x_train.double().div(255)
    assert torch.allclose(data.mean.reshape(-1).double(), expected.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(data.std.reshape(-1).double(), expected.std(dim=(0, 2, 3)), atol=1e-6)


def test_the_cache_is_rebuilt_when_a_source_changes_and_holds_no_pickle(tmp_path):
    write_cifar10(tmp_path)
    first = read_torchvision("cifar10", tmp_path)
    torch.load(cache_path("cifar10", tmp_path), weights_only=True)  # plain tensors and containers only
    (tmp_path / "cifar-10-batches-py").rename(tmp_path / "old")
    second = write_cifar10(tmp_path, per_batch=12, seed=5)  # a different (smaller) dataset in the same place
    rebuilt = read_torchvision("cifar10", tmp_path)
    assert len(rebuilt["x_train"]) == 60 != len(first["x_train"])
    assert np.array_equal(rebuilt["x_train"], second["x_train"])
    cache_path("cifar10", tmp_path).write_bytes(b"truncated")  # a broken cache is rebuilt, not fatal
    assert np.array_equal(read_torchvision("cifar10", tmp_path)["x_test"], second["x_test"])
    for path in (tmp_path / "cifar-10-batches-py").iterdir():  # once cached, the raw files may go
        path.unlink()
    assert np.array_equal(read_torchvision("cifar10", tmp_path)["x_train"], second["x_train"])


def test_the_validation_split_is_stratified_seeded_and_carved_from_train(tmp_path):
    write_cifar10(tmp_path, per_batch=40)
    a = load_data(DataConfig(name="cifar10", path=str(tmp_path), val_fraction=0.1, split_seed=0))
    b = load_data(DataConfig(name="cifar10", path=str(tmp_path), val_fraction=0.1, split_seed=0))
    c = load_data(DataConfig(name="cifar10", path=str(tmp_path), val_fraction=0.1, split_seed=1))
    assert torch.bincount(a.y_val, minlength=10).tolist() == [2] * 10  # 10% of the 20 images of each class
    assert torch.equal(a.x_val, b.x_val) and not torch.equal(a.x_val, c.x_val)


def test_missing_data_names_the_command_to_run(tmp_path, monkeypatch):
    with pytest.raises(DataError) as error:
        load_data(DataConfig(name="cifar10", path=str(tmp_path)))
    message = str(error.value)
    assert "CIFAR-10 not found" in message and f"lpc download cifar10 --data-root {tmp_path}" in message
    assert "--download" in message
    monkeypatch.setenv("LPC_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match=f"lpc download svhn --data-root {tmp_path / 'elsewhere'}"):
        load_data(DataConfig(name="svhn"))
    write_svhn(tmp_path / "elsewhere")  # LPC_DATA is the default root
    assert load_data(DataConfig(name="svhn")).num_classes == 10


def test_corrupted_data_says_so(tmp_path, monkeypatch):
    from torchvision.datasets import cifar
    write_cifar10(tmp_path)
    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: False)  # as torchvision sees a bad MD5
    with pytest.raises(DataError, match="corrupted .* lpc download cifar10"):
        read_torchvision("cifar10", tmp_path)


def test_download_only_when_asked(tmp_path, monkeypatch, capsys):
    from torchvision import datasets
    calls = []

    def fake_download(self):  # what torchvision's download leaves behind, without the network
        calls.append(self.root)
        if not (tmp_path / "cifar-10-batches-py").exists():
            write_cifar10(tmp_path)

    monkeypatch.setattr(datasets.CIFAR10, "download", fake_download)
    with pytest.raises(DataError):
        load_data(DataConfig(name="cifar10", path=str(tmp_path)))
    assert calls == []
    assert main(["download", "cifar10", "--data-root", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["train"] == 70 and printed["test"] == 20 and printed["image_shape"] == [3, 32, 32]
    assert calls and cache_path("cifar10", tmp_path).is_file()


def test_resnet18_trains_one_epoch_on_cifar10_files_through_the_cli(tmp_path, capsys):
    """The paper's configs/cifar10.yaml, unchanged but for the epoch count and the switched-off final metrics."""
    write_cifar10(tmp_path / "data", per_batch=13)  # 65 images: 55 train + 10 validation, one step of 128
    out = tmp_path / "run"
    code = main(["train", "--config", os.path.join(ROOT, "configs", "cifar10.yaml"), "--data-root",
                 str(tmp_path / "data"), "--epochs", "1", "--device", "cpu", "--out", str(out), "--quiet",
                 "--set", "eval.geometry=false", "--set", "eval.robustness=false"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["backbone"] == "resnet18" and summary["dataset"] == "cifar10"
    assert summary["in_shape"] == [3, 32, 32] and summary["precision"] == "fp32" and summary["world_size"] == 1
    assert 0 <= summary["test_accuracy"] <= 1 and "auroc_msp" in summary  # reliability metrics ran


def test_cifar10_config_trains_resnet18_on_user_npz(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(60, 32, 32, 3), dtype=np.uint8)  # N×H×W×C, as most image arrays come
    y = np.arange(60) % 10
    np.savez(tmp_path / "tiny.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    out = tmp_path / "run"
    code = main(["train", "--config", os.path.join(ROOT, "configs", "cifar10.yaml"), "--data",
                 str(tmp_path / "tiny.npz"), "--epochs", "1", "--device", "cpu", "--out", str(out), "--quiet",
                 "--set", "eval.geometry=false", "--set", "eval.robustness=false", "--set", "eval.reliability=false"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["backbone"] == "resnet18" and summary["in_shape"] == [3, 32, 32]


def test_data_root_flag_conflicts_with_data(tmp_path, capsys):
    code = main(["train", "--config", os.path.join(ROOT, "configs", "cifar10.yaml"), "--data", "x.npz",
                 "--data-root", str(tmp_path), "--out", str(tmp_path / "never")])
    assert code == 2 and "give one of them" in capsys.readouterr().err
