"""The autotune lists of the GEMM kernels, as data, and the pruning every list goes through.

Each list is (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) tuples. Under the interpreter
(which never benchmarks) a kernel gets one placeholder config and its launcher sizes the tiles
to the problem instead.

Before any config is compiled or benchmarked, `pruner(kernel, ...)` drops those the static
kernel report (`inception-fast kernels --configs all`, inception_fast/kernel_report) found
unlaunchable for sm_90: more shared memory than a block may have, a compile error, or register
spills. The verdicts are data, `config_verdicts.json` beside this file, keyed by kernel, element
size of the data (2: bf16 / fp16, 4: fp32) and config, and rewritten from an unpruned full run
with `inception-fast kernels --configs all --write-verdicts`. When every config of a launch is
listed, the ones that only spill are kept (they launch, slowly); if none, the list is kept whole
(the GPU then reports the resource error itself).
"""
from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path

import torch
import triton

from .dtypes import interpreter_on

VERDICTS = Path(__file__).with_name("config_verdicts.json")

# Tile constexpr names, in the order a config key lists them.
TILE_KEYS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_C", "BLOCK_G", "BLOCK_R", "BLOCK")

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) per kernel family.
CONV_FWD = [  # conv2d_fwd (every filter shape), conv3x3s2_pool. (128, 256) spilled everywhere.
    (128, 128, 32, 8, 3), (128, 128, 64, 8, 3), (128, 64, 32, 4, 4), (128, 64, 64, 4, 3),
    (64, 128, 32, 4, 4), (64, 64, 32, 4, 4), (64, 64, 64, 4, 3), (64, 32, 32, 2, 4),
    (256, 64, 32, 8, 3), (128, 32, 32, 4, 4),
]
DGRAD = [
    (128, 128, 32, 8, 3), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (64, 64, 64, 4, 3),
    (128, 32, 64, 4, 4), (64, 32, 32, 4, 4), (32, 64, 32, 4, 4), (128, 128, 64, 8, 3),
]
WGRAD = [
    (128, 128, 32, 8, 3), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (64, 64, 64, 4, 3),
    (64, 64, 32, 4, 4), (32, 64, 64, 4, 4), (64, 32, 64, 4, 4), (128, 128, 64, 8, 3),
]
GEMM1X1_ROUTED = [
    (128, 128, 32, 8, 3), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (128, 128, 64, 8, 3),
    (64, 64, 64, 4, 3), (256, 64, 32, 8, 3), (64, 32, 64, 2, 4),
]

# Which list each autotuned kernel uses (the verdicts' kernels).
LISTS = {"_conv2d_fwd_kernel": CONV_FWD, "_conv3x3s2_pool_kernel": CONV_FWD,
         "_dgrad_kernel": DGRAD, "_wgrad_kernel": WGRAD,
         "_gemm1x1_routed_kernel": GEMM1X1_ROUTED}


# The tile model that keeps KEEP candidates per shape (a model of an H100 / H200 SXM, not a
# measurement): SMS SMs, each doing MMA_RATE multiply-adds/s (989 TFLOP/s bf16 dense / 132) and
# fed OPERAND_RATE bytes/s of operand tiles from L2 (a third of ~10 TB/s L2 being an estimate).
SMS = 132
MMA_RATE = 989e12 / 2 / SMS
OPERAND_RATE = 10e12 / SMS
KEEP = 3


def sm_count(device: torch.device) -> int | None:
    """SMs of the GPU a launch on `device` runs on, for grid sizing (split-K, partial sums):
    the visible GPU's; on meta tensors (the static report's workloads) the model's SMS, so the
    report counts the launches and bytes an H100 run would choose; None under the interpreter
    (programs run one after another: more of them only adds work)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return SMS if device.type == "meta" else None
# False inside verdicts_disabled().
_ENABLED = [True]


def modelled_time(m: int, n: int, k: int, bm: int, bn: int, bk: int, warps: int,
                  elt: int = 2, grids: int = 1) -> float:
    """Modelled seconds of `grids` (m x n, reduction k per tap) GEMMs on one tile config, per
    tap: whole waves of grids * ceil(m / bm) * ceil(n / bn) tiles over the SMs (8 warps: one
    tile per SM, 4: two, 2: four, sharing its rates), each K step bound by its MMAs or by
    loading its two operand tiles; k padded to whole bk steps."""
    per_sm = max(1, 8 // warps)
    tiles = grids * -(-m // bm) * -(-n // bn)
    waves = -(-tiles // (SMS * per_sm))
    step = max(bm * bn * bk / MMA_RATE, (bm + bn) * bk * elt / OPERAND_RATE)
    return waves * per_sm * -(-k // bk) * step


def keep_fastest(configs: list, m: int, n: int, k: int, keep: int = KEEP, grids: int = 1) -> list:
    """The `keep` configs of least modelled_time for this GEMM (list order breaks ties): the
    GPU's autotuner then measures only those."""
    ranked = sorted(configs, key=lambda c: modelled_time(
        m, n, k, c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_warps,
        grids=grids))
    return ranked[:keep]


def fits_problem(configs: list, m: int, n: int, k: int) -> list:
    """`configs` without tiles much larger than the problem (a 128-wide tile for 32 channels
    only idles); the first config if none is left."""
    def cap(v, floor):
        return max(floor, triton.next_power_of_2(v))
    kept = [c for c in configs if c.kwargs["BLOCK_N"] <= cap(n, 32)
            and c.kwargs["BLOCK_K"] <= cap(k, 32) and c.kwargs["BLOCK_M"] <= cap(m, 64)]
    return kept or configs[:1]


def size_pruner(gemm):
    """A `by_size` for autotuned(): `gemm(args)` gives the kernel's (m, n, k, grids), k the
    reduction per tap and grids how many such m x n grids one launch runs (stride phases,
    taps x K splits); keeps the KEEP fastest by modelled_time of those that fit the problem.
    Triton passes positional arguments in named_args and keyword ones in kwargs."""
    def prune(configs, named_args, **kwargs):
        m, n, k, grids = gemm({**named_args, **kwargs})
        fit = fits_problem(configs, m, n, k)
        return keep_fastest(fit, m, n, k, grids=grids) if _ENABLED[0] else fit
    return prune


def gpu_configs(shapes) -> list:
    """triton.Configs of (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) tuples."""
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
            for m, n, k, w, s in shapes]


def autotune_configs(shapes, placeholder=(128, 64, 32, 4, 1)) -> list:
    """The autotune list of `shapes` on a GPU; the one placeholder under the interpreter."""
    return gpu_configs([placeholder] if interpreter_on() else shapes)


def config_key(kwargs: dict, num_warps: int, num_stages: int) -> str:
    """"M=128 N=128 K=32 w8 s3": the tile constexprs, warps and stages (the report's name)."""
    tiles = " ".join(f"{k[6:] if k.startswith('BLOCK_') else k}={kwargs[k]}"
                     for k in TILE_KEYS if k in kwargs)
    return f"{tiles} w{num_warps} s{num_stages}".strip()


@functools.lru_cache(maxsize=None)
def _verdicts(path: str) -> dict:
    p = Path(path)
    return json.loads(p.read_text()).get("kernels", {}) if p.exists() else {}



@contextlib.contextmanager
def verdicts_disabled():
    """Prune by problem size only: no verdicts, no keep_fastest (the report's
    --write-verdicts run: it must see every config that fits a launch to judge it)."""
    _ENABLED[0] = False
    try:
        yield
    finally:
        _ENABLED[0] = True


def element_size(args: dict) -> int:
    """Element size of a GEMM kernel's data: the smallest among its floating-point tensor
    arguments (inputs and outputs are in the data's dtype, BN and split-K partials fp32, the
    conv+pool's argmax uint8)."""
    return min((v.element_size() for v in args.values()
                if isinstance(v, torch.Tensor) and v.is_floating_point()), default=0)


def launchable(kernel: str, configs: list, elt_bytes: int, verdicts: dict | None = None) -> list:
    """`configs` without those the report found unlaunchable for `kernel` at this element
    size (see the module doc for what is kept when all are)."""
    if not _ENABLED[0]:
        return list(configs)
    bad = (verdicts if verdicts is not None else _verdicts(str(VERDICTS))) \
        .get(kernel, {}).get(str(elt_bytes), {})
    if not bad:
        return list(configs)
    why = {id(c): bad.get(config_key(c.kwargs, c.num_warps, c.num_stages)) for c in configs}
    ok = [c for c in configs if why[id(c)] is None]
    if ok:
        return ok
    spill_only = [c for c in configs if why[id(c)].startswith("spill")]
    return spill_only or list(configs)


def autotuned(key: list[str], by_size=None):
    """triton.autotune over the kernel's list (LISTS, by the kernel's name), pruned by
    `pruner` before anything is compiled."""
    def wrap(jit_fn):
        name = jit_fn.fn.__name__ if hasattr(jit_fn, "fn") else jit_fn.__name__
        return triton.autotune(configs=autotune_configs(LISTS[name]), key=key,
                               prune_configs_by={"early_config_prune": pruner(name, by_size)},
                               cache_results=True)(jit_fn)
    return wrap


def pruner(kernel: str, by_size=None):
    """An early_config_prune for triton.autotune: drop the unlaunchable configs of `kernel`,
    then (if given) apply `by_size(configs, named_args, **kwargs)` to what is left."""
    def prune(configs, named_args, **kwargs):
        kept = launchable(kernel, configs, element_size({**named_args, **kwargs}))
        return by_size(kept, named_args, **kwargs) if by_size else kept
    return prune
