"""3x3 / stride 2 / no padding max pool (the grid-reduction pool of Mixed_6a / Mixed_7a), NHWC,
writing into a channel slice of the block output, and its backward.

Forward keeps the winning tap (0..8, uint8) per output element; ties go to the first tap in
scan order and NaN wins, as torch's max_pool2d. Backward is a gather (no atomics): an input
pixel (h, w) lies in at most 2 x 2 windows (oh in {h//2 - 1, h//2}, same for w); it sums the
gradients of those whose argmax is its own tap.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dtypes import check_kernel_dtype, interpreter_on


def _blocks(c):
    block_c = min(triton.next_power_of_2(c), 64)
    block_m = (8192 if interpreter_on() else 2048) // block_c
    return block_m, block_c


@triton.jit
def _max_pool3x3s2_fwd_kernel(x_ptr, y_ptr, idx_ptr, M, C, H, W, OH, OW,
                              sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                              BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """y[n, c, oh, ow] = max of x[n, c, 2oh:2oh+3, 2ow:2ow+3]; idx (dense [M, C]) = its tap."""
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_ok = offs_m < M
    c_ok = offs_c < C
    mask = m_ok[:, None] & c_ok[None, :]
    ohw = OH * OW
    n = (offs_m // ohw).to(tl.int64)
    oh = (offs_m % ohw) // OW
    ow = offs_m % OW
    base = (n * sxn + (2 * oh) * sxh + (2 * ow) * sxw)[:, None] + (offs_c * sxc)[None, :]
    best = tl.load(x_ptr + base, mask=mask, other=0.0).to(tl.float32)
    arg = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.int32)
    for t in tl.static_range(1, 9):
        v = tl.load(x_ptr + base + (t // 3) * sxh + (t % 3) * sxw, mask=mask,
                    other=0.0).to(tl.float32)
        take = (v > best) | (v != v)
        best = tl.where(take, v, best)
        arg = tl.where(take, t, arg)
    y_ptrs = y_ptr + (n * syn + oh * syh + ow * syw)[:, None] + (offs_c * syc)[None, :]
    tl.store(y_ptrs, best.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(idx_ptr + offs_m[:, None].to(tl.int64) * C + offs_c[None, :], arg.to(tl.uint8),
             mask=mask)


@triton.jit
def _max_pool3x3s2_bwd_kernel(g_ptr, idx_ptr, dx_ptr, M, C, H, W, OH, OW,
                              sgn, sgc, sgh, sgw, sdn, sdc, sdh, sdw,
                              BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """dx[n, c, h, w] = sum of g over the (<= 4) windows whose argmax is (h, w). M = N*H*W."""
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_ok = offs_m < M
    c_ok = offs_c < C
    hw = H * W
    n = offs_m // hw
    h = (offs_m % hw) // W
    w = offs_m % W
    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    for i in tl.static_range(2):
        oh = h // 2 - i
        r = h - 2 * oh
        h_ok = m_ok & (oh >= 0) & (oh < OH) & (r <= 2)
        for j in tl.static_range(2):
            ow = w // 2 - j
            s = w - 2 * ow
            ok = (h_ok & (ow >= 0) & (ow < OW) & (s <= 2))[:, None] & c_ok[None, :]
            orow = (n * OH + oh) * OW + ow
            arg = tl.load(idx_ptr + orow[:, None].to(tl.int64) * C + offs_c[None, :], mask=ok,
                          other=255).to(tl.int32)
            g = tl.load(g_ptr + (n.to(tl.int64) * sgn + oh * sgh + ow * sgw)[:, None]
                        + (offs_c * sgc)[None, :], mask=ok, other=0.0).to(tl.float32)
            acc += tl.where(arg == (r * 3 + s)[:, None], g, 0.0)
    d_ptrs = dx_ptr + (n.to(tl.int64) * sdn + h * sdh + w * sdw)[:, None] + (offs_c * sdc)[None, :]
    tl.store(d_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=m_ok[:, None] & c_ok[None, :])


def _out_hw(h, w):
    if h < 3 or w < 3:
        raise ValueError(f"max_pool3x3s2: input must be at least 3x3, got {h}x{w}")
    return (h - 3) // 2 + 1, (w - 3) // 2 + 1


def max_pool3x3s2_fwd(x: torch.Tensor, out: torch.Tensor | None = None):
    """max_pool2d(x, 3, stride=2) into `out` (an (N, C, OH, OW) view of x's dtype, any strides,
    e.g. a channel slice of the block output; else a new channels_last tensor).
    Returns (out, argmax) with argmax a dense uint8 channels_last (N, C, OH, OW) tensor."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError("max_pool3x3s2: x must be a 4-D (N, C, H, W) tensor")
    check_kernel_dtype(x, "max_pool3x3s2", gemm=False)
    n, c, h, w = x.shape
    oh, ow = _out_hw(h, w)
    if out is None:
        out = torch.empty((n, c, oh, ow), device=x.device, dtype=x.dtype,
                          memory_format=torch.channels_last)
    elif tuple(out.shape) != (n, c, oh, ow) or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"max_pool3x3s2: out must be {x.dtype} {(n, c, oh, ow)} on {x.device}, "
                         f"got {out.dtype} {tuple(out.shape)} on {out.device}")
    idx = torch.empty((n, c, oh, ow), device=x.device, dtype=torch.uint8,
                      memory_format=torch.channels_last)
    m = n * oh * ow
    if m and c:
        block_m, block_c = _blocks(c)
        grid = (triton.cdiv(m, block_m), triton.cdiv(c, block_c))
        _max_pool3x3s2_fwd_kernel[grid](x, out, idx, m, c, h, w, oh, ow, *x.stride(),
                                        *out.stride(), BLOCK_M=block_m, BLOCK_C=block_c)
    return out, idx


def max_pool3x3s2_bwd(grad: torch.Tensor, argmax: torch.Tensor, input_hw) -> torch.Tensor:
    """Gradient w.r.t. the pool input: grad (N, C, OH, OW), any strides (a channel slice of the
    block output gradient); argmax from max_pool3x3s2_fwd. Returns channels_last (N, C, H, W)."""
    h, w = input_hw
    n, c, oh, ow = grad.shape
    if _out_hw(h, w) != (oh, ow) or tuple(argmax.shape) != tuple(grad.shape):
        raise ValueError(f"max_pool3x3s2_bwd: grad {tuple(grad.shape)} / argmax "
                         f"{tuple(argmax.shape)} do not match an input of {h}x{w}")
    if not argmax.is_contiguous(memory_format=torch.channels_last) or argmax.dtype != torch.uint8:
        raise ValueError("max_pool3x3s2_bwd: argmax must be the dense uint8 channels_last tensor "
                         "from max_pool3x3s2_fwd")
    dx = torch.empty((n, c, h, w), device=grad.device, dtype=grad.dtype,
                     memory_format=torch.channels_last)
    m = n * h * w
    if m and c:
        block_m, block_c = _blocks(c)
        grid = (triton.cdiv(m, block_m), triton.cdiv(c, block_c))
        _max_pool3x3s2_bwd_kernel[grid](grad, argmax, dx, m, c, h, w, oh, ow, *grad.stride(),
                                        *dx.stride(), BLOCK_M=block_m, BLOCK_C=block_c)
    return dx
