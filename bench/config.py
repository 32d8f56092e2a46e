"""What the benchmark suite runs: the options (bench/conftest.py turns pytest's command line into
a BenchConfig) and the list of cases each benchmark file is parametrized over.

Three sizes of run:
  smoke   (default without a GPU, or --bench-smoke): a handful of layers, blocks and the model
          at tiny batch and spatial sizes, fp32; proves the harness works. Numbers mean nothing.
  compact (default on a GPU): representative layers and blocks, bf16, batch 256, both modes;
          what bench/run_gpu.sh runs inside its 10-minute budget.
  full    (--bench-full): every distinct conv configuration of the layer table, every Mixed
          block, batches 32 and 256, bf16 / fp16 / fp32 (TF32).
--bench-batch adds batch sizes, --bench-dtype / --bench-providers / --bench-mode narrow.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import layers as L

LAYER_PROVIDERS = ("cudnn", "compile", "triton", "cuda", "auto")
MODEL_PROVIDERS = LAYER_PROVIDERS + ("paper",)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MODES = ("train", "eval")

SMOKE_BATCH = 2
SMOKE_C_MAX = 16  # smoke layers: at most this many channels ...
SMOKE_HW_MAX = 7  # ... and this many pixels a side
SMOKE_BLOCK_HW = 5  # smoke blocks run on 5x5 inputs (grid reductions still give 2x2)


@dataclass
class BenchConfig:
    device: torch.device
    smoke: bool
    full: bool = False
    batches: tuple[int, ...] = ()
    dtypes: tuple[str, ...] = ()
    modes: tuple[str, ...] = MODES
    providers: tuple[str, ...] | None = None  # None: every provider
    compile_mode: str = "max-autotune"
    model_compile_mode: str = "max-autotune"
    model_sizes: tuple[int, ...] = (299, 79)
    rep_ms: float = 100.0
    peak_tflops: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def scale(self) -> str:
        return "smoke" if self.smoke else ("full" if self.full else "compact")


def _csv(value: str | None, allowed, what: str) -> tuple[str, ...] | None:
    if not value:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in items if v not in allowed]
    if bad:
        raise ValueError(f"{what}: unknown {bad}; choose from {', '.join(allowed)}")
    return items


def make_config(*, smoke: bool | None = None, full: bool = False, batches=(), dtypes=None,
                modes=None, providers=None, compile_mode="max-autotune",
                model_compile_mode="max-autotune", model_sizes=None, rep_ms=None,
                peak_tflops=None, device: str | None = None) -> BenchConfig:
    """Resolve the command-line options into one BenchConfig (smoke by default without CUDA)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    smoke = bool(smoke) or dev.type != "cuda"
    if full and smoke:
        full = False  # a full run needs a GPU: the CPU still runs the smoke sizes
    base_batches = (SMOKE_BATCH,) if smoke else ((32, 256) if full else (256,))
    user = tuple(int(b) for b in batches or ())
    if any(b < 1 for b in user):
        raise ValueError(f"--bench-batch must be positive, got {user}")
    all_batches = tuple(dict.fromkeys(base_batches + user))
    base_dtypes = ("fp32",) if smoke else (("bf16", "fp16", "fp32") if full else ("bf16",))
    return BenchConfig(
        device=dev, smoke=smoke, full=full, batches=all_batches,
        dtypes=_csv(dtypes, DTYPES, "--bench-dtype") or base_dtypes,
        modes=_csv(modes, MODES, "--bench-mode") or MODES,
        providers=_csv(providers, MODEL_PROVIDERS, "--bench-providers"),
        compile_mode=compile_mode, model_compile_mode=model_compile_mode,
        model_sizes=tuple(int(s) for s in model_sizes) if model_sizes else (299, 79),
        rep_ms=float(rep_ms) if rep_ms else (20.0 if smoke else 100.0),
        peak_tflops=peak_tflops)


@dataclass(frozen=True)
class Case:
    kind: str  # "layer", "block" or "model"
    name: str  # layer / block name, or the model's size ("299", "79")
    mode: str
    dtype: str
    batch: int
    provider: str

    @property
    def id(self) -> str:
        return f"{self.name}-{self.mode}-{self.dtype}-b{self.batch}-{self.provider}"

    @property
    def group(self) -> str:
        return f"{self.kind} {self.name} {self.mode} {self.dtype} b{self.batch}"


def _providers(cfg: BenchConfig, allowed) -> tuple[str, ...]:
    return tuple(p for p in allowed if cfg.providers is None or p in cfg.providers)


def layer_names(cfg: BenchConfig) -> list[str]:
    if cfg.smoke:
        return list(L.SMOKE_LAYERS)
    if cfg.full:
        return [first.name for first, _ in L.distinct_layers()]
    return list(L.COMPACT_LAYERS)


def block_names(cfg: BenchConfig) -> list[str]:
    if cfg.smoke:
        return list(L.SMOKE_BLOCKS)
    return list(L.BLOCKS) if cfg.full else list(L.COMPACT_BLOCKS)


def _cases(kind, names, cfg, providers, dtypes=None, batches=None):
    return [Case(kind, n, m, d, b, p)
            for n in names for m in cfg.modes for d in (dtypes or cfg.dtypes)
            for b in (batches or cfg.batches) for p in _providers(cfg, providers)]


def layer_cases(cfg: BenchConfig) -> list[Case]:
    return _cases("layer", layer_names(cfg), cfg, LAYER_PROVIDERS)


def block_cases(cfg: BenchConfig) -> list[Case]:
    return _cases("block", block_names(cfg), cfg, LAYER_PROVIDERS)


def model_cases(cfg: BenchConfig) -> list[Case]:
    # The whole model trains with AMP bf16 (and fp32 params): one dtype, whatever --bench-dtype.
    out = []
    for size in cfg.model_sizes:
        provs = MODEL_PROVIDERS if size == 299 else LAYER_PROVIDERS  # the paper model: 299 only
        out += _cases("model", [str(size)], cfg, provs, dtypes=("bf16",))
    return out
