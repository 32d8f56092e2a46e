"""RMSProp as TensorFlow defines it (the paper's optimizer), and the optimizer factory.

The learning rate may be a float or a 0-dim tensor on the parameters' device. With a tensor,
the optimizer reads it on the device: a scheduler that fills it in place between CUDA-graph
replays changes the replayed update (a Python float would be baked into the graph)."""
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
    the loss, as TF-slim's regularizer does). One foreach launch per operation per group; no
    host read of a device value, so a step can be captured in a CUDA graph."""

    def __init__(self, params, lr: float | torch.Tensor = 0.045, decay: float = 0.9,
                 momentum: float = 0.9, eps: float = 1.0, weight_decay: float = 0.0):
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError(f"a tensor lr must hold one value, got shape {tuple(lr.shape)}")
        if float(lr) < 0 or not 0.0 <= decay < 1.0 or momentum < 0 or eps <= 0 \
                or weight_decay < 0:
            raise ValueError(f"invalid RMSpropTF settings: lr={float(lr)}, decay={decay}, "
                             f"momentum={momentum}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, decay=decay, momentum=momentum, eps=eps,
                                      weight_decay=weight_decay))

    def init_state(self) -> None:
        """Create every parameter's state now (step() would on first use): a CUDA-graph capture
        snapshots the state before its warm-up steps and puts it back after."""
        for group in self.param_groups:
            for p in group["params"]:
                self._state(p)

    def _state(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # No step counter: nothing in TF's update reads it, and a host count would stand still
        # under graph replay.
        state = self.state[p]
        if not state:
            state["square_avg"] = torch.ones_like(p, memory_format=torch.preserve_format)
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["square_avg"], state["momentum_buffer"]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise RuntimeError("RMSpropTF does not support sparse gradients")
            decay, wd = group["decay"], group["weight_decay"]
            if wd:
                grads = torch._foreach_add(grads, params, alpha=wd)
            ms, bufs = map(list, zip(*(self._state(p) for p in params)))
            torch._foreach_mul_(ms, decay)
            torch._foreach_addcmul_(ms, grads, grads, value=1.0 - decay)
            denom = torch._foreach_add(ms, group["eps"])
            torch._foreach_sqrt_(denom)
            # lr enters as a divisor of the denominator, not as value=lr: a Python scalar
            # argument would read a tensor lr on the host (a sync per step, and the
            # capture-time value baked into a CUDA graph).
            torch._foreach_div_(denom, group["lr"])
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_addcdiv_(bufs, grads, denom)
            torch._foreach_sub_(params, bufs)
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


def init_state(opt: Optimizer) -> None:
    """Every state tensor the optimizer's step mutates, created now, equal to what its first
    step would start from (so a CUDA-graph capture can snapshot and restore it). SGD's first
    step sets the buffer to the gradient; momentum * 0 + gradient is the same value."""
    if isinstance(opt, RMSpropTF):
        opt.init_state()
    elif isinstance(opt, torch.optim.SGD):
        for group in opt.param_groups:
            if group["momentum"]:
                for p in group["params"]:
                    opt.state[p].setdefault("momentum_buffer", torch.zeros_like(p))


def state_tensors(opt: Optimizer) -> list[torch.Tensor]:
    """The optimizer's state tensors (what its step writes besides the parameters)."""
    return [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]


def _lr_to_params_device(opt: Optimizer) -> None:
    """Optimizer.load_state_dict puts the saved groups in place, tensor lr included, on the
    device it was loaded to (the CPU for a checkpoint): move each back beside its parameters,
    where the step reads it on the device."""
    for group in opt.param_groups:
        lr = group["lr"]
        if isinstance(lr, torch.Tensor) and group["params"]:
            group["lr"] = lr.to(group["params"][0].device)


def build_optimizer(name: str, model: torch.nn.Module, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9, rms_decay: float = 0.9, rms_eps: float = 1.0,
                    *, lr_tensor: bool = True):
    """The named optimizer over `model`'s parameters, its state created (init_state).
    lr_tensor: lr is a float32 0-dim tensor on the parameters' device (the trainer's choice:
    the same step runs eagerly and as a CUDA graph, the scheduler filling the tensor); SGD then
    runs its fused kernel, whose tensor lr stays on the device (the foreach path reads it on
    the host)."""
    groups = param_groups(model, weight_decay)
    if name == "rmsprop":
        opt = RMSpropTF(groups, lr=lr, decay=rms_decay, momentum=momentum, eps=rms_eps)
    elif name == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum,
                              fused=True if lr_tensor else None)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if lr_tensor:
        # One tensor per group (a scheduler fills each group's own), made after the
        # constructor has checked the float; initial_lr: the exact float a scheduler starts
        # from (train/schedule.py).
        dev = next(iter(model.parameters())).device
        for group in opt.param_groups:
            group["lr"] = torch.tensor(lr, dtype=torch.float32, device=dev)
            group["initial_lr"] = lr
        opt.register_load_state_dict_post_hook(_lr_to_params_device)
    init_state(opt)
    return opt
