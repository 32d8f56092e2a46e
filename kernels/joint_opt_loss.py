"""Joint-optimization loss (Tanaka et al., CVPR 2018): its three terms and their gradient.

Notation: logits z (B, K), p_i = softmax(z_i), soft targets s, prior pi, pbar = mean_i p_i,
lse_i = log sum_k exp z_ik, S_i = sum_k s_ik, H_i = -sum_k p_ik log p_ik.
    L_c = mean_i sum_k s_ik (log s_ik - log p_ik)
    L_p = sum_k pi_k (log pi_k - log pbar_k)
    L_e = mean_i H_i
Gradient w.r.t. z_ij, from d log p_ik / d z_ij = [k == j] - p_ij:
    dL_c = (S_i p_ij - s_ij) / B
    dL_p = -(1/B) sum_k (pi_k / pbar_k) p_ik ([k == j] - p_ij) = -(1/B) p_ij (r_j - c_i),
           with r_k = pi_k / pbar_k and c_i = sum_k r_k p_ik
    dL_e = -(1/B) p_ij (log p_ij + H_i)       (dH/dz_j = -p_j (z_j - sum_k p_k z_k))
L_p couples the rows through pbar, hence two kernels:
  _jo_stats_kernel   per block of rows: online lse, H_i and the row's L_c (loop 1), then the
                     rows' softmax summed over the block into per-class partials (loop 2);
                     the host sums the (few) partials into pbar (deterministic, no atomics).
  _jo_grad_kernel    per block of rows: c_i (loop 1), then the gradient (loop 2).
Sums are kept relative to the running max m (sum e^(z-m) (z-m), sum s (z-m)), and log p is
(z - m) - log sum e^(z-m), never z - lse, so that logits of +-1e4 lose no precision to
cancellation. fp32 math whatever the input dtypes.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .sizes import row_align

MAX_BLOCK_K = 1024
TILE = 4096  # elements per [BLOCK_B, BLOCK_K] tile
MAX_BLOCK_B = 16


@triton.jit
def _jo_stats_kernel(x_ptr, x_stride, s_ptr, s_stride, max_ptr, loge_ptr, ent_ptr, lc_ptr,
                     part_ptr, B, K: tl.constexpr, BLOCK_B: tl.constexpr,
                     BLOCK_K: tl.constexpr, ALIGN: tl.constexpr):
    """Rows [pid*BLOCK_B, +BLOCK_B): row max m and log sum e^(z-m) (lse = their sum), entropy,
    KL(s||p) per row; per-class sums of p over these rows into part_ptr[pid, :]."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < B
    rows = tl.minimum(rows, B - 1).to(tl.int64)  # rows past B re-read row B-1; never stored
    offs = tl.arange(0, BLOCK_K)
    # K constexpr and ALIGN-aligned rows (sizes.row_align): 16-byte loads for 1000 classes.
    x_rows = x_ptr + tl.multiple_of(rows[:, None] * x_stride, [ALIGN, 1])
    s_rows = s_ptr + tl.multiple_of(rows[:, None] * s_stride, [ALIGN, 1])
    m = tl.full([BLOCK_B], -float("inf"), tl.float32)
    e_sum = tl.zeros([BLOCK_B], tl.float32)  # sum e^(z-m)
    ez_sum = tl.zeros([BLOCK_B], tl.float32)  # sum e^(z-m) (z-m)
    sz_sum = tl.zeros([BLOCK_B], tl.float32)  # sum s (z-m)
    s_sum = tl.zeros([BLOCK_B], tl.float32)  # S_i
    slogs = tl.zeros([BLOCK_B], tl.float32)  # sum s log s, 0 log 0 = 0
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs
        cmask = (k < K)[None, :]
        z = tl.load(x_rows + k[None, :], mask=cmask, other=-float("inf")).to(tl.float32)
        s = tl.load(s_rows + k[None, :], mask=cmask, other=0.0).to(tl.float32)
        m_new = tl.maximum(m, tl.max(z, axis=1))
        # Re-base the running sums from m to m_new; on the first chunk they are 0 and m = -inf.
        shift = tl.where(e_sum > 0, m - m_new, 0.0)
        alpha = tl.exp(shift)
        d = tl.where(cmask, z - m_new[:, None], 0.0)
        e = tl.exp(z - m_new[:, None])
        ez_sum = alpha * (ez_sum + shift * e_sum) + tl.sum(e * d, axis=1)
        e_sum = alpha * e_sum + tl.sum(e, axis=1)
        sz_sum = sz_sum + shift * s_sum + tl.sum(s * d, axis=1)
        s_sum += tl.sum(s, axis=1)
        slogs += tl.sum(tl.where(s > 0, s * tl.log(tl.where(s > 0, s, 1.0)), 0.0), axis=1)
        m = m_new
    log_e = tl.log(e_sum)
    ent = log_e - ez_sum / e_sum
    lc = slogs - sz_sum + s_sum * log_e  # sum s (log s - (z - lse))
    out = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    tl.store(max_ptr + out, m, mask=rmask)
    tl.store(loge_ptr + out, log_e, mask=rmask)
    tl.store(ent_ptr + out, ent, mask=rmask)
    tl.store(lc_ptr + out, lc, mask=rmask)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs
        cmask = k < K
        z = tl.load(x_rows + k[None, :], mask=cmask[None, :], other=-float("inf")).to(tl.float32)
        p = tl.where(rmask[:, None], tl.exp((z - m[:, None]) - log_e[:, None]), 0.0)
        tl.store(part_ptr + pid.to(tl.int64) * K + k, tl.sum(p, axis=0), mask=cmask)


@triton.jit
def _jo_grad_kernel(x_ptr, x_stride, s_ptr, s_stride, max_ptr, loge_ptr, ent_ptr, r_ptr, g_ptr,
                    g_stride, B, K: tl.constexpr, alpha, beta, scale,
                    BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, ALIGN: tl.constexpr):
    """Rows [pid*BLOCK_B, +BLOCK_B): c_i = sum_k r_k p_ik, then
    g_ij = scale * (S_i p_ij - s_ij - alpha p_ij (r_j - c_i) - beta p_ij (log p_ij + H_i))."""
    pid = tl.program_id(0)
    out = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = out < B
    rows = tl.minimum(out, B - 1).to(tl.int64)
    offs = tl.arange(0, BLOCK_K)
    # K constexpr and ALIGN-aligned rows (sizes.row_align): 16-byte loads for 1000 classes.
    x_rows = x_ptr + tl.multiple_of(rows[:, None] * x_stride, [ALIGN, 1])
    s_rows = s_ptr + tl.multiple_of(rows[:, None] * s_stride, [ALIGN, 1])
    m = tl.load(max_ptr + rows)
    log_e = tl.load(loge_ptr + rows)
    ent = tl.load(ent_ptr + rows)
    c = tl.zeros([BLOCK_B], tl.float32)
    s_sum = tl.zeros([BLOCK_B], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs
        cmask = k < K
        z = tl.load(x_rows + k[None, :], mask=cmask[None, :], other=-float("inf")).to(tl.float32)
        s = tl.load(s_rows + k[None, :], mask=cmask[None, :], other=0.0).to(tl.float32)
        r = tl.load(r_ptr + k, mask=cmask, other=0.0)
        p = tl.exp((z - m[:, None]) - log_e[:, None])  # masked lanes: e^-inf = 0, r = 0
        c += tl.sum(p * r[None, :], axis=1)
        s_sum += tl.sum(s, axis=1)
    g_rows = g_ptr + tl.multiple_of(rows[:, None] * g_stride, [ALIGN, 1])
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs
        cmask = k < K
        z = tl.load(x_rows + k[None, :], mask=cmask[None, :], other=0.0).to(tl.float32)
        z = tl.where(cmask[None, :], z, m[:, None])  # masked lanes: finite, never stored
        s = tl.load(s_rows + k[None, :], mask=cmask[None, :], other=0.0).to(tl.float32)
        r = tl.load(r_ptr + k, mask=cmask, other=0.0)
        logp = (z - m[:, None]) - log_e[:, None]
        p = tl.exp(logp)
        g = s_sum[:, None] * p - s - alpha * p * (r[None, :] - c[:, None]) \
            - beta * p * (logp + ent[:, None])
        tl.store(g_rows + k[None, :], (g * scale).to(g_ptr.dtype.element_ty),
                 mask=rmask[:, None] & cmask[None, :])


def _blocks(b: int, k: int):
    block_k = min(max(triton.next_power_of_2(k), 16), MAX_BLOCK_K)  # >= 16: no 1-wide tiles
    block_b = max(1, min(TILE // block_k, MAX_BLOCK_B, triton.next_power_of_2(b)))
    return block_b, block_k


def joint_opt_loss(logits: torch.Tensor, soft: torch.Tensor, prior: torch.Tensor, alpha: float,
                   beta: float, compute_grad: bool = True):
    """Launch on (B, K) logits, (B, K) soft targets and a (K,) fp32 prior (validated by the
    caller). Returns fp32 scalars L_c, L_p, L_e and the gradient of
    L_c + alpha L_p + beta L_e w.r.t. the logits (logits' dtype), or None."""
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    if soft.stride(1) != 1:
        soft = soft.contiguous()
    b, k = logits.shape
    dev = logits.device
    block_b, block_k = _blocks(b, k)
    n_prog = triton.cdiv(b, block_b)
    mx = torch.empty(b, dtype=torch.float32, device=dev)
    log_e, ent, lc = torch.empty_like(mx), torch.empty_like(mx), torch.empty_like(mx)
    part = torch.empty((n_prog, k), dtype=torch.float32, device=dev)
    num_warps = 4
    align = row_align(logits.stride(0), soft.stride(0), k)
    _jo_stats_kernel[(n_prog,)](logits, logits.stride(0), soft, soft.stride(0), mx, log_e, ent,
                                lc, part, b, k, BLOCK_B=block_b, BLOCK_K=block_k,
                                ALIGN=align, num_warps=num_warps)
    pbar = part.sum(0) / b
    prior = prior.float()
    l_p = (torch.xlogy(prior, prior) - prior * pbar.log()).sum()
    l_c = lc.mean()
    l_e = ent.mean()
    if not compute_grad:
        return l_c, l_p, l_e, None
    r = torch.where(prior > 0, prior / pbar, torch.zeros_like(prior)).contiguous()
    grad = torch.empty((b, k), dtype=logits.dtype, device=dev)
    _jo_grad_kernel[(n_prog,)](logits, logits.stride(0), soft, soft.stride(0), mx, log_e, ent, r,
                               grad, k, b, k, float(alpha), float(beta), 1.0 / b, BLOCK_B=block_b,
                               BLOCK_K=block_k, ALIGN=align, num_warps=num_warps)
    return l_c, l_p, l_e, grad
