"""Horizontal 1x1 fusion: the 1x1 convs of an Inception block that read the same input as one
GEMM whose output columns are routed to their branches' tensors.

Column layout (the caller orders the concatenated weight so): up to four segments
  [0, B1) -> dest0, [B1, B2) -> dest1, [B2, B3) -> dest2, [B3, C_tot) -> dest3;
each destination is any (N, c, H, W) view (e.g. a channel slice of the block output, or a
branch's own buffer), column j of a segment stored at channel j - lo of it. Columns < RELU_END
get the ReLU (the pool branch's columns do not: its BN+ReLU comes after the pool).

  gemm1x1_routed   eval fast path: y = x @ W_folded + bias, ReLU per column, routed stores
                   (BN folded into W and bias, so no BN kernel runs).
  routed_apply     train: out = relu(a*y + c) per column from the dense pre-BN GEMM output y
                   (kernels/conv2d_fwd.py with the BN-statistics epilogue), routed the same way.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .configs import autotuned, size_pruner
from .conv_common import gemm_tile, interpreter_tiles, mma, use_ieee
from .dtypes import check_bn_vectors, interpreter_on
from .nhwc import pixel_channel_tile, pixel_coords, row_offsets


@triton.jit
def _store_seg(ptr, sn, sc, sh, sw, val, n_idx, h, w, offs_n, lo, hi, m_ok):
    """Store the columns of `val` that fall in segment [lo, hi) into the view at `ptr`."""
    ok = m_ok[:, None] & ((offs_n >= lo) & (offs_n < hi))[None, :]
    ptrs = ptr + (n_idx * sn + h * sh + w * sw)[:, None] + ((offs_n - lo) * sc)[None, :]
    tl.store(ptrs, val.to(ptr.dtype.element_ty), mask=ok)


@triton.jit
def _store_routed(val, offs_m, offs_n, M, C, H, W, B1, B2, B3,
                  d0, s0n, s0c, s0h, s0w, d1, s1n, s1c, s1h, s1w,
                  d2, s2n, s2c, s2h, s2w, d3, s3n, s3c, s3h, s3w):
    m_ok = offs_m < M
    n_idx, h, w = pixel_coords(offs_m, H, W)
    _store_seg(d0, s0n, s0c, s0h, s0w, val, n_idx, h, w, offs_n, 0, B1, m_ok)
    _store_seg(d1, s1n, s1c, s1h, s1w, val, n_idx, h, w, offs_n, B1, B2, m_ok)
    _store_seg(d2, s2n, s2c, s2h, s2w, val, n_idx, h, w, offs_n, B2, B3, m_ok)
    _store_seg(d3, s3n, s3c, s3h, s3w, val, n_idx, h, w, offs_n, B3, C, m_ok)


@autotuned(key=["M", "C_in", "C_tot", "RELU_END", "HAS_BIAS"],
           by_size=size_pruner(lambda a: (a["M"], a["C_tot"], a["C_in"], 1)))
@triton.jit
def _gemm1x1_routed_kernel(x_ptr, w_ptr, bias_ptr, M, C_in, C_tot, H, W,
                           sxn, sxc, sxh, sxw, B1, B2, B3, RELU_END,
                           d0, s0n, s0c, s0h, s0w, d1, s1n, s1c, s1h, s1w,
                           d2, s2n, s2c, s2h, s2w, d3, s3n, s3c, s3h, s3w,
                           HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """[M = N*H*W, C_in] x [C_in, C_tot] (weight packed K x N), fp32 accumulate, bias + ReLU on
    columns < RELU_END, routed stores. 1-D grid, N tiles fastest (input tile reused from L2)."""
    pid_m, offs_m, offs_n, offs_k, m_ok, n_ok = gemm_tile(M, C_tot, BLOCK_M, BLOCK_N, BLOCK_K)
    x_row = row_offsets(offs_m, H, W, sxn, sxh, sxw)
    a_ptrs = x_ptr + x_row[:, None] + (offs_k * sxc)[None, :]
    b_ptrs = w_ptr + offs_k[:, None] * C_tot + offs_n[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, C_in, BLOCK_K):
        k_ok = (k0 + offs_k) < C_in
        a = tl.load(a_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = mma(a, b, acc, IEEE)
        a_ptrs += BLOCK_K * sxc
        b_ptrs += BLOCK_K * C_tot
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    acc = tl.where((offs_n < RELU_END)[None, :], tl.maximum(acc, 0.0), acc)
    _store_routed(acc, offs_m, offs_n, M, C_tot, H, W, B1, B2, B3,
                  d0, s0n, s0c, s0h, s0w, d1, s1n, s1c, s1h, s1w,
                  d2, s2n, s2c, s2h, s2w, d3, s3n, s3c, s3h, s3w)


@triton.jit
def _routed_apply_kernel(y_ptr, syn, syc, syh, syw, a_ptr, c_ptr, M, C, H, W, B1, B2, B3,
                         d0, s0n, s0c, s0h, s0w, d1, s1n, s1c, s1h, s1w,
                         d2, s2n, s2c, s2h, s2w, d3, s3n, s3c, s3h, s3w,
                         BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """out = relu(a[col] * y + c[col]) for columns [0, C), routed; y any strides."""
    offs_m, offs_c, m_ok, c_ok = pixel_channel_tile(M, C, BLOCK_M, BLOCK_C)
    row = row_offsets(offs_m, H, W, syn, syh, syw)
    y = tl.load(y_ptr + row[:, None] + (offs_c * syc)[None, :],
                mask=m_ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
    a = tl.load(a_ptr + offs_c, mask=c_ok, other=0.0)
    c = tl.load(c_ptr + offs_c, mask=c_ok, other=0.0)
    z = tl.maximum(y * a[None, :] + c[None, :], 0.0)
    _store_routed(z, offs_m, offs_c, M, C, H, W, B1, B2, B3,
                  d0, s0n, s0c, s0h, s0w, d1, s1n, s1c, s1h, s1w,
                  d2, s2n, s2c, s2h, s2w, d3, s3n, s3c, s3h, s3w)


# --------------------------------------------------------------------------- launch helpers

def _dest_args(dests, bounds, n, h, w, dtype, device):
    """dests: up to 4 (N, c, H, W) views (None for an empty segment); bounds: (B1, B2, B3, C)."""
    if len(dests) > 4:
        raise ValueError(f"conv1x1_multi kernels route at most 4 segments, got {len(dests)}")
    dests = list(dests) + [None] * (4 - len(dests))
    lo = 0
    args, dummy = [], None
    for d, hi in zip(dests, bounds):
        if d is None:
            if hi != lo:
                raise ValueError(f"conv1x1_multi: segment [{lo}, {hi}) has no destination")
            dummy = dummy if dummy is not None else torch.empty(1, device=device, dtype=dtype)
            args += [dummy, 0, 0, 0, 0]
        else:
            if tuple(d.shape) != (n, hi - lo, h, w) or d.dtype != dtype or d.device != device:
                raise ValueError(f"conv1x1_multi: destination for columns [{lo}, {hi}) must be "
                                 f"{dtype} {(n, hi - lo, h, w)} on {device}, got {d.dtype} "
                                 f"{tuple(d.shape)} on {d.device}")
            args += [d, *d.stride()]
        lo = hi
    return args


def _bounds(sizes, total):
    if len(sizes) > 4:
        raise ValueError(f"conv1x1_multi kernels route at most 4 segments, got {len(sizes)}")
    b, acc = [], 0
    for s in list(sizes) + [0] * (4 - len(sizes)):
        acc += s
        b.append(acc)
    if acc != total:
        raise ValueError(f"conv1x1_multi: segments cover {acc} columns, expected {total}")
    return b


def gemm1x1_routed(x: torch.Tensor, packed: torch.Tensor, dests, sizes, *,
                   bias: torch.Tensor | None = None, relu_end: int = 0) -> None:
    """Routed 1x1 conv. x: (N, C_in, H, W), any strides; packed: contiguous [C_in, C_tot] of
    x's dtype; sizes: columns per segment (in order); dests: one (N, size, H, W) view per
    segment; bias: float32 [C_tot] or None; ReLU on columns < relu_end."""
    n, c_in, h, w = x.shape
    if packed.dim() != 2 or packed.shape[0] != c_in or not packed.is_contiguous() \
            or packed.dtype != x.dtype or packed.device != x.device:
        raise ValueError(f"gemm1x1_routed: packed weight must be a contiguous {x.dtype} "
                         f"[{c_in}, C_tot] tensor on {x.device}")
    c_tot = packed.shape[1]
    if bias is not None and (bias.shape != (c_tot,) or bias.dtype != torch.float32):
        raise ValueError(f"gemm1x1_routed: bias must be float32 [{c_tot}]")
    b = _bounds(sizes, c_tot)
    dargs = _dest_args(dests, b, n, h, w, x.dtype, x.device)
    m = n * h * w
    if m == 0 or c_tot == 0:
        return
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(c_tot, meta["BLOCK_N"]),)
    args = (x, packed, bias if bias is not None else packed, m, c_in, c_tot, h, w, *x.stride(),
            b[0], b[1], b[2], relu_end, *dargs)
    meta = dict(HAS_BIAS=bias is not None, IEEE=use_ieee(x.dtype))
    if interpreter_on():  # few large programs (the interpreter never benchmarks)
        _gemm1x1_routed_kernel.fn[grid](*args, **meta, **interpreter_tiles(m, c_tot, c_in))
    else:
        _gemm1x1_routed_kernel[grid](*args, **meta)


def routed_apply(y: torch.Tensor, a: torch.Tensor, c: torch.Tensor, dests, sizes) -> None:
    """dest_i = relu(a*y + c) on segment i's columns. y: (N, C, H, W) any strides; a, c:
    float32 [C]; sizes/dests as gemm1x1_routed (at most 3 segments here)."""
    n, ch, h, w = y.shape
    check_bn_vectors((a, c), y, "routed_apply", "(a, c)")
    b = _bounds(sizes, ch)
    dargs = _dest_args(dests, b, n, h, w, y.dtype, y.device)
    m = n * h * w
    if m == 0 or ch == 0:
        return
    block_c = min(triton.next_power_of_2(ch), 64)
    block_m = (16384 if interpreter_on() else 4096) // block_c
    grid = (triton.cdiv(m, block_m), triton.cdiv(ch, block_c))
    _routed_apply_kernel[grid](y, *y.stride(), a.contiguous(), c.contiguous(), m, ch, h, w,
                               b[0], b[1], b[2], *dargs, BLOCK_M=block_m, BLOCK_C=block_c)
