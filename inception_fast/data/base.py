"""What every data set gives the training loop: a train and a test split, the class count, and
how a batch becomes model input (normalize, resize, channels, augment) on the compute device."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class TensorSplit:
    """An in-memory split at its native resolution: x (N, C, h, w) float or uint8, y (N,) int64.
    Batches are plain index gathers (no DataLoader, no worker processes)."""
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def targets(self) -> torch.Tensor:
        return self.y

    def batches(self, index_batches, workers: int = 0):
        for idx in index_batches:
            idx = torch.as_tensor(idx, dtype=torch.long)
            yield self.x[idx], idx

    def subset(self, idx: torch.Tensor) -> "TensorSplit":
        return TensorSplit(self.x[idx], self.y[idx])


@dataclass
class Dataset:
    """name, splits, classes, and the per-batch transform (see `prepare`)."""
    name: str
    train: object  # TensorSplit or FolderSplit: len(), .targets, .batches(index_batches, workers)
    test: object
    num_classes: int
    class_names: list[str]
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    resize: bool = True  # False when the split already yields image_size tensors (imagefolder)
    default_augment: str = "none"

    def prepare(self, x: torch.Tensor, image_size: int, augment: str = "none",
                device: torch.device | str = "cpu") -> torch.Tensor:
        """Raw batch -> float (B, 3, S, S) model input on `device`: scale uint8 to [0, 1],
        normalize, augment at native resolution (crop: random shift by up to 1/8 of the side,
        zero padded; flip: horizontal), upsample bilinearly to `image_size`, grey -> 3 channels.
        Randomness comes from the global torch generator (saved in checkpoints)."""
        x = x.to(device, non_blocking=True)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
        if augment in ("crop", "crop-flip"):
            x = random_shift(x, max(1, x.shape[-1] // 8))
        if augment in ("flip", "crop-flip"):
            flip = torch.rand(x.shape[0], device="cpu") < 0.5
            x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
        if self.resize and tuple(x.shape[-2:]) != (image_size, image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                              align_corners=False)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x.contiguous()


AUGMENTS = ("auto", "none", "crop", "flip", "crop-flip")


def random_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Per-sample random translation by up to `pad` pixels (pad with zeros, random crop back)."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    # Offsets drawn on CPU so the same seed gives the same crops on every device.
    oy = torch.randint(0, 2 * pad + 1, (b,)).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,)).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (b, h, 1)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (b, 1, w)
    out = xp.permute(0, 2, 3, 1)[torch.arange(b, device=x.device)[:, None, None], rows, cols]
    return out.permute(0, 3, 1, 2)


def stratified_subset(y: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of n samples spread evenly over the classes (deterministic for a seed)."""
    if n >= len(y):
        return torch.arange(len(y))
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    # Round-robin over the classes, each in permuted order, keeps every class represented.
    by_class = [perm[y[perm] == k].tolist() for k in torch.unique(y)]
    picked, i = [], 0
    while len(picked) < n:
        for c in by_class:
            if i < len(c) and len(picked) < n:
                picked.append(c[i])
        i += 1
    return torch.tensor(sorted(picked))
