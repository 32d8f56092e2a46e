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

from .dtypes import check_bn_vectors, check_kernel_dtype, interpreter_on
from .nhwc import nhwc_out, pixel_channel_tile, pixel_coords
from .sizes import pool3x3s2_out_hw


def _blocks(c):
    block_c = min(triton.next_power_of_2(c), 64)
    block_m = (8192 if interpreter_on() else 2048) // block_c
    return block_m, block_c


@triton.jit
def _tap(ptrs, mask, a, c, y_ptr, BN_RELU: tl.constexpr):
    """One tap of the window as fp32; BN_RELU: relu(a*x + c) rounded to y's dtype, the value
    the unit's own output would have held (so ties and the argmax are the unfused ones)."""
    v = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    if BN_RELU:
        v = tl.maximum(v * a + c, 0.0).to(y_ptr.dtype.element_ty).to(tl.float32)
    return v


@triton.jit
def _max_pool3x3s2_fwd_kernel(x_ptr, y_ptr, idx_ptr, a_ptr, c_ptr, M, C, H, W, OH, OW,
                              sxn, sxc, sxh, sxw, syn, syc, syh, syw, BN_RELU: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """y[n, c, oh, ow] = max of x[n, c, 2oh:2oh+3, 2ow:2ow+3]; idx (dense [M, C]) = its tap.
    BN_RELU: the max of relu(a[c]*x + c[c]) instead, x being a unit's pre-BN conv output:
    BN + ReLU + pool in one pass, the unit's full-size output never written."""
    offs_m, offs_c, m_ok, c_ok = pixel_channel_tile(M, C, BLOCK_M, BLOCK_C)
    mask = m_ok[:, None] & c_ok[None, :]
    n, oh, ow = pixel_coords(offs_m, OH, OW)
    a = 0.0
    c = 0.0
    if BN_RELU:
        a = tl.load(a_ptr + offs_c, mask=c_ok, other=0.0)[None, :]
        c = tl.load(c_ptr + offs_c, mask=c_ok, other=0.0)[None, :]
    base = x_ptr + (n * sxn + (2 * oh) * sxh + (2 * ow) * sxw)[:, None] + (offs_c * sxc)[None, :]
    best = _tap(base, mask, a, c, y_ptr, BN_RELU)
    arg = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.int32)
    for t in tl.static_range(1, 9):
        v = _tap(base + (t // 3) * sxh + (t % 3) * sxw, mask, a, c, y_ptr, BN_RELU)
        take = (v > best) | (v != v)
        best = tl.where(take, v, best)
        arg = tl.where(take, t, arg)
    y_ptrs = y_ptr + (n * syn + oh * syh + ow * syw)[:, None] + (offs_c * syc)[None, :]
    tl.store(y_ptrs, best.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(idx_ptr + offs_m[:, None].to(tl.int64) * C + offs_c[None, :], arg.to(tl.uint8),
             mask=mask)


@triton.jit
def pool_grad_gather(g_ptr, idx_ptr, n, h, w, offs_c, m_ok, c_ok, C, OH, OW,
                     sgn, sgc, sgh, sgw, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """The gradient at input pixels (n, h, w) (int64 n) of the 3x3 / stride-2 max pool whose
    output gradient is g (any strides) and argmax idx (dense uint8 [N*OH*OW, C]): the sum of
    the (<= 4) windows' gradients whose argmax is this pixel; fp32 [BLOCK_M, BLOCK_C]. Also
    the loader of the fused BN + ReLU backward behind a pool (kernels/bn_relu_bwd.py)."""
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
            arg = tl.load(idx_ptr + orow[:, None] * C + offs_c[None, :], mask=ok,
                          other=255).to(tl.int32)
            g = tl.load(g_ptr + (n * sgn + oh * sgh + ow * sgw)[:, None]
                        + (offs_c * sgc)[None, :], mask=ok, other=0.0).to(tl.float32)
            acc += tl.where(arg == (r * 3 + s)[:, None], g, 0.0)
    return acc


@triton.jit
def _max_pool3x3s2_bwd_kernel(g_ptr, idx_ptr, dx_ptr, M, C, H, W, OH, OW,
                              sgn, sgc, sgh, sgw, sdn, sdc, sdh, sdw,
                              BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """dx[n, c, h, w] = sum of g over the (<= 4) windows whose argmax is (h, w). M = N*H*W."""
    offs_m, offs_c, m_ok, c_ok = pixel_channel_tile(M, C, BLOCK_M, BLOCK_C)
    n, h, w = pixel_coords(offs_m, H, W)
    acc = pool_grad_gather(g_ptr, idx_ptr, n, h, w, offs_c, m_ok, c_ok, C, OH, OW,
                           sgn, sgc, sgh, sgw, BLOCK_M, BLOCK_C)
    d_ptrs = dx_ptr + (n * sdn + h * sdh + w * sdw)[:, None] + (offs_c * sdc)[None, :]
    tl.store(d_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=m_ok[:, None] & c_ok[None, :])


def _out_hw(h, w):
    if h < 3 or w < 3:
        raise ValueError(f"max_pool3x3s2: input must be at least 3x3, got {h}x{w}")
    return pool3x3s2_out_hw(h, w)


def max_pool3x3s2_fwd(x: torch.Tensor, out: torch.Tensor | None = None,
                      bn_relu: tuple[torch.Tensor, torch.Tensor] | None = None):
    """max_pool2d(x, 3, stride=2) into `out` (an (N, C, OH, OW) view of x's dtype, any strides,
    e.g. a channel slice of the block output; else a new channels_last tensor).
    bn_relu = (a, c), float32 [C]: pool relu(a*x + c) instead (x: a unit's pre-BN conv output).
    Returns (out, argmax) with argmax a dense uint8 channels_last (N, C, OH, OW) tensor."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError("max_pool3x3s2: x must be a 4-D (N, C, H, W) tensor")
    check_kernel_dtype(x, "max_pool3x3s2", gemm=False)
    n, c, h, w = x.shape
    oh, ow = _out_hw(h, w)
    out = nhwc_out(out, (n, c, oh, ow), x, "max_pool3x3s2")
    check_bn_vectors(bn_relu, x, "max_pool3x3s2", "bn_relu")
    a, cc = bn_relu if bn_relu is not None else (out, out)  # unused without BN_RELU
    idx = torch.empty((n, c, oh, ow), device=x.device, dtype=torch.uint8,
                      memory_format=torch.channels_last)
    m = n * oh * ow
    if m and c:
        block_m, block_c = _blocks(c)
        grid = (triton.cdiv(m, block_m), triton.cdiv(c, block_c))
        _max_pool3x3s2_fwd_kernel[grid](x, out, idx, a, cc, m, c, h, w, oh, ow, *x.stride(),
                                        *out.stride(), BN_RELU=bn_relu is not None,
                                        BLOCK_M=block_m, BLOCK_C=block_c)
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
    dx = nhwc_out(None, (n, c, h, w), grad, "max_pool3x3s2_bwd")
    m = n * h * w
    if m and c:
        block_m, block_c = _blocks(c)
        grid = (triton.cdiv(m, block_m), triton.cdiv(c, block_c))
        _max_pool3x3s2_bwd_kernel[grid](grad, argmax, dx, m, c, h, w, oh, ow, *grad.stride(),
                                        *dx.stride(), BLOCK_M=block_m, BLOCK_C=block_c)
    return dx
