"""Grid reduction in one pass (Mixed_6a): the 3x3 / stride-2 / unpadded conv and the 3x3 /
stride-2 max-pool of the same input read each input window once.

Both branches see exactly the same windows, and the conv's implicit GEMM already loads, per
channel block and tap, the [BLOCK_M pixels, BLOCK_K channels] tile of the window elements. The
one K loop (conv_common.window_step) runs over (channel block, tap) steps, taps innermost; each
A tile feeds tl.dot and a running max (and its tap) for those channels, kept in registers,
restarted at tap 0 and stored into the pool slice of the block output at tap 8. (Before, the 9
taps were unrolled inside the channel loop, so the pipeliner staged 9 A and 9 B tiles per stage
and no wgmma config fitted in shared memory.) Only the programs of the first output-channel tile store the pool
(every tile computes the same max; the max costs nothing next to the dot). The argmax is the
dense uint8 [M, C_in] tensor of kernels/max_pool3x3s2.py (same tie and NaN rules), whose
backward kernel routes the pool gradient. The conv epilogue is conv2d_fwd's.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .configs import autotuned
from .conv_common import conv_epilogue, gemm_tile, launch, mma, prune_configs, window_step


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
    x_rows = x_ptr + n_idx * sxn + (2 * oh) * sxh + (2 * ow) * sxw
    p_rows = (n_idx * spn + oh * sph + ow * spw)[:, None]
    i_rows = offs_m[:, None].to(tl.int64) * C_in
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    best = tl.zeros((BLOCK_M, BLOCK_K), dtype=x_ptr.dtype.element_ty)
    arg = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.int32)
    for kk in range(0, 9 * tl.cdiv(C_in, BLOCK_K)):
        # Unpadded windows: every tap of a valid row lies inside the image (the bounds hold).
        a, b, t, c = window_step(kk, x_rows, w_ptr, 2 * oh, 2 * ow, m_ok, offs_k, offs_n, n_ok,
                                 H, W, C_in, C_out, sxc, sxh, sxw, x_ptr, x_ptr, 3, 9, BLOCK_K,
                                 False, 1)
        acc = mma(a, b, acc, IEEE)
        # Running max of this channel block's window, restarted at its first tap: first max in
        # scan order, NaN wins (as torch). Compared in the data's dtype (exact).
        take = (t == 0) | (a > best) | (a != a)
        best = tl.where(take, a, best)
        arg = tl.where(take, t, arg)
        s_mask = m_ok[:, None] & (c < C_in)[None, :] & (pool_tile & (t == 8))
        tl.store(p_ptr + p_rows + (c * spc)[None, :], best.to(p_ptr.dtype.element_ty),
                 mask=s_mask)
        tl.store(idx_ptr + i_rows + c[None, :], arg.to(tl.uint8), mask=s_mask)
    conv_epilogue(acc, offs_m, offs_n, pid_m, M, C_out, OH, OW, y_ptr, syn, syc, syh, syw,
                  bias_ptr, psum_ptr, pm2_ptr, HAS_BIAS, RELU, STATS, STAT_R, BLOCK_M, BLOCK_N)


def launch_conv3x3s2_pool(grid, args: dict, pool_out, idx, c_in: int, flags: dict) -> None:
    """Launch for conv2d_fwd(pool_out=...): `args` the conv's (kernels/conv2d_fwd.py), plus the
    pool slice view and its uint8 argmax."""
    launch(_conv3x3s2_pool_kernel, grid,
           {**args, "p_ptr": pool_out, "idx_ptr": idx,
            **dict(zip(("spn", "spc", "sph", "spw"), pool_out.stride()))}, c_in, flags)
