"""Label-smoothing cross-entropy: loss and gradient in one launch, one program per row.

For row i with logits z (K classes), target t and smoothing eps:
    loss_i = lse(z) - (1 - eps) z_t - (eps / K) sum_k z_k
    dloss_i/dz_k = softmax(z)_k - (1 - eps) [k == t] - eps / K
Loop 1 over K in chunks keeps an online log-sum-exp (running max m and sum of exp(z - m)) and
sum_k z_k; loop 2 (only when the gradient is wanted) re-reads the row, which is still in L2,
and writes the gradient, with softmax(z)_k = e^((z_k - m) - log s), never e^(z_k - lse), which
would lose bits at |z| ~ 1e4. No probability tensor is materialized; math is fp32 whatever the
logits dtype, so K of many thousands and logits of +-1e4 are fine.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .sizes import row_align

MAX_BLOCK = 4096  # classes per chunk: one chunk for ImageNet's 1000, bounded registers beyond


@triton.jit
def _ls_ce_kernel(x_ptr, x_row_stride, t_ptr, loss_ptr, g_ptr, g_row_stride, K: tl.constexpr,
                  eps, g_scale, COMPUTE_GRAD: tl.constexpr, BLOCK: tl.constexpr,
                  ALIGN: tl.constexpr):
    """One row: per-row loss into loss_ptr[row]; if COMPUTE_GRAD, g_scale * dloss/dz into g_ptr.
    K constexpr and rows ALIGN-element aligned (sizes.row_align): Triton then knows that
    masks and rows come in aligned runs of 8 and loads 16 bytes at a time (1000 classes)."""
    row = tl.program_id(0).to(tl.int64)  # int64: B * K may pass 2**31
    x_row = x_ptr + tl.multiple_of(row * x_row_stride, ALIGN)
    offs = tl.arange(0, BLOCK)
    m = -float("inf")
    s = 0.0
    zsum = 0.0
    for k0 in range(0, K, BLOCK):
        mask = k0 + offs < K
        z = tl.load(x_row + k0 + offs, mask=mask, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(z, axis=0))  # finite after the first chunk (K >= 1)
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
        zsum += tl.sum(tl.where(mask, z, 0.0), axis=0)
        m = m_new
    log_s = tl.log(s)  # lse = m + log_s, kept apart: at |z| ~ 1e4 their fp32 sum loses bits
    t = tl.load(t_ptr + row)
    z_t = tl.load(x_row + t).to(tl.float32)
    smooth = eps / K
    loss = log_s + (1.0 - eps) * (m - z_t) + eps * (m - zsum / K)
    tl.store(loss_ptr + row, loss)
    if COMPUTE_GRAD:
        g_row = g_ptr + tl.multiple_of(row * g_row_stride, ALIGN)
        for k0 in range(0, K, BLOCK):
            k = k0 + offs
            mask = k < K
            z = tl.load(x_row + k, mask=mask, other=-float("inf")).to(tl.float32)
            g = tl.exp((z - m) - log_s) - smooth - tl.where(k == t, 1.0 - eps, 0.0)
            tl.store(g_row + k, (g * g_scale).to(g_ptr.dtype.element_ty), mask=mask)


def label_smoothing_ce(logits: torch.Tensor, target: torch.Tensor, eps: float,
                       compute_grad: bool = True):
    """Launch on (B, K) logits and (B,) int64 targets (already validated by the caller).

    Returns (per-row losses, fp32 (B,); gradient of the MEAN loss, logits' dtype (B, K), or
    None when compute_grad is False)."""
    if logits.stride(1) != 1:  # rows must be contiguous; any row stride is fine
        logits = logits.contiguous()
    target = target.contiguous()
    b, k = logits.shape
    loss = torch.empty(b, dtype=torch.float32, device=logits.device)
    grad = torch.empty((b, k), dtype=logits.dtype, device=logits.device) if compute_grad else loss
    block = min(max(triton.next_power_of_2(k), 16), MAX_BLOCK)  # >= 16: no 1-wide tensors
    num_warps = 4 if block <= 1024 else 8
    _ls_ce_kernel[(b,)](logits, logits.stride(0), target, loss, grad, k if compute_grad else 0,
                        k, float(eps), 1.0 / b, COMPUTE_GRAD=compute_grad, BLOCK=block,
                        ALIGN=row_align(logits.stride(0), k), num_warps=num_warps)
    return loss, (grad if compute_grad else None)
