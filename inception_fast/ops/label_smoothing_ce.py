"""Label-smoothing cross-entropy (Szegedy et al., section 7) as one fused op, and its reference.

Semantics (all backends): the mean over the batch of
    loss_i = lse(z_i) - (1 - eps) z_i[t_i] - (eps / K) sum_k z_ik,
which is F.cross_entropy(logits.float(), target, label_smoothing=eps). The loss is fp32 whatever
the logits dtype; the gradient has the logits' dtype. `target` gets no gradient.

The Triton path computes the loss and d(loss)/d(logits) in one kernel launch in forward
(kernels/label_smoothing_ce.py); backward only scales that saved gradient by grad_output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def label_smoothing_cross_entropy_reference(logits: torch.Tensor, target: torch.Tensor,
                                            eps: float = 0.1) -> torch.Tensor:
    """The oracle: torch's own cross-entropy with label smoothing, in fp32."""
    return F.cross_entropy(logits.float(), target, label_smoothing=eps)


class LabelSmoothingCEFunction(torch.autograd.Function):
    """Triton forward writes the per-row losses and the whole gradient; backward scales it."""

    @staticmethod
    def forward(ctx, logits, target, eps):
        from ..kernels.label_smoothing_ce import label_smoothing_ce

        rows, grad = label_smoothing_ce(logits, target, eps, compute_grad=True)
        ctx.save_for_backward(grad)
        return rows.sum() / rows.numel()

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        # grad already holds d(mean loss)/d(logits); a 0-dim factor keeps grad's dtype.
        return grad * grad_output.to(torch.float32), None, None


def label_smoothing_cross_entropy_triton(logits, target, eps=0.1):
    if not (torch.is_grad_enabled() and logits.requires_grad):
        # No graph will be built (inference, no_grad): skip the gradient pass entirely.
        from ..kernels.label_smoothing_ce import label_smoothing_ce

        rows, _ = label_smoothing_ce(logits, target, float(eps), compute_grad=False)
        return rows.sum() / rows.numel()
    return LabelSmoothingCEFunction.apply(logits, target, float(eps))
