"""Exponential moving average of the parameters (and BN buffers) for evaluation, as
TensorFlow's ExponentialMovingAverage(decay, num_updates) that the paper's training uses."""
from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel


class TFEma(AveragedModel):
    """An AveragedModel (its state_dict, .module and n_averaged) whose update is TF's:
    ema <- d * ema + (1 - d) * param with d = min(decay, (1 + n) / (10 + n)) after n updates
    (TF's num_updates warm-up, so short runs are not dominated by the random initialization);
    the first update copies, integer buffers are copied.

    AveragedModel.update_parameters branches on n_averaged on the host (two syncs per step);
    here d is computed on the device from n_averaged, so the update has no host sync and can be
    captured in a CUDA graph with the rest of the training step (train/graphs.py)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        super().__init__(model, use_buffers=True)
        self.decay = decay
        dev = next(iter(model.parameters())).device
        self.n_averaged = self.n_averaged.to(dev)

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        mine = [*self.module.parameters(), *self.module.buffers()]
        theirs = [t.detach() for t in (*model.parameters(), *model.buffers())]
        n = self.n_averaged.to(torch.float32)
        d = torch.minimum((1.0 + n) / (10.0 + n), torch.full_like(n, self.decay))
        w = torch.where(n == 0, torch.ones_like(n), 1.0 - d)  # weight of the new value
        floats = [(e, m) for e, m in zip(mine, theirs) if e.is_floating_point()]
        for e, m in zip(mine, theirs):
            if not e.is_floating_point():
                e.copy_(m)
        if floats:
            ema, src = map(list, zip(*floats))
            step = torch._foreach_sub(src, ema)  # ema += w * (param - ema)
            torch._foreach_mul_(step, w)
            torch._foreach_add_(ema, step)
        self.n_averaged += 1


def build_ema(model: torch.nn.Module, decay: float) -> TFEma:
    """The EMA copy of `model` (unwrapped: not DDP, not compiled) whose parameters and buffers
    track TF's EMA; call .update_parameters(model) after each optimizer step."""
    return TFEma(model, decay)
