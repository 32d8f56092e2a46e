"""Losses computed by fused Triton kernels: label-smoothing cross-entropy (paper section 7) and
the joint-optimization loss for noisy labels (Tanaka et al., CVPR 2018).

    label_smoothing_cross_entropy(logits, target, eps=0.1, backend="auto") -> scalar mean loss
    joint_optimization_loss(logits, soft_targets, alpha=1.2, beta=0.8, prior=None,
                            backend="auto") -> (loss, {"L_c", "L_p", "L_e"})

`backend`: "torch" (the reference), "triton" (fused kernels; CPU tensors need the Triton
interpreter), "auto" (triton for CUDA tensors when Triton is usable, torch otherwise).

These are the checked public entries: arguments are validated here, the backend resolved, and
the op's own dispatcher (ops/label_smoothing_ce.py, ops/joint_opt_loss.py: the reference or the
registered Triton op) computes. Traceable by torch.compile(fullgraph=True): checks that read
tensor values run in eager only (losses/checks.py, values_readable).
"""
from __future__ import annotations

import torch

from .. import backends
from ..ops import joint_opt_loss as _jo
from ..ops import label_smoothing_ce as _ls
from .checks import check_eps, check_logits, check_prior, check_soft_targets, check_target

__all__ = ["label_smoothing_cross_entropy", "joint_optimization_loss",
           "LabelSmoothingCrossEntropy", "JointOptimizationLoss", "resolve_backend"]

LOSS_BACKENDS = ("torch", "triton", "auto")


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """"torch" or "triton" for one call on `x` (losses have no CUDA C++ backend)."""
    if backend not in LOSS_BACKENDS:
        raise ValueError(f"unknown loss backend {backend!r}; choose one of "
                         f"{', '.join(LOSS_BACKENDS)}")
    if backend == "auto":
        # The fused kernel reads the logits twice where torch's softmax/log_softmax/reductions
        # take several passes and kernels. Not yet timed on a GPU: bench/ must confirm it before
        # this default is trusted. On CPU the interpreter is slow, so the reference runs.
        if x.device.type == "cuda" and backends.why_unavailable("triton") is None:
            return "triton"
        return "torch"
    if backend == "triton":
        backends.check("triton")
    return backends.resolve(backend, x)


def label_smoothing_cross_entropy(logits: torch.Tensor, target: torch.Tensor, eps: float = 0.1,
                                  backend: str = "auto", *,
                                  check_values: bool = True) -> torch.Tensor:
    """Mean label-smoothing cross-entropy, fp32 scalar; equals
    F.cross_entropy(logits.float(), target, label_smoothing=eps). check_values=False skips
    the class-index range check (a host sync per call on a GPU) for labels already validated,
    as the trainer's are once at start-up."""
    what = "label_smoothing_cross_entropy"
    check_logits(logits, what)
    check_target(target, logits, what, values=check_values)
    check_eps(eps, what)
    return _ls.label_smoothing_cross_entropy(logits, target, eps,
                                             backend=resolve_backend(backend, logits))


def joint_optimization_loss(logits: torch.Tensor, soft_targets: torch.Tensor, alpha: float = 1.2,
                            beta: float = 0.8, prior: torch.Tensor | None = None,
                            backend: str = "auto", *, check_values: bool = True):
    """Joint-optimization loss L_c + alpha L_p + beta L_e (see inception_fast.ops.joint_opt_loss).

    Returns (loss, terms): loss an fp32 scalar differentiable w.r.t. logits; terms
    {"L_c", "L_p", "L_e"} detached fp32 scalars. soft_targets (B, K) probabilities and prior
    (K,) (uniform if None) are treated as constants. check_values=False: the prior's values
    are not checked (see label_smoothing_cross_entropy)."""
    what = "joint_optimization_loss"
    check_logits(logits, what)
    check_soft_targets(soft_targets, logits, what)
    check_prior(prior, logits.shape[1], logits.device, what, values=check_values)
    loss, l_c, l_p, l_e = _jo.joint_optimization_loss(logits, soft_targets, alpha, beta, prior,
                                                      backend=resolve_backend(backend, logits))
    return loss, {"L_c": l_c.detach(), "L_p": l_p.detach(), "L_e": l_e.detach()}


class LabelSmoothingCrossEntropy(torch.nn.Module):
    """Module form of label_smoothing_cross_entropy: forward(logits, target)."""

    def __init__(self, eps: float = 0.1, backend: str = "auto"):
        super().__init__()
        check_eps(eps, "LabelSmoothingCrossEntropy")
        if backend not in LOSS_BACKENDS:
            raise ValueError(f"unknown loss backend {backend!r}; choose one of "
                             f"{', '.join(LOSS_BACKENDS)}")
        self.eps, self.backend = float(eps), backend

    def forward(self, logits, target):
        return label_smoothing_cross_entropy(logits, target, self.eps, self.backend)

    def extra_repr(self):
        return f"eps={self.eps}, backend={self.backend!r}"


class JointOptimizationLoss(torch.nn.Module):
    """Module form of joint_optimization_loss: forward(logits, soft_targets) -> (loss, terms).
    `prior` is a buffer (moves with .to()), None for uniform."""

    def __init__(self, alpha: float = 1.2, beta: float = 0.8, prior: torch.Tensor | None = None,
                 backend: str = "auto"):
        super().__init__()
        if backend not in LOSS_BACKENDS:
            raise ValueError(f"unknown loss backend {backend!r}; choose one of "
                             f"{', '.join(LOSS_BACKENDS)}")
        if prior is not None:
            if not isinstance(prior, torch.Tensor) or prior.dim() != 1:
                raise ValueError("JointOptimizationLoss: prior must be a 1-D tensor (K,) or None")
            check_prior(prior, prior.shape[0], prior.device, "JointOptimizationLoss")
        self.alpha, self.beta, self.backend = float(alpha), float(beta), backend
        self.register_buffer("prior", None if prior is None else prior.detach().float().clone())

    def forward(self, logits, soft_targets):
        return joint_optimization_loss(logits, soft_targets, self.alpha, self.beta, self.prior,
                                       self.backend)

    def extra_repr(self):
        return f"alpha={self.alpha}, beta={self.beta}, backend={self.backend!r}"
