"""Grid reduction in one pass (Mixed_6a): the 3x3 / stride-2 / unpadded conv and the 3x3 /
stride-2 max-pool of the same input read each input window once.

Both branches see exactly the same windows, and the conv's implicit GEMM already loads, per
channel block and tap, the [BLOCK_M pixels, BLOCK_K channels] tile of the window elements. So
the loop runs channel blocks outside and the 9 taps inside; each A tile feeds tl.dot and a
running max (and its tap) for those channels, which is stored into the pool slice of the block
output after the 9th tap. Only the programs of the first output-channel tile store the pool
(every tile computes the same max; the max costs nothing next to the dot). The argmax is the
dense uint8 [M, C_in] tensor of kernels/max_pool3x3s2.py (same tie and NaN rules), whose
backward kernel routes the pool gradient. The conv epilogue is conv2d_fwd's.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .configs import autotuned
from .conv_common import conv_epilogue, gemm_tile, launch, mma, prune_configs


@autotuned(key=["N", "H", "W", "C_in", "C_out", "HAS_BIAS", "RELU", "STATS"],
           by_size=prune_configs)
@triton.jit
def _conv3x3s2_pool_kernel(
        x_ptr, w_ptr, y_ptr, bias_ptr, psum_ptr, pm2_ptr, p_ptr, idx_ptr,
        N, H, W, C_in, OH, OW, C_out, M,
        sxn, sxc, sxh, sxw, syn, syc, syh, syw, spn, spc, sph, spw,
        HAS_BIAS: tl.constexpr, RELU: tl.constexpr, STATS: tl.constexpr, IEEE: tl.constexpr,
        STAT_R: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y = conv3x3/2(x) (+ epilogue); p = max_pool3x3/2(x), idx = its tap. Weight packed
    [9 * C_in, C_out] (tap-major). Rows m = (n, oh, ow)."""
    pid_m, offs_m, offs_n, offs_k, m_ok, n_ok = gemm_tile(M, C_out, BLOCK_M, BLOCK_N, BLOCK_K)
    pool_tile = (tl.program_id(0) % tl.cdiv(C_out, BLOCK_N)) == 0
    ohw = OH * OW
    n_idx = (offs_m // ohw).to(tl.int64)
    oh = (offs_m % ohw) // OW
    ow = offs_m % OW
    x_base = x_ptr + (n_idx * sxn + (2 * oh) * sxh + (2 * ow) * sxw)[:, None] \
        + (offs_k * sxc)[None, :]
    w_base = w_ptr + offs_k[:, None] * C_out + offs_n[None, :]
    p_rows = (n_idx * spn + oh * sph + ow * spw)[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for c0 in range(0, C_in, BLOCK_K):
        k_ok = (c0 + offs_k) < C_in
        a_mask = m_ok[:, None] & k_ok[None, :]
        best = tl.full((BLOCK_M, BLOCK_K), float("-inf"), dtype=tl.float32)
        arg = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.int32)
        for t in tl.static_range(9):
            a = tl.load(x_base + (t // 3) * sxh + (t % 3) * sxw, mask=a_mask, other=0.0)
            b = tl.load(w_base + t * C_in * C_out, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc = mma(a, b, acc, IEEE)
            v = a.to(tl.float32)
            take = (v > best) | (v != v)  # first max in scan order; NaN wins (as torch)
            best = tl.where(take, v, best)
            arg = tl.where(take, t, arg)
        s_mask = a_mask & pool_tile
        tl.store(p_ptr + p_rows + ((c0 + offs_k) * spc)[None, :],
                 best.to(p_ptr.dtype.element_ty), mask=s_mask)
        tl.store(idx_ptr + offs_m[:, None].to(tl.int64) * C_in + (c0 + offs_k)[None, :],
                 arg.to(tl.uint8), mask=s_mask)
        x_base += BLOCK_K * sxc
        w_base += BLOCK_K * C_out
    conv_epilogue(acc, offs_m, offs_n, pid_m, M, C_out, OH, OW, y_ptr, syn, syc, syh, syw,
                  bias_ptr, psum_ptr, pm2_ptr, HAS_BIAS, RELU, STATS, STAT_R, BLOCK_M, BLOCK_N)


def launch_conv3x3s2_pool(grid, args: dict, pool_out, idx, c_in: int, flags: dict) -> None:
    """Launch for conv2d_fwd(pool_out=...): `args` the conv's (kernels/conv2d_fwd.py), plus the
    pool slice view and its uint8 argmax."""
    launch(_conv3x3s2_pool_kernel, grid,
           {**args, "p_ptr": pool_out, "idx_ptr": idx,
            **dict(zip(("spn", "spc", "sph", "spw"), pool_out.stride()))}, c_in, flags)
