"""Label state for training on (noisy) labels, and joint optimization's label update.

Tanaka et al.'s code: every epoch, each sample's softmax output (from its training forward
pass) goes into a ring buffer of the last 10 epochs; from epoch `begin` on, after every epoch the
soft label becomes the buffer's mean (and the hard label its argmax)."""
from __future__ import annotations

import numpy as np
import torch

RING = 10


class LabelState:
    """clean (N,), noisy (N,) int64; soft (N, K) float32: the labels trained on (one-hot noisy
    at first); ring (RING, N, K) the recorded softmax outputs; count: epochs recorded.
    soft and ring exist only with track=True (joint optimization): (N, K) floats are too much
    for a plain run on a large data set."""

    def __init__(self, clean: torch.Tensor, noisy: torch.Tensor, num_classes: int,
                 begin: int = 0, ring: int = RING, track: bool = False):
        self.clean, self.noisy = clean.long().cpu(), noisy.long().cpu()
        self.num_classes, self.begin, self.ring_size = num_classes, begin, ring
        self.soft = torch.nn.functional.one_hot(self.noisy, num_classes).float() if track \
            else None
        self.ring = torch.zeros(ring, len(noisy), num_classes) if track else None
        self.count = 0

    @property
    def hard(self) -> torch.Tensor:
        return self.noisy if self.soft is None else self.soft.argmax(1)

    def accuracy(self) -> float:
        """Accuracy of the current (hard) labels against the clean ones: label recovery."""
        return float((self.hard == self.clean).float().mean())

    def noisy_accuracy(self) -> float:
        return float((self.noisy == self.clean).float().mean())

    def update(self, probs: torch.Tensor) -> bool:
        """Record one epoch's softmax outputs (N, K); returns whether the labels changed.
        After epoch count >= begin (1-based, as the authors' `count >= begin`), soft labels =
        mean over the recorded epochs in the ring (at most the last RING; the authors average
        all RING slots, zeros included, which only differs when begin < RING)."""
        if self.ring is None:
            raise RuntimeError("LabelState was built with track=False")
        if probs.shape != self.soft.shape:
            raise ValueError(f"probs of shape {tuple(probs.shape)}, expected "
                             f"{tuple(self.soft.shape)}")
        self.ring[self.count % self.ring_size] = probs.float().cpu()
        self.count += 1
        if self.count < self.begin:
            return False
        filled = min(self.count, self.ring_size)
        self.soft = self.ring[:filled].mean(0) if filled < self.ring_size else self.ring.mean(0)
        return True

    def state_dict(self) -> dict:
        return {"clean": self.clean, "noisy": self.noisy, "soft": self.soft, "ring": self.ring,
                "count": self.count, "begin": self.begin, "ring_size": self.ring_size}

    def load_state_dict(self, s: dict) -> None:
        self.clean, self.noisy, self.soft = s["clean"], s["noisy"], s["soft"]
        self.ring, self.count = s["ring"], s["count"]
        self.begin, self.ring_size = s["begin"], s["ring_size"]

    def save(self, out_dir: str) -> None:
        """labels.npy (current hard labels), soft_labels.npy (joint optimization only),
        noisy_labels.npy (what training started from)."""
        np.save(f"{out_dir}/labels.npy", self.hard.numpy())
        if self.soft is not None:
            np.save(f"{out_dir}/soft_labels.npy", self.soft.numpy())
        np.save(f"{out_dir}/noisy_labels.npy", self.noisy.numpy())


class EpochOutputs:
    """Collects one rank's (sample index, softmax) pairs in the order of its sample list, then
    assembles the whole epoch's (N, K) outputs across ranks (see `assemble`)."""

    def __init__(self):
        self.idx, self.probs = [], []

    def add(self, idx: torch.Tensor, probs: torch.Tensor) -> None:
        self.idx.append(idx.cpu())
        self.probs.append(probs.detach().float().cpu())

    def assemble(self, n: int, num_classes: int, gather=None) -> torch.Tensor:
        """(n, K) outputs. `gather(tensor) -> list over ranks` (None: one process). Rank r's
        j-th sample sits at position r + world*j of the padded global order (the sampler
        interleaves ranks), so the rank lists are re-interleaved, and where padding repeated a
        sample the first occurrence wins: the same result for any number of ranks."""
        idx = torch.cat(self.idx) if self.idx else torch.zeros(0, dtype=torch.long)
        probs = torch.cat(self.probs) if self.probs else torch.zeros(0, num_classes)
        if gather is not None:
            idxs, ps = gather(idx), gather(probs)
            idx = torch.stack(idxs, 1).reshape(-1)  # (L, world) -> interleaved
            probs = torch.stack(ps, 1).reshape(-1, num_classes)
        out = torch.zeros(n, num_classes)
        seen = torch.zeros(n, dtype=torch.bool)
        uniq, first = np.unique(idx.numpy(), return_index=True)
        out[torch.from_numpy(uniq)] = probs[torch.from_numpy(first)]
        seen[torch.from_numpy(uniq)] = True
        if not bool(seen.all()):
            raise RuntimeError(f"{int((~seen).sum())} training samples got no output this epoch")
        return out
