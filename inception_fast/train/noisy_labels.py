"""Synthetic label noise as Tanaka et al.'s code makes it (symmetric and asymmetric)."""
from __future__ import annotations

import numpy as np
import torch

# Asymmetric noise: within each class, a fraction r of the samples gets the mapped class.
CLASS_MAPS = {
    # MNIST-style digits (Patrini et al.'s map): 2->7, 3->8, 5<->6, 7->1
    "digits": {2: 7, 3: 8, 5: 6, 6: 5, 7: 1},
    # CIFAR-10: truck->automobile, bird->airplane, cat<->dog, deer->horse
    "cifar10": {9: 1, 2: 0, 3: 5, 5: 3, 4: 7},
}
NOISE_KINDS = ("none", "symmetric", "asymmetric")


def check_noise_rate(rate: float) -> float:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"--noise-rate must be in [0, 1), got {rate}")
    return float(rate)


def make_noisy_labels(clean: torch.Tensor, num_classes: int, kind: str, rate: float, seed: int,
                      dataset: str = "") -> tuple[torch.Tensor, float]:
    """(noisy labels, actual flip rate = fraction of labels that differ from the clean ones).

    symmetric: the first round(r*N) samples of a random permutation get a uniformly random class,
      which may be the true one (so the flip rate is about r*(K-1)/K), as in the paper's code.
    asymmetric: in each class, the first ceil(r*n_c) of its shuffled samples get the class map's
      target (classes absent from the map keep their labels)."""
    check_noise_rate(rate)
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise {kind!r}; choose one of {', '.join(NOISE_KINDS)}")
    y = clean.cpu().numpy().astype(np.int64)
    noisy = y.copy()
    rng = np.random.RandomState(seed)
    if kind == "symmetric":
        perm = rng.permutation(len(y))
        # `i < r * N` as the authors' loop does it.
        chosen = perm[np.arange(len(y)) < rate * len(y)]
        noisy[chosen] = rng.randint(num_classes, size=len(chosen))
    elif kind == "asymmetric":
        if dataset not in CLASS_MAPS:
            raise ValueError(f"asymmetric noise needs a class map; there is one for "
                             f"{', '.join(CLASS_MAPS)}, not for {dataset!r}")
        for src, dst in CLASS_MAPS[dataset].items():
            idx = np.where(y == src)[0]
            rng.shuffle(idx)
            chosen = idx[np.arange(len(idx)) < rate * len(idx)]
            noisy[chosen] = dst
    flip = float((noisy != y).mean()) if len(y) else 0.0
    return torch.from_numpy(noisy), flip
