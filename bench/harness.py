"""What every benchmark does: decide whether its provider can run here (else skip, saying why),
time the target (bench/timing.py), and record the numbers in benchmark.extra_info.

Providers:
  cudnn    torch eager: F.conv2d + F.batch_norm + F.relu in channels_last (the reference op,
           inception_fast.ops.conv_bn_relu_reference; cuDNN on a GPU, oneDNN/native on CPU)
  compile  torch.compile of the same (GPU only)
  triton, cuda, auto   inception_fast's fused ops with that backend
  paper    (model only) inception_v3_paper, the paper's Table 1 network
"""
from __future__ import annotations

import pytest
import torch

from inception_fast import backends
from inception_fast.backends import BackendUnavailableError

from .config import DTYPES, BenchConfig, Case
from .timing import CPU_NOTE, device_name, measure, peak_memory_gib, peak_memory_reset, peak_tflops, synced

# A provider that is not (yet) there raises one of these: skip, do not fail.
SKIPPABLE = (BackendUnavailableError, ImportError, NotImplementedError)


def skip_reason(case: Case, cfg: BenchConfig) -> str | None:
    """Why `case` cannot run on this machine, or None."""
    p = case.provider
    if p == "compile" and cfg.device.type != "cuda":
        return f"torch.compile(mode={cfg.compile_mode!r}) is benchmarked on a GPU only ({CPU_NOTE})"
    if p in ("triton", "cuda"):
        why = backends.why_unavailable(p)
        if why:
            return f"backend {p!r} unavailable: {why}"
        if p == "triton" and cfg.device.type != "cuda" and case.kind != "layer":
            return ("the Triton interpreter is too slow for a whole block or model on CPU; "
                    "the per-layer smoke runs the triton path")
    return None


def skip_if_unavailable(case: Case, cfg: BenchConfig) -> None:
    why = skip_reason(case, cfg)
    if why:
        pytest.skip(why)


def call_or_skip(case: Case, fn):
    """fn(); a provider that turns out to be missing (ImportError, NotImplementedError,
    BackendUnavailableError) skips the benchmark with the error as the reason."""
    try:
        return fn()
    except SKIPPABLE as e:
        pytest.skip(f"{case.provider}: {type(e).__name__}: {e}")


def compiled(fn, mode: str):
    """torch.compile(fn) with static shapes and fresh caches (every benchmark is a new shape:
    without the reset dynamo would recompile dynamic or hit its recompile limit)."""
    torch._dynamo.reset()
    cfn = torch.compile(fn, mode=mode, dynamic=False)
    mark = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)

    def run(*args, **kwargs):
        if mark is not None:  # CUDA graphs of max-autotune: each call is a new step
            mark()
        return cfn(*args, **kwargs)

    return run


def record(benchmark, case: Case, cfg: BenchConfig, fn, *, flops_fwd: float | None,
           images: int | None = None, **info) -> dict:
    """Time fn (a full step: forward, or forward + backward), fill benchmark.extra_info and
    let pytest-benchmark time it too. Returns the extra_info dict."""
    dev = cfg.device
    benchmark.group = case.group
    t = call_or_skip(case, lambda: measure(fn, dev, rep_ms=cfg.rep_ms))
    mem = None
    if dev.type == "cuda":  # one more step, after the timing (its L2-flush buffer is not ours)
        peak_memory_reset(dev)
        fn()
        mem = peak_memory_gib(dev)
    flops = None if flops_fwd is None else flops_fwd * (3 if case.mode == "train" else 1)
    tflops = flops / (t.ms * 1e-3) / 1e12 if flops else None
    peak = peak_tflops(dev, case.dtype, cfg.peak_tflops)
    extra = dict(kind=case.kind, name=case.name, mode=case.mode, dtype=case.dtype,
                 batch=case.batch, provider=case.provider, device=device_name(dev),
                 scale=cfg.scale, smoke=cfg.smoke, flops=flops, tflops=tflops, peak_tflops=peak,
                 frac_peak=(tflops / peak) if (tflops and peak) else None,
                 peak_mem_gib=mem, **t.as_dict(), **info)
    if images:
        extra["images_per_s"] = images / (t.ms * 1e-3)
    if dev.type == "cuda" and case.dtype == "fp32":
        extra["tf32"] = True
    if dev.type != "cuda":
        extra["note"] = CPU_NOTE
    benchmark.extra_info.update(extra)
    # pytest-benchmark's own (host) timing of synchronized calls; a few rounds are enough,
    # the CUDA-event median above is the number the report uses.
    benchmark.pedantic(synced(fn, dev), rounds=3 if dev.type == "cuda" else 1, iterations=1,
                       warmup_rounds=0)
    return extra


def dtype_of(case: Case) -> torch.dtype:
    return DTYPES[case.dtype]


def generator(device: torch.device) -> torch.Generator:
    """Seeded, on the device: random inputs of a GB or so are made there, not on the host."""
    return torch.Generator(device=device).manual_seed(0)
