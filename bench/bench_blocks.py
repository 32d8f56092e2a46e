"""Per Mixed block (inception_fast.nn's Inception A-E, torchvision's shapes): train (forward +
backward) and eval per provider. Ours includes whatever the block does beyond single convs
(copy-free concat, horizontal 1x1 fusion) as it lands in inception_fast.nn."""
from __future__ import annotations

import torch
from torch import nn

import inception_fast.nn as ifnn

from . import layers as L
from .config import SMOKE_BLOCK_HW
from .flops import count_conv_flops
from .harness import call_or_skip, compiled, dtype_of, generator, record, skip_if_unavailable

CL = torch.channels_last


def build_block(name: str, backend: str, dtype: torch.dtype, device) -> nn.Module:
    """The block with convs in `dtype` and BatchNorm kept in fp32 (as the layer benchmark,
    and as the parameters an AMP model trains), channels_last."""
    cls_name, kwargs, _, _ = L.BLOCKS[name]
    block = getattr(ifnn, cls_name)(**kwargs, backend=backend)
    block.to(device=device, dtype=dtype, memory_format=CL)
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.float()
    return block


def block_step(block, x, gy, train: bool):
    if not train:
        def step():
            with torch.no_grad():
                block(x)
        return step
    params = list(block.parameters())

    def step():
        x.grad = None
        for p in params:
            p.grad = None
        block(x).backward(gy)

    return step


def test_block(benchmark, bench_cfg, block_case):
    case, cfg = block_case, bench_cfg
    skip_if_unavailable(case, cfg)
    _, _, c_in, hw = L.BLOCKS[case.name]
    hw = SMOKE_BLOCK_HW if cfg.smoke else hw
    dtype, train = dtype_of(case), case.mode == "train"
    backend = {"cudnn": "torch", "compile": "torch"}.get(case.provider, case.provider)
    block = call_or_skip(case, lambda: build_block(case.name, backend, dtype, cfg.device))
    block.train(train)
    fwd = compiled(block, cfg.compile_mode) if case.provider == "compile" else block
    g = generator(cfg.device)
    x = torch.randn(case.batch, c_in, hw, hw, generator=g, device=cfg.device).to(dtype)
    x = x.contiguous(memory_format=CL).requires_grad_(train)
    with torch.no_grad():
        y = call_or_skip(case, lambda: fwd(x))  # also the trial call: a missing path skips here
    gy = torch.randn(y.shape, generator=g, device=cfg.device).to(dtype).contiguous(memory_format=CL)
    del y
    cls_name, kwargs, _, _ = L.BLOCKS[case.name]
    per_image = count_conv_flops(lambda: getattr(ifnn, cls_name)(**kwargs, backend="torch"),
                                 (hw, hw), train, channels=c_in)
    record(benchmark, case, cfg, block_step(fwd, x, gy, train), flops_fwd=per_image * case.batch,
           input=f"{c_in}x{hw}x{hw}", table_gflop=L.block_gflop(case.name))

