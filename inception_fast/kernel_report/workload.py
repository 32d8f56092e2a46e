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

MODES = ("train", "eval")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def build_model(model: str, size: int, dtype: torch.dtype, backend: str) -> nn.Module:
    import inception_fast

    make = {"inception_v3": inception_fast.inception_v3,
            "inception_v3_paper": inception_fast.inception_v3_paper}[model]
    with torch.device("meta"), triton_on_meta():
        net = make(backend=backend, input_size=size, init_weights=False) \
            if model == "inception_v3" else make(backend=backend, input_size=size)
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


def step(net: nn.Module, batch: int, size: int, dtype: torch.dtype, mode: str) -> None:
    """One step of `mode` on a meta batch; train: the label-smoothing loss of the logits (plus
    0.4 x the aux logits where the head runs) and its backward."""
    x = torch.empty(batch, 3, size, size, device="meta", dtype=dtype).contiguous(
        memory_format=torch.channels_last)
    if mode == "eval":
        net.eval()
        with torch.no_grad():
            net(x)
        return
    net.train()
    out = net(x)
    logits, aux = (out.logits, out.aux_logits) if hasattr(out, "logits") else (out, None)
    loss = logits.float().sum()
    if aux is not None:
        loss = loss + 0.4 * aux.float().sum()
    loss.backward()
