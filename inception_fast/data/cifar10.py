"""CIFAR-10 from the standard python files (data_batch_1..5, test_batch, batches.meta)."""
from __future__ import annotations

import os
import pickle

import numpy as np
import torch

from .base import Dataset, TensorSplit

TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
MEAN = [0.4914, 0.4822, 0.4465]
STD = [0.2470, 0.2435, 0.2616]


def _find_root(data_dir: str) -> str:
    if not data_dir:
        raise ValueError("--dataset cifar10 needs --data-dir (the folder holding the CIFAR-10 "
                         "python files, or its parent with cifar-10-batches-py/)")
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"CIFAR-10 data dir not found: {data_dir}")
    for root in (data_dir, os.path.join(data_dir, "cifar-10-batches-py")):
        if all(os.path.isfile(os.path.join(root, f)) for f in TRAIN_FILES + [TEST_FILE]):
            return root
    missing = [f for f in TRAIN_FILES + [TEST_FILE]
               if not os.path.isfile(os.path.join(data_dir, f))]
    raise FileNotFoundError(
        f"{data_dir} does not hold the CIFAR-10 python files: missing {', '.join(missing)} "
        "(expected data_batch_1..5 and test_batch, directly or under cifar-10-batches-py/)")


def _read(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as e:  # truncated file, wrong pickle, missing keys, wrong size
        raise ValueError(f"malformed CIFAR-10 file {path}: {type(e).__name__}: {e}") from e
    if len(x) != len(y) or (len(y) and (y.min() < 0 or y.max() > 9)):
        raise ValueError(f"malformed CIFAR-10 file {path}: {len(x)} images, {len(y)} labels")
    return x, y


def load_cifar10_dataset(data_dir: str) -> Dataset:
    root = _find_root(data_dir)
    parts = [_read(os.path.join(root, f)) for f in TRAIN_FILES]
    xt, yt = _read(os.path.join(root, TEST_FILE))
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return Dataset("cifar10", TensorSplit(x, y), TensorSplit(torch.from_numpy(xt),
                                                              torch.from_numpy(yt)),
                   10, list(CLASSES), mean=MEAN, std=STD, default_augment="crop-flip")
