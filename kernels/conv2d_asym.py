"""Implicit-GEMM forward for the asymmetric 1xn / nx1 filters of Inception-v3 (1x7, 7x1 at
17x17; 1x3, 3x1 at 8x8), K = C_in * n. Weight packed [n, C_in, C_out] (tap-major).

Two kernels:

_conv2d_asym_halo_kernel (stride 1, "same" padding: every 1xn / nx1 conv of the model).
  Rows m = (n, h, w) of the output are the input's own pixels, so tap t of row m reads the
  input pixel m + (t - P) * D in the flattened (n, h, w) order, D = 1 for 1xn (along a row)
  and D = W for nx1 (along a column). A tile of BLOCK_M consecutive rows therefore needs one
  contiguous range of BLOCK_M + (n - 1) * D input pixels: the tile and its halo. For each
  channel block the program loads that range ONCE into a [HALO, BLOCK_K] block, and builds the
  n shifted A operands from it with tl.gather (on chip: shared memory / register shuffles)
  instead of n global loads. A gathered row whose tap falls outside the image line (the zero
  padding, or the neighbouring row/image the flat index runs into) is zeroed by a mask on the
  single line coordinate. Requires (n - 1) * D <= BLOCK_M (HALO = 2 * BLOCK_M); the launcher
  keeps only such tiles, and uses the kernel below when none fits.

_conv2d_asym_kernel (any stride / padding): the n taps are the inner loop, each a load of the
  shifted tile (the halo reuse then goes through L1).

Same epilogues as the generic kernel (conv2d_fwd.py).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .configs import CONV_FWD, autotuned
from .conv_common import (conv_epilogue, gemm_tile, interpreter_tiles, launch, mma,
                          prune_configs)
from .dtypes import interpreter_on

# The largest tile height among the GPU configs (a halo tile needs (n - 1) * D <= BLOCK_M).
_MAX_GPU_BLOCK_M = max(shape[0] for shape in CONV_FWD)
_MAX_INTERP_BLOCK_M = 1024


def asym_taps(kh: int, kw: int) -> bool:
    """True for a 1xn or nx1 filter with n > 1 (handled here)."""
    return (kh == 1) != (kw == 1)


def halo_shift(h: int, w: int, kh: int, kw: int, stride, padding) -> int | None:
    """D (flat-index distance between taps) when the halo kernel applies, else None: stride 1,
    "same" padding along the taps, none across, and (n - 1) * D within the largest tile."""
    if not hasattr(tl, "gather"):  # a Triton without tl.gather: the taps-loop kernel
        return None
    n = max(kh, kw)
    along_w = kh == 1
    pad_along, pad_across = (padding[1], padding[0]) if along_w else (padding[0], padding[1])
    if tuple(stride) != (1, 1) or n % 2 == 0 or pad_along != (n - 1) // 2 or pad_across != 0:
        return None
    d = 1 if along_w else w
    max_m = _MAX_INTERP_BLOCK_M if interpreter_on() else _MAX_GPU_BLOCK_M
    return d if (n - 1) * d <= max_m else None


def _prune_halo(configs, named_args, **kwargs):
    """The generic pruning, keeping only tiles tall enough for the halo ((n - 1) * D rows)."""
    args = {**named_args, **kwargs}
    need = (args["TAPS"] - 1) * args["SHIFT"]
    tall = [c for c in configs if c.kwargs["BLOCK_M"] >= need]
    return prune_configs(tall, named_args, **kwargs) if tall else configs[-1:]


@autotuned(key=["N", "H", "W", "C_in", "C_out", "TAPS", "SHIFT", "HAS_BIAS", "RELU", "STATS"],
           by_size=_prune_halo)
@triton.jit
def _conv2d_asym_halo_kernel(
        x_ptr, w_ptr, y_ptr, bias_ptr, psum_ptr, pm2_ptr,
        N, H, W, C_in, OH, OW, C_out, M,
        sxn, sxc, sxh, sxw, syn, syc, syh, syw,
        TAPS: tl.constexpr, SHIFT: tl.constexpr, ALONG_W: tl.constexpr,
        HAS_BIAS: tl.constexpr, RELU: tl.constexpr, STATS: tl.constexpr, IEEE: tl.constexpr,
        STAT_R: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """1xn (ALONG_W, SHIFT = 1) or nx1 (SHIFT = W) conv, stride 1, same padding (module doc).
    The tile's input pixels (halo included) are loaded once per channel block."""
    HALO: tl.constexpr = 2 * BLOCK_M
    PAD: tl.constexpr = (TAPS - 1) // 2
    pid_m, offs_m, offs_n, offs_k, m_ok, n_ok = gemm_tile(M, C_out, BLOCK_M, BLOCK_N, BLOCK_K)
    hw = H * W
    # The line coordinate of each output row (w for 1xn, h for nx1) and its line length.
    if ALONG_W:
        line = offs_m % W
        line_len = W
    else:
        line = (offs_m % hw) // W
        line_len = H
    # The halo: flat input pixels q0 .. q0 + HALO - 1, q0 = first row - PAD * SHIFT.
    q = pid_m * BLOCK_M - PAD * SHIFT + tl.arange(0, HALO)
    q_ok = (q >= 0) & (q < M)
    qc = tl.where(q_ok, q, 0)
    rem = qc % hw
    x_rows = (qc // hw).to(tl.int64) * sxn + (rem // W) * sxh + (rem % W) * sxw
    x_ptrs = x_ptr + x_rows[:, None] + (offs_k * sxc)[None, :]
    w_ptrs = w_ptr + offs_k[:, None] * C_out + offs_n[None, :]
    local = tl.arange(0, BLOCK_M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for c0 in range(0, C_in, BLOCK_K):
        k_ok = (c0 + offs_k) < C_in
        halo = tl.load(x_ptrs, mask=q_ok[:, None] & k_ok[None, :], other=0.0)
        for t in tl.static_range(TAPS):
            idx = tl.broadcast_to((local + t * SHIFT)[:, None], (BLOCK_M, BLOCK_K))
            a = tl.gather(halo, idx, 0)
            lt = line + (t - PAD)
            a = tl.where((m_ok & (lt >= 0) & (lt < line_len))[:, None], a, tl.zeros_like(a))
            b = tl.load(w_ptrs + t * C_in * C_out, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc = mma(a, b, acc, IEEE)
        x_ptrs += BLOCK_K * sxc
        w_ptrs += BLOCK_K * C_out
    conv_epilogue(acc, offs_m, offs_n, pid_m, M, C_out, OH, OW, y_ptr, syn, syc, syh, syw,
                  bias_ptr, psum_ptr, pm2_ptr, HAS_BIAS, RELU, STATS, STAT_R, BLOCK_M, BLOCK_N)


@autotuned(key=["N", "H", "W", "C_in", "C_out", "OH", "OW", "TAPS", "ALONG_W", "SH", "SW", "PH",
                "PW", "HAS_BIAS", "RELU", "STATS"], by_size=prune_configs)
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
    """1xn (ALONG_W) or nx1 conv, any stride and padding; the taps are the inner loop.
    Rows m = (n, oh, ow). The fixed coordinate is tested once per tile; only the line
    coordinate moves with the tap, and the tap's address is the tile's plus tap * stride."""
    pid_m, offs_m, offs_n, offs_k, m_ok, n_ok = gemm_tile(M, C_out, BLOCK_M, BLOCK_N, BLOCK_K)
    ohw = OH * OW
    n_idx = offs_m // ohw
    rem = offs_m % ohw
    ih0 = (rem // OW) * SH - PH
    iw0 = (rem % OW) * SW - PW
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
            acc = mma(a, b, acc, IEEE)
        x_base += BLOCK_K * sxc
        w_base += BLOCK_K * C_out
    conv_epilogue(acc, offs_m, offs_n, pid_m, M, C_out, OH, OW, y_ptr, syn, syc, syh, syw,
                  bias_ptr, psum_ptr, pm2_ptr, HAS_BIAS, RELU, STATS, STAT_R, BLOCK_M, BLOCK_N)


def launch_asym(grid, args, kh, kw, stride, padding, flags, halo: bool = True):
    """Launch for a 1xn / nx1 filter; `args` and `flags` as built by conv2d_fwd. The halo
    kernel where it applies (and `halo`), else the taps-loop kernel."""
    taps = max(kh, kw)
    shift = halo_shift(args["H"], args["W"], kh, kw, stride, padding) if halo else None
    if shift is None:
        launch(_conv2d_asym_kernel, grid, args, args["C_in"],
               dict(TAPS=taps, ALONG_W=kh == 1, SH=stride[0], SW=stride[1], PH=padding[0],
                    PW=padding[1], **flags))
        return
    meta = dict(TAPS=taps, SHIFT=shift, ALONG_W=kh == 1, **flags)
    if interpreter_on():  # one problem-sized tile, at least as tall as the halo needs
        tiles = interpreter_tiles(args["M"], args["C_out"], args["C_in"])
        tiles["BLOCK_M"] = max(tiles["BLOCK_M"], triton.next_power_of_2((taps - 1) * shift))
        _conv2d_asym_halo_kernel.fn[grid](**args, **meta, **tiles)
    else:
        _conv2d_asym_halo_kernel[grid](**args, **meta)
