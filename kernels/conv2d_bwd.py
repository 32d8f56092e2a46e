"""Backward of a 2-D convolution (no bias, no dilation, no groups) as implicit GEMMs.

    conv2d_dgrad(grad_y, weight, input_hw, stride=, padding=) -> grad_x   (= torch.nn.grad.conv2d_input)
    conv2d_wgrad(x, grad_y, kernel_size, stride=, padding=)   -> grad_w   (= torch.nn.grad.conv2d_weight)

No im2col buffer is ever materialized: each kernel computes the input/output pixel a tap
touches from its flat GEMM index and loads straight from the 4-D tensors (any strides, so a
channel slice of a channels_last concat output works as grad_y without a copy). Accumulation
is fp32; fp32 inputs use IEEE dots (no TF32) so results match torch to ~1e-5.

dgrad  GEMM  M = N*H*W input pixels, N = C_in, K = C_out per tap, one pipelined loop over
       (C_out block, tap) steps; B is the forward's packed weight read transposed.
       For stride s > 1 the pixels are split into s_h*s_w phases (ih % s_h, iw % s_w), one
       grid axis each: inside one phase exactly the taps r with (ih + pad - r) % s == 0 land on
       an output pixel, so they are iterated directly and no MMA is spent on a tap that misses.
       Pixels that no output reaches (e.g. the last row of a stride-2, pad-0 conv) get 0.
wgrad  GEMM  M = C_out, N = C_in per tap, K = N*OH*OW (large): split-K over K into fp32
       partial buffers; the last split of each tile to finish sums them in split order and
       rounds once into the weight's dtype and layout, in the same launch (deterministic: a
       fixed order, whichever split comes last); one split: the GEMM kernel stores into the
       gradient itself. IN_BN: x is a deferred unit's pre-BN output, each x tile becomes
       relu(a*x + c) as it loads; with a C_in tile of >= 64 that tile is the dot's A operand
       (X_IS_A: grad_w^T = x'^T grad_y^T, A in registers keeps wgmma asynchronous).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import dtypes
from .conv_common import (bn_relu_operand, channel_mask, pack_weight, use_ieee, vec_of, vec_scale,
                          vec_strides)
from .sizes import conv_out_size
from .configs import autotuned, size_pruner, sm_count
from .last_program import arrival_counters, arrive_last
from .dtypes import check_bn_vectors, check_kernel_dtype, interpreter_on

_INTERPRET = interpreter_on()


def _interp_tiles(m, n, k, max_m, max_n, max_k):
    """One config for the interpreter, sized to the GEMM (m x n, reduction k): its cost is per
    executed op plus per element, so few large programs (32^3 tiles made Mixed_5b's 1x1 dgrad
    at 36x36 16x slower)."""
    def fit(v, cap):
        return max(16, min(cap, triton.next_power_of_2(v)))
    return dict(BLOCK_M=fit(m, max_m), BLOCK_N=fit(n, max_n), BLOCK_K=fit(k, max_k))


def _launch(kernel, grid, args, meta, tiles):
    """Autotuned launch on a GPU; under the interpreter, the plain kernel with `tiles`."""
    if _INTERPRET:
        kernel.fn[grid](*args, **meta, **tiles)
    else:
        kernel[grid](*args, **meta)


# dgrad: one (pixels of a phase x C_in) grid per stride phase, reduced over C_out per tap.
# wgrad: one (C_out x C_in) grid per tap and K split, reduced over its split of the pixels.
_DGRAD_GEMM = size_pruner(lambda a: (a["N"] * a["HP"] * a["WP"], a["C_in"], a["C_out"],
                                     a["SH"] * a["SW"]))
_WGRAD_GEMM = size_pruner(lambda a: (a["C_out"], a["C_in"], a["K_PER_SPLIT"],
                                     a["KH"] * a["KW"] * -(-a["K_TOTAL"] // a["K_PER_SPLIT"])))


@autotuned(key=["N", "H", "W", "C_in", "C_out", "KH", "KW", "SH", "SW", "PH", "PW"],
           by_size=_DGRAD_GEMM)
@triton.jit
def _dgrad_kernel(gy_ptr, w_ptr, gx_ptr,
                  N, H, W, C_in, C_out, OH, OW, HP, WP,
                  s_gyn, s_gyc, s_gyh, s_gyw,
                  s_gxn, s_gxc, s_gxh, s_gxw,
                  KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                  PH: tl.constexpr, PW: tl.constexpr, PREC: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """grad_x[n, ci, ih, iw] = sum_{r, s, co} grad_y[n, co, oh, ow] * w[r, s, ci, co], with
    oh = (ih + PH - r) / SH exact. `w` is the forward's packed weight [KH*KW*C_in, C_out]
    (conv_common.pack_weight), read transposed: a tap's B tile is contiguous along C_out, the
    reduction axis, so no per-step repacking or flipping. Program (pid_m, pid_n, phase) owns a
    BLOCK_M tile of the pixels of one stride phase (a sub-grid of HP x WP) and a BLOCK_N tile
    of C_in. One K loop over (C_out block, tap of this phase) steps, taps innermost, so the
    pipeliner sees every step of the reduction (as conv_common.window_step)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    phase = tl.program_id(2)
    ph_h = phase // SW
    ph_w = phase % SW

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = offs_m // (HP * WP)
    rem = offs_m % (HP * WP)
    ih = (rem // WP) * SH + ph_h
    iw = (rem % WP) * SW + ph_w
    m_ok = (offs_m < N * HP * WP) & (ih < H) & (iw < W)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < C_in
    offs_k = tl.arange(0, BLOCK_K)
    gy_n = gy_ptr + n.to(tl.int64) * s_gyn

    # Only the taps congruent to this phase hit an output pixel (the division below is exact):
    # r = r0, r0 + SH, ... (NR of them), s likewise.
    r0 = (ph_h + PH) % SH
    s0 = (ph_w + PW) % SW
    NS = tl.cdiv(KW - s0, SW)
    taps = tl.cdiv(KH - r0, SH) * NS
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kk in range(0, taps * tl.cdiv(C_out, BLOCK_K)):
        kb = kk // taps
        t = kk - kb * taps
        r = r0 + (t // NS) * SH
        s = s0 + (t % NS) * SW
        oh = (ih + PH - r) // SH
        ow = (iw + PW - s) // SW
        ok = m_ok & (ih + PH - r >= 0) & (oh < OH) & (iw + PW - s >= 0) & (ow < OW)
        co = kb * BLOCK_K + offs_k
        k_ok = co < C_out
        a = tl.load((gy_n + oh * s_gyh + ow * s_gyw)[:, None] + (co * s_gyc)[None, :],
                    mask=ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(w_ptr + ((r * KW + s) * C_in + offs_n)[None, :] * C_out + co[:, None],
                    mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PREC)

    gx = gx_ptr + n.to(tl.int64) * s_gxn + ih * s_gxh + iw * s_gxw
    tl.store(gx[:, None] + offs_n[None, :] * s_gxc, acc.to(gx_ptr.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


@autotuned(key=["N", "H", "W", "C_in", "C_out", "KH", "KW", "SH", "SW", "PH", "PW", "K_PER_SPLIT",
                "IN_BN", "VEC"], by_size=_WGRAD_GEMM)
@triton.jit
def _wgrad_kernel(x_ptr, gy_ptr, part_ptr, out_ptr, counter_ptr, ain_ptr, cin_ptr,
                  N, H, W, C_in, C_out, OH, OW, K_TOTAL, K_PER_SPLIT,
                  s_xn, s_xc, s_xh, s_xw,
                  s_gyn, s_gyc, s_gyh, s_gyw,
                  s_pk, s_po, s_pi, s_pr, s_ps,
                  s_oo, s_oi, s_or, s_os,
                  KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                  PH: tl.constexpr, PW: tl.constexpr, PREC: tl.constexpr,
                  SPLIT_SUM: tl.constexpr, IN_BN: tl.constexpr, VEC: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """part[split, co, ci, r, s] = sum over output pixels p in this split's K range of
    grad_y[n, co, oh, ow] * x[n, ci, oh*SH - PH + r, ow*SW - PW + s] (0 where out of bounds).
    Program (pid_m, pid_n, split): a BLOCK_M tile of C_out x a BLOCK_N tile of C_in of one tap
    (pid_n = tap * ci_blocks + ci_block), over K range [split*K_PER_SPLIT, +K_PER_SPLIT).
    part: strides s_pk (split), s_po, s_pi, s_pr, s_ps, any float dtype (one split: the
    caller's gradient tensor itself, in the weight's dtype and layout).
    SPLIT_SUM (several splits, part fp32): the last split of each tile to finish
    (kernels/last_program.py) adds the tile's partials in split order, in fp32, and rounds
    once into out (strides s_oo, s_oi, s_or, s_os: the weight's dtype and layout).
    IN_BN: x is the previous unit's pre-BN output y and the conv's input relu(ain*y + cin)
    (conv_common.bn_relu_operand on each x tile; this program's channels are fixed).
    VEC: x's channels and pixel strides are multiples of VEC (conv_common.vec_of); s_xn, s_xh,
    s_xw come divided by VEC (conv_common.vec_strides)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    s_xn, s_xh, s_xw = vec_scale(s_xn, s_xh, s_xw, VEC)
    ci_blocks = tl.cdiv(C_in, BLOCK_N)
    tap = pid_n // ci_blocks
    r = tap // KW
    s = tap % KW

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < C_out
    offs_n = (pid_n % ci_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = channel_mask(offs_n, C_in, VEC)
    k_lo = pid_k * K_PER_SPLIT
    k_hi = tl.minimum(k_lo + K_PER_SPLIT, K_TOTAL)
    if IN_BN:
        ain = tl.load(ain_ptr + offs_n, mask=n_ok, other=0.0)
        cin = tl.load(cin_ptr + offs_n, mask=n_ok, other=0.0)

    # IN_BN with a C_in tile of >= 64 (wgmma's M): the transformed x tile is the dot's A
    # operand (registers), see below.
    X_IS_A: tl.constexpr = IN_BN and BLOCK_N >= 64
    if X_IS_A:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        p = k0 + tl.arange(0, BLOCK_K)
        p_ok = p < k_hi
        nb = (p // (OH * OW)).to(tl.int64)
        rem = p % (OH * OW)
        oh = rem // OW
        ow = rem % OW
        ih = oh * SH - PH + r
        iw = ow * SW - PW + s
        x_ok = p_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        a = tl.load(gy_ptr + offs_m[:, None] * s_gyc + (nb * s_gyn + oh * s_gyh + ow * s_gyw)[None, :],
                    mask=m_ok[:, None] & p_ok[None, :], other=0.0)
        b_ok = x_ok[:, None] & n_ok[None, :]
        b = tl.load(x_ptr + (nb * s_xn + ih * s_xh + iw * s_xw)[:, None] + offs_n[None, :] * s_xc,
                    mask=b_ok, other=0.0)
        if IN_BN:
            b = bn_relu_operand(b, b_ok, ain, cin)
        if X_IS_A:
            # grad_w^T = x'^T @ grad_y^T: wgmma takes A from registers and stays asynchronous;
            # a computed B operand is stored to shared memory, and each store waits for the
            # previous wgmma to finish (the report's waits=0 in the loop).
            acc = tl.dot(tl.trans(b), tl.trans(a), acc, input_precision=PREC)
        else:
            acc = tl.dot(a, b, acc, input_precision=PREC)
    if X_IS_A:
        acc = tl.trans(acc)

    out = (part_ptr + pid_k.to(tl.int64) * s_pk + r * s_pr + s * s_ps
           + offs_m[:, None].to(tl.int64) * s_po + offs_n[None, :] * s_pi)
    tl.store(out, acc.to(part_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])
    if SPLIT_SUM:
        splits = tl.num_programs(2)
        if arrive_last(counter_ptr + pid_m * tl.num_programs(1) + pid_n, splits):
            # 32 rows at a time: a whole 128 x 128 fp32 tile plus its offsets spilled
            tl.static_assert(BLOCK_M % 32 == 0)
            for m0 in tl.static_range(0, BLOCK_M, 32):
                rows = pid_m * BLOCK_M + m0 + tl.arange(0, 32)
                ok = (rows < C_out)[:, None] & n_ok[None, :]
                tile = r * s_pr + s * s_ps + rows[:, None] * s_po + offs_n[None, :] * s_pi
                total = tl.zeros((32, BLOCK_N), dtype=tl.float32)
                for k in range(0, splits):
                    total += tl.load(part_ptr + k * s_pk + tile, mask=ok, other=0.0,
                                     cache_modifier=".cg")
                tl.store(out_ptr + r * s_or + s * s_os + rows[:, None] * s_oo
                         + offs_n[None, :] * s_oi, total.to(out_ptr.dtype.element_ty), mask=ok)


# ----------------------------------------------------------------------------- launchers


def _pair(v, what, name):
    if isinstance(v, int):
        v = (v, v)
    v = tuple(int(e) for e in v)
    if len(v) != 2:
        raise ValueError(f"{what}: {name} must be an int or a pair, got {v}")
    return v


def _check_tensor(t, what, name):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{what}: {name} must be 4-D, got shape {tuple(t.shape)}")
    check_kernel_dtype(t, what, name)


def _check_operands(a, b, what, a_name, b_name):
    """Both 4-D tensors of a kernel dtype, on one device, where a Triton kernel can run."""
    _check_tensor(a, what, a_name)
    _check_tensor(b, what, b_name)
    if a.device != b.device:
        raise ValueError(f"{what}: {a_name} is on {a.device}, {b_name} on {b.device}")
    dtypes.check_runnable(a, what, a_name)


def _prec(dtype):
    """The forward's dot-precision rule (conv_common.use_ieee: TF32 for fp32 only where torch
    allows it for convolutions); ignored by tl.dot for 16-bit inputs."""
    return "ieee" if use_ieee(dtype) else "tf32"


def _out_size(size, k, stride, pad, what):
    o = conv_out_size(size, k, stride, pad)
    if o <= 0:
        raise ValueError(f"{what}: kernel {k} with padding {pad} does not fit an input of size {size}")
    return o


def conv2d_dgrad(grad_y: torch.Tensor, weight: torch.Tensor, input_hw, *, stride=1, padding=0,
                 packed: torch.Tensor | None = None):
    """Gradient of conv2d w.r.t. its input, equal to torch.nn.grad.conv2d_input.

    grad_y: (N, C_out, OH, OW), any strides (e.g. a channel slice of a channels_last tensor).
    weight: (C_out, C_in, kh, kw), cast to grad_y's dtype. input_hw: (H, W) of the input.
    packed: optionally the forward's pack_weight(weight, grad_y.dtype) (callers cache it per
      weight version: the backward then copies no weight at all).
    Returns grad_x (N, C_in, H, W) in channels_last memory format, dtype of grad_y.
    """
    what = "conv2d_dgrad"
    _check_operands(grad_y, weight, what, "grad_y", "weight")
    sh, sw = _pair(stride, what, "stride")
    ph, pw = _pair(padding, what, "padding")
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"{what}: need stride >= 1 and padding >= 0, got stride {(sh, sw)}, "
                         f"padding {(ph, pw)}")
    H, W = _pair(input_hw, what, "input_hw")
    N, C_out, OH, OW = grad_y.shape
    C_out_w, C_in, KH, KW = weight.shape
    if C_out_w != C_out:
        raise ValueError(f"{what}: grad_y has {C_out} channels but the weight has {C_out_w} "
                         "output channels")
    eoh, eow = _out_size(H, KH, sh, ph, what), _out_size(W, KW, sw, pw, what)
    if (OH, OW) != (eoh, eow):
        raise ValueError(f"{what}: grad_y is {OH}x{OW} but an input of {H}x{W} with kernel {KH}x{KW}, "
                         f"stride {(sh, sw)}, padding {(ph, pw)} gives {eoh}x{eow}")

    grad_x = torch.empty((N, C_in, H, W), dtype=grad_y.dtype, device=grad_y.device,
                         memory_format=torch.channels_last)
    if grad_x.numel() == 0:
        return grad_x
    if grad_y.numel() == 0:
        return grad_x.zero_()
    if packed is None:
        packed = pack_weight(weight, grad_y.dtype)
    elif (tuple(packed.shape) != (KH * KW * C_in, C_out) or not packed.is_contiguous()
          or packed.dtype != grad_y.dtype or packed.device != grad_y.device):
        raise ValueError(f"{what}: packed weight must be a contiguous {grad_y.dtype} "
                         f"[{KH * KW * C_in}, {C_out}] tensor on {grad_y.device}")
    HP, WP = triton.cdiv(H, sh), triton.cdiv(W, sw)

    def grid(meta):
        return (triton.cdiv(N * HP * WP, meta["BLOCK_M"]), triton.cdiv(C_in, meta["BLOCK_N"]), sh * sw)

    _launch(_dgrad_kernel, grid,
            (grad_y, packed, grad_x, N, H, W, C_in, C_out, OH, OW, HP, WP, *grad_y.stride(),
             *grad_x.stride()),
            dict(KH=KH, KW=KW, SH=sh, SW=sw, PH=ph, PW=pw, PREC=_prec(grad_y.dtype)),
            _interp_tiles(N * HP * WP, C_in, C_out, 2048, 256, 256))
    return grad_x


def _split_k(k_total, tiles, device):
    """How many K chunks: enough programs to fill the GPU (~4 per SM) while each chunk keeps
    >= 1024 pixels so the partial buffers and their sum stay small next to the GEMM."""
    sms = sm_count(device)
    if sms is None:  # the interpreter runs programs one by one: splits only add some
        return 1
    return max(1, min(triton.cdiv(4 * sms, tiles), triton.cdiv(k_total, 1024), 64))


def conv2d_wgrad(x: torch.Tensor, grad_y: torch.Tensor, kernel_size, *, stride=1, padding=0,
                 split_k: int | None = None, out: torch.Tensor | None = None,
                 in_bn: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Gradient of conv2d w.r.t. its weight, equal to torch.nn.grad.conv2d_weight; with in_bn
    = (a, c) (float32 [C_in]) that of the conv of relu(a*x + c) (conv2d_fwd's in_bn).

    x: (N, C_in, H, W), any layout; grad_y: (N, C_out, OH, OW), any strides, same dtype as x.
    Returns grad_w (C_out, C_in, kh, kw), float32, contiguous, or written into `out` (any
    floating dtype and strides; the fp32 sum rounded once) and returned. `split_k` (optional)
    forces the number of K chunks; by default it is chosen from the shape.
    """
    what = "conv2d_wgrad"
    _check_operands(x, grad_y, what, "x", "grad_y")
    if x.dtype != grad_y.dtype:
        raise TypeError(f"{what}: x is {x.dtype} but grad_y is {grad_y.dtype}; they must match")
    check_bn_vectors(in_bn, x, what)
    KH, KW = _pair(kernel_size, what, "kernel_size")
    sh, sw = _pair(stride, what, "stride")
    ph, pw = _pair(padding, what, "padding")
    if KH < 1 or KW < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"{what}: need kernel_size, stride >= 1 and padding >= 0, got "
                         f"{(KH, KW)}, {(sh, sw)}, {(ph, pw)}")
    N, C_in, H, W = x.shape
    N_g, C_out, OH, OW = grad_y.shape
    if N_g != N:
        raise ValueError(f"{what}: x has batch {N} but grad_y has batch {N_g}")
    eoh, eow = _out_size(H, KH, sh, ph, what), _out_size(W, KW, sw, pw, what)
    if (OH, OW) != (eoh, eow):
        raise ValueError(f"{what}: grad_y is {OH}x{OW} but x of {H}x{W} with kernel {KH}x{KW}, "
                         f"stride {(sh, sw)}, padding {(ph, pw)} gives {eoh}x{eow}")

    k_total = N * OH * OW
    if out is not None and (not isinstance(out, torch.Tensor) or out.shape != (C_out, C_in, KH, KW)
                            or not out.is_floating_point() or out.device != x.device):
        raise ValueError(f"{what}: out must be a floating-point ({C_out}, {C_in}, {KH}, {KW}) "
                         f"tensor on {x.device}")
    if C_out * C_in == 0 or k_total == 0:
        zero = torch.zeros((C_out, C_in, KH, KW), dtype=torch.float32, device=x.device)
        return zero if out is None else out.copy_(zero)
    if split_k is None:
        split_k = _split_k(k_total, triton.cdiv(C_out, 64) * triton.cdiv(C_in, 64) * KH * KW, x.device)
    split_k = max(1, min(int(split_k), k_total))
    k_per_split = triton.cdiv(k_total, split_k)
    k_per_split = triton.cdiv(k_per_split, 128) * 128  # whole BLOCK_K steps for every config
    split_k = triton.cdiv(k_total, k_per_split)
    if split_k == 1 and out is not None:  # the kernel writes (and casts) the result itself
        part, split_stride = out, 0
    else:
        part = torch.empty((split_k, C_out, C_in, KH, KW), dtype=torch.float32, device=x.device)
        split_stride = part.stride(0)
    if split_k > 1:
        # The last split of each tile sums the tile's partials and casts into `out` (any
        # dtype, any layout: the weight's own, so autograd's accumulation takes it as it is).
        # torch.sum into a bf16 `out` would round each partial to bf16 before adding.
        if out is None:
            out = torch.empty((C_out, C_in, KH, KW), dtype=torch.float32, device=x.device)
        # enough for the smallest tile any config or the interpreter uses (16 x 16)
        counters = arrival_counters(x.device, triton.cdiv(C_out, 16) * triton.cdiv(C_in, 16) * KH * KW)
    else:
        counters = part
    dest = out if out is not None else part[0]

    def grid(meta):
        ci_blocks = triton.cdiv(C_in, meta["BLOCK_N"])
        return (triton.cdiv(C_out, meta["BLOCK_M"]), KH * KW * ci_blocks, split_k)

    ain, cin = in_bn if in_bn is not None else (x, x)  # unused without IN_BN
    vec = vec_of(x)
    _launch(_wgrad_kernel, grid,
            (x, grad_y, part, dest, counters, ain, cin, N, H, W, C_in, C_out, OH, OW, k_total, k_per_split,
             *vec_strides(x, vec), *grad_y.stride(), split_stride, *part.stride()[-4:], *dest.stride()),
            dict(KH=KH, KW=KW, SH=sh, SW=sw, PH=ph, PW=pw, PREC=_prec(x.dtype),
                 SPLIT_SUM=split_k > 1, IN_BN=in_bn is not None, VEC=vec),
            {**_interp_tiles(C_out, C_in, k_per_split, 256, 256, 1024),
             "BLOCK_M": max(32, _interp_tiles(C_out, 1, 1, 256, 1, 1)["BLOCK_M"])})
    return dest
