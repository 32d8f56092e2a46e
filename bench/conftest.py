"""pytest setup of the benchmark suite: its command-line options, the parametrization of the
bench_*.py files from them, and what goes into pytest-benchmark's JSON besides the timings
(the device, the run's scale, every skipped provider with its reason).

    pytest bench/ --benchmark-only                     # smoke on CPU, compact on a GPU
    pytest bench/ --benchmark-only --bench-full --benchmark-json out.json
    pytest bench/bench_layers.py --benchmark-only --bench-batch 64 --bench-dtype fp16
"""
from __future__ import annotations

import gc

import pytest
import torch

from .config import BenchConfig, block_cases, layer_cases, make_config, model_cases
from .timing import CPU_NOTE, device_name

_CASES = {"layer_case": layer_cases, "block_case": block_cases, "model_case": model_cases}


# (option, its argparse settings): the benchmark suite's command line.
_OPTIONS = (
    ("--bench-full", dict(action="store_true", help="every layer configuration, block, batch "
                          "32+256, bf16/fp16/fp32 (GPU)")),
    ("--bench-smoke", dict(action="store_true",
                           help="tiny smoke sizes even on a GPU (the default without one)")),
    ("--bench-batch", dict(action="append", type=int, default=[],
                           help="add a batch size (repeatable)")),
    ("--bench-dtype", dict(default=None, help="comma list of bf16,fp16,fp32 (fp32 = TF32)")),
    ("--bench-mode", dict(default=None, help="comma list of train,eval")),
    ("--bench-providers", dict(default=None,
                               help="comma list of cudnn,compile,triton,cuda,auto,paper")),
    ("--bench-compile-mode", dict(default="max-autotune", help="torch.compile mode for layers "
                                  "and blocks (default max-autotune)")),
    ("--bench-model-compile-mode", dict(default="max-autotune", help="torch.compile mode for "
                                        "the whole model (default max-autotune)")),
    ("--bench-model-size", dict(action="append", type=int, default=[], help="model variant(s) "
                                "to run: 299, 151, 79 (default 299 and 79)")),
    ("--bench-rep-ms", dict(type=float, default=None,
                            help="time budget per measurement in ms (default 100 on GPU)")),
    ("--bench-peak-tflops", dict(type=float, default=None, help="the GPU's peak TFLOP/s for the "
                                 "fraction-of-peak column, if not listed")),
)


def pytest_addoption(parser):
    g = parser.getgroup("inception_fast benchmarks")
    for name, settings in _OPTIONS:
        g.addoption(name, **settings)


def pytest_configure(config):
    if not hasattr(config.option, "bench_full"):
        return
    config._bench_cfg = make_config(
        smoke=config.getoption("bench_smoke"), full=config.getoption("bench_full"),
        batches=config.getoption("bench_batch"), dtypes=config.getoption("bench_dtype"),
        modes=config.getoption("bench_mode"), providers=config.getoption("bench_providers"),
        compile_mode=config.getoption("bench_compile_mode"),
        model_compile_mode=config.getoption("bench_model_compile_mode"),
        model_sizes=config.getoption("bench_model_size"), rep_ms=config.getoption("bench_rep_ms"),
        peak_tflops=config.getoption("bench_peak_tflops"))


def _cfg(config) -> BenchConfig:
    return config._bench_cfg


def pytest_generate_tests(metafunc):
    for argname, cases in _CASES.items():
        if argname in metafunc.fixturenames:
            cs = cases(_cfg(metafunc.config))
            metafunc.parametrize(argname, cs, ids=[c.id for c in cs])


@pytest.fixture
def bench_cfg(request) -> BenchConfig:
    return _cfg(request.config)


@pytest.fixture(autouse=True)
def _bench_env(request):
    """Settings around each benchmark. CPU smoke: one intra-op thread (tiny ops on a shared,
    busy CPU spend far longer in OpenMP's spinning than in arithmetic). GPU: after a model or a
    compiled benchmark, its memory (CUDA graph pools, compile caches) is released."""
    threads = torch.get_num_threads()
    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    # GPU: fp32 means TF32 on tensor cores for cuDNN, matmuls and Triton/inductor alike, and
    # cuDNN picks its fastest algorithm. Only inside benchmarks: the tests in the same pytest
    # session keep torch's defaults (their fp32 tolerances assume no TF32).
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision())
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    yield
    torch.set_num_threads(threads)
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
     torch.backends.cudnn.benchmark) = saved[:3]
    torch.set_float32_matmul_precision(saved[3])
    callspec = getattr(request.node, "callspec", None)
    case = next(iter(callspec.params.values()), None) if callspec else None
    if torch.cuda.is_available() and getattr(case, "provider", None) is not None \
            and (case.kind == "model" or case.provider == "compile"):
        torch._dynamo.reset()
        gc.collect()  # slow (~0.5 s with torch loaded): only where cycles hold GPU memory
        torch.cuda.empty_cache()


def _info(config) -> dict:
    cfg = _cfg(config)
    info = {"device": device_name(cfg.device), "scale": cfg.scale, "smoke": cfg.smoke,
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "compile_mode": cfg.compile_mode, "model_compile_mode": cfg.model_compile_mode}
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:  # an absent or broken triton is reported by the skips
        info["triton"] = None
    if cfg.device.type == "cuda":
        info["cudnn"] = torch.backends.cudnn.version()
    else:
        info["note"] = CPU_NOTE
    return info


def pytest_report_header(config):
    if not hasattr(config, "_bench_cfg"):
        return None
    cfg = _cfg(config)
    line = f"inception_fast bench: {cfg.scale} run on {device_name(cfg.device)}"
    return [line + (f" -- {CPU_NOTE}" if cfg.device.type != "cuda" else "")]


def pytest_runtest_logreport(report):
    if report.skipped and report.when in ("setup", "call") and "bench_" in report.nodeid:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPS.append({"test": report.nodeid, "reason": reason.removeprefix("Skipped: ")})


_SKIPS: list[dict] = []  # filled during the run, written into the JSON


def pytest_benchmark_update_machine_info(config, machine_info):
    if hasattr(config, "_bench_cfg"):
        machine_info["inception_fast"] = _info(config)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    if hasattr(config, "_bench_cfg"):
        output_json["inception_fast"] = dict(_info(config), skipped=list(_SKIPS))


def pytest_terminal_summary(terminalreporter, config):
    if hasattr(config, "_bench_cfg") and _cfg(config).device.type != "cuda":
        terminalreporter.write_line(f"inception_fast bench: {CPU_NOTE}", yellow=True)
