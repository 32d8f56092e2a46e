"""An image cast to the kernels' dtype and zero-padded to more channels, channels_last, in one
pass: the input of a conv whose pixels are too narrow for 16-byte loads (the RGB image: 3 bf16
channels are 6 bytes; padded to 8 they are 16, ops/conv_bn_relu_triton.py).

Per pixel it reads C input elements (any layout and float dtype: the data loader's fp32 NCHW
batch) and writes CP output elements (16 bytes for CP = 8 in bf16); torch's way, a cast then a
fill and a copy into a channel slice, makes three passes with partial-sector writes.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dtypes import check_runnable, interpreter_on
from .nhwc import pixel_coords


@triton.jit
def _cast_pad_kernel(x_ptr, out_ptr, M, C, H, W, sxn, sxc, sxh, sxw,
                     CP: tl.constexpr, BLOCK_M: tl.constexpr):
    """out[m, c] = x[n, c, h, w] (cast) for c < C, 0 for C <= c < CP; out dense [M, CP] (the
    channels_last (N, CP, H, W) tensor), m = (n * H + h) * W + w."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.arange(0, CP)
    m_ok = offs_m < M
    n, h, w = pixel_coords(offs_m, H, W)
    src = x_ptr + (n * sxn + h * sxh + w * sxw)[:, None] + (offs_c * sxc)[None, :]
    v = tl.load(src, mask=m_ok[:, None] & (offs_c < C)[None, :], other=0.0)
    dst = out_ptr + offs_m[:, None].to(tl.int64) * CP + offs_c[None, :]
    tl.store(dst, v.to(out_ptr.dtype.element_ty), mask=m_ok[:, None])


def cast_pad_channels(x: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """x (N, C, H, W), any strides and float dtype -> a new channels_last (N, channels, H, W)
    tensor of `dtype`: x's channels cast, then zeros. channels: a power of two >= C."""
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"cast_pad_channels: x must be a floating-point (N, C, H, W) tensor, "
                         f"got {x.dtype} of shape {tuple(x.shape)}")
    check_runnable(x, "cast_pad_channels", "x")
    n, c, h, w = x.shape
    if channels < c or channels & (channels - 1):
        raise ValueError(f"cast_pad_channels: channels must be a power of two >= {c}, "
                         f"got {channels}")
    out = torch.empty((n, channels, h, w), device=x.device, dtype=dtype,
                      memory_format=torch.channels_last)
    m = n * h * w
    if m == 0:
        return out
    block_m = 4096 if interpreter_on() else 256
    _cast_pad_kernel[(triton.cdiv(m, block_m),)](x, out, m, c, h, w, *x.stride(), CP=channels,
                                                 BLOCK_M=block_m)
    return out
