"""What the implicit-GEMM conv kernels share (forward, asymmetric, conv + pool, the routed 1x1
GEMM): the tile of a program, the dot and its precision rule, the BN-statistics epilogue and
strided NHWC store, weight packing, config pruning by problem size and the launch helper that
swaps autotuning for one problem-sized config under the interpreter."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dtypes import interpreter_on

# Rows of y per BN-statistics partial. Fixed (not the tile height) so that the partials'
# layout does not depend on which autotune config ran; every BLOCK_M is a multiple of it.
STAT_ROWS = 32

def prune_configs(configs, named_args, **kwargs):
    """Drop tiles much larger than the problem (a 128-wide tile for 32 channels only idles).
    Triton passes positional arguments in named_args and keyword ones in kwargs."""
    args = {**named_args, **kwargs}
    c_out, c_in, m = args["C_out"], args["C_in"], args["M"]
    kept = [c for c in configs
            if c.kwargs["BLOCK_N"] <= max(32, triton.next_power_of_2(c_out))
            and c.kwargs["BLOCK_K"] <= max(32, triton.next_power_of_2(c_in))
            and c.kwargs["BLOCK_M"] <= max(64, triton.next_power_of_2(m))]
    return kept or configs[:1]


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
    ohw = OH * OW
    n_idx = (offs_m // ohw).to(tl.int64)
    rem = offs_m % ohw
    oh = rem // OW
    ow = rem % OW
    y_row = n_idx * syn + oh * syh + ow * syw
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
