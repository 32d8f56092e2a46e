"""BatchNorm (training) around the conv: finalize the batch statistics from the conv
epilogue's partials, and apply out = relu(a*y + c) into the output (slice).

Partials (from kernels/conv2d_fwd.py, STATS epilogue): per group g of `rows_per_group`
consecutive rows of y (the last one may be short) and per channel, the sum and M2 (sum of
squared deviations from the group mean). Groups are merged with Chan et al.'s parallel
formula, M2 = sum_g M2_g + sum_g n_g (mean_g - mean)^2, which stays accurate when
|mean| >> std (E[y^2] - E[y]^2 in fp32 would not).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .conv_common import STAT_ROWS
from .dtypes import check_bn_vectors, interpreter_on
from .last_program import arrival_counters, arrive_last
from .nhwc import nhwc_out, pixel_channel_tile, row_offsets

# Above this many groups, merge chunks of them in parallel first (one program per channel
# block over, say, 170k groups would leave the GPU idle), in the same launch.
_FINAL_MAX_GROUPS = 256
_GROUPS_PER_PROG = 128
# Parameter segments one finalize takes (the widest horizontal 1x1 group has 4 BN layers).
MAX_SEGMENTS = 4


@triton.jit
def _seg_load(p0, p1, p2, p3, offs, B1, B2, B3, END, c_ok, other: tl.constexpr):
    """Per-channel parameter of the segment each channel is in ([0, B1) in p0, [B1, B2) in
    p1, ...; up to END), as float32; `other` for the channels past END."""
    v = tl.load(p0 + offs, mask=c_ok & (offs < B1), other=other)
    v = tl.where(offs >= B1, tl.load(p1 + offs - B1, mask=c_ok & (offs >= B1) & (offs < B2),
                                     other=other), v)
    v = tl.where(offs >= B2, tl.load(p2 + offs - B2, mask=c_ok & (offs >= B2) & (offs < B3),
                                     other=other), v)
    v = tl.where(offs >= B3, tl.load(p3 + offs - B3, mask=c_ok & (offs >= B3) & (offs < END),
                                     other=other), v)
    return v.to(tl.float32)


@triton.jit
def _seg_store(p0, p1, p2, p3, offs, B1, B2, B3, END, c_ok, v):
    tl.store(p0 + offs, v.to(p0.dtype.element_ty), mask=c_ok & (offs < B1))
    tl.store(p1 + offs - B1, v.to(p1.dtype.element_ty), mask=c_ok & (offs >= B1) & (offs < B2))
    tl.store(p2 + offs - B2, v.to(p2.dtype.element_ty), mask=c_ok & (offs >= B2) & (offs < B3))
    tl.store(p3 + offs - B3, v.to(p3.dtype.element_ty), mask=c_ok & (offs >= B3) & (offs < END))


@triton.jit
def _merge_groups(psum_ptr, pm2_ptr, g_start, g_end, C, count, rows_per_group, offs_c, c_ok,
                  CACHE: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr):
    """(rows, sum, M2) per channel of groups [g_start, g_end) of `rows_per_group` rows each
    (the last group of all may be short), merged in a fixed order by Chan's formula."""
    rows = tl.minimum(count - g_start * rows_per_group,
                      (g_end - g_start) * rows_per_group).to(tl.float32)
    total = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for g0 in range(g_start, g_end, BLOCK_G):
        g = g0 + tl.arange(0, BLOCK_G)
        mask = (g < g_end)[:, None] & c_ok[None, :]
        s = tl.load(psum_ptr + g[:, None].to(tl.int64) * C + offs_c[None, :], mask=mask,
                    other=0.0, cache_modifier=CACHE)
        total += tl.sum(s, axis=0)
    mean = total / rows
    m2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for g0 in range(g_start, g_end, BLOCK_G):
        g = g0 + tl.arange(0, BLOCK_G)
        g_ok = g < g_end
        mask = g_ok[:, None] & c_ok[None, :]
        off = g[:, None].to(tl.int64) * C + offs_c[None, :]
        s = tl.load(psum_ptr + off, mask=mask, other=0.0, cache_modifier=CACHE)
        q = tl.load(pm2_ptr + off, mask=mask, other=0.0, cache_modifier=CACHE)
        n_g = tl.minimum(count - g * rows_per_group, rows_per_group).to(tl.float32)
        n_g = tl.where(g_ok, tl.maximum(n_g, 1.0), 1.0)
        d = s / n_g[:, None] - mean[None, :]
        m2 += tl.sum(tl.where(mask, q + n_g[:, None] * d * d, 0.0), axis=0)
    return rows, total, m2


@triton.jit
def _bn_statistics(rows, total, m2, offs_c, c_ok,
                   ga0, ga1, ga2, ga3, be0, be1, be2, be3, rm0, rm1, rm2, rm3,
                   rv0, rv1, rv2, rv3, B1, B2, B3, END,
                   mean_ptr, invstd_ptr, a_ptr, c_ptr, eps, momentum, unbias,
                   HAS_AFFINE: tl.constexpr, HAS_RUNNING: tl.constexpr, BLOCK_C: tl.constexpr):
    """From the merged (rows, sum, M2): mean, invstd = 1/sqrt(var + eps), a = gamma*invstd,
    c = beta - mean*a, and the running stats update as torch: r = (1 - momentum)*r +
    momentum*stat, var unbiased (x `unbias`)."""
    mean = total / rows
    var = m2 / rows
    invstd = 1.0 / tl.sqrt(var + eps)
    if HAS_AFFINE:
        gamma = _seg_load(ga0, ga1, ga2, ga3, offs_c, B1, B2, B3, END, c_ok, 1.0)
        beta = _seg_load(be0, be1, be2, be3, offs_c, B1, B2, B3, END, c_ok, 0.0)
    else:
        gamma = tl.full((BLOCK_C,), 1.0, tl.float32)
        beta = tl.zeros((BLOCK_C,), dtype=tl.float32)
    a = gamma * invstd
    tl.store(mean_ptr + offs_c, mean, mask=c_ok)
    tl.store(invstd_ptr + offs_c, invstd, mask=c_ok)
    tl.store(a_ptr + offs_c, a, mask=c_ok)
    tl.store(c_ptr + offs_c, beta - mean * a, mask=c_ok)
    if HAS_RUNNING:
        rm = _seg_load(rm0, rm1, rm2, rm3, offs_c, B1, B2, B3, END, c_ok, 0.0)
        rv = _seg_load(rv0, rv1, rv2, rv3, offs_c, B1, B2, B3, END, c_ok, 0.0)
        rm = (1.0 - momentum) * rm + momentum * mean
        rv = (1.0 - momentum) * rv + momentum * (var * unbias)
        _seg_store(rm0, rm1, rm2, rm3, offs_c, B1, B2, B3, END, c_ok, rm)
        _seg_store(rv0, rv1, rv2, rv3, offs_c, B1, B2, B3, END, c_ok, rv)


@triton.jit
def _bn_finalize_kernel(psum_ptr, pm2_ptr, G, C, count, rows_per_group, GROUPS_PER_PROG,
                        csum_ptr, cm2_ptr, counter_ptr,
                        ga0, ga1, ga2, ga3, be0, be1, be2, be3,
                        rm0, rm1, rm2, rm3, rv0, rv1, rv2, rv3, B1, B2, B3, END,
                        mean_ptr, invstd_ptr, a_ptr, c_ptr, eps, momentum, unbias,
                        CHUNKED: tl.constexpr, HAS_AFFINE: tl.constexpr,
                        HAS_RUNNING: tl.constexpr, BLOCK_G: tl.constexpr,
                        BLOCK_C: tl.constexpr):
    """BN statistics in one launch (grid: channel blocks x chunks). Not CHUNKED (one chunk):
    the program merges every group and finalizes. CHUNKED: each program merges its
    GROUPS_PER_PROG groups into one (sum, M2) row of csum / cm2; the last program of each
    channel block to finish (kernels/last_program.py) merges those rows in order and
    finalizes, so a 170k-group layer needs no second launch.
    The BN parameters come in up to 4 segments of channels (ga0/be0/rm0/rv0 for [0, B1), ...,
    up to END; gamma 1, beta 0 and no running stats past it): the BN layers of a horizontal
    1x1 group, finalized in one launch, each reading and updating its own tensors."""
    pid_c = tl.program_id(0)
    chunk = tl.program_id(1)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    g_start = chunk * GROUPS_PER_PROG
    g_end = tl.minimum(g_start + GROUPS_PER_PROG, G)
    rows, total, m2 = _merge_groups(psum_ptr, pm2_ptr, g_start, g_end, C, count,
                                    rows_per_group, offs_c, c_ok, "", BLOCK_G, BLOCK_C)
    finalize = True
    if CHUNKED:
        chunks = tl.num_programs(1)
        tl.store(csum_ptr + chunk * C + offs_c, total, mask=c_ok)
        tl.store(cm2_ptr + chunk * C + offs_c, m2, mask=c_ok)
        finalize = arrive_last(counter_ptr + pid_c, chunks)
        if finalize:
            rows, total, m2 = _merge_groups(csum_ptr, cm2_ptr, 0, chunks, C, count,
                                            rows_per_group * GROUPS_PER_PROG, offs_c, c_ok,
                                            ".cg", BLOCK_G, BLOCK_C)
    if finalize:
        _bn_statistics(rows, total, m2, offs_c, c_ok, ga0, ga1, ga2, ga3, be0, be1, be2, be3,
                       rm0, rm1, rm2, rm3, rv0, rv1, rv2, rv3, B1, B2, B3, END, mean_ptr,
                       invstd_ptr, a_ptr, c_ptr, eps, momentum, unbias, HAS_AFFINE,
                       HAS_RUNNING, BLOCK_C)


def _segments(name, t, c, dev):
    """`t` as a list of 1-D segments (one tensor: one segment), checked."""
    segs = list(t) if isinstance(t, (list, tuple)) else [t]
    if not 1 <= len(segs) <= MAX_SEGMENTS:
        raise ValueError(f"bn_finalize: {name} in 1 to {MAX_SEGMENTS} segments, got {len(segs)}")
    for p in segs:
        if (not isinstance(p, torch.Tensor) or p.dim() != 1 or p.device != dev
                or not p.is_contiguous() or not p.is_floating_point()):
            raise ValueError(f"bn_finalize: {name} must be contiguous 1-D floating-point "
                             f"tensors on {dev}")
    return segs


def bn_finalize(psum: torch.Tensor, pm2: torch.Tensor, count: int, *, eps: float,
                momentum: float, gamma=None, beta=None, running_mean=None, running_var=None,
                rows_per_group: int = STAT_ROWS):
    """Batch statistics from the conv partials ([G, C] float32 each, G = ceil(count /
    rows_per_group)). Returns float32 [C] tensors (mean, invstd, a, c) with a = gamma*invstd and
    c = beta - mean*a (gamma = 1, beta = 0 when None), so that BN+ReLU is relu(a*y + c).
    Updates running_mean / running_var in place (when given) exactly as torch's BatchNorm:
    biased variance for normalization, unbiased (count / (count - 1)) for the running estimate.

    gamma, beta, running_mean, running_var: [C] tensors, or lists of up to 4 segments of the
    channels, the same sizes in each (the BN layers of a horizontal 1x1 group), covering the
    first END <= C channels; past END, gamma 1, beta 0 and no running statistics. Any
    floating-point dtype: read as float32, running stats written back in their own."""
    if psum.shape != pm2.shape or psum.dim() != 2 or psum.dtype != torch.float32:
        raise ValueError("bn_finalize: psum and pm2 must be float32 [G, C] tensors of one shape")
    groups, c = psum.shape
    if groups != triton.cdiv(count, rows_per_group):
        raise ValueError(f"bn_finalize: {groups} groups do not cover {count} rows of {rows_per_group}")
    if count < 2:
        # torch.nn.functional.batch_norm refuses this too.
        raise ValueError(f"Expected more than 1 value per channel when training, got {count} "
                         "value(s) per channel")
    if (running_mean is None) != (running_var is None):
        raise ValueError("bn_finalize: give both running_mean and running_var, or neither")
    segmented = any(isinstance(t, (list, tuple)) for t in (gamma, beta, running_mean,
                                                           running_var))
    if segmented and (gamma is None) != (beta is None):
        raise ValueError("bn_finalize: segmented gamma and beta come together")
    dev = psum.device
    given = {n: _segments(n, t, c, dev) for n, t in (
        ("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
        ("running_var", running_var)) if t is not None}
    per = {n: tuple(p.numel() for p in v) for n, v in given.items()}
    if len(set(per.values())) > 1:
        raise ValueError(f"bn_finalize: gamma, beta, running_mean and running_var must have "
                         f"the same segment sizes, got {per}")
    sizes = next(iter(per.values())) if per else (c,)
    if sum(sizes) > c or (not segmented and sum(sizes) != c):
        raise ValueError(f"bn_finalize: parameters of {sum(sizes)} channels for {c} (each "
                         f"must be a contiguous [{c}] tensor, or segments of at most {c})")
    if "gamma" in given and "beta" not in given:  # one tensor each: the other is its default
        given["beta"] = [torch.zeros(c, device=dev)]
    if "beta" in given and "gamma" not in given:
        given["gamma"] = [torch.ones(c, device=dev)]
    bounds = [sum(sizes[:i]) for i in range(1, len(sizes))]
    end = sum(sizes)
    bounds += [end] * (MAX_SEGMENTS - 1 - len(bounds))

    def ptrs(n):
        segs = given.get(n, [psum])
        return segs + [segs[-1]] * (MAX_SEGMENTS - len(segs))

    mean, invstd, a, cc = (torch.empty(c, device=dev, dtype=torch.float32) for _ in range(4))
    block_c = min(triton.next_power_of_2(max(c, 1)), 128 if interpreter_on() else 32)
    block_g = 64 if interpreter_on() else 32
    c_blocks = triton.cdiv(c, block_c)
    # Few groups: one program per channel block merges them all. Many (a 147x147 layer at
    # batch 256 has 170k): chunks merged in parallel, the last program merges the chunks.
    chunked = groups > _FINAL_MAX_GROUPS
    per_prog = _GROUPS_PER_PROG if chunked else groups
    chunks = triton.cdiv(groups, per_prog)
    if chunked:
        csum = torch.empty((chunks, c), device=dev, dtype=torch.float32)
        cm2 = torch.empty((chunks, c), device=dev, dtype=torch.float32)
        counters = arrival_counters(dev, c_blocks)
    else:
        csum = cm2 = counters = psum  # unused (dead code when not CHUNKED)
    _bn_finalize_kernel[(c_blocks, chunks)](
        psum, pm2, groups, c, count, rows_per_group, per_prog, csum, cm2, counters,
        *ptrs("gamma"), *ptrs("beta"), *ptrs("running_mean"), *ptrs("running_var"),
        *bounds, end, mean, invstd, a, cc, float(eps), float(momentum), count / (count - 1),
        CHUNKED=chunked, HAS_AFFINE="gamma" in given, HAS_RUNNING="running_mean" in given,
        BLOCK_G=block_g, BLOCK_C=block_c)
    return mean, invstd, a, cc


@triton.jit
def _bn_relu_apply_kernel(y_ptr, a_ptr, c_ptr, out_ptr, M, C, OH, OW,
                          son, soc, soh, sow, RELU: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """out[n, ch, oh, ow] = relu(a[ch]*y + c[ch]); y is a dense channels_last [M, C] tensor,
    out any (N, C, OH, OW) view (e.g. a channel slice of a larger NHWC tensor)."""
    offs_m, offs_c, m_ok, c_ok = pixel_channel_tile(M, C, BLOCK_M, BLOCK_C)
    mask = m_ok[:, None] & c_ok[None, :]
    y = tl.load(y_ptr + offs_m[:, None].to(tl.int64) * C + offs_c[None, :], mask=mask,
                other=0.0).to(tl.float32)
    a = tl.load(a_ptr + offs_c, mask=c_ok, other=0.0)
    c = tl.load(c_ptr + offs_c, mask=c_ok, other=0.0)
    z = y * a[None, :] + c[None, :]
    if RELU:
        z = tl.maximum(z, 0.0)
    o_row = row_offsets(offs_m, OH, OW, son, soh, sow)
    tl.store(out_ptr + o_row[:, None] + offs_c[None, :] * soc, z.to(out_ptr.dtype.element_ty),
             mask=mask)


def bn_relu_apply(y: torch.Tensor, a: torch.Tensor, c: torch.Tensor, *,
                  out: torch.Tensor | None = None, relu: bool = True) -> torch.Tensor:
    """out = relu(a*y + c) per channel. y: dense channels_last (N, C, OH, OW); a, c: float32
    [C]; out: optional (N, C, OH, OW) view (any strides) of y's dtype, else a new channels_last
    tensor. Returns out."""
    if y.dim() != 4 or not y.is_contiguous(memory_format=torch.channels_last):
        raise ValueError("bn_relu_apply: y must be a dense channels_last (N, C, H, W) tensor")
    n, ch, oh, ow = y.shape
    check_bn_vectors((a, c), y, "bn_relu_apply", "(a, c)")
    out = nhwc_out(out, y.shape, y, "bn_relu_apply")
    m = n * oh * ow
    if m == 0 or ch == 0:
        return out
    block_c = min(triton.next_power_of_2(ch), 64)
    block_m = (16384 if interpreter_on() else 4096) // block_c
    grid = (triton.cdiv(m, block_m), triton.cdiv(ch, block_c))
    _bn_relu_apply_kernel[grid](y, a, c, out, m, ch, oh, ow, *out.stride(), RELU=relu,
                                BLOCK_M=block_m, BLOCK_C=block_c)
    return out
