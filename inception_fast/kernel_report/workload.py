"""The workloads the report compiles and counts: one training step (forward, loss, backward) or
one inference forward of a model, on meta tensors.

Precision as under torch.autocast on a GPU: the conv and linear weights in the low-precision
dtype (what the fused ops pack them into), BatchNorm parameters and statistics fp32, the input
in the dtype. Meta tensors carry shapes, strides and byte offsets (what the JIT specializes
on) and cost no memory, so the real batch and size are used."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

MODES = ("train", "train-joint", "eval")
AUX_WEIGHT = 0.4  # the trainer's default --aux-weight
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


MODELS = ("inception_v3", "inception_v3_paper", "units", "layers")
# "layers": every distinct conv unit of inception_v3 at --size (C_in, H, W, C_out, kernel,
# stride, padding), each run on its own input as bench/bench_layers.py runs it: outside its
# block, a 1x1 unit is its own GEMM, a variant the model never launches.
# "units": the fused op's paths the model at 299 does not take (a library user's convs): a
# 1x3 without padding and a 7x1 whose taps span more rows than a halo tile (W = 28: larger
# inputs), both the taps-loop kernel. Its input is fixed (ignores --size).
UNITS_INPUT = (64, 30, 30)


def _units(backend: str) -> nn.Module:
    from inception_fast.nn import ConvBNReLU

    return nn.Sequential(ConvBNReLU(64, 48, (1, 3), padding=0, backend=backend),
                         ConvBNReLU(48, 48, (7, 1), padding=(3, 0), backend=backend))


class _Layers(nn.Module):
    """The distinct conv units of inception_v3 at `size`, each on an input of its own shape
    (forward: the sum of their outputs' means, so one backward reaches every unit)."""

    def __init__(self, size: int, backend: str):
        from ..models import inception_v3
        from inception_fast.nn import ConvBNReLU

        super().__init__()
        seen: dict = {}

        def record(m, args):
            c = m.conv
            x = args[0]
            key = (c.in_channels, x.shape[2], x.shape[3], c.out_channels, c.kernel_size,
                   c.stride, c.padding)
            seen.setdefault(key, None)

        ref = inception_v3(backend="torch", input_size=size, init_weights=False).eval()
        hooks = [m.register_forward_pre_hook(record) for m in ref.modules()
                 if isinstance(m, ConvBNReLU)]
        with torch.no_grad():
            ref(torch.empty(1, 3, size, size))  # the reference calls every unit's forward
        for h in hooks:
            h.remove()
        self.shapes = [(k[0], k[1], k[2]) for k in seen]
        self.units = nn.ModuleList(
            ConvBNReLU(k[0], k[3], k[4], stride=k[5], padding=k[6], backend=backend) for k in seen)

    def forward(self, x):
        total = x.new_zeros((), dtype=torch.float32)
        for unit, (c, h, w) in zip(self.units, self.shapes):
            t = torch.empty((x.shape[0], c, h, w), device=x.device, dtype=x.dtype)
            t = t.contiguous(memory_format=torch.channels_last)
            if self.training and torch.is_grad_enabled():
                t.requires_grad_()
            total = total + unit(t).float().mean()
        return total.reshape(1, 1, 1, 1)


def input_shape(model: str, batch: int, size: int) -> tuple[int, ...]:
    return (batch, *UNITS_INPUT) if model == "units" else (batch, 3, size, size)


def build_model(model: str, size: int, dtype: torch.dtype, backend: str) -> nn.Module:
    from ..models import inception_v3
    from ..models.inception_v3_paper import inception_v3_paper

    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    with torch.device("meta"), triton_on_meta():
        if model == "units":
            net = _units(backend)
        elif model == "layers":
            net = _Layers(size, backend)
        elif model == "inception_v3":
            net = inception_v3(backend=backend, input_size=size,
                                              init_weights=False)
        else:
            net = inception_v3_paper(backend=backend, input_size=size)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.to(dtype)
    return net.to(memory_format=torch.channels_last)


@contextlib.contextmanager
def triton_on_meta():
    """Let the Triton path take meta tensors with the interpreter off: the device checks that
    guard a real launch stand aside (no launch happens: capture.recording replaces them)."""
    from inception_fast import backends
    from inception_fast.kernels import dtypes

    saved = dtypes.check_runnable, backends.triton_interpreter_on
    dtypes.check_runnable = lambda *a, **k: None
    backends.triton_interpreter_on = lambda: True
    try:
        yield
    finally:
        dtypes.check_runnable, backends.triton_interpreter_on = saved


def loss_of(logits: torch.Tensor, mode: str, backend: str) -> torch.Tensor:
    """The trainer's criterion (train/loop.py) on one head: label-smoothing cross-entropy
    ("train") or the joint-optimization loss of stage 1 with --joint-opt ("train-joint")."""
    from inception_fast.losses import joint_optimization_loss, label_smoothing_cross_entropy

    loss_backend = "triton" if backend == "triton" else "torch"
    if mode == "train":
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return label_smoothing_cross_entropy(logits, target, eps=0.1, backend=loss_backend)
    soft = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
    return joint_optimization_loss(logits, soft, backend=loss_backend)[0]


def step(net: nn.Module, shape: tuple[int, ...], dtype: torch.dtype, mode: str,
         backend: str = "triton") -> None:
    """One step of `mode` on a meta batch; train modes: the trainer's loss of the logits plus
    AUX_WEIGHT x the same loss of the aux logits (where the head runs), and its backward (half
    the sum of squares of the output for a model without a classifier)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    x = torch.empty(shape, device="meta", dtype=dtype).contiguous(
        memory_format=torch.channels_last)
    if mode == "eval":
        net.eval()
        with torch.no_grad():
            net(x)
        return
    net.train()
    out = net(x)
    logits, aux = (out.logits, out.aux_logits) if hasattr(out, "logits") else (out, None)
    # A model without a classifier (units): half the sum of squares, whose gradient is the
    # output itself, dense channels_last as a real layer's gradient is (the gradient of a
    # plain sum is one broadcast value: stride 0 along channels, no vector loads to see).
    loss = (loss_of(logits, mode, backend) if logits.dim() == 2
            else logits.float().square().sum() / 2)
    if aux is not None:
        loss = loss + AUX_WEIGHT * loss_of(aux, mode, backend)
    loss.backward()
