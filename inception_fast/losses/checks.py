"""Input checks of the losses: clear errors instead of a crash (or silent garbage) in a kernel."""
from __future__ import annotations

import torch

LOGIT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def values_readable(t: torch.Tensor) -> bool:
    """Whether a check may read t's values: not for meta tensors (the static kernel report),
    not while torch.compile traces (fake tensors; reading one is a data-dependent graph break)
    and not while a CUDA graph is captured (a read is a host sync, illegal there). Those calls
    get the type, dtype, shape and device checks only."""
    if t.is_meta or torch.compiler.is_compiling():
        return False
    return not (t.is_cuda and torch.cuda.is_current_stream_capturing())


def check_logits(logits, what: str) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{what}: logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"{what}: logits must be 2-D (B, K), got shape {tuple(logits.shape)}")
    if logits.dtype not in LOGIT_DTYPES:
        raise TypeError(f"{what}: logits dtype must be float32/float16/bfloat16/float64, "
                        f"got {logits.dtype}")
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"{what}: logits must have at least one row and one class, "
                         f"got shape {tuple(logits.shape)}")


def check_target(target, logits, what: str, values: bool = True) -> None:
    """values=False: type, dtype, shape and device only (labels the caller validated once:
    reading the class indices is a host sync per call on a GPU)."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{what}: target must be a torch.Tensor, got {type(target).__name__}")
    if target.dtype != torch.int64:
        raise TypeError(f"{what}: target must hold int64 class indices, got {target.dtype}")
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"{what}: target must be 1-D with one index per row of logits "
                         f"({logits.shape[0]}), got shape {tuple(target.shape)}")
    if target.device != logits.device:
        raise ValueError(f"{what}: target is on {target.device} but logits are on {logits.device}")
    if not values or not values_readable(target):
        return
    k = logits.shape[1]
    bad = (target < 0) | (target >= k)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{what}: target[{i}] = {int(target[i])} is not a class index in [0, {k})")


def check_eps(eps, what: str) -> None:
    if not (0.0 <= float(eps) <= 1.0):
        raise ValueError(f"{what}: eps (label smoothing) must be in [0, 1], got {eps}")


def check_soft_targets(soft, logits, what: str) -> None:
    if not isinstance(soft, torch.Tensor):
        raise TypeError(f"{what}: soft_targets must be a torch.Tensor, got {type(soft).__name__}")
    if not soft.is_floating_point():
        raise TypeError(f"{what}: soft_targets must be floating point (probabilities), "
                        f"got {soft.dtype}")
    if soft.shape != logits.shape:
        raise ValueError(f"{what}: soft_targets shape {tuple(soft.shape)} must equal the logits "
                         f"shape {tuple(logits.shape)}")
    if soft.device != logits.device:
        raise ValueError(f"{what}: soft_targets are on {soft.device} but logits are on "
                         f"{logits.device}")


def check_prior(prior, k: int, device, what: str, values: bool = True) -> None:
    if prior is None:
        return
    if not isinstance(prior, torch.Tensor):
        raise TypeError(f"{what}: prior must be a torch.Tensor or None, got {type(prior).__name__}")
    if not prior.is_floating_point():
        raise TypeError(f"{what}: prior must be floating point, got {prior.dtype}")
    if prior.shape != (k,):
        raise ValueError(f"{what}: prior must have shape ({k},) (one probability per class), "
                         f"got {tuple(prior.shape)}")
    if prior.device != device:
        raise ValueError(f"{what}: prior is on {prior.device} but logits are on {device}")
    if values and values_readable(prior) and not bool(((prior >= 0) & torch.isfinite(prior)).all()):
        raise ValueError(f"{what}: prior must be finite and non-negative")
