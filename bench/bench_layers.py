"""Per layer: conv + BN + ReLU of each Inception-v3 conv configuration, train (forward +
backward, batch statistics) and eval, per provider. See bench/conftest.py for the options."""
from __future__ import annotations

import torch

from inception_fast.ops import conv_bn_relu, conv_bn_relu_reference

from . import layers as L
from .config import SMOKE_C_MAX, SMOKE_HW_MAX
from .harness import call_or_skip, compiled, dtype_of, generator, record, skip_if_unavailable

CL = torch.channels_last


def layer_tensors(lay: L.Layer, batch: int, dtype: torch.dtype, device, train: bool):
    """Input, conv weight (in `dtype`, channels_last) and BN parameters/buffers (fp32, as in
    an AMP model), with gradients where training needs them; plus the upstream gradient."""
    g = generator(device)
    kh, kw = lay.kernel

    def rand(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=g, device=device) * scale + shift

    x = rand(batch, lay.c_in, lay.h, lay.w).to(dtype).contiguous(memory_format=CL)
    w = rand(lay.c_out, lay.c_in, kh, kw, scale=(2.0 / (lay.c_in * kh * kw)) ** 0.5)
    w = w.to(dtype).contiguous(memory_format=CL)
    gamma, beta = rand(lay.c_out, scale=0.1, shift=1.0), rand(lay.c_out, scale=0.1)
    rmean, rvar = rand(lay.c_out, scale=0.1), rand(lay.c_out, scale=0.1, shift=1.0).abs()
    gy = rand(batch, lay.c_out, lay.oh, lay.ow).to(dtype).contiguous(memory_format=CL)
    leaves = (x, w, gamma, beta)
    if train:
        for t in leaves:
            t.requires_grad_(True)
    return (x, w, gamma, beta, rmean, rvar), gy, leaves


def layer_step(op, args, gy, leaves, lay: L.Layer, train: bool):
    """One benchmarked step: forward (eval: no autograd), or forward + backward (train)."""
    kw = dict(stride=lay.stride, padding=lay.padding, eps=1e-3, momentum=0.1, training=train)
    if not train:
        def step():
            with torch.no_grad():
                op(*args, **kw)
        return step

    def step():
        for t in leaves:
            t.grad = None
        op(*args, **kw).backward(gy)

    return step


def provider_op(provider: str, compile_mode: str):
    if provider == "cudnn":
        return conv_bn_relu_reference
    if provider == "compile":
        return compiled(conv_bn_relu_reference, compile_mode)

    def ours(*args, **kw):
        return conv_bn_relu(*args, backend=provider, **kw)

    return ours


def test_layer(benchmark, bench_cfg, layer_case):
    case, cfg = layer_case, bench_cfg
    skip_if_unavailable(case, cfg)
    lay = L.by_name(case.name)
    names = next(n for first, n in L.distinct_layers() if first.config == lay.config)
    if cfg.smoke:
        lay = lay.shrunk(SMOKE_C_MAX, SMOKE_HW_MAX)
    train = case.mode == "train"
    args, gy, leaves = layer_tensors(lay, case.batch, dtype_of(case), cfg.device, train)
    op = call_or_skip(case, lambda: provider_op(case.provider, cfg.compile_mode))
    step = layer_step(op, args, gy, leaves, lay, train)
    record(benchmark, case, cfg, step, flops_fwd=lay.flops(case.batch), shape=lay.describe(),
           table_gflop=L.by_name(case.name).gflop, layers=list(names), count=len(names))
