"""The paper's learning-rate schedule: lr x decay every `decay_epochs` epochs (0.94 every 2),
optional linear warm-up, as a torch LambdaLR stepped once per optimizer step."""
from __future__ import annotations

import torch


class StaircaseDecay:
    """Multiplier of the base lr at optimizer step `step` (a picklable callable for LambdaLR).

    warm-up: linear from 1/warmup_steps to 1 over the first warmup_steps steps; decay: the
    epoch (step // steps_per_epoch) sets the staircase, decay ** (epoch // decay_epochs)."""

    def __init__(self, steps_per_epoch: int, decay: float = 0.94, decay_epochs: float = 2.0,
                 warmup_steps: int = 0):
        if steps_per_epoch < 1 or decay_epochs <= 0 or not 0 < decay <= 1 or warmup_steps < 0:
            raise ValueError(f"invalid schedule: steps_per_epoch={steps_per_epoch}, decay={decay}, "
                             f"decay_epochs={decay_epochs}, warmup_steps={warmup_steps}")
        self.steps_per_epoch, self.decay = steps_per_epoch, decay
        self.decay_epochs, self.warmup_steps = decay_epochs, warmup_steps

    def __call__(self, step: int) -> float:
        epoch = step // self.steps_per_epoch
        f = self.decay ** int(epoch // self.decay_epochs)
        if self.warmup_steps and step < self.warmup_steps:
            f *= (step + 1) / self.warmup_steps
        return f


def scaled_lr(lr: float, global_batch: int, ref_batch: int = 32) -> float:
    """The paper's lr is for batch 32: scale linearly with the global batch (ref_batch 0: off)."""
    return lr * global_batch / ref_batch if ref_batch else lr


def build_scheduler(optimizer, steps_per_epoch: int, decay: float = 0.94,
                    decay_epochs: float = 2.0, warmup_epochs: float = 0.0):
    """A LambdaLR. A group whose lr is a tensor keeps that tensor: LambdaLR fills it in place
    (torch >= 2.4), so an optimizer step captured in a CUDA graph reads each new value. Its base
    lr is given as a Python float: the scheduler then computes floats and fills with a scalar
    (no device arithmetic, no host read), and no torch version can alias the base lr to the
    tensor it fills (LRScheduler only sets initial_lr where a group has none)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group.setdefault("initial_lr", float(group["lr"]))  # once, at setup
    fn = StaircaseDecay(steps_per_epoch, decay, decay_epochs,
                        int(round(warmup_epochs * steps_per_epoch)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def current_lr(sched, group: int = 0) -> float:
    """The lr the scheduler last set for `group`, as the float it computed (a tensor lr holds it
    rounded to float32; reading that would be a host sync)."""
    return sched.base_lrs[group] * sched.lr_lambdas[group](sched.last_epoch)
