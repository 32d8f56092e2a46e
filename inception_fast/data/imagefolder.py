"""ImageNet-style folders: DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg (torchvision)."""
from __future__ import annotations

import os

import torch

from .base import Dataset

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class FolderSplit:
    """torchvision ImageFolder read by a DataLoader that takes our index batches."""

    def __init__(self, folder):
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder)

    @property
    def targets(self) -> torch.Tensor:
        return torch.tensor(self.folder.targets, dtype=torch.long)

    def batches(self, index_batches, workers: int = 0):
        index_batches = [list(map(int, b)) for b in index_batches]
        loader = torch.utils.data.DataLoader(self.folder, batch_sampler=index_batches,
                                             num_workers=workers, pin_memory=False)
        for (x, _), idx in zip(loader, index_batches):
            yield x, torch.tensor(idx, dtype=torch.long)


def load_imagefolder_dataset(data_dir: str, image_size: int) -> Dataset:
    if not data_dir:
        raise ValueError("--dataset imagefolder needs --data-dir (with train/ and val/ inside)")
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"image folder data dir not found: {data_dir}")
    for sub in ("train", "val"):
        if not os.path.isdir(os.path.join(data_dir, sub)):
            raise FileNotFoundError(f"{data_dir} has no {sub}/ folder (expected {data_dir}/train/"
                                    f"<class>/*.jpg and {data_dir}/val/<class>/*.jpg)")
    try:
        from torchvision import datasets, transforms
    except ImportError as e:
        raise ImportError("--dataset imagefolder needs torchvision (pip install torchvision)") \
            from e
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    # The paper's Inception preprocessing, reduced: random-resized crop + flip; centre crop.
    train_tf = transforms.Compose([transforms.RandomResizedCrop(image_size),
                                   transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm])
    val_tf = transforms.Compose([transforms.Resize(int(round(image_size / 0.875))),
                                 transforms.CenterCrop(image_size), transforms.ToTensor(), norm])
    try:
        train = datasets.ImageFolder(os.path.join(data_dir, "train"), transform=train_tf)
        val = datasets.ImageFolder(os.path.join(data_dir, "val"), transform=val_tf)
    except (FileNotFoundError, RuntimeError) as e:  # e.g. a class folder without images
        raise FileNotFoundError(f"malformed image folder {data_dir}: {e}") from e
    if train.classes != val.classes:
        raise ValueError(f"malformed image folder {data_dir}: train/ has classes "
                         f"{train.classes[:5]}..., val/ has {val.classes[:5]}...")
    # Already normalized and sized by the transforms: prepare() only moves and checks.
    return Dataset("imagefolder", FolderSplit(train), FolderSplit(val), len(train.classes),
                   list(train.classes), mean=[0.0] * 3, std=[1.0] * 3, resize=False)
