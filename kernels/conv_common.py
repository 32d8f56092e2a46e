"""What the implicit-GEMM conv kernels share (forward, asymmetric, conv + pool, the routed 1x1
GEMM): the tile of a program, the dot and its precision rule, the BN-statistics epilogue and
strided NHWC store, weight packing, config pruning by problem size and the launch helper that
swaps autotuning for one problem-sized config under the interpreter."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .configs import size_pruner
from .dtypes import interpreter_on
from .nhwc import row_offsets

# Rows of y per BN-statistics partial. Fixed (not the tile height) so that the partials'
# layout does not depend on which autotune config ran; every BLOCK_M is a multiple of it (the
# smallest conv / 1x1 GEMM tile is 64 rows). The partials (sum and M2, fp32) cost 8 bytes per
# channel per group, written by the conv and read by the finalize: at 64 rows, 1/16 of a
# bf16 output's bytes (1/8 at 32).
STAT_ROWS = 64

# The forward convs' GEMM, per tap: output pixels x C_out, reduced over C_in.
prune_configs = size_pruner(lambda a: (a["M"], a["C_out"], a["C_in"], 1))


def interpreter_tiles(m: int, c_out: int, k: int) -> dict:
    """One config for the interpreter, sized to the problem: its cost is per executed op, not
    per element, so the biggest tiles numpy handles comfortably (few programs, few K steps)."""
    return dict(BLOCK_M=max(64, min(1024, triton.next_power_of_2(m))),
                BLOCK_N=max(16, min(256, triton.next_power_of_2(c_out))),
                BLOCK_K=max(16, min(128, triton.next_power_of_2(k))))


def launch(kernel, grid, args, k: int, meta: dict):
    """Autotuned launch on a GPU; under the interpreter, the plain kernel with one config."""
    if interpreter_on():
        tiles = interpreter_tiles(args["M"], args["C_out"], k)
        kernel.fn[grid](**args, **meta, **tiles)
    else:
        kernel[grid](**args, **meta)


@triton.jit
def gemm_tile(M, N_cols, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              BLOCK_K: tl.constexpr):
    """This program's tile of a 1-D grid over (M tiles x N tiles), N fastest so that
    consecutive programs reuse the same input rows from L2: (pid_m, row offsets, column
    offsets, K offsets, row mask, column mask)."""
    pid = tl.program_id(0)
    num_n = tl.cdiv(N_cols, BLOCK_N)
    pid_m = pid // num_n
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = (pid % num_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    return pid_m, offs_m, offs_n, tl.arange(0, BLOCK_K), offs_m < M, offs_n < N_cols


@triton.jit
def window_step(kk, x_rows, w_ptr, ih0, iw0, m_ok, offs_k, offs_n, n_ok, H, W, C_in, C_out,
                sxc, sxh, sxw, ain_ptr, cin_ptr, KW: tl.constexpr, TAPS: tl.constexpr,
                BLOCK_K: tl.constexpr, IN_BN: tl.constexpr, VEC: tl.constexpr):
    """Step kk of the one flattened K loop of an implicit-GEMM conv, over (channel block,
    tap) with the tap innermost: the A tile (for each output row, the input pixel under tap
    t = (r, s), channels cb * BLOCK_K ...), the B tile (those rows of the [TAPS * C_in, C_out]
    packed weight), the tap and the channels. One loop of TAPS * ceil(C_in / BLOCK_K) steps is
    what Triton's pipeliner can overlap (cp.async stages, async wgmma); a tap loop around a
    channel loop gave one short pipeline per tap, each drained. Taps innermost: consecutive
    steps read overlapping windows (L1 / L2 reuse), and a max over a channel block's taps is
    complete every TAPS steps (conv3x3s2_pool). x_rows: x's address of each row's window
    origin (ih0, iw0), which may lie in the padding (the mask covers it).
    IN_BN: x is the previous unit's pre-BN output; the A tile is relu(ain*x + cin) per channel
    (bn_relu_operand), 0 in the padding. VEC > 1: C_in and the pixel strides are multiples of
    VEC (the caller's strides are vec_strides' times VEC, so the compiler knows it), and a
    row's VEC channels load as one vector (C_in = 8, the zero-padded image, is not a multiple
    of the 16 that Triton's argument specialization detects)."""
    cb = kk // TAPS
    t = kk - cb * TAPS
    r = t // KW
    s = t - r * KW
    c = cb * BLOCK_K + offs_k
    ih = ih0 + r
    iw = iw0 + s
    row_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    k_ok = channel_mask(c, C_in, VEC)
    a_ok = row_ok[:, None] & k_ok[None, :]
    a = tl.load(x_rows[:, None] + (r * sxh + s * sxw) + (c * sxc)[None, :], mask=a_ok, other=0.0)
    if IN_BN:
        a = bn_relu_operand(a, a_ok, tl.load(ain_ptr + c, mask=k_ok, other=0.0),
                            tl.load(cin_ptr + c, mask=k_ok, other=0.0))
    b = tl.load(w_ptr + (t * C_in + c)[:, None] * C_out + offs_n[None, :],
                mask=k_ok[:, None] & n_ok[None, :], other=0.0)
    return a, b, t, c


@triton.jit
def channel_mask(c, C, VEC: tl.constexpr):
    """c < C, written (when C is a multiple of VEC) so that the compiler sees the mask constant
    over each aligned group of VEC channels: masked loads stay vector loads."""
    if VEC > 1:
        return (c // VEC) * VEC < C
    else:
        return c < C


def vec_of(x: torch.Tensor) -> int:
    """The VEC constexpr for an NHWC operand x: 8 when its channels and pixel strides are
    multiples of 8 but its channels not of 16 (Triton specializes multiples of 16 itself),
    else 1."""
    c = x.shape[1]
    pixel = (x.stride(0), x.stride(2), x.stride(3))
    # the kernel multiplies the divided strides back in int32: keep them below 2**31
    aligned = x.stride(1) == 1 and all(s % 8 == 0 and s < 2 ** 31 for s in pixel)
    return 8 if aligned and c % 8 == 0 and c % 16 != 0 else 1


def vec_strides(x: torch.Tensor, vec: int) -> tuple[int, int, int, int]:
    """x's (n, c, h, w) strides as a kernel taking VEC = vec expects them: the pixel strides
    divided by vec (the kernel multiplies them back, vec_scale, which tells the compiler that
    every pixel offset is a multiple of vec: tl.multiple_of on a value a @triton.jit helper
    receives is lost at its argument), the channel stride as it is."""
    n, c, h, w = x.stride()
    return n // vec, c, h // vec, w // vec


@triton.jit
def vec_scale(sn, sh, sw, VEC: tl.constexpr):
    """The pixel strides vec_strides divided, multiplied back by VEC (a constant)."""
    return sn * VEC, sh * VEC, sw * VEC


@triton.jit
def bn_relu_operand(v, ok, a, c):
    """A conv operand tile read from the previous unit's pre-BN output v (channels on axis
    1): relu(a*v + c) with that unit's BN coefficients a, c (fp32 per channel), rounded to v's
    dtype as its BN-apply kernel would have stored it (kernels/bn_train.py), and 0 where `ok`
    is false (the conv's zero padding pads the activation, not v). The activation is never
    written: the conv reads y where it would have read relu(bn(y)) (ops/conv_bn_relu_triton.py,
    in_bn)."""
    z = tl.maximum(v.to(tl.float32) * a[None, :] + c[None, :], 0.0)
    return tl.where(ok, z, 0.0).to(v.dtype)


@triton.jit
def mma(a, b, acc, IEEE: tl.constexpr):
    """acc += a @ b; IEEE: full fp32 products (no TF32), see use_ieee."""
    if IEEE:
        acc = tl.dot(a, b, acc, input_precision="ieee")
    else:
        acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def store_group_stats(acc, m_ok, offs_n, n_ok, pid_m, M, C, psum_ptr, pm2_ptr,
                      STAT_R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """BN partial statistics of an fp32 [BLOCK_M, BLOCK_N] tile (rows m < M valid): per group
    of STAT_R rows, the sum and M2 = sum of squared deviations from the group mean, stored at
    row pid_m * (BLOCK_M // STAT_R) + group of the [ceil(M / STAT_R), C] partial buffers."""
    G: tl.constexpr = BLOCK_M // STAT_R
    valid = m_ok.to(tl.float32)
    acc3 = tl.reshape(acc * valid[:, None], (G, STAT_R, BLOCK_N))
    valid3 = tl.reshape(valid, (G, STAT_R))
    cnt = tl.sum(valid3, axis=1)
    gsum = tl.sum(acc3, axis=1)
    gmean = gsum / tl.maximum(cnt, 1.0)[:, None]
    dev = (acc3 - gmean[:, None, :]) * valid3[:, :, None]
    gm2 = tl.sum(dev * dev, axis=1)
    rows = pid_m * G + tl.arange(0, G)
    p_off = rows[:, None].to(tl.int64) * C + offs_n[None, :]
    p_mask = (rows < tl.cdiv(M, STAT_R))[:, None] & n_ok[None, :]
    tl.store(psum_ptr + p_off, gsum, mask=p_mask)
    tl.store(pm2_ptr + p_off, gm2, mask=p_mask)


@triton.jit
def conv_epilogue(acc, offs_m, offs_n, pid_m, M, C_out, OH, OW,
                  y_ptr, syn, syc, syh, syw, bias_ptr, psum_ptr, pm2_ptr,
                  HAS_BIAS: tl.constexpr, RELU: tl.constexpr, STATS: tl.constexpr,
                  STAT_R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Shared by the conv kernels: bias/ReLU or BN partial statistics, then the strided store."""
    m_ok = offs_m < M
    n_ok = offs_n < C_out
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        acc = acc + bias[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    if STATS:
        store_group_stats(acc, m_ok, offs_n, n_ok, pid_m, M, C_out, psum_ptr, pm2_ptr, STAT_R,
                          BLOCK_M, BLOCK_N)
    y_row = row_offsets(offs_m, OH, OW, syn, syh, syw)
    y_ptrs = y_ptr + y_row[:, None] + offs_n[None, :] * syc
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def pack_weight(weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(C_out, C_in, kh, kw) -> contiguous [kh*kw*C_in, C_out] (the GEMM's K x N operand)."""
    co, ci, kh, kw = weight.shape
    w = weight.detach().permute(2, 3, 1, 0).reshape(kh * kw * ci, co)
    return w.to(dtype or weight.dtype).contiguous()


def use_ieee(dtype: torch.dtype) -> bool:
    """fp32 dots in full precision unless torch itself allows TF32 for convolutions (cuDNN
    default), so that backend="triton" matches what the reference computes."""
    return dtype == torch.float32 and not torch.backends.cudnn.allow_tf32
