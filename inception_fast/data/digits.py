"""scikit-learn's bundled 8x8 digits (1797 images, 10 classes): no download, ever."""
from __future__ import annotations

import torch

from .base import Dataset, TensorSplit

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits_dataset() -> Dataset:
    """Fixed stratified split (20% test, seed 0): 1437 train / 360 test images, grey 8x8 in
    [0, 1], normalized with the train set's mean and std."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixel values 0..16
    y = torch.tensor(d.target, dtype=torch.long)
    tr, te = train_test_split(torch.arange(len(y)).numpy(), test_size=TEST_FRACTION,
                              stratify=y.numpy(), random_state=SPLIT_SEED)
    tr, te = torch.as_tensor(tr), torch.as_tensor(te)
    mean, std = float(x[tr].mean()), float(x[tr].std())
    return Dataset("digits", TensorSplit(x[tr], y[tr]), TensorSplit(x[te], y[te]), 10,
                   [str(i) for i in range(10)], mean=[mean], std=[std])
