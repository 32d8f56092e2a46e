"""A conv unit's activation relu(a*y + c), not yet computed: what conv_bn_relu(defer=True)
returns on the Triton backend when backward is needed (nn/chain.py and nn/blocks.py chain
units this way).

The unit has written its pre-BN output y and its BN statistics, and handed back y with the
per-channel coefficients (a, c) instead of the activation. Given to another conv_bn_relu as its
input, the Triton backend applies relu(a*y + c) to the conv's operand tiles as it loads them
(the activation is never written, read back or kept); any other backend, or any other use,
calls materialize(). Gradients follow the producer's convention: what flows back into y is the
gradient of the activation (the producer's backward is the BN + ReLU backward from y), so y
itself is not a value to compute with: it is a field, not the object, on purpose."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


class _Materialize(torch.autograd.Function):
    """relu(a*y + c) per channel, rounded to y's dtype as the BN-apply kernel stores it; its
    gradient goes to y unchanged (the producer takes the activation's gradient)."""

    @staticmethod
    def forward(ctx, y, a, c):
        z = y.float() * a.view(1, -1, 1, 1) + c.view(1, -1, 1, 1)
        return torch.relu(z).to(y.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


@dataclass(frozen=True)
class DeferredActivation:
    """relu(a * pre_bn + c), per channel (a, c: float32 [C]); see the module doc."""
    pre_bn: Tensor
    a: Tensor
    c: Tensor

    def materialize(self) -> Tensor:
        """The activation as a tensor (one elementwise pass), differentiable."""
        return _Materialize.apply(self.pre_bn, self.a, self.c)


def tensor_of(x):
    """The tensor that carries x's shape, dtype and device (a deferred activation's pre-BN
    output), for checks and backend choice; x itself otherwise."""
    return x.pre_bn if isinstance(x, DeferredActivation) else x
