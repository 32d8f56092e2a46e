"""What the elementwise NHWC kernels share (BN apply and backward, the pools, the routed
apply): the (pixels x channels) tile of a 2-D grid, and the element offset of a flat pixel in
a 4-D strided tensor. Flat pixel m = (n * H + h) * W + w; any strides (a channel slice of a
block output, channels_last or not); offsets in int64 (a 147x147x64 batch of 256 passes
2**31 elements)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


def nhwc_out(out: torch.Tensor | None, shape, like: torch.Tensor, what: str) -> torch.Tensor:
    """The destination of an elementwise NHWC kernel: `out` (any strides, e.g. a channel slice
    of a block output) checked to be a `shape` tensor of like's dtype and device, or a new
    channels_last one."""
    shape = tuple(shape)
    if out is None:
        return torch.empty(shape, device=like.device, dtype=like.dtype,
                           memory_format=torch.channels_last)
    if (not isinstance(out, torch.Tensor) or tuple(out.shape) != shape or out.dtype != like.dtype
            or out.device != like.device):
        got = (f"{out.dtype} {tuple(out.shape)} on {out.device}"
               if isinstance(out, torch.Tensor) else type(out).__name__)
        raise ValueError(f"{what}: out must be {like.dtype} {shape} on {like.device}, got {got}")
    return out


@triton.jit
def pixel_channel_tile(M, C, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's tile of the grid (pixel blocks, channel blocks):
    (pixel offsets, channel offsets, pixel mask, channel mask)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    return offs_m, offs_c, offs_m < M, offs_c < C


@triton.jit
def pixel_coords(m, H, W):
    """(n as int64, h, w) of flat pixels m."""
    hw = H * W
    return (m // hw).to(tl.int64), (m % hw) // W, m % W


@triton.jit
def row_offsets(m, H, W, s_n, s_h, s_w):
    """Element offset of flat pixel m in a tensor of strides (s_n, ., s_h, s_w)."""
    n, h, w = pixel_coords(m, H, W)
    return n * s_n + h * s_h + w * s_w
