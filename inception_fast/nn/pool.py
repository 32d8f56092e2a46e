"""The stem's and the head's pools as modules the fused backends reach (torchvision's names:
maxpool1 / maxpool2 are nn.MaxPool2d(3, stride=2), avgpool nn.AdaptiveAvgPool2d((1, 1)); no
parameters, so the state_dict is unchanged)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import backends
from ..kernels.sizes import pool3x3s2_out_hw
from ..ops.global_avg_pool import global_avg_pool
from ..ops.max_pool_slice import max_pool3x3s2_into


class MaxPool3x3s2(nn.Module):
    """max_pool2d(x, 3, stride=2). On the Triton backend the NHWC kernel of the grid
    reductions (kernels/max_pool3x3s2.py): it keeps the winning tap as uint8 (torch keeps an
    int64 index: 8x the bytes, written forward and read backward), and its backward is a
    gather with no zero-fill. "auto" and "torch": torch's max_pool2d (cuDNN's choice)."""

    def __init__(self, backend: str = "auto"):
        super().__init__()
        self.backend = backends.check(backend)

    def extra_repr(self) -> str:
        return f"kernel_size=3, stride=2, backend={self.backend!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = backends.resolve(self.backend, x) if isinstance(x, torch.Tensor) else "torch"
        if b == "torch" or x.dim() != 4:
            return F.max_pool2d(x, kernel_size=3, stride=2)
        n, c, h, w = x.shape
        if h < 3 or w < 3:
            return F.max_pool2d(x, kernel_size=3, stride=2)  # torch's own error message
        out = torch.empty((n, c, *pool3x3s2_out_hw(h, w)), device=x.device, dtype=x.dtype,
                          memory_format=torch.channels_last)
        return max_pool3x3s2_into(x, out, 0, backend=b)


class GlobalAvgPool(nn.Module):
    """AdaptiveAvgPool2d((1, 1)) whose gradient is a broadcast view with channels contiguous
    (ops/global_avg_pool.py: what the last block's fused BN backward reads fastest)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_avg_pool(x)
