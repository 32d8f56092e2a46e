"""BatchNorm maths every fused op shares (pure torch, no kernels): the eval-mode affine."""
from __future__ import annotations

import torch


def f32_vec(t):
    """A per-channel BN parameter as the kernels take it: detached, float32, contiguous."""
    return None if t is None else t.detach().float().contiguous()


def eval_affine(gamma, beta, running_mean, running_var, eps):
    """BN with the running statistics as relu(a*y + c): fresh float32 contiguous
    (mean, invstd, a, c) with a = gamma*invstd, c = beta - mean*a (gamma 1, beta 0 when None).
    Fresh tensors, never views of the buffers: registered ops may not return aliases."""
    if running_mean is None or running_var is None:
        raise ValueError("conv_bn_relu: eval mode (training=False) needs running_mean and "
                         "running_var")
    mean = running_mean.detach().float().clone()
    invstd = torch.rsqrt(running_var.detach().float() + eps)
    a = invstd.clone() if gamma is None else gamma.detach().float() * invstd
    c = -mean * a if beta is None else beta.detach().float() - mean * a
    return mean.contiguous(), invstd.contiguous(), a.contiguous(), c.contiguous()
