import numpy as np
import pytest
import torch

from lpc.config import DataConfig
from lpc.data import DataError, augment, from_arrays, load_data, random_crop, stratified_split


def arrays(x_train, x_test, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y_train = np.arange(len(x_train)) % k
    y_test = np.arange(len(x_test)) % k
    rng.shuffle(y_train)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def test_embedded_mnist():
    data = load_data(DataConfig(name="mnist"))
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape[1:] == (1, 28, 28)
    assert data.num_classes == 10
    total = len(data.x_train) + len(data.x_val) + len(data.x_test)
    assert total == 10_000 and len(data.x_test) == 2000
    for split in ("train", "val", "test"):  # stratified: every class in every split, roughly balanced
        counts = torch.bincount(data.split(split)[1], minlength=10)
        assert counts.min() > 0.5 * counts.float().mean()
    # normalisation statistics are the training set's
    assert data.mean.item() == pytest.approx(data.x_train.float().div(255).mean().item(), rel=1e-4)
    normalised = data.normalize(data.x_train)
    assert normalised.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert normalised.std().item() == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW", "flat"])
def test_npz_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(60, 3, 8, 8), dtype=np.uint8)  # N, C, H, W
    make = {"NHW": lambda a: a[:, 0], "NHWC": lambda a: a.transpose(0, 2, 3, 1), "NCHW": lambda a: a,
            "flat": lambda a: a.reshape(len(a), -1).astype(np.float32)}[layout]
    path = tmp_path / "d.npz"
    np.savez(path, **arrays(make(base[:45]), make(base[45:])))
    data = load_data(DataConfig(name="npz", path=str(path), val_fraction=0.2))
    expected_shape = {"NHW": (1, 8, 8), "NHWC": (3, 8, 8), "NCHW": (3, 8, 8), "flat": (192,)}[layout]
    assert data.in_shape == expected_shape
    assert len(data.x_train) + len(data.x_val) == 45 and len(data.x_test) == 15
    if layout in ("NHWC", "NCHW"):  # same pixels, channel-first
        assert torch.equal(data.x_test, torch.from_numpy(base[45:]))


def test_given_validation_split_is_kept():
    x = np.random.rand(30, 4).astype(np.float32)
    a = arrays(x[:20], x[20:])
    a["x_val"], a["y_val"] = x[:6], np.array([0, 1, 2, 0, 1, 2])
    data = from_arrays(a)
    assert len(data.x_train) == 20 and len(data.x_val) == 6


def test_stratified_split_holds_out_each_class():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    keep, held = stratified_split(labels, 0.1, seed=3)
    assert len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == 100
    assert np.bincount(labels[held]).tolist() == [1, 2, 3, 4]
    assert np.array_equal(held, stratified_split(labels, 0.1, seed=3)[1])  # seeded


def test_imagefolder(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    data = load_data(DataConfig(name="imagefolder", path=str(tmp_path), val_fraction=0.2))
    assert data.in_shape == (3, 8, 8) and data.num_classes == 2
    assert len(data.x_test) == 6 and len(data.x_train) + len(data.x_val) == 12


@pytest.mark.parametrize("mutate,message", [
    (lambda a: a.update(y_train=a["y_train"][:-1]), "x_train has 20 rows but y_train has 19 labels"),
    (lambda a: a.update(y_test=np.where(np.arange(10) == 0, 7, a["y_test"])), "label 7 outside 0..2"),
    (lambda a: a.update(y_test=np.where(np.arange(10) == 0, -1, a["y_test"])), "label -1 outside 0..2"),
    (lambda a: a["x_train"].__setitem__((3, 1), np.nan), "x_train contains NaN or Inf"),
    (lambda a: a["x_test"].__setitem__((0, 0), np.inf), "x_test contains NaN or Inf"),
    (lambda a: a.update(x_test=a["x_test"][:, :3]), "different shapes"),
    (lambda a: a.update(x_train=a["x_train"][:, :, None, None, None]), "2, 3 or 4 dimensions"),
    (lambda a: a.update(y_train=np.where(a["y_train"] == 1, 2, a["y_train"])), "class 1 has no training example"),
    (lambda a: a.pop("y_test"), "missing array 'y_test'"),
    (lambda a: a.update(y_train=a["y_train"] + 0.5), "integer class labels"),
])
def test_bad_data_is_rejected_with_a_clear_message(mutate, message):
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    a = arrays(x[:20], x[20:])
    mutate(a)
    with pytest.raises(DataError, match=message):
        from_arrays(a)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_data(DataConfig(name="npz", path=str(tmp_path / "nope.npz")))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_data(DataConfig(name="npz", path=str(bad)))


def test_random_crop_matches_pad_then_slice():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 6, 5)
    out = random_crop(x, 2, torch.tensor([-1.0, -2.0, -3.0]), g)
    padded = torch.stack([torch.nn.functional.pad(x[:, c], (2, 2, 2, 2), value=-(c + 1.0)) for c in range(3)], 1)
    for i in range(16):  # each sample must be one of the 25 windows of its own padded image
        windows = [padded[i, :, dy:dy + 6, dx:dx + 5] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_augment_flip_noise_and_determinism():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).reshape(2, 1, 2, 3).repeat(50, 1, 1, 1)
    out = augment(x, flip=True, crop_padding=0, pad_fill=0.0, noise_std=0.0, generator=torch.Generator().manual_seed(1))
    flipped = torch.tensor([torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)])
    same = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert bool((flipped | same).all()) and 20 < int(flipped.sum()) < 80
    noisy = augment(torch.zeros(4000, 8), flip=True, crop_padding=4, pad_fill=0.0, noise_std=0.01,
                    generator=torch.Generator().manual_seed(2))
    assert noisy.std().item() == pytest.approx(0.01, rel=0.05)  # vectors get only the noise
    again = augment(torch.zeros(4000, 8), flip=True, crop_padding=4, pad_fill=0.0, noise_std=0.01,
                    generator=torch.Generator().manual_seed(2))
    assert torch.equal(noisy, again)
