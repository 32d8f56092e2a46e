"""Label-smoothing cross-entropy (Szegedy et al., section 7) as one fused op, and its reference.

Semantics (all backends): the mean over the batch of
    loss_i = lse(z_i) - (1 - eps) z_i[t_i] - (eps / K) sum_k z_ik,
which is F.cross_entropy(logits.float(), target, label_smoothing=eps). The loss is fp32 whatever
the logits dtype; the gradient has the logits' dtype. `target` gets no gradient.

The Triton path is the registered op inception_fast::label_smoothing_ce_triton (ops/library.py):
it computes the loss and d(loss)/d(logits) in one kernel launch in forward
(kernels/label_smoothing_ce.py); its registered backward only scales that saved gradient by
grad_output. Functional (it mutates nothing), so torch.compile traces it as one node each way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .library import absent, name


def label_smoothing_cross_entropy_reference(logits: torch.Tensor, target: torch.Tensor,
                                            eps: float = 0.1) -> torch.Tensor:
    """The oracle: torch's own cross-entropy with label smoothing, in fp32."""
    return F.cross_entropy(logits.float(), target, label_smoothing=eps)


# ---- registered op (functional: it mutates nothing, so its autograd is registered too) -----

@torch.library.custom_op(name("label_smoothing_ce_triton"), mutates_args=())
def label_smoothing_ce_triton(logits: Tensor, target: Tensor, eps: float,
                              compute_grad: bool) -> tuple[Tensor, Tensor]:
    """(mean loss, an fp32 scalar; d(mean loss)/d(logits), logits' dtype (B, K), computed in
    the same kernel launch, or absent when not compute_grad)."""
    from ..kernels.label_smoothing_ce import label_smoothing_ce

    rows, grad = label_smoothing_ce(logits, target, eps, compute_grad=compute_grad)
    loss = rows.sum() / rows.numel()
    return loss, (grad if compute_grad else absent(logits))


@label_smoothing_ce_triton.register_fake
def _(logits, target, eps, compute_grad):
    loss = logits.new_empty((), dtype=torch.float32)
    grad = (torch.empty(logits.shape, dtype=logits.dtype, device=logits.device) if compute_grad
            else absent(logits))
    return loss, grad


def _setup_context(ctx, inputs, output):
    _, grad = output
    ctx.mark_non_differentiable(grad)  # a gradient, not a function of the logits we derive
    ctx.save_for_backward(grad)


def _backward(ctx, grad_loss, _grad_grad):
    (grad,) = ctx.saved_tensors
    if grad.numel() == 0:
        raise RuntimeError("label_smoothing_ce_triton: backward through a call made with "
                           "compute_grad=False")
    # grad already holds d(mean loss)/d(logits); a 0-dim factor keeps grad's dtype.
    return grad * grad_loss.to(torch.float32), None, None, None


torch.library.register_autograd(label_smoothing_ce_triton, _backward,
                                setup_context=_setup_context)


# ---- dispatch -----------------------------------------------------------------------------

def label_smoothing_cross_entropy_triton(logits, target, eps=0.1):
    """Backend "triton": the loss, and its gradient from the same launch when a graph will be
    built (else the gradient pass is skipped)."""
    compute_grad = torch.is_grad_enabled() and logits.requires_grad
    return label_smoothing_ce_triton(logits, target, float(eps), compute_grad)[0]


def label_smoothing_cross_entropy(logits, target, eps=0.1, *, backend):
    """The mean loss on a concrete `backend` ("torch" or "triton"); inputs already checked
    (inception_fast.losses.label_smoothing_cross_entropy is the public, checked entry)."""
    if backend == "torch":
        return label_smoothing_cross_entropy_reference(logits, target, eps)
    if backend == "triton":
        return label_smoothing_cross_entropy_triton(logits, target, eps)
    raise ValueError(f"label_smoothing_cross_entropy: no backend {backend!r} (torch, triton)")
