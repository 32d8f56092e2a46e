"""Timing for the benchmarks: CUDA events on a GPU, a host timer on CPU.

pytest-benchmark's own timer reads the host clock, which on a GPU measures kernel launches,
not kernels. So every benchmark times its target here first (GPU: CUDA events around each
repetition, L2 flushed before each one as triton.testing.do_bench does, median kept) and
records the result in benchmark.extra_info; pytest-benchmark then also times a few
synchronized calls, so its own table and JSON stay meaningful.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

# Dense tensor-core peaks (TFLOP/s) by device-name substring, most specific first.
# H100 SXM: 989 bf16/fp16, 494 TF32 (docs/DESIGN.md); H200 has the same compute.
PEAK_TFLOPS = (
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "fp32": 378.0}),
    ("H100", {"bf16": 989.0, "fp16": 989.0, "fp32": 494.0}),
    ("H200", {"bf16": 989.0, "fp16": 989.0, "fp32": 494.0}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "fp32": 156.0}),
)

CPU_NOTE = "CPU smoke run: GPU numbers need a GPU"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def peak_tflops(device: torch.device, dtype: str, override: float | None = None) -> float | None:
    """The GPU's dense peak for `dtype` ("bf16", "fp16", "fp32" meaning TF32), or None when
    unknown (CPU, an unlisted GPU)."""
    if override:
        return float(override)
    if device.type != "cuda":
        return None
    return peak_for_name(device_name(device), dtype)


def peak_for_name(name: str, dtype: str) -> float | None:
    for key, peaks in PEAK_TFLOPS:
        if key in name:
            return peaks[dtype]
    return None


@dataclass
class Timing:
    ms: float  # median of the repetitions
    ms_min: float
    ms_mean: float
    reps: int
    timer: str  # "cuda-events" or "host"

    def as_dict(self) -> dict:
        return {"ms": self.ms, "ms_min": self.ms_min, "ms_mean": self.ms_mean,
                "reps": self.reps, "timer": self.timer}


def _summary(samples: list[float], timer: str) -> Timing:
    return Timing(statistics.median(samples), min(samples), statistics.fmean(samples),
                  len(samples), timer)


def _reps(one_ms: float, budget_ms: float, lo: int, hi: int) -> int:
    return int(max(lo, min(hi, budget_ms / max(one_ms, 1e-6))))


def measure_cuda(fn, *, warmup_ms: float = 25.0, rep_ms: float = 100.0, min_reps: int = 5,
                 max_reps: int = 200, flush_l2: bool = True) -> Timing:
    """Median GPU time of fn() in ms over repetitions bracketed by CUDA events."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    one = start.elapsed_time(end)
    for _ in range(_reps(one, warmup_ms, 1, 100)):
        fn()
    n = _reps(one, rep_ms, min_reps, max_reps)
    # Larger than the L2 of any current GPU (H100 50 MB, H200 60 MB): each rep starts cold.
    cache = torch.empty(256 * 1024 * 1024 // 4, dtype=torch.int32, device="cuda") if flush_l2 else None
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        if cache is not None:
            cache.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return _summary([s.elapsed_time(e) for s, e in zip(starts, ends)], "cuda-events")


def measure_host(fn, *, rep_ms: float = 20.0, min_reps: int = 1, max_reps: int = 10) -> Timing:
    """Median wall time of fn() in ms (CPU). The first call sets the count and is a warm-up,
    unless it alone took the whole budget (Triton's interpreter): then it is the sample."""
    t0 = time.perf_counter()
    fn()
    one = (time.perf_counter() - t0) * 1e3
    if one >= rep_ms:
        return _summary([one], "host")
    samples = []
    for _ in range(_reps(one, rep_ms, min_reps, max_reps)):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return _summary(samples, "host")


def measure(fn, device: torch.device, **kw) -> Timing:
    if device.type == "cuda":
        return measure_cuda(fn, **kw)
    return measure_host(fn, **{k: v for k, v in kw.items() if k in ("rep_ms", "min_reps", "max_reps")})


def synced(fn, device: torch.device):
    """fn followed by a device synchronize, for pytest-benchmark's host timer."""
    if device.type != "cuda":
        return fn

    def run():
        fn()
        torch.cuda.synchronize()

    return run


def peak_memory_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30
