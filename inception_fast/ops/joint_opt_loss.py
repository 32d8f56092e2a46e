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
It is the registered op inception_fast::joint_opt_loss_triton (ops/library.py): forward returns
the loss, its three terms and that gradient from the same pass; its registered backward scales
the saved gradient by grad_output. Functional (it mutates nothing), so torch.compile traces it
as one node each way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .library import absent, name


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


# ---- registered op (functional: it mutates nothing, so its autograd is registered too) -----

@torch.library.custom_op(name("joint_opt_loss_triton"), mutates_args=())
def joint_opt_loss_triton(logits: Tensor, soft_targets: Tensor, prior: Tensor, alpha: float,
                          beta: float, compute_grad: bool
                          ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(loss, L_c, L_p, L_e), fp32 scalars, and d(loss)/d(logits) (logits' dtype (B, K), from
    the same pass; absent when not compute_grad). `prior` (K,) fp32."""
    from ..kernels.joint_opt_loss import joint_opt_loss

    l_c, l_p, l_e, grad = joint_opt_loss(logits, soft_targets, prior, alpha, beta,
                                         compute_grad=compute_grad)
    return (l_c + alpha * l_p + beta * l_e, l_c, l_p, l_e,
            grad if compute_grad else absent(logits))


@joint_opt_loss_triton.register_fake
def _(logits, soft_targets, prior, alpha, beta, compute_grad):
    scalars = tuple(logits.new_empty((), dtype=torch.float32) for _ in range(4))
    grad = (torch.empty(logits.shape, dtype=logits.dtype, device=logits.device) if compute_grad
            else absent(logits))
    return scalars + (grad,)


def _setup_context(ctx, inputs, output):
    _, l_c, l_p, l_e, grad = output
    ctx.mark_non_differentiable(l_c, l_p, l_e, grad)  # the terms are reported, not trained
    ctx.save_for_backward(grad)


def _backward(ctx, grad_loss, _gc, _gp, _ge, _gg):
    (grad,) = ctx.saved_tensors
    if grad.numel() == 0:
        raise RuntimeError("joint_opt_loss_triton: backward through a call made with "
                           "compute_grad=False")
    # Soft targets and prior are constants (see the module doc): no gradient.
    return grad * grad_loss.to(torch.float32), None, None, None, None, None


torch.library.register_autograd(joint_opt_loss_triton, _backward, setup_context=_setup_context)


# ---- dispatch -----------------------------------------------------------------------------

def joint_optimization_loss_triton(logits, soft_targets, alpha=1.2, beta=0.8, prior=None):
    """Backend "triton": (loss, L_c, L_p, L_e); the gradient kernel runs only when a graph will
    be built."""
    if prior is None:
        prior = uniform_prior(logits.shape[1], logits.device)
    compute_grad = torch.is_grad_enabled() and logits.requires_grad
    return joint_opt_loss_triton(logits, soft_targets, prior.float(), float(alpha),
                                 float(beta), compute_grad)[:4]


def joint_optimization_loss(logits, soft_targets, alpha=1.2, beta=0.8, prior=None, *, backend):
    """(loss, L_c, L_p, L_e) on a concrete `backend` ("torch" or "triton"); inputs already
    checked (inception_fast.losses.joint_optimization_loss is the public, checked entry).
    Soft targets and prior get no gradient."""
    if backend == "torch":
        return joint_optimization_loss_reference(
            logits, soft_targets.detach(), alpha, beta,
            None if prior is None else prior.detach())
    if backend == "triton":
        return joint_optimization_loss_triton(logits, soft_targets, alpha, beta, prior)
    raise ValueError(f"joint_optimization_loss: no backend {backend!r} (torch, triton)")
