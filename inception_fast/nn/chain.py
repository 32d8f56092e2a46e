"""A chain of conv units in which each unit's BN + ReLU is applied by the next unit's conv as
it loads its input: the stems (Conv2d_1a -> 2a -> 2b -> maxpool1; 3b -> 4a -> maxpool2, and the
paper model's 3b -> 4a -> 4b). The fused blocks link their branch units the same way
(nn/blocks.py, _chain / _link).

On the Triton backend a unit whose successor is also on Triton runs with `defer`: it writes its
pre-BN output and the BN statistics, not the activation, and returns a DeferredActivation
(ops/deferred.py); the successor applies BN + ReLU to its operand tiles as it loads them
(ops/conv_bn_relu_triton.py). Per link the activation is neither written nor read back (2x its
bytes in forward; at 299, batch 256, Conv2d_1a's is 364 MB) nor kept for backward. Everything
else (torch or CUDA backends, "auto", a unit that hooks could see, eval with no grad, where BN
is folded into the conv) takes the plain path: the same results either way."""
from __future__ import annotations

from torch import nn

from .conv_bn_relu import ConvBNReLU
from .pool import has_hooks, unit_then_pool


def _links(first: ConvBNReLU, second: ConvBNReLU, x) -> bool:
    """Whether `first` may hand `second` a deferred activation: both explicitly on Triton
    ("auto" chooses per unit by measurement), neither seen by hooks."""
    return (first.backend == "triton" and second.backend == "triton"
            and first.backend_for(x) == "triton"
            and not has_hooks(first) and not has_hooks(second))


def conv_chain(x, *units: ConvBNReLU, pool: nn.Module | None = None):
    """pool(units[-1](...units[0](x))): the units in order, then `pool` (a stem max-pool or
    Identity) when given, with every link between two Triton units deferred (module doc)."""
    for unit, nxt in zip(units, units[1:]):
        x = unit(x, defer=_links(unit, nxt, x))
    if pool is not None:
        return unit_then_pool(pool, units[-1], x)
    return units[-1](x)
