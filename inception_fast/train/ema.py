"""Exponential moving average of the parameters (and BN buffers) for evaluation, as
TensorFlow's ExponentialMovingAverage(decay, num_updates) that the paper's training uses."""
from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel


def tf_ema_multi_avg_fn(decay: float):
    """multi_avg_fn for AveragedModel: ema <- d * ema + (1 - d) * param with
    d = min(decay, (1 + n) / (10 + n)) after n updates (TF's num_updates warm-up, so short runs
    are not dominated by the random initialization). Integer buffers are copied."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")

    @torch.no_grad()
    def fn(ema_list, model_list, num_averaged):
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        if torch.is_floating_point(ema_list[0]):
            torch._foreach_lerp_(ema_list, model_list, 1.0 - d)
        else:
            for e, m in zip(ema_list, model_list):
                e.copy_(m)

    return fn


def build_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An AveragedModel copy of `model` (unwrapped: not DDP, not compiled) whose parameters and
    buffers track the EMA; call .update_parameters(model) after each optimizer step."""
    return AveragedModel(model, multi_avg_fn=tf_ema_multi_avg_fn(decay), use_buffers=True)
