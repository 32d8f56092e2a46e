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
from ..ops.deferred import tensor_of
from ..ops.max_pool_slice import max_pool3x3s2_into


class _PoolModule(nn.Module):
    """A parameter-free module with a backend (Inception3.set_backend switches it)."""

    def __init__(self, backend: str = "auto"):
        super().__init__()
        self.backend = backends.check(backend)

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"

    def _resolve(self, x) -> str:
        """This call's backend (x a tensor or a DeferredActivation); "torch" for anything else
        (torch's own op says what is wrong)."""
        x = tensor_of(x)
        return backends.resolve(self.backend, x) if isinstance(x, torch.Tensor) else "torch"


class MaxPool3x3s2(_PoolModule):
    """max_pool2d(x, 3, stride=2). On the Triton backend the NHWC kernel of the grid
    reductions (kernels/max_pool3x3s2.py): it keeps the winning tap as uint8 (torch keeps an
    int64 index: 8x the bytes, written forward and read backward), and its backward is a
    gather with no zero-fill. "auto" and "torch": torch's max_pool2d (cuDNN's choice)."""

    def extra_repr(self) -> str:
        return f"kernel_size=3, stride=2, {super().extra_repr()}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self._resolve(x)
        if b == "torch" or x.dim() != 4:
            return F.max_pool2d(x, kernel_size=3, stride=2)
        n, c, h, w = x.shape
        if h < 3 or w < 3:
            return F.max_pool2d(x, kernel_size=3, stride=2)  # torch's own error message
        out = torch.empty((n, c, *pool3x3s2_out_hw(h, w)), device=x.device, dtype=x.dtype,
                          memory_format=torch.channels_last)
        return max_pool3x3s2_into(x, out, 0, backend=b)

    def after(self, unit: nn.Module, x) -> torch.Tensor:
        """self(unit(x)), with the unit's BN + ReLU inside the pool when both run on Triton
        (ops/conv_bn_relu.py, pool_after): the unit's full-size output and its gradient are
        never written. A pool with hooks of its own (they would want that output) takes the
        unfused path, so that they run and see it. x: a tensor or a DeferredActivation."""
        b = self._resolve(x)
        if b == "triton" and unit.backend == "triton" and not has_hooks(self):
            return unit(x, pool_after=True)
        return self(unit(x))


def has_hooks(module: nn.Module) -> bool:
    """Whether `module` has hooks of its own (forward or backward) that expect its plain input,
    output or gradients: a fusion that would hide or change any of them takes the plain path
    instead. Global module hooks (observers of every call, such as the static report's layer
    labels) do not count: they see the calls that run, and fusing for them would make the
    observed model a different one."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def unit_then_pool(pool: nn.Module, unit: nn.Module, x) -> torch.Tensor:
    """pool(unit(x)) for a stem max-pool that a section-9 variant may replace by Identity."""
    if isinstance(pool, MaxPool3x3s2):
        return pool.after(unit, x)
    return pool(unit(x))


class GlobalAvgPool(_PoolModule):
    """AdaptiveAvgPool2d((1, 1)). On the fused backends its gradient is a broadcast view with
    channels contiguous (ops/global_avg_pool.py: what the last block's fused BN backward reads
    fastest); "torch" and "auto": torch's own (the eager reference stays torchvision's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._resolve(x) == "torch":
            return F.adaptive_avg_pool2d(x, (1, 1))
        return global_avg_pool(x)
