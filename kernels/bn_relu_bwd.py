"""Backward of out = relu(a * y + c) followed by BatchNorm's backward, in two passes.

The forward (conv -> BN -> ReLU) keeps only y, the pre-BN conv output, and the per-channel
affine it applied (a = gamma * invstd, c = beta - mean * a, or the folded eval values). The
ReLU mask is recomputed from y, so no mask tensor is ever stored:

    dz = grad_out * (a * y + c > 0)

1. bn_relu_bwd_reduce(grad_out, y, a, c, shift=mean) -> (sum_dz, sum_dz_yc), float32 [C],
   yc = y - shift, one read of grad_out and y (per-program partial sums, then a tiny torch sum
   over programs).
2. bn_relu_bwd_coefficients(...) does 1 and, in the same launch, the last program of each
   channel tile to finish (kernels/last_program.py) adds the partials in a fixed order and
   turns the sums into BN's gradients (M = N * H * W, per channel):

   train (batch statistics mean, invstd = 1 / sqrt(var + eps); shift = mean):
       grad_beta  = sum_dz
       grad_gamma = sum_dz_yc * invstd
       k1 = gamma * invstd
       k2 = -gamma * invstd**2 * grad_gamma / M
       k3 = -gamma * invstd * sum_dz / M
   eval (running statistics are constants; shift = running_mean):
       grad_beta = sum_dz, grad_gamma = sum_dz_yc * invstd
       k1 = a, k2 = k3 = 0

3. bn_relu_bwd_apply(grad_out, y, a, c, k1, k2, k3, shift=mean) -> grad_y = k1 * dz +
   k2 * (y - shift) + k3, the gradient w.r.t. the conv output, channels_last, dtype of y.

Why the shift: with an uncentered y (|mean| >> std, e.g. a conv of post-ReLU inputs) the
algebraically equal sum_dz_y - mean * sum_dz and k2 * y + k3' cancel catastrophically in fp32
(measured: 4x torch's own weight-gradient error at |mean|/std ~ 500); centering in the kernel
costs one subtraction and matches what torch's BN backward computes. shift=None means 0.

grad_out may be any strided view (a channel slice of a channels_last concat gradient);
y may have any strides too (channels_last is the fast case).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import dtypes
from .configs import sm_count
from .dtypes import check_kernel_dtype, interpreter_on
from .last_program import arrival_counters, arrive_last
from .max_pool3x3s2 import pool_grad_gather
from .nhwc import nhwc_out, pixel_coords, row_offsets
from .sizes import pool3x3s2_out_hw

_INTERPRET = interpreter_on()


@triton.jit
def _coefficients(part_ptr, P, C, offs_c, c_ok, count, a_ptr, invstd_ptr, gamma_ptr,
                  k1_ptr, k2_ptr, k3_ptr, gg_ptr, gb_ptr,
                  TRAINING: tl.constexpr, HAS_GAMMA: tl.constexpr,
                  BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Adds the P partials of one channel tile in a fixed order (.cg: they were written by
    other programs) and writes BN's gradients (module doc, step 2): k1, k2, k3, grad_gamma,
    grad_beta."""
    s_dz = tl.zeros((BLOCK_C,), dtype=tl.float32)
    s_dzy = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for p0 in range(0, P, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        mask = (p < P)[:, None] & c_ok[None, :]
        off = p[:, None] * C + offs_c[None, :]
        s_dz += tl.sum(tl.load(part_ptr + off, mask=mask, other=0.0, cache_modifier=".cg"),
                       axis=0)
        s_dzy += tl.sum(tl.load(part_ptr + P * C + off, mask=mask, other=0.0,
                                cache_modifier=".cg"), axis=0)
    invstd = tl.load(invstd_ptr + offs_c, mask=c_ok, other=0.0)
    grad_gamma = s_dzy * invstd
    if TRAINING:
        if HAS_GAMMA:
            k1 = tl.load(gamma_ptr + offs_c, mask=c_ok, other=0.0) * invstd
        else:
            k1 = invstd
        k2 = -k1 * invstd * grad_gamma / count
        k3 = -k1 * s_dz / count
    else:
        k1 = tl.load(a_ptr + offs_c, mask=c_ok, other=0.0)
        k2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
        k3 = tl.zeros((BLOCK_C,), dtype=tl.float32)
    tl.store(k1_ptr + offs_c, k1, mask=c_ok)
    tl.store(k2_ptr + offs_c, k2, mask=c_ok)
    tl.store(k3_ptr + offs_c, k3, mask=c_ok)
    tl.store(gg_ptr + offs_c, grad_gamma, mask=c_ok)
    tl.store(gb_ptr + offs_c, s_dz, mask=c_ok)


@triton.jit
def _grad_tile(g_ptr, idx_ptr, m, M, H, W, OH, OW, offs_c, c_ok, C, s_gn, s_gc, s_gh, s_gw,
               POOL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """The gradient of the unit's output at flat pixels m, fp32. POOL: the unit is followed by
    a 3x3 / stride-2 max pool fused into its forward (kernels/max_pool3x3s2.py): g is the
    pool's output gradient and idx its argmax, gathered here, so the full-size gradient is
    never written nor read back."""
    mask = (m < M)[:, None] & c_ok[None, :]
    if POOL:
        n, h, w = pixel_coords(m, H, W)
        g = pool_grad_gather(g_ptr, idx_ptr, n, h, w, offs_c, m < M, c_ok, C, OH, OW,
                             s_gn, s_gc, s_gh, s_gw, BLOCK_M, BLOCK_C)
    else:
        g = tl.load(g_ptr + row_offsets(m, H, W, s_gn, s_gh, s_gw)[:, None]
                    + offs_c[None, :] * s_gc, mask=mask, other=0.0).to(tl.float32)
    return g


@triton.jit
def _bn_relu_bwd_reduce_kernel(g_ptr, idx_ptr, y_ptr, a_ptr, c_ptr, s_ptr, part_ptr,
                               M, C, H, W, OH, OW,
                               s_gn, s_gc, s_gh, s_gw,
                               s_yn, s_yc, s_yh, s_yw,
                               counter_ptr, count, invstd_ptr, gamma_ptr,
                               k1_ptr, k2_ptr, k3_ptr, gg_ptr, gb_ptr,
                               COEF: tl.constexpr, TRAINING: tl.constexpr,
                               HAS_GAMMA: tl.constexpr, POOL: tl.constexpr,
                               BLOCK_P: tl.constexpr,
                               BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """Program (pid_m, pid_c) walks pixel tiles pid_m, pid_m + P, ... (grid-stride) of one
    channel tile and writes its partial sums of dz and dz*(y - shift) to part[0|1, pid_m,
    channel]. COEF: the last program of each channel tile to finish (kernels/last_program.py)
    then turns the P partials into the coefficients (_coefficients), in this same launch."""
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    P = tl.num_programs(0)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    a = tl.load(a_ptr + offs_c, mask=c_ok, other=0.0)
    c = tl.load(c_ptr + offs_c, mask=c_ok, other=0.0)
    shift = tl.load(s_ptr + offs_c, mask=c_ok, other=0.0)
    acc_dz = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    acc_dzy = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    for m0 in range(pid_m * BLOCK_M, M, P * BLOCK_M):
        m = m0 + tl.arange(0, BLOCK_M)
        mask = (m < M)[:, None] & c_ok[None, :]
        g = _grad_tile(g_ptr, idx_ptr, m, M, H, W, OH, OW, offs_c, c_ok, C, s_gn, s_gc, s_gh,
                       s_gw, POOL, BLOCK_M, BLOCK_C)
        y = tl.load(y_ptr + row_offsets(m, H, W, s_yn, s_yh, s_yw)[:, None] + offs_c[None, :] * s_yc,
                    mask=mask, other=0.0).to(tl.float32)
        dz = tl.where(a[None, :] * y + c[None, :] > 0, g, 0.0)
        acc_dz += dz
        acc_dzy += dz * (y - shift[None, :])
    out = part_ptr + pid_m * C + offs_c
    tl.store(out, tl.sum(acc_dz, axis=0), mask=c_ok)
    tl.store(out + P * C, tl.sum(acc_dzy, axis=0), mask=c_ok)
    if COEF:
        if arrive_last(counter_ptr + pid_c, P):
            _coefficients(part_ptr, P, C, offs_c, c_ok, count, a_ptr, invstd_ptr, gamma_ptr,
                          k1_ptr, k2_ptr, k3_ptr, gg_ptr, gb_ptr, TRAINING, HAS_GAMMA,
                          BLOCK_P, BLOCK_C)


@triton.jit
def _bn_relu_bwd_apply_kernel(g_ptr, idx_ptr, y_ptr, a_ptr, c_ptr, k1_ptr, k2_ptr, k3_ptr, s_ptr,
                              o_ptr, M, C, H, W, OH, OW,
                              s_gn, s_gc, s_gh, s_gw,
                              s_yn, s_yc, s_yh, s_yw,
                              s_on, s_oc, s_oh, s_ow, POOL: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """grad_y = k1 * dz + k2 * (y - shift) + k3 on one (BLOCK_M pixels, BLOCK_C channels) tile."""
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    a = tl.load(a_ptr + offs_c, mask=c_ok, other=0.0)[None, :]
    c = tl.load(c_ptr + offs_c, mask=c_ok, other=0.0)[None, :]
    k1 = tl.load(k1_ptr + offs_c, mask=c_ok, other=0.0)[None, :]
    k2 = tl.load(k2_ptr + offs_c, mask=c_ok, other=0.0)[None, :]
    k3 = tl.load(k3_ptr + offs_c, mask=c_ok, other=0.0)[None, :]
    shift = tl.load(s_ptr + offs_c, mask=c_ok, other=0.0)[None, :]
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask = (m < M)[:, None] & c_ok[None, :]
    g = _grad_tile(g_ptr, idx_ptr, m, M, H, W, OH, OW, offs_c, c_ok, C, s_gn, s_gc, s_gh, s_gw,
                   POOL, BLOCK_M, BLOCK_C)
    y = tl.load(y_ptr + row_offsets(m, H, W, s_yn, s_yh, s_yw)[:, None] + offs_c[None, :] * s_yc,
                mask=mask, other=0.0).to(tl.float32)
    dz = tl.where(a * y + c > 0, g, 0.0)
    res = k1 * dz + k2 * (y - shift) + k3
    tl.store(o_ptr + row_offsets(m, H, W, s_on, s_oh, s_ow)[:, None] + offs_c[None, :] * s_oc,
             res.to(o_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- launchers


def _check(grad_out, y, vecs, what, pool_argmax=None):
    for name, t in (("grad_out", grad_out), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{what}: {name} must be 4-D (N, C, H, W), got shape {tuple(t.shape)}")
        check_kernel_dtype(t, what, name, gemm=False)
    want = tuple(y.shape)
    if pool_argmax is not None:  # grad_out: the gradient of the max pool after the unit
        want = tuple(y.shape[:2]) + pool3x3s2_out_hw(*y.shape[2:])
        if (min(y.shape[2:]) < 3 or not isinstance(pool_argmax, torch.Tensor)
                or tuple(pool_argmax.shape) != want or pool_argmax.dtype != torch.uint8
                or not pool_argmax.is_contiguous(memory_format=torch.channels_last)
                or pool_argmax.device != y.device):
            raise ValueError(f"{what}: pool_argmax must be the dense uint8 channels_last argmax "
                             f"of a 3x3 / stride-2 pool of y {tuple(y.shape)}")
    if tuple(grad_out.shape) != want:
        raise ValueError(f"{what}: grad_out has shape {tuple(grad_out.shape)}, expected {want} "
                         f"(y has {tuple(y.shape)})")
    dev = y.device
    dtypes.check_runnable(y, what, "y")
    C = y.shape[1]
    for name, t in (("grad_out", grad_out),) + tuple(vecs.items()):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device != dev:
            raise ValueError(f"{what}: {name} is on {t.device}, y on {dev}")
        if name == "grad_out":
            continue
        if t.dtype != torch.float32:
            raise TypeError(f"{what}: {name} must be float32, got {t.dtype}")
        if t.shape != (C,):
            raise ValueError(f"{what}: {name} must have shape ({C},) (one per channel), "
                             f"got {tuple(t.shape)}")


def _blocks(C, pool: bool = False):
    block_c = min(triton.next_power_of_2(C), 64)
    # The interpreter pays per executed op: 4x the GPU tile, so few programs.
    block_m = max((16384 if _INTERPRET else 4096) // block_c, 16)
    if pool and not _INTERPRET:  # the gather holds 4 windows' loads: at 64 rows the reduce /
        block_m //= 2            # apply kernels took 242 / 255 registers, at 32: 164 / 181
    return block_m, block_c


def _checked(grad_out, y, vecs, shift, what, pool_argmax=None):
    """_check, then the shift vector (zeros when None)."""
    if shift is not None:
        vecs = {**vecs, "shift": shift}
    _check(grad_out, y, vecs, what, pool_argmax)
    if shift is None:
        shift = torch.zeros(y.shape[1], dtype=torch.float32, device=y.device)
    return shift.contiguous()


def _pool_args(grad_out, y, pool_argmax) -> dict:
    """The kernels' pool arguments: the argmax and the pooled size (unused without POOL)."""
    if pool_argmax is None:
        return dict(idx_ptr=y, OH=1, OW=1, POOL=False)
    return dict(idx_ptr=pool_argmax, OH=grad_out.shape[2], OW=grad_out.shape[3], POOL=True)


def _partials(grad_out, y, a, c, shift, coef=None, pool_argmax=None):
    """Launches the reduce kernel: per-program partials, float32 [2, P, C], and P. coef: the
    coefficient arguments (counters, count, invstd, gamma, the five outputs, TRAINING,
    HAS_GAMMA), computed by the last program of each channel tile in the same launch."""
    N, C, H, W = y.shape
    M = N * H * W
    block_m, block_c = _blocks(C, pool_argmax is not None)
    c_blocks = triton.cdiv(C, block_c)
    sms = sm_count(y.device)
    if sms is not None:
        target = max(1, (8 * sms) // c_blocks)  # ~8 programs per SM; each loops over its rows
    else:  # the interpreter: one program per channel tile, looping over all row tiles
        target = 1
    P = max(1, min(triton.cdiv(M, block_m), target))  # M = 0: one program storing zeros
    part = torch.empty((2, P, C), dtype=torch.float32, device=y.device)
    if C == 0:
        return part, P
    a = a.contiguous()
    if coef is None:
        vecs = dict(counter_ptr=part, count=1.0, invstd_ptr=a, gamma_ptr=a, k1_ptr=a, k2_ptr=a,
                    k3_ptr=a, gg_ptr=a, gb_ptr=a, COEF=False, TRAINING=False, HAS_GAMMA=False)
    else:
        vecs = dict(coef, counter_ptr=arrival_counters(y.device, c_blocks), COEF=True)
    pool = _pool_args(grad_out, y, pool_argmax)
    _bn_relu_bwd_reduce_kernel[(P, c_blocks)](
        g_ptr=grad_out, idx_ptr=pool["idx_ptr"], y_ptr=y, a_ptr=a, c_ptr=c.contiguous(),
        s_ptr=shift, part_ptr=part, M=M, C=C, H=H, W=W, OH=pool["OH"], OW=pool["OW"],
        **dict(zip(("s_gn", "s_gc", "s_gh", "s_gw", "s_yn", "s_yc", "s_yh", "s_yw"),
                   grad_out.stride() + y.stride())),
        **vecs, POOL=pool["POOL"], BLOCK_P=64 if _INTERPRET else 32,
        BLOCK_M=block_m, BLOCK_C=block_c, num_warps=4)
    return part, P


def bn_relu_bwd_reduce(grad_out: torch.Tensor, y: torch.Tensor, a: torch.Tensor, c: torch.Tensor,
                       shift: torch.Tensor | None = None):
    """Per-channel sum(dz) and sum(dz * (y - shift)), dz = grad_out * (a*y + c > 0), in one pass.

    grad_out, y: (N, C, H, W), any strides; a, c, shift: float32 [C] (shift: the BN mean, see
    the module docstring; None = 0). Returns two float32 [C] (the partials summed by torch;
    bn_relu_bwd_coefficients does it inside the reduce launch, with the rest of BN's backward).
    """
    shift = _checked(grad_out, y, {"a": a, "c": c}, shift, "bn_relu_bwd_reduce")
    sums = _partials(grad_out, y, a, c, shift)[0].sum(1)
    return sums[0], sums[1]


def bn_relu_bwd_coefficients(grad_out: torch.Tensor, y: torch.Tensor, a: torch.Tensor,
                             c: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
                             gamma: torch.Tensor | None = None, *, training: bool = True,
                             grads_out: tuple | None = None,
                             pool_argmax: torch.Tensor | None = None):
    """ReLU + BN backward's per-channel part in one launch: (k1, k2, k3) for
    bn_relu_bwd_apply, grad_gamma and grad_beta, five float32 [C] (module doc, step 2).

    mean, invstd: the statistics the forward normalized with (batch ones when training, the
    running ones in eval, where k1 = a and k2 = k3 = 0); gamma: the BN weight (None = 1).
    grads_out: optional (grad_gamma, grad_beta) float32 [C] contiguous views to write into
    (slices of a wider op's gradients), returned in their places.
    pool_argmax: the unit's output went through a 3x3 / stride-2 max pool (its argmax, from
    max_pool3x3s2_fwd): grad_out is the pool's output gradient, routed here (no pool backward).
    """
    vecs = {"a": a, "c": c, "invstd": invstd}
    if gamma is not None:
        gamma = gamma.detach()
        vecs["gamma"] = gamma = gamma if gamma.dtype == torch.float32 else gamma.float()
    shift = _checked(grad_out, y, vecs, mean, "bn_relu_bwd_coefficients", pool_argmax)
    N, C, H, W = y.shape
    out = [torch.empty(C, dtype=torch.float32, device=y.device) for _ in range(3)]
    if grads_out is None:
        out += [torch.empty(C, dtype=torch.float32, device=y.device) for _ in range(2)]
    else:
        for t in grads_out:
            if (not isinstance(t, torch.Tensor) or t.shape != (C,) or t.dtype != torch.float32
                    or t.device != y.device or not t.is_contiguous()):
                raise ValueError(f"bn_relu_bwd_coefficients: grads_out must be two contiguous "
                                 f"float32 [{C}] tensors on {y.device}")
        out += list(grads_out)
    invstd = invstd.contiguous()
    coef = dict(count=float(max(N * H * W, 1)), invstd_ptr=invstd,
                gamma_ptr=gamma.contiguous() if gamma is not None else invstd,
                **dict(zip(("k1_ptr", "k2_ptr", "k3_ptr", "gg_ptr", "gb_ptr"), out)),
                TRAINING=training, HAS_GAMMA=gamma is not None)
    _partials(grad_out, y, a, c, shift, coef, pool_argmax)
    return tuple(out)


def bn_relu_bwd_apply(grad_out: torch.Tensor, y: torch.Tensor, a: torch.Tensor, c: torch.Tensor,
                      k1: torch.Tensor, k2: torch.Tensor, k3: torch.Tensor,
                      shift: torch.Tensor | None = None, *,
                      out: torch.Tensor | None = None,
                      pool_argmax: torch.Tensor | None = None) -> torch.Tensor:
    """grad_y = k1 * dz + k2 * (y - shift) + k3 per channel, dz = grad_out * (a*y + c > 0).

    grad_out, y: (N, C, H, W), any strides; a, c, k1, k2, k3, shift: float32 [C] (shift None
    = 0). out: optional (N, C, H, W) view of y's dtype to write into (any strides, e.g. a
    channel slice of a larger gradient buffer), else a new channels_last tensor. Returns
    grad_y (out when given) with y's shape and dtype. pool_argmax: as bn_relu_bwd_coefficients.
    """
    shift = _checked(grad_out, y, {"a": a, "c": c, "k1": k1, "k2": k2, "k3": k3}, shift,
                     "bn_relu_bwd_apply", pool_argmax)
    N, C, H, W = y.shape
    M = N * H * W
    out = nhwc_out(out, y.shape, y, "bn_relu_bwd_apply")
    if out.numel() == 0:
        return out
    vecs = [t.contiguous() for t in (a, c, k1, k2, k3)] + [shift]
    block_m, block_c = _blocks(C, pool_argmax is not None)
    grid = (triton.cdiv(M, block_m), triton.cdiv(C, block_c))
    pool = _pool_args(grad_out, y, pool_argmax)
    _bn_relu_bwd_apply_kernel[grid](
        grad_out, pool["idx_ptr"], y, *vecs, out, M, C, H, W, pool["OH"], pool["OW"],
        *grad_out.stride(), *y.stride(), *out.stride(), POOL=pool["POOL"],
        BLOCK_M=block_m, BLOCK_C=block_c, num_warps=4)
    return out
