"""RMSProp as TensorFlow defines it (the paper's optimizer), and the optimizer factory."""
from __future__ import annotations

import torch
from torch.optim import Optimizer


class RMSpropTF(Optimizer):
    """TensorFlow's RMSProp (tf.compat.v1.train.RMSPropOptimizer), which the paper uses with
    decay 0.9, momentum 0.9, epsilon 1.0:

        ms  <- decay * ms + (1 - decay) * g^2          (ms starts at ONES, not zeros)
        mom <- momentum * mom + lr * g / sqrt(ms + eps) (eps INSIDE the root; lr in the buffer)
        p   <- p - mom

    torch.optim.RMSprop differs on all three counts (eps outside the root, zero-initialized
    accumulator, lr applied after the momentum buffer). weight_decay adds wd * p to g (L2 in
    the loss, as TF-slim's regularizer does)."""

    def __init__(self, params, lr: float = 0.045, decay: float = 0.9, momentum: float = 0.9,
                 eps: float = 1.0, weight_decay: float = 0.0):
        if lr < 0 or not 0.0 <= decay < 1.0 or momentum < 0 or eps <= 0 or weight_decay < 0:
            raise ValueError(f"invalid RMSpropTF settings: lr={lr}, decay={decay}, "
                             f"momentum={momentum}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, decay=decay, momentum=momentum, eps=eps,
                                      weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay, mom, eps, wd = (group[k] for k in
                                       ("lr", "decay", "momentum", "eps", "weight_decay"))
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("RMSpropTF does not support sparse gradients")
                if wd:
                    g = g.add(p, alpha=wd)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["square_avg"] = torch.ones_like(p, memory_format=torch.preserve_format)
                    state["momentum_buffer"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format)
                state["step"] += 1
                ms, buf = state["square_avg"], state["momentum_buffer"]
                ms.mul_(decay).addcmul_(g, g, value=1.0 - decay)
                buf.mul_(mom).addcdiv_(g, ms.add(eps).sqrt_(), value=lr)
                p.sub_(buf)
        return loss


OPTIMIZERS = ("rmsprop", "sgd")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv / linear weights only, not on BN parameters or biases (TF-slim)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(name: str, model: torch.nn.Module, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9, rms_decay: float = 0.9, rms_eps: float = 1.0):
    groups = param_groups(model, weight_decay)
    if name == "rmsprop":
        return RMSpropTF(groups, lr=lr, decay=rms_decay, momentum=momentum, eps=rms_eps)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
