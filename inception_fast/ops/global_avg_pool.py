"""Global average pool, (N, C, H, W) -> (N, C, 1, 1), whose gradient is a broadcast view.

    global_avg_pool(x) = x.mean((2, 3), keepdim=True)        (the reference: the same maths)

Why an op of its own: torch's mean backward materializes the (N, C, H, W) gradient in
NCHW order, so the BN + ReLU backward of Mixed_7c (kernels/bn_relu_bwd.py), which walks
channels innermost, read it with a stride of H*W elements per channel: scalar 2-byte loads,
one sector per element. Here backward returns (g / (H*W)) expanded over H and W: strides
(C, 1, 0, 0), channels contiguous (16-byte loads), and nothing of the full size is written.
"""
from __future__ import annotations

import torch


def global_avg_pool_reference(x: torch.Tensor) -> torch.Tensor:
    return x.mean((2, 3), keepdim=True)


class _GlobalAvgPoolFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.mean((2, 3), keepdim=True)

    @staticmethod
    def backward(ctx, g):
        n, c, h, w = ctx.shape
        # Channels contiguous in the broadcast, whatever layout g arrived in (N x C values).
        g = g.reshape(n, c).contiguous() / (h * w)
        return g[:, :, None, None].expand(n, c, h, w)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """x.mean((2, 3), keepdim=True); its gradient is a stride-0 view over H and W."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"global_avg_pool: expected a 4-D (N, C, H, W) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if torch.is_grad_enabled() and x.requires_grad:
        return _GlobalAvgPoolFn.apply(x)
    return global_avg_pool_reference(x)
