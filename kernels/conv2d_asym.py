"""Implicit-GEMM forward for the asymmetric 1xn / nx1 filters of Inception-v3 (1x7, 7x1 at
17x17; 1x3, 3x1 at 8x8), K = C_in * n.

Difference from the generic kernel (conv2d_fwd.py): the n taps are the INNER loop. For one
channel block, the program loads its input row (1xn) or column (nx1) tile at the n shifted
positions one after the other: together they are the tile plus its halo, each element is
fetched from DRAM/L2 once and the other n-1 reads hit L1, and the n weight slices
[c-block, tap] are adjacent in the packed weight. The per-tap bounds test is a single
coordinate (w for 1xn, h for nx1), computed once per tile, and the tap's address is the
tile's base pointer plus a constant tap * stride. (Triton has no register shuffle to shift
one loaded tile by a tap, so the halo reuse goes through L1 rather than explicit shared
memory.) Same epilogues as the generic kernel.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .conv2d_fwd import conv_configs, conv_epilogue, launch, prune_configs


def asym_taps(kh: int, kw: int) -> bool:
    """True for a 1xn or nx1 filter with n > 1 (handled here)."""
    return (kh == 1) != (kw == 1)


@triton.autotune(configs=conv_configs(), key=["N", "H", "W", "C_in", "C_out", "OH", "OW", "TAPS",
                                              "ALONG_W", "SH", "SW", "PH", "PW", "HAS_BIAS", "RELU",
                                              "STATS"],
                 prune_configs_by={"early_config_prune": prune_configs})
@triton.jit
def _conv2d_asym_kernel(
        x_ptr, w_ptr, y_ptr, bias_ptr, psum_ptr, pm2_ptr,
        N, H, W, C_in, OH, OW, C_out, M,
        sxn, sxc, sxh, sxw, syn, syc, syh, syw,
        TAPS: tl.constexpr, ALONG_W: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
        PH: tl.constexpr, PW: tl.constexpr,
        HAS_BIAS: tl.constexpr, RELU: tl.constexpr, STATS: tl.constexpr, IEEE: tl.constexpr,
        STAT_R: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """1xn (ALONG_W) or nx1 conv; weight packed [TAPS, C_in, C_out]. Rows m = (n, oh, ow)."""
    pid = tl.program_id(0)
    num_n = tl.cdiv(C_out, BLOCK_N)
    pid_m = pid // num_n
    pid_n = pid % num_n
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    n_ok = offs_n < C_out
    ohw = OH * OW
    n_idx = offs_m // ohw
    rem = offs_m % ohw
    ih0 = (rem // OW) * SH - PH
    iw0 = (rem % OW) * SW - PW
    # The fixed coordinate is tested once; only the line coordinate moves with the tap.
    if ALONG_W:
        fixed_ok = m_ok & (ih0 >= 0) & (ih0 < H)
        line0 = iw0
        line_len = W
        s_line = sxw
    else:
        fixed_ok = m_ok & (iw0 >= 0) & (iw0 < W)
        line0 = ih0
        line_len = H
        s_line = sxh
    x_base = x_ptr + (n_idx.to(tl.int64) * sxn + ih0 * sxh + iw0 * sxw)[:, None] \
        + (offs_k * sxc)[None, :]
    w_base = w_ptr + offs_k[:, None] * C_out + offs_n[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for c0 in range(0, C_in, BLOCK_K):
        k_ok = (c0 + offs_k) < C_in
        for t in tl.static_range(TAPS):
            lt = line0 + t
            row_ok = fixed_ok & (lt >= 0) & (lt < line_len)
            a = tl.load(x_base + t * s_line, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(w_base + t * C_in * C_out, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            if IEEE:
                acc = tl.dot(a, b, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, b, acc)
        x_base += BLOCK_K * sxc
        w_base += BLOCK_K * C_out
    conv_epilogue(acc, offs_m, offs_n, pid_m, M, C_out, OH, OW, y_ptr, syn, syc, syh, syw,
                  bias_ptr, psum_ptr, pm2_ptr, HAS_BIAS, RELU, STATS, STAT_R, BLOCK_M, BLOCK_N)


def launch_asym(grid, args, kh, kw, stride, padding, flags):
    """Launch for a 1xn / nx1 filter; `args` and `flags` as built by conv2d_fwd."""
    launch(_conv2d_asym_kernel, grid, args, args["C_in"],
           dict(TAPS=max(kh, kw), ALONG_W=kh == 1, SH=stride[0], SW=stride[1], PH=padding[0],
                PW=padding[1], **flags))
