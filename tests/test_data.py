"""Data sets: the bundled digits split, batch preparation, CIFAR-10 files, clear errors."""
import os
import pickle

import numpy as np
import pytest
import torch

from inception_fast.data import get_dataset
from inception_fast.data.base import random_shift, stratified_subset


def test_digits_fixed_stratified_split():
    ds = get_dataset("digits")
    assert (len(ds.train), len(ds.test), ds.num_classes) == (1437, 360, 10)
    assert ds.train.x.shape[1:] == (1, 8, 8)
    # Stratified: every class has 20% (+-1) of its samples in the test split.
    tr, te = torch.bincount(ds.train.y), torch.bincount(ds.test.y)
    assert ((te.float() / (tr + te).float() - 0.2).abs() < 0.01).all()
    again = get_dataset("digits")
    assert torch.equal(again.test.x, ds.test.x) and torch.equal(again.train.y, ds.train.y)


def test_prepare_resizes_normalizes_and_makes_three_channels():
    ds = get_dataset("digits")
    x, idx = next(ds.train.batches([torch.arange(5)]))
    out = ds.prepare(x, 75)
    assert out.shape == (5, 3, 75, 75) and out.dtype == torch.float32
    assert torch.equal(out[:, 0], out[:, 2])
    ref = torch.nn.functional.interpolate((x - ds.mean[0]) / ds.std[0], size=(75, 75),
                                          mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[:, :1], ref)
    torch.manual_seed(0)
    aug = ds.prepare(x, 75, augment="crop")
    assert aug.shape == out.shape and not torch.equal(aug, out)


def test_random_shift_is_a_translation():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    torch.manual_seed(1)
    out = random_shift(x, 2)
    for b in range(2):  # each output is a shifted window of the zero-padded input
        xp = torch.nn.functional.pad(x[b], (2, 2, 2, 2))
        assert any(torch.equal(out[b], xp[:, i:i + 6, j:j + 6])
                   for i in range(5) for j in range(5))


def test_subsets_are_balanced_and_deterministic():
    y = torch.arange(100) % 10
    a, b = stratified_subset(y, 30), stratified_subset(y, 30)
    assert torch.equal(a, b) and torch.equal(torch.bincount(y[a]), torch.full((10,), 3))
    ds = get_dataset("digits", train_subset=50, test_subset=20)
    assert (len(ds.train), len(ds.test)) == (50, 20)


def _write_cifar(root, n=4):
    rng = np.random.RandomState(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(os.path.join(root, name), "wb") as f:
            pickle.dump({b"data": rng.randint(0, 256, (n, 3072), dtype=np.uint8),
                         b"labels": list(rng.randint(0, 10, n))}, f)


def test_cifar10_from_python_files(tmp_path):
    _write_cifar(tmp_path)
    ds = get_dataset("cifar10", str(tmp_path))
    assert (len(ds.train), len(ds.test)) == (20, 4)
    assert ds.train.x.dtype == torch.uint8 and ds.train.x.shape[1:] == (3, 32, 32)
    x, _ = next(ds.train.batches([torch.arange(3)]))
    assert ds.prepare(x, 75, "crop-flip").shape == (3, 3, 75, 75)


def test_clear_data_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        get_dataset("mnist")
    with pytest.raises(FileNotFoundError, match="not found"):
        get_dataset("cifar10", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="missing data_batch_1"):
        get_dataset("cifar10", str(tmp_path))
    with pytest.raises(ValueError, match="needs --data-dir"):
        get_dataset("cifar10", None)
    _write_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        f.write(b"not a pickle")
    with pytest.raises(ValueError, match="malformed CIFAR-10 file"):
        get_dataset("cifar10", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="has no train/ folder"):
        get_dataset("imagefolder", str(tmp_path))


def test_imagefolder(tmp_path):
    pytest.importorskip("torchvision")  # optional dependency; CI installs it with [dev]
    from PIL import Image

    for split in ("train", "val"):
        for c in ("cat", "dog"):
            os.makedirs(tmp_path / split / c)
            for i in range(2):
                Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(
                    tmp_path / split / c / f"{i}.png")
    ds = get_dataset("imagefolder", str(tmp_path), image_size=75)
    assert ds.num_classes == 2 and ds.class_names == ["cat", "dog"]
    assert torch.equal(ds.train.targets, torch.tensor([0, 0, 1, 1]))
    x, idx = next(ds.test.batches([[0, 3]]))
    assert ds.prepare(x, 75).shape == (2, 3, 75, 75) and idx.tolist() == [0, 3]


def test_synthetic_is_deterministic():
    a, b = get_dataset("synthetic"), get_dataset("synthetic")
    assert torch.equal(a.train.x, b.train.x) and a.num_classes == 10
