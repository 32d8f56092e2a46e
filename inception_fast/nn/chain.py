"""A chain of conv units in which each unit's BN + ReLU is applied by the next unit's conv as
it loads its input (the stem: Conv2d_1a -> 2a -> 2b -> maxpool1 and 3b -> 4a -> maxpool2).

On the Triton backend a unit whose successor is also on Triton runs with `defer`: it writes
its pre-BN output y and the BN statistics, not relu(bn(y)); the successor reads y with the
coefficients (`in_bn`) and applies BN + ReLU to its operand tiles (ops/conv_bn_relu_triton.py).
Per link the activation is neither written nor read back (2x its bytes in forward; at 299,
batch 256, Conv2d_1a's is 364 MB) nor kept for backward. Everything else (torch or CUDA
backends, "auto", a unit with forward hooks that want to see its output or input, eval with no
grad, where BN is folded into the conv) takes the plain path: the same results either way."""
from __future__ import annotations

import torch
from torch import nn

from .conv_bn_relu import ConvBNReLU
from .pool import has_hooks, unit_then_pool


def _links(first: ConvBNReLU, second: ConvBNReLU, x: torch.Tensor) -> bool:
    """Whether `first` may hand `second` a deferred activation: both explicitly on Triton
    (the one backend whose backward takes a deferred input's gradient as the activation's;
    "auto" chooses per unit by measurement), neither hooked."""
    return (first.backend == "triton" and second.backend == "triton"
            and first._backend(x) == "triton"
            and not has_hooks(first) and not has_hooks(second))


def conv_chain(x: torch.Tensor, *units: ConvBNReLU, pool: nn.Module | None = None):
    """pool(units[-1](...units[0](x))): the units in order, then `pool` (a stem max-pool or
    Identity) when given, with every link between two Triton units deferred (module doc)."""
    in_bn = None
    for unit, nxt in zip(units, units[1:]):
        if _links(unit, nxt, x):
            x, *vectors = unit(x, in_bn=in_bn, defer=True)
            in_bn = None if vectors[0] is None else tuple(vectors)
        else:
            x, in_bn = unit(x, in_bn=in_bn), None
    if pool is not None:
        return unit_then_pool(pool, units[-1], x, in_bn)
    return units[-1](x, in_bn=in_bn)
