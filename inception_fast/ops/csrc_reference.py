"""Pure-torch reference of every kernel in inception_fast._C (csrc/), with the same names,
arguments and in-place effects, on any device.

Two uses: it states each CUDA kernel's maths in a few lines of torch (the oracle of the `gpu`
tests in tests/test_cuda_ext.py), and it is a drop-in kernel set that lets the autograd
Functions of conv_bn_relu_cuda.py / grid_reduction.py run on CPU tensors, so their plumbing
(slices, running statistics, gradient routing) is tested without a GPU.

Conventions as in csrc/launchers.h: activations are (N, C, H, W) tensors (the CUDA kernels need
them channels_last); `out`/`grad` arguments with an offset are channel slices of wider tensors;
BN statistics accumulate into fp64 per-channel vectors; scale/shift/mean/invstd are fp32.
Arithmetic is fp32 (the kernels accumulate in fp32) and results are stored in the tensor's dtype.
Like csrc/bindings.cpp, every kernel refuses an output that shares memory with what it reads
(the CUDA kernels read through __restrict__ pointers, so aliasing is undefined there) and a conv
slice overlapping the pool slice of one output, with the same messages.

How the CUDA kernels sum BN statistics (deterministically: no floating-point atomics): each
block reduces its tile in a fixed order into one fp32 partial per (row block, channel), and
reduce_partials adds those in a fixed order (STAT_LANES interleaved fp64 sums, then the lanes
in order) into the fp64 vectors; `partials_sum` below is that second stage, exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ASYM_CONV_MAX_PADDED_LINE = 128  # csrc/asym_conv.cu kMT
ASYM_CONV_MAX_TAPS = 7


def asym_conv_max_padded_line() -> int:
    return ASYM_CONV_MAX_PADDED_LINE


def asym_conv_max_taps() -> int:
    return ASYM_CONV_MAX_TAPS


STAT_LANES = 8  # csrc/bn.cu kPartLanes: fp64 lanes per channel in reduce_partials


def shares_memory(a, b) -> bool:
    """Whether a and b may touch the same bytes: same storage and intersecting byte spans.
    (Meta and other storage-less tensors share nothing.)"""
    if a is None or b is None or a.numel() == 0 or b.numel() == 0:
        return False
    pa, pb = a.untyped_storage().data_ptr(), b.untyped_storage().data_ptr()
    if pa == 0 or pa != pb:
        return False

    def span(t):
        lo = t.storage_offset()
        hi = lo + 1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride()))
        return lo * t.element_size(), hi * t.element_size()

    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def check_no_overlap(a, b, op: str, a_name: str, b_name: str) -> None:
    """csrc/bindings.cpp's check_no_overlap: a kernel's output must not share memory with an
    input it reads (same message)."""
    if shares_memory(a, b):
        raise ValueError(f"{op}: {a_name} shares memory with {b_name} (the kernel reads "
                         f"{b_name} while it writes {a_name}); pass a separate tensor")


def check_slices_disjoint(op: str, a: tuple[int, int], b: tuple[int, int]) -> None:
    """The conv and pool channel slices [off, off + C) of one output must not overlap."""
    (oa, ca), (ob, cb) = a, b
    if oa < ob + cb and ob < oa + ca:
        raise ValueError(f"{op}: conv slice [{oa}, {oa + ca}) and pool slice [{ob}, {ob + cb}) "
                         f"of one output overlap")


def partials_sum(partials: torch.Tensor) -> torch.Tensor:
    """csrc/bn.cu reduce_partials on a (blocks, C) fp32 tensor of per-block partial sums: lane
    l (of STAT_LANES) sums rows l, l + STAT_LANES, ... in fp64 in increasing order, then the
    lanes are added in order 0..STAT_LANES-1. A fixed order: the same partials give the same
    bits whatever order the blocks ran in. Returns fp64 (C,)."""
    p = partials.double()
    lanes = []
    for l in range(STAT_LANES):
        acc = torch.zeros(p.shape[1], dtype=torch.float64, device=p.device)
        for r in range(l, p.shape[0], STAT_LANES):
            acc = acc + p[r]
        lanes.append(acc)
    total = torch.zeros(p.shape[1], dtype=torch.float64, device=p.device)
    for acc in lanes:
        total = total + acc
    return total


def _col(v):
    return v.view(1, -1, 1, 1)


def _epilogue(acc, out, out_offset, sum, sumsq, scale, shift):
    """The conv kernels' epilogue: BN statistics of the fp32 accumulator and/or eval BN + ReLU."""
    if sum is not None:
        sum += acc.sum((0, 2, 3)).double()
        sumsq += (acc * acc).sum((0, 2, 3)).double()
    v = acc if scale is None else torch.relu(acc * _col(scale) + _col(shift))
    out[:, out_offset:out_offset + acc.shape[1]].copy_(v)


def pack_weight(weight):
    """csrc/bindings.cpp pack_weight: (C_out, C_in, kh, kw) -> contiguous (kh * kw, C_in, C_out)."""
    co, ci = weight.shape[:2]
    return weight.reshape(co, ci, -1).permute(2, 1, 0).contiguous()


def _weight_operand(weight, packed, x, op):
    """What the kernel multiplies by, as bindings.cpp weight_operand: `packed` (checked, and
    unpacked here, so a wrong packing gives a wrong result) or the weight in x's dtype."""
    if packed is None:
        if weight.dtype != x.dtype:
            raise TypeError(f"{op}: weight dtype {weight.dtype} differs from the input dtype "
                            f"{x.dtype} (or pass packed=, the weight packed in the input dtype)")
        return weight
    co, ci, kh, kw = weight.shape
    if packed.dtype != x.dtype or tuple(packed.shape) != (kh * kw, ci, co) or \
            not packed.is_contiguous():
        raise ValueError(f"{op}: packed must be the contiguous (taps, C_in, C_out) = "
                         f"({kh * kw}, {ci}, {co}) packing of the weight in {x.dtype}, got "
                         f"{tuple(packed.shape)} {packed.dtype}")
    return packed.permute(2, 1, 0).reshape(co, ci, kh, kw)


def asym_conv(x, weight, pad, out, out_offset, sum=None, sumsq=None, scale=None, shift=None,
              packed=None):
    """1xn / nx1 conv, stride 1, zero padding `pad` along the tap axis only."""
    kh, kw = weight.shape[2], weight.shape[3]
    padding = (pad, 0) if (kw == 1 and kh > 1) else (0, pad)
    check_no_overlap(out, x, "asym_conv", "out", "the input")
    w = _weight_operand(weight, packed, x, "asym_conv")
    acc = F.conv2d(x.float(), w.float(), None, 1, padding)
    _epilogue(acc, out, out_offset, sum, sumsq, scale, shift)


def pool_tap_from_index(idx: torch.Tensor, W: int) -> torch.Tensor:
    """torch's max_pool2d index (h * W + w in the input plane) -> tap 0..8 in the 3x3/2 window."""
    OH, OW = idx.shape[-2:]
    oh = torch.arange(OH, device=idx.device).view(-1, 1)
    ow = torch.arange(OW, device=idx.device).view(1, -1)
    h, w = idx // W, idx % W
    return (h - 2 * oh) * 3 + (w - 2 * ow)


def grid_reduce(x, weight, conv_out, conv_offset, pool_out, pool_offset, argmax, sum=None,
                sumsq=None, scale=None, shift=None, packed=None):
    """3x3/2 conv (no padding) of x into conv_out's slice, 3x3/2 max-pool of x into pool_out's
    slice with the winning tap per element in argmax (uint8)."""
    op = "grid_reduce"
    check_no_overlap(conv_out, x, op, "conv_out", "the input")
    check_no_overlap(pool_out, x, op, "pool_out", "the input")
    check_no_overlap(argmax, x, op, "argmax", "the input")
    if weight is not None and pool_out is not None and shares_memory(conv_out, pool_out):
        check_slices_disjoint(op, (conv_offset, weight.shape[0]), (pool_offset, x.shape[1]))
    if weight is not None:
        w = _weight_operand(weight, packed, x, op)
        acc = F.conv2d(x.float(), w.float(), None, 2, 0)
        _epilogue(acc, conv_out, conv_offset, sum, sumsq, scale, shift)
    if pool_out is not None:
        v, idx = F.max_pool2d(x.float(), 3, 2, return_indices=True)
        pool_out[:, pool_offset:pool_offset + x.shape[1]].copy_(v)
        argmax.copy_(pool_tap_from_index(idx, x.shape[3]).to(torch.uint8))


def maxpool_bwd(grad, grad_offset, argmax, dx, accumulate):
    """3x3/2 max-pool backward: each window's gradient goes to its argmax (summed where windows
    overlap); added to dx when `accumulate`, else written."""
    check_no_overlap(dx, grad, "maxpool_bwd", "dx", "grad")
    N, C, H, W = dx.shape
    OH, OW = argmax.shape[-2:]
    g = grad[:, grad_offset:grad_offset + C].float()
    tap = argmax.long()
    oh = torch.arange(OH, device=dx.device).view(-1, 1)
    ow = torch.arange(OW, device=dx.device).view(1, -1)
    flat = (2 * oh + tap // 3) * W + 2 * ow + tap % 3
    res = torch.zeros(N, C, H * W, dtype=torch.float32, device=dx.device)
    res.scatter_add_(2, flat.reshape(N, C, -1), g.reshape(N, C, -1))
    res = res.view(N, C, H, W)
    dx.copy_(dx.float() + res if accumulate else res)


def bn_stats(y, sum, sumsq):
    y = y.float()
    sum += y.sum((0, 2, 3)).double()
    sumsq += (y * y).sum((0, 2, 3)).double()


def reduce_partials(part, sum, sumsq):
    """sum += partials_sum(part[0]), sumsq += partials_sum(part[1]); part: (2, blocks, C) fp32
    per-block partial sums and sums of squares (the second stage of every BN statistics
    reduction in csrc/)."""
    sum += partials_sum(part[0])
    sumsq += partials_sum(part[1])


def bn_finalize(sum, sumsq, count, eps, gamma=None, beta=None):
    """(5, C) fp32: mean, biased var, invstd, scale = gamma * invstd,
    shift = beta - mean * scale."""
    mean = sum / count
    var = (sumsq / count - mean * mean).clamp_min(0)
    invstd = 1.0 / torch.sqrt(var + eps)
    scale = invstd * (gamma.double() if gamma is not None else 1.0)
    shift = (beta.double() if beta is not None else 0.0) - mean * scale
    return torch.stack([mean, var, invstd, scale, shift]).float()


def bn_apply_relu(y, scale, shift, out, out_offset):
    check_no_overlap(out, y, "bn_apply_relu", "out", "y")
    v = torch.relu(y.float() * _col(scale) + _col(shift))
    out[:, out_offset:out_offset + y.shape[1]].copy_(v)


def _masked_grad(grad, grad_offset, y, scale, shift):
    C = y.shape[1]
    g = grad[:, grad_offset:grad_offset + C].float()
    yf = y.float()
    return torch.where(yf * _col(scale) + _col(shift) > 0, g, torch.zeros_like(g)), yf


def bn_relu_bwd_reduce(grad, grad_offset, y, scale, shift, mean, invstd, sum_g, sum_gx):
    gm, yf = _masked_grad(grad, grad_offset, y, scale, shift)
    xhat = (yf - _col(mean)) * _col(invstd)
    sum_g += gm.sum((0, 2, 3)).double()
    sum_gx += (gm * xhat).sum((0, 2, 3)).double()


def bn_relu_bwd_apply(grad, grad_offset, y, scale, shift, mean, invstd, sum_g, sum_gx, count,
                      training):
    """dy = scale * (gm - (sum_g + xhat * sum_gx) / count) in training, scale * gm in eval."""
    gm, yf = _masked_grad(grad, grad_offset, y, scale, shift)
    if training:
        xhat = (yf - _col(mean)) * _col(invstd)
        gm = gm - _col((sum_g / count).float()) - xhat * _col((sum_gx / count).float())
    dy = gm * _col(scale)
    return dy.to(y.dtype).contiguous(memory_format=torch.channels_last)
