"""Compile kernel variants (in parallel worker processes) and read each binary: one record per
variant with everything the report's kernel table shows."""
from __future__ import annotations

import time
import traceback

from . import ir, sass
from inception_fast.kernels.configs import TILE_KEYS, config_key

from .jit_launch import Specialized, compile_specialized
from .parallel import pool_map

# Hopper (H100 / H200) per-SM and per-block limits.
SMEM_PER_BLOCK = 227 * 1024
SMEM_PER_SM = 228 * 1024
SMEM_RESERVED_PER_BLOCK = 1024
REGS_PER_SM = 65536
MAX_WARPS_PER_SM = 64
MAX_BLOCKS_PER_SM = 32



def occupancy(regs: int, shared: int, warps: int) -> int:
    """Blocks per SM on Hopper from registers (allocated per warp in units of 256), shared
    memory and warps (the CUDA occupancy calculator's rules)."""
    if shared > SMEM_PER_BLOCK:
        return 0
    per_warp = -(-max(regs, 1) * 32 // 256) * 256
    by_regs = (REGS_PER_SM // per_warp) // warps
    by_smem = SMEM_PER_SM // (shared + SMEM_RESERVED_PER_BLOCK)
    return max(0, min(by_regs, by_smem, MAX_WARPS_PER_SM // warps, MAX_BLOCKS_PER_SM))


ELEMENT_BYTES = {"fp64": 8, "i64": 8, "fp32": 4, "i32": 4, "u32": 4, "fp16": 2, "bf16": 2,
                 "i16": 2, "u16": 2, "i8": 1, "u8": 1, "i1": 1, "fp8e4nv": 1, "fp8e5": 1}


FLOAT_TYPES = ("fp64", "fp32", "fp16", "bf16", "fp8e4nv", "fp8e5")


def elt_bytes(signature: dict) -> int:
    """kernels.configs.element_size from a signature: the smallest floating-point pointer
    element."""
    return min((ELEMENT_BYTES[t[1:]] for t in signature.values()
                if isinstance(t, str) and t.startswith("*") and t[1:] in FLOAT_TYPES),
               default=0)


def describe(spec: Specialized) -> tuple[str, str]:
    """(config, flags): the tile constexprs with warps / stages, and the other constexprs."""
    cv = spec.constexpr_values()
    cfg = config_key(cv, spec.options.num_warps, spec.options.num_stages)
    names = {p.name for p in spec.jit.params if p.is_constexpr}
    flags = " ".join(f"{k}={v}" for k, v in cv.items() if k in names and k not in TILE_KEYS)
    return cfg, flags


def inspect(spec: Specialized) -> dict:
    """Compile one variant and read its binary and IR."""
    cfg, flags = describe(spec)
    rec = dict(kernel=spec.name, config=cfg, flags=flags, arch=spec.target.arch,
               warps=spec.options.num_warps, stages=spec.options.num_stages,
               dtypes=",".join(sorted({t[1:] for t in spec.signature.values()
                                       if isinstance(t, str) and t.startswith("*")})),
               elt_bytes=elt_bytes(spec.signature))
    t0 = time.perf_counter()
    try:
        k = compile_specialized(spec)
    except Exception as e:  # the compiler's own words go into the report
        rec.update(error=f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}",
                   trace=traceback.format_exc(limit=2)[-1500:],
                   compile_s=time.perf_counter() - t0)
        return rec
    rec["compile_s"] = round(time.perf_counter() - t0, 2)
    cubin = k.asm["cubin"]
    res = sass.resources(cubin).get(spec.name, {})
    mix = sass.summarize(sass.sass(cubin)[spec.name])
    shared = int(k.metadata.shared) + res.get("shared_static", 0)
    rec.update(regs=res.get("regs"), stack=res.get("stack"), spill_bytes=sass.spill_bytes(res, mix["spill_insns"]),
               shared=shared, fits=shared <= SMEM_PER_BLOCK, **mix,
               **ir.pipeline(k.asm["ttgir"]),
               wgmma_ptx=k.asm["ptx"].count("wgmma.mma_async"),
               cp_async_ptx=k.asm["ptx"].count("cp.async.cg") + k.asm["ptx"].count("cp.async.ca"))
    rec["blocks_per_sm"] = occupancy(rec["regs"] or 0, shared, rec["warps"])
    rec["warps_per_sm"] = rec["blocks_per_sm"] * rec["warps"]
    params = [p.name for p in spec.jit.params if not p.is_constexpr]
    acc = ir.pointer_access(k.asm["ttir"], params)
    rec["reads"], rec["writes"] = sorted(acc["read"]), sorted(acc["write"])
    return rec


def inspect_all(specs: list[Specialized], jobs: int | None = None, progress=None) -> list[dict]:
    """inspect() of each spec, in `jobs` forked worker processes (default: all cores)."""
    return pool_map(inspect, specs, jobs, progress)
