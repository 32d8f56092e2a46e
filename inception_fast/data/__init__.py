"""Data sets for the training loop: the bundled digits (default, no download), CIFAR-10 python
files, ImageNet-style folders, and a synthetic set. `get_dataset(name, ...)` -> Dataset."""
from __future__ import annotations

from .base import AUGMENTS, Dataset, TensorSplit, stratified_subset

DATASETS = ("digits", "cifar10", "imagefolder", "synthetic")


def get_dataset(name: str, data_dir: str | None = None, image_size: int = 75,
                train_subset: int = 0, test_subset: int = 0, seed: int = 0) -> Dataset:
    """Load a data set by name; `train_subset`/`test_subset` > 0 keep that many samples,
    spread evenly over the classes (for quick runs and tests)."""
    if name == "digits":
        from .digits import load_digits_dataset
        ds = load_digits_dataset()
    elif name == "cifar10":
        from .cifar10 import load_cifar10_dataset
        ds = load_cifar10_dataset(data_dir)
    elif name == "imagefolder":
        from .imagefolder import load_imagefolder_dataset
        ds = load_imagefolder_dataset(data_dir, image_size)
    elif name == "synthetic":
        from .synthetic import load_synthetic_dataset
        ds = load_synthetic_dataset(seed=seed)
    else:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    for split, n in (("train", train_subset), ("test", test_subset)):
        if n and n < len(getattr(ds, split)):
            if not isinstance(getattr(ds, split), TensorSplit):
                raise ValueError(f"--{split}-subset is supported for in-memory data sets only")
            part = getattr(ds, split)
            setattr(ds, split, part.subset(stratified_subset(part.y, n, seed=0)))
    return ds


__all__ = ["get_dataset", "DATASETS", "AUGMENTS", "Dataset", "TensorSplit"]
