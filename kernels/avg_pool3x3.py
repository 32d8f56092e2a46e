"""3x3 / stride 1 / pad 1 average pool with count_include_pad=True (divisor always 9), NHWC.

Used by the Inception pool branch after the pool/conv reordering (inception_fast/ops/
conv1x1_multi.py): the pool runs on the few output channels of the branch_pool 1x1 conv, so
its input is a channel slice of the fused 1x1 GEMM output and its output a channel slice of the
block output (any strides for both).

Optional epilogues on the fp32 result (compile-time flags):
  HAS_BIAS / RELU  relu(pool + bias)  (eval: BN folded into the conv weight, bias added AFTER
                   the pool, because pooling a constant is not that constant at the border)
  STATS            per-channel partial sum and centered sum of squares over each group of
                   STAT_ROWS rows, the layout kernels/bn_train.bn_finalize merges.
The operator is self-adjoint (each output is a 1/9-weighted sum of its 3x3 neighbours, the same
neighbourhood relation both ways), so the backward is this forward applied to the gradient.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .conv_common import STAT_ROWS, store_group_stats
from .dtypes import check_kernel_dtype, interpreter_on
from .nhwc import nhwc_out, pixel_channel_tile, pixel_coords


@triton.jit
def _avg_pool3x3_kernel(x_ptr, y_ptr, bias_ptr, psum_ptr, pm2_ptr, M, C, H, W,
                        sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                        HAS_BIAS: tl.constexpr, RELU: tl.constexpr, STATS: tl.constexpr,
                        STAT_R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """One (BLOCK_M pixels x BLOCK_C channels) tile; 9 masked loads (zeros outside the image)."""
    offs_m, offs_c, m_ok, c_ok = pixel_channel_tile(M, C, BLOCK_M, BLOCK_C)
    n, h, w = pixel_coords(offs_m, H, W)
    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    for dh in tl.static_range(3):
        ih = h + (dh - 1)
        h_ok = m_ok & (ih >= 0) & (ih < H)
        for dw in tl.static_range(3):
            iw = w + (dw - 1)
            ok = h_ok & (iw >= 0) & (iw < W)
            ptrs = x_ptr + (n * sxn + ih * sxh + iw * sxw)[:, None] + (offs_c * sxc)[None, :]
            acc += tl.load(ptrs, mask=ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
    acc = acc * (1.0 / 9.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    if STATS:
        store_group_stats(acc, m_ok, offs_c, c_ok, tl.program_id(0), M, C, psum_ptr, pm2_ptr, STAT_R,
                          BLOCK_M, BLOCK_C)
    y_ptrs = y_ptr + (n * syn + h * syh + w * syw)[:, None] + (offs_c * syc)[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & c_ok[None, :])


def avg_pool3x3(x: torch.Tensor, *, out: torch.Tensor | None = None,
                bias: torch.Tensor | None = None, relu: bool = False, stats: bool = False):
    """y = [relu](avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True) [+ bias]).

    x: (N, C, H, W), any strides (e.g. a channel slice of a channels_last tensor), fp32/fp16/bf16.
    out: optional (N, C, H, W) view of x's dtype to write into, else a new channels_last tensor.
    bias: float32 [C] or None. stats: also return float32 [ceil(M / STAT_ROWS), C] partial sums
    and M2 of the fp32 result (M = N*H*W), for bn_finalize. Returns y or (y, psum, pm2).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError("avg_pool3x3: x must be a 4-D (N, C, H, W) tensor")
    check_kernel_dtype(x, "avg_pool3x3", gemm=False)
    n, c, h, w = x.shape
    out = nhwc_out(out, (n, c, h, w), x, "avg_pool3x3")
    if bias is not None and (bias.shape != (c,) or bias.dtype != torch.float32
                             or bias.device != x.device):
        raise ValueError(f"avg_pool3x3: bias must be a float32 [{c}] tensor on {x.device}")
    m = n * h * w
    groups = triton.cdiv(m, STAT_ROWS)
    if stats:
        psum = torch.empty((groups, c), device=x.device, dtype=torch.float32)
        pm2 = torch.empty((groups, c), device=x.device, dtype=torch.float32)
    else:
        psum = pm2 = out  # unused
    if m and c:
        block_c = min(triton.next_power_of_2(c), 64 if interpreter_on() else 32)
        block_m = max(STAT_ROWS, (8192 if interpreter_on() else 2048) // block_c)
        grid = (triton.cdiv(m, block_m), triton.cdiv(c, block_c))
        _avg_pool3x3_kernel[grid](x, out, bias if bias is not None else out, psum, pm2, m, c, h, w,
                                  *x.stride(), *out.stride(), HAS_BIAS=bias is not None, RELU=relu,
                                  STATS=stats, STAT_R=STAT_ROWS, BLOCK_M=block_m, BLOCK_C=block_c)
    return (out, psum, pm2) if stats else out
