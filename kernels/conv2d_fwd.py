"""Implicit-GEMM 2-D convolution forward (NHWC / channels_last), fp32 accumulation.

GEMM view: rows m = (n, oh, ow) (M = N*OH*OW), columns = output channels, reduction over
k = (r, s, c) (K = kh*kw*C_in). No im2col is materialized: each program gathers its input
tile straight from x (any strides; channels_last makes the C loads contiguous). The reduction
is one loop over (channel block, tap) steps (conv_common.window_step), which Triton pipelines
as a whole; every filter shape runs on it, the 1xn / nx1 ones of Mixed_6/7 included (their
neighbouring taps read overlapping tiles, which L1 / L2 serve).

Epilogues (compile-time flags), all on the fp32 accumulator:
  plain              y = conv(x)
  HAS_BIAS / RELU    y = relu(conv(x) + bias)        (eval: BN folded into weight and bias)
  IN_BN (any of them) x is the previous unit's pre-BN output and the conv reads
                     relu(a*x + c) (its deferred BN + ReLU, conv_common.bn_relu_operand)
  STATS              y = conv(x), plus per-channel partial sums and centered sums of squares
                     (M2) over each group of STAT_ROWS rows, for the BN batch statistics;
                     kernels/bn_train.py combines them (Chan's parallel variance formula, which
                     avoids the cancellation of E[y^2] - E[y]^2).
The result goes into any (N, C_out, OH, OW)-shaped view, e.g. a channel slice of a larger NHWC
tensor (copy-free concat).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .configs import autotuned
from .conv3x3s2_pool import launch_conv3x3s2_pool
from .conv_common import (STAT_ROWS, bn_relu_operand, conv_epilogue, gemm_tile, launch, mma,  # noqa: F401
                          pack_weight, prune_configs, use_ieee, vec_of, vec_scale, vec_strides,
                          window_step)
from .dtypes import KERNEL_DTYPES, check_bn_vectors, check_conv_operands, check_kernel_dtype
from .sizes import conv_out_size as out_size

SUPPORTED_DTYPES = KERNEL_DTYPES

@autotuned(key=["N", "H", "W", "C_in", "C_out", "OH", "OW", "KH", "KW", "SH", "SW", "PH", "PW",
                "FLAT_K", "HAS_BIAS", "RELU", "STATS", "IN_BN", "VEC"], by_size=prune_configs)
@triton.jit
def _conv2d_fwd_kernel(
        x_ptr, w_ptr, y_ptr, bias_ptr, psum_ptr, pm2_ptr, ain_ptr, cin_ptr,
        N, H, W, C_in, OH, OW, C_out, M,
        sxn, sxc, sxh, sxw, syn, syc, syh, syw,
        KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
        PH: tl.constexpr, PW: tl.constexpr, FLAT_K: tl.constexpr,
        HAS_BIAS: tl.constexpr, RELU: tl.constexpr, STATS: tl.constexpr, IEEE: tl.constexpr,
        STAT_R: tl.constexpr, IN_BN: tl.constexpr, VEC: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Implicit-GEMM conv: any kh x kw, stride, padding. Weight packed as [kh, kw, C_in,
    C_out] (w[k, co], k = (r*KW + s)*C_in + c). 1-D grid over (M tiles x N tiles), N fastest so
    consecutive programs reuse the same input tile from L2.
    FLAT_K: reduce over the flattened (r, s, c) with per-element index math (C_in < 16 and
    not 8-aligned, where a per-tap channel block would be mostly padding; the RGB image comes
    padded to 8 channels, ops/aligned_input.py, and takes the one-loop path with VEC = 8).
    IN_BN: x is the previous unit's pre-BN output y; the conv's input is relu(ain*y + cin)
    per channel, applied to the operand tiles as they are loaded (conv_common.bn_relu_operand).
    VEC: x's channels and pixel strides are multiples of VEC (conv_common.vec_of); sxn, sxh,
    sxw come divided by VEC (conv_common.vec_strides)."""
    pid_m, offs_m, offs_n, offs_k, m_ok, n_ok = gemm_tile(M, C_out, BLOCK_M, BLOCK_N, BLOCK_K)
    sxn, sxh, sxw = vec_scale(sxn, sxh, sxw, VEC)
    ohw = OH * OW
    n_idx = offs_m // ohw
    rem = offs_m % ohw
    ih0 = (rem // OW) * SH - PH
    iw0 = (rem % OW) * SW - PW
    x_row = n_idx.to(tl.int64) * sxn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if FLAT_K:
        K = KH * KW * C_in
        for k0 in range(0, K, BLOCK_K):
            k = k0 + offs_k
            c = k % C_in
            rs = k // C_in
            ih = ih0[:, None] + (rs // KW)[None, :]
            iw = iw0[:, None] + (rs % KW)[None, :]
            a_mask = (m_ok[:, None] & (k < K)[None, :] & (ih >= 0) & (ih < H)
                      & (iw >= 0) & (iw < W))
            a = tl.load(x_ptr + x_row[:, None] + ih * sxh + iw * sxw + (c * sxc)[None, :],
                        mask=a_mask, other=0.0)
            if IN_BN:
                a = bn_relu_operand(a, a_mask, tl.load(ain_ptr + c, mask=k < K, other=0.0),
                                    tl.load(cin_ptr + c, mask=k < K, other=0.0))
            b = tl.load(w_ptr + k[:, None] * C_out + offs_n[None, :],
                        mask=(k < K)[:, None] & n_ok[None, :], other=0.0)
            acc = mma(a, b, acc, IEEE)
    else:
        x_rows = x_ptr + x_row + ih0 * sxh + iw0 * sxw
        for kk in range(0, KH * KW * tl.cdiv(C_in, BLOCK_K)):
            a, b, _, _ = window_step(kk, x_rows, w_ptr, ih0, iw0, m_ok, offs_k, offs_n, n_ok,
                                     H, W, C_in, C_out, sxc, sxh, sxw, ain_ptr, cin_ptr, KW,
                                     KH * KW, BLOCK_K, IN_BN, VEC)
            acc = mma(a, b, acc, IEEE)
    conv_epilogue(acc, offs_m, offs_n, pid_m, M, C_out, OH, OW, y_ptr, syn, syc, syh, syw,
                  bias_ptr, psum_ptr, pm2_ptr, HAS_BIAS, RELU, STATS, STAT_R, BLOCK_M, BLOCK_N)


# --------------------------------------------------------------------------- launch helpers

def _check(x, weight, packed, stride, padding, bias, out):
    check_conv_operands(x, weight, "conv2d_fwd")
    check_kernel_dtype(x, "conv2d_fwd")
    co, ci, kh, kw = weight.shape
    if packed is not None and (tuple(packed.shape) != (kh * kw * ci, co) or not packed.is_contiguous()
                               or packed.dtype != x.dtype or packed.device != x.device):
        raise ValueError(f"conv2d_fwd: packed weight must be a contiguous {x.dtype} "
                         f"[{kh * kw * ci}, {co}] tensor on {x.device}")
    if len(stride) != 2 or len(padding) != 2 or min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"conv2d_fwd: bad stride {stride} / padding {padding}")
    oh = out_size(x.shape[2], kh, stride[0], padding[0])
    ow = out_size(x.shape[3], kw, stride[1], padding[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d_fwd: input {tuple(x.shape[2:])} is smaller than the kernel "
                         f"{(kh, kw)} with padding {tuple(padding)}")
    if bias is not None and (bias.shape != (co,) or bias.device != x.device):
        raise ValueError(f"conv2d_fwd: bias must be a [{co}] tensor on {x.device}")
    if out is not None:
        want = (x.shape[0], co, oh, ow)
        if tuple(out.shape) != want:
            raise ValueError(f"conv2d_fwd: out has shape {tuple(out.shape)}, expected {want}")
        if out.dtype != x.dtype or out.device != x.device:
            raise ValueError(f"conv2d_fwd: out must be {x.dtype} on {x.device}, got {out.dtype} on {out.device}")
    return oh, ow


def _check_pool(x, weight, stride, padding, pool_out, oh, ow):
    if tuple(weight.shape[2:]) != (3, 3) or stride != (2, 2) or padding != (0, 0):
        raise ValueError(f"conv2d_fwd: pool_out needs a 3x3 / stride-2 / unpadded conv, got kernel "
                         f"{tuple(weight.shape[2:])}, stride {stride}, padding {padding}")
    want = (x.shape[0], x.shape[1], oh, ow)
    if (tuple(pool_out.shape) != want or pool_out.dtype != x.dtype
            or pool_out.device != x.device):
        raise ValueError(f"conv2d_fwd: pool_out must be {x.dtype} {want} on {x.device}, got "
                         f"{pool_out.dtype} {tuple(pool_out.shape)} on {pool_out.device}")


def conv2d_fwd(x: torch.Tensor, weight: torch.Tensor, *, stride=(1, 1), padding=(0, 0),
               bias: torch.Tensor | None = None, relu: bool = False, stats: bool = False,
               out: torch.Tensor | None = None, packed: torch.Tensor | None = None,
               pool_out: torch.Tensor | None = None,
               in_bn: tuple[torch.Tensor, torch.Tensor] | None = None):
    """y = [relu](conv2d(x', weight, stride, padding) [+ bias]), x' = x, or with in_bn = (a, c)
    (float32 [C_in]) x' = relu(a*x + c) per channel, applied as the operand tiles load (x is
    then the previous unit's pre-BN output; its activation is never stored).

    x: (N, C_in, H, W), any strides (channels_last is the fast layout); fp32/fp16/bf16.
    weight: (C_out, C_in, kh, kw); `packed` optionally gives pack_weight(weight, x.dtype)
      (callers cache it). bias: fp32 [C_out] or None.
    out: optional (N, C_out, OH, OW) view to write into (e.g. out_full[:, off:off + C_out]);
      otherwise a new channels_last tensor of x's dtype.
    stats: also return per-channel partials (psum, pm2), float32 [ceil(M / STAT_ROWS), C_out]:
      sum and centered sum of squares of the fp32 conv output per group of STAT_ROWS rows
      (rows m = (n, oh, ow)); see kernels/bn_train.py. Returns (y, psum, pm2), else y.
    pool_out: for a 3x3 / stride-2 / unpadded conv, an (N, C_in, OH, OW) view of x's dtype (the
      pool slice of a grid-reduction block output): max_pool2d(x, 3, 2) is written there in the
      same pass (kernels/conv3x3s2_pool.py) and its argmax (dense uint8 channels_last
      (N, C_in, OH, OW), as kernels/max_pool3x3s2.py) is returned last.
    """
    stride, padding = tuple(stride), tuple(padding)
    oh, ow = _check(x, weight, packed, stride, padding, bias, out)
    if pool_out is not None:
        _check_pool(x, weight, stride, padding, pool_out, oh, ow)
        if in_bn is not None:
            raise ValueError("conv2d_fwd: pool_out pools x itself; it takes no in_bn")
    check_bn_vectors(in_bn, x, "conv2d_fwd")
    n, ci, h, w = x.shape
    co, _, kh, kw = weight.shape
    if packed is None:
        packed = pack_weight(weight, x.dtype)
    if out is None:
        out = torch.empty((n, co, oh, ow), device=x.device, dtype=x.dtype,
                          memory_format=torch.channels_last)
    m = n * oh * ow
    if stats:
        groups = triton.cdiv(m, STAT_ROWS)
        psum = torch.empty((groups, co), device=x.device, dtype=torch.float32)
        pm2 = torch.empty((groups, co), device=x.device, dtype=torch.float32)
    else:
        psum = pm2 = out  # unused (dead code under STATS=False)
    bias_arg = bias if bias is not None else out
    results = (out, psum, pm2) if stats else (out,)
    if pool_out is not None:
        idx = torch.empty((n, ci, oh, ow), device=x.device, dtype=torch.uint8,
                          memory_format=torch.channels_last)
        results += (idx,)
    if m == 0 or co == 0:
        return results if len(results) > 1 else out
    names = ("x_ptr", "w_ptr", "y_ptr", "bias_ptr", "psum_ptr", "pm2_ptr", "N", "H", "W", "C_in",
             "OH", "OW", "C_out", "M", "sxn", "sxc", "sxh", "sxw", "syn", "syc", "syh", "syw")
    vec = vec_of(x) if pool_out is None else 1
    args = dict(zip(names, (x, packed, out, bias_arg, psum, pm2, n, h, w, ci, oh, ow, co, m,
                            *vec_strides(x, vec), *out.stride())))
    flags = dict(HAS_BIAS=bias is not None, RELU=relu, STATS=stats, IEEE=use_ieee(x.dtype),
                 STAT_R=STAT_ROWS)
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(co, meta["BLOCK_N"]),)
    if pool_out is not None:
        launch_conv3x3s2_pool(grid, args, pool_out, idx, ci, flags)
    else:
        flat = ci < 16 and vec == 1  # 8 aligned channels (the padded image): vector loads
        ain, cin = in_bn if in_bn is not None else (out, out)  # unused without IN_BN
        launch(_conv2d_fwd_kernel, grid, {**args, "ain_ptr": ain, "cin_ptr": cin},
               kh * kw * ci if flat else ci,
               dict(KH=kh, KW=kw, SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1],
                    FLAT_K=flat, IN_BN=in_bn is not None, VEC=vec, **flags))
    return results if len(results) > 1 else out
