"""Whole model: inference and training-step images/s (SGD step, AMP bf16, channels_last) and
peak memory, at 299x299 and in the 79x79 variant of the paper's section 9.

Providers: cudnn = eager torch (299: torchvision.models.inception_v3; 79: inception_fast's
79 variant on backend "torch", since torchvision has no such variant), compile = torch.compile
of that, triton / cuda / auto = inception_fast.inception_v3(backend=...), paper =
inception_v3_paper (the paper's Table 1 network, backend auto; 299 only)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import inception_fast
from inception_fast.models.shapes import min_input_size

from .flops import count_conv_flops
from .harness import call_or_skip, compiled, generator, record, skip_if_unavailable

CL = torch.channels_last


def model_builder(provider: str, size: int, aux: bool):
    """A zero-argument constructor of the model `provider` benchmarks (a builder, so the same
    network can also be instantiated on the meta device to count its FLOPs)."""
    if provider in ("cudnn", "compile"):
        if size == 299:
            try:
                import torchvision
            except ImportError as e:
                pytest.skip(f"torchvision is not installed ({e})")
            return lambda: torchvision.models.inception_v3(weights=None, aux_logits=aux,
                                                           init_weights=False)
        return lambda: inception_fast.inception_v3(input_size=size, aux_logits=aux,
                                                   init_weights=False, backend="torch")
    if provider == "paper":
        from inception_fast.models import get_model

        return lambda: get_model("inception_v3_paper", input_size=size, aux_logits=aux,
                                 backend="auto")
    return lambda: inception_fast.inception_v3(input_size=size, aux_logits=aux,
                                               init_weights=False, backend=provider)


def _loss(out, target):
    if isinstance(out, tuple):  # InceptionOutputs(logits, aux_logits) in training
        logits, aux = out
        loss = F.cross_entropy(logits, target)
        return loss if aux is None else loss + 0.4 * F.cross_entropy(aux, target)
    return F.cross_entropy(out, target)


def model_step(model, fwd, x, target, train: bool, device):
    amp = torch.autocast(device.type, dtype=torch.bfloat16)
    if not train:
        model.eval()

        def step():
            with torch.inference_mode(), amp:
                fwd(x)
        return step
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        with amp:
            loss = _loss(fwd(x), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def test_model(benchmark, bench_cfg, model_case):
    case, cfg = model_case, bench_cfg
    skip_if_unavailable(case, cfg)
    size, train = int(case.name), case.mode == "train"
    # Smoke: no aux head, and the variant's smallest input (the same layers at a few pixels).
    aux = not cfg.smoke
    hw = min_input_size(size, aux=False) if cfg.smoke else size
    build = model_builder(case.provider, size, aux)
    if case.provider == "paper":  # written in parallel: whatever stops it skips, with the reason
        try:
            model = build()
        except Exception as e:
            pytest.skip(f"inception_v3_paper could not be built: {type(e).__name__}: {e}")
    else:
        model = call_or_skip(case, build)
    model.to(cfg.device, memory_format=CL)
    fwd = compiled(model, cfg.model_compile_mode) if case.provider == "compile" else model
    g = generator(cfg.device)
    x = torch.randn(case.batch, 3, hw, hw, generator=g, device=cfg.device).contiguous(memory_format=CL)
    target = torch.randint(0, 1000, (case.batch,), generator=g, device=cfg.device)
    step = model_step(model, fwd, x, target, train, cfg.device)
    flops = count_conv_flops(build, (hw, hw), train) * case.batch
    record(benchmark, case, cfg, step, flops_fwd=flops, images=case.batch, input=f"3x{hw}x{hw}",
           aux_logits=aux, amp="bf16", impl=_impl(case.provider, size, cfg.model_compile_mode))


def _impl(provider: str, size: int, compile_mode: str) -> str:
    if provider == "paper":
        return "inception_fast inception_v3_paper backend=auto"
    if provider not in ("cudnn", "compile"):
        return f"inception_fast inception_v3 backend={provider}"
    eager = "torchvision inception_v3" if size == 299 else "inception_fast inception_v3 backend=torch"
    return eager if provider == "cudnn" else f"torch.compile({eager}, mode={compile_mode!r})"
