"""torch.autocast for the fused ops: what autocast does to a convolution's input, done at the
op's entry. The reference (torch) path needs nothing: F.conv2d is on autocast's lower-precision
list. The fused ops take fp32 master weights with a half-precision input (they pack the weight
in the input's dtype, and return weight gradients in the weight's dtype), so only the
activation is cast; BN parameters and statistics stay fp32, as in torch's batch_norm."""
from __future__ import annotations

import torch


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would cast x to for a convolution, or None (autocast off for x's
    device type, or x not eligible: autocast leaves float64 and non-float tensors alone)."""
    dev = x.device.type
    try:
        if not torch.is_autocast_enabled(dev):
            return None
    except RuntimeError:  # a device type autocast does not know (e.g. "meta" for shape passes)
        return None
    if not x.is_floating_point() or x.dtype == torch.float64:
        return None
    return torch.get_autocast_dtype(dev)


def autocast_input(x: torch.Tensor) -> torch.Tensor:
    """x in the autocast dtype (differentiable cast), or x itself."""
    dt = autocast_dtype(x)
    return x if dt is None or x.dtype == dt else x.to(dt)
