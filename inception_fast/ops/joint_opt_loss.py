"""Joint-optimization loss for noisy labels (Tanaka et al., CVPR 2018) as one fused op, and its
reference.

With p_i = softmax(z_i) over K classes, B rows, soft targets s and class prior pi:
    L_c = mean_i sum_k s_ik (log s_ik - log p_ik)            (KL(s_i || p_i), 0 log 0 = 0)
    L_p = sum_k pi_k (log pi_k - log pbar_k),  pbar = mean_i p_i
    L_e = - mean_i sum_k p_ik log p_ik
    loss = L_c + alpha L_p + beta L_e
All math is fp32 whatever the logits dtype. Soft targets and prior are constants (no gradient),
as in the paper, where the labels are updated by their own rule, not by backprop.

Gradient used by the Triton path (derived in kernels/joint_opt_loss.py, checked against autograd
in tests/test_losses.py), with S_i = sum_k s_ik, H_i the entropy of p_i, r_k = pi_k / pbar_k,
c_i = sum_k r_k p_ik:
    dloss/dz_ij = (1/B) [ S_i p_ij - s_ij - alpha p_ij (r_j - c_i) - beta p_ij (log p_ij + H_i) ]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def uniform_prior(k: int, device) -> torch.Tensor:
    return torch.full((k,), 1.0 / k, dtype=torch.float32, device=device)


def joint_optimization_loss_reference(logits, soft_targets, alpha=1.2, beta=0.8, prior=None):
    """The oracle, straight from the definitions. Returns (loss, L_c, L_p, L_e), fp32,
    differentiable w.r.t. logits through torch autograd."""
    z = logits.float()
    s = soft_targets.float()
    k = z.shape[1]
    pi = uniform_prior(k, z.device) if prior is None else prior.float()
    logp = F.log_softmax(z, dim=1)
    p = logp.exp()
    l_c = (torch.xlogy(s, s) - s * logp).sum(1).mean()
    l_p = (torch.xlogy(pi, pi) - pi * p.mean(0).log()).sum()
    l_e = -(p * logp).sum(1).mean()
    return l_c + alpha * l_p + beta * l_e, l_c, l_p, l_e


class JointOptimizationLossFunction(torch.autograd.Function):
    """Triton forward computes all three terms and the gradient; backward scales the gradient."""

    @staticmethod
    def forward(ctx, logits, soft_targets, prior, alpha, beta):
        from ..kernels.joint_opt_loss import joint_opt_loss

        l_c, l_p, l_e, grad = joint_opt_loss(logits, soft_targets, prior, alpha, beta,
                                             compute_grad=True)
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(l_c, l_p, l_e)
        return l_c + alpha * l_p + beta * l_e, l_c, l_p, l_e

    @staticmethod
    def backward(ctx, grad_loss, _gc, _gp, _ge):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss.to(torch.float32), None, None, None, None


def joint_optimization_loss_triton(logits, soft_targets, alpha=1.2, beta=0.8, prior=None):
    if prior is None:
        prior = uniform_prior(logits.shape[1], logits.device)
    if not (torch.is_grad_enabled() and logits.requires_grad):
        # No graph will be built (inference, no_grad): skip the gradient kernel entirely.
        from ..kernels.joint_opt_loss import joint_opt_loss

        l_c, l_p, l_e, _ = joint_opt_loss(logits, soft_targets, prior.float(), float(alpha),
                                          float(beta), compute_grad=False)
        return l_c + alpha * l_p + beta * l_e, l_c, l_p, l_e
    return JointOptimizationLossFunction.apply(logits, soft_targets, prior.float(),
                                               float(alpha), float(beta))
