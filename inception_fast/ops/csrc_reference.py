"""Pure-torch reference of every kernel in inception_fast._C (csrc/), with the same names,
arguments and in-place effects, on any device.

Three uses: it states each CUDA kernel's maths in a few lines of torch (the oracle of the `gpu`
tests in tests/test_cuda_asym.py, test_cuda_grid.py, test_cuda_bn.py); it is a drop-in kernel
set that lets the autograd Functions of conv_bn_relu_cuda.py / grid_reduction.py run on CPU
tensors, so their plumbing (slices, running statistics, gradient routing) is tested without a
GPU; and its last section mirrors the tensor-core kernels' tile and pipeline maths, emulated
on CPU by tests/test_cuda_tiles.py.

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

ASYM_CONV_MAX_PADDED_LINE = 128  # csrc/asym_conv.cu kMaxPaddedLine
ASYM_CONV_MAX_TAPS = 7


def asym_conv_max_padded_line() -> int:
    return ASYM_CONV_MAX_PADDED_LINE


def asym_conv_max_taps() -> int:
    return ASYM_CONV_MAX_TAPS


STAT_LANES = 8  # csrc/bn_common.cuh kPartLanes: fp64 lanes per channel in reduce_partials


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
    """csrc/bn_reduce.cu reduce_partials on a (blocks, C) fp32 tensor of per-block partial sums:
    lane l (of STAT_LANES) sums rows l, l + STAT_LANES, ... in fp64 in increasing order, then the
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
    """1xn / nx1 conv (2 <= n <= 7), stride 1, zero padding `pad` along the tap axis only."""
    kh, kw = weight.shape[2], weight.shape[3]
    taps = kh * kw
    if not (kh == 1 or kw == 1) or not 2 <= taps <= ASYM_CONV_MAX_TAPS:
        raise ValueError(f"asym_conv: 2 to {ASYM_CONV_MAX_TAPS} taps, got {taps} "
                         f"(kernel {kh}x{kw}; a 1x1 conv is a GEMM)")
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


# ---- the CUDA kernels' tile maths, mirrored line for line so that they are checked on CPU
# (tests/test_cuda_tiles.py): the block geometry, the staged-row and pixel maps and the cp.async
# pipeline's stage reuse of csrc/asym_conv.cu and csrc/grid_reduce.cu.

ASYM_MT, ASYM_A_ROWS = 128, 152   # asym_conv.cu kMT (GEMM rows per block), kARows
ASYM_A_STAGES, ASYM_B_STAGES = 2, 3
GRID_MT, GRID_STAGES, BK = 128, 3, 32  # grid_reduce.cu kMT, kStages; kBK of both


def asym_conv_tiling(N, H, W, taps, pad, vertical):
    """asym_conv.cu asym_geometry: L, Lo (line length in / out), S (staged line stride: lines
    share one gap of `pad` zero rows), lb (lines per block), rows (staged rows), lines, blocks;
    None where the kernel refuses the shape."""
    L = H if vertical else W
    Lo = L + 2 * pad - taps + 1
    if not 2 <= taps <= ASYM_CONV_MAX_TAPS or pad < 0 or L + 2 * pad > ASYM_CONV_MAX_PADDED_LINE \
            or Lo < 1:
        return None
    S = L + pad
    lb = min(ASYM_MT // Lo, (ASYM_A_ROWS - L - 2 * pad) // S + 1)
    lines = N * W if vertical else N * H
    return dict(L=L, Lo=Lo, S=S, lb=lb, rows=(lb - 1) * S + L + 2 * pad, lines=lines,
                blocks=-(-lines // lb))


def asym_conv_wasted_rows(L, taps, pad):
    """MMA rows of a full block computed but not stored (of ASYM_MT)."""
    g = asym_conv_tiling(1, L, L, taps, pad, False)
    return ASYM_MT - g["lb"] * g["Lo"]


def asym_a_row(g, m):
    """AsymGeom::a_row: the staged row GEMM row m reads at tap 0 (padding rows read row 0)."""
    if m >= g["lb"] * g["Lo"]:
        return 0
    j = m // g["Lo"]
    return j * g["S"] + m - j * g["Lo"]


def asym_conv_emulated(x, weight, pad):
    """The asymmetric conv computed through the kernel's index maths (fp32, (N, Co, Ho, Wo)):
    per block the staged tile as load_lines fills it (row r -> line r // S, position
    r % S - pad), each GEMM row m as the sum over taps of staged row a_row(m) + t times the
    tap's weights, the valid rows stored at AsymGeom::pixel. Asserts what the kernel assumes:
    every read row is staged, every output pixel written exactly once."""
    N, Ci, H, W = x.shape
    Co, _, kh, kw = weight.shape
    vertical = kw == 1 and kh > 1
    taps = kh if vertical else kw
    g = asym_conv_tiling(N, H, W, taps, pad, vertical)
    L, Lo, S = g["L"], g["Lo"], g["S"]
    xs = x.float().permute(0, 3, 2, 1) if vertical else x.float().permute(0, 2, 3, 1)
    xs = xs.reshape(g["lines"], L, Ci)                    # [line][position][channel]
    wp = pack_weight(weight.float())                      # [tap][Ci][Co]
    out = torch.zeros(g["lines"], Lo, Co)
    written = torch.zeros(g["lines"], Lo, dtype=torch.int64)
    for b in range(g["blocks"]):
        line0 = b * g["lb"]
        tile = torch.zeros(g["rows"], Ci)
        for r in range(g["rows"]):
            j, pos = r // S, r % S - pad
            if j < g["lb"] and line0 + j < g["lines"] and 0 <= pos < L:
                tile[r] = xs[line0 + j, pos]
        valid = min(g["lb"], g["lines"] - line0) * Lo
        for m in range(ASYM_MT):
            base = asym_a_row(g, m)
            assert base + taps - 1 < g["rows"], "a GEMM row reads past the staged tile"
            acc = sum(tile[base + t] @ wp[t] for t in range(taps))
            if m < valid:
                line, v = line0 + m // Lo, m % Lo
                out[line, v] = acc
                written[line, v] += 1
    assert bool((written == 1).all()), "an output pixel is written twice or never"
    if vertical:
        return out.reshape(N, W, Lo, Co).permute(0, 3, 2, 1)
    return out.reshape(N, H, Lo, Co).permute(0, 3, 1, 2)


def pipeline_schedule(steps, taps, a_stages, b_stages, a_every_step):
    """Replay the cp.async pipeline of the two tensor-core kernels: step q's tiles are issued
    after step q - 2's barrier (q < 2: before the loop) into B stage q % b_stages and, when q
    starts a chunk (always with a_every_step, grid_reduce), A stage (its A tile) % a_stages.
    The first hazard as text (a stage refilled while step q - 2 or q - 1 still needs it, or a
    step reading a stage that does not hold its tile), else None."""
    a_of = (lambda q: q) if a_every_step else (lambda q: q // taps)  # noqa: E731
    held = {}

    def issue(q, running):
        tiles = [("B", q % b_stages, q, range(running, q))]
        if a_every_step or q % taps == 0:
            tiles.append(("A", a_of(q) % a_stages, a_of(q), {a_of(r) for r in range(running, q)}))
        for kind, stage, tile, needed in tiles:
            if held.get((kind, stage)) in needed:
                return f"step {q} refills {kind} stage {stage} still needed"
            held[(kind, stage)] = tile
        return None

    errs = [issue(q, 0) for q in range(min(2, steps))]
    for s in range(steps):
        if held.get(("B", s % b_stages)) != s or held.get(("A", a_of(s) % a_stages)) != a_of(s):
            errs.append(f"step {s} reads a stage that does not hold its tiles")
        if s + 2 < steps:
            errs.append(issue(s + 2, s))
    return next((e for e in errs if e), None)


def grid_reduce_emulated(x, weight, n_col_blocks):
    """The fused grid reduction through grid_reduce.cu's index maths: 128-pixel row blocks,
    thread slots (row tid // VPR + k * (128 // VPR), channels (tid % VPR) * V), windows
    win = (n * H + 2 oh) * W + 2 ow, tap t at win + (t // 3) * W + t % 3, the pool folded in
    tap order with torch's rule and stored by the column block chunk % n_col_blocks. Returns
    (conv fp32 (N, Co, OH, OW), pool, argmax) and asserts every pool element is stored once."""
    N, Ci, H, W = x.shape
    OH, OW = (H - 3) // 2 + 1, (W - 3) // 2 + 1
    M = N * OH * OW
    xf = x.float().permute(0, 2, 3, 1).reshape(-1, Ci)
    wp = pack_weight(weight.float()) if weight is not None else None
    V = 16 // x.element_size()
    VPR = BK // V
    conv = torch.zeros(M, weight.shape[0]) if weight is not None else None
    pool = torch.full((M, Ci), float("nan"))
    argmax = torch.full((M, Ci), 255, dtype=torch.int64)
    for b in range(-(-M // GRID_MT)):
        m0 = b * GRID_MT
        slots = [(tid // VPR + k * (128 // VPR), (tid % VPR) * V)
                 for tid in range(128) for k in range(GRID_MT * VPR // 128)]
        assert sorted(slots) == sorted((r, c) for r in range(GRID_MT) for c in range(0, BK, V))
        rows = [r for r in range(GRID_MT) if m0 + r < M]
        ms = torch.tensor([m0 + r for r in rows])
        n, rem = ms // (OH * OW), ms % (OH * OW)
        win = (n * H + 2 * (rem // OW)) * W + 2 * (rem % OW)
        for c0 in range(0, Ci, BK):
            c1 = min(c0 + BK, Ci)
            best = torch.full((len(rows), c1 - c0), float("-inf"))
            arg = torch.zeros(len(rows), c1 - c0, dtype=torch.int64)
            for t in range(9):
                a = xf[win + (t // 3) * W + t % 3, c0:c1]
                if conv is not None:
                    conv[ms] += a @ wp[t, c0:c1]
                take = (a > best) | torch.isnan(a)
                best, arg = torch.where(take, a, best), torch.where(take, t, arg)
            for y in range(n_col_blocks):  # pool_in_block: blockIdx.y == chunk % gridDim.y
                if (c0 // BK) % n_col_blocks == y:
                    assert bool(torch.isnan(pool[ms, c0:c1]).all()), "a pool chunk stored twice"
                    pool[ms, c0:c1], argmax[ms, c0:c1] = best, arg
    to4 = lambda t: t.reshape(N, OH, OW, -1).permute(0, 3, 1, 2)  # noqa: E731
    return (to4(conv) if conv is not None else None), to4(pool), to4(argmax)
