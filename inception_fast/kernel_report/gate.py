"""The report's pass / fail rules, and the list of today's known failures that the kernel
work must empty (known_failures.txt beside this file: one `kernel  rule  scope` a line, scope
`first` when the compact run (the first config each launch keeps, what CI compiles) shows it
and `all` when only the full run (every config pruning keeps) does; an entry that no longer
fails must be deleted, so the list only shrinks).

Rules, for every kernel variant on the model's path:
  compile-error   the GPU compiler rejects it
  smem            needs more than 227 KB of shared memory per block (cannot launch)
  spill           registers spill to local memory (ptxas LOCAL > 0 or STL/LDL in the SASS)
  no-wgmma        a GEMM kernel (tl.dot) whose tile allows wgmma (warps a multiple of 4,
                  BLOCK_M a multiple of 64) compiled without it (TF32/fp16/bf16 only:
                  full-precision fp32 has no tensor-core path)
  scalar-2B-load  a 16-bit channels_last kernel's main loop loads global memory 2 bytes per
                  thread (no vector, no cp.async)
  unlaunched      a Triton kernel in kernels/ that no workload launches
CUDA C++ kernels (sm_90): spill, smem, generic-ld-bf16 (wmma on bf16 through generic loads
instead of LDSM), fsetp-ftz (a flush-to-zero comparison: wrong max-pool on subnormals).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

KNOWN = Path(__file__).with_name("known_failures.txt")
SCOPES = ("first", "all")


def _kernels_dir() -> Path:
    """Where inception_fast.kernels lives (the repo's kernels/, installed under that name),
    found without importing it (and Triton with it)."""
    import importlib.util

    return Path(importlib.util.find_spec("inception_fast.kernels").origin).parent


KERNELS_DIR = _kernels_dir()


def kernels_defined(root: Path = KERNELS_DIR) -> set[str]:
    """Names of the @triton.jit / autotuned functions named *_kernel in kernels/ (parsed)."""
    names = set()
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_kernel") and any(
                    "jit" in ast.unparse(d) for d in node.decorator_list):
                names.add(node.name)
    return names


def _tile(rec: dict, key: str) -> int | None:
    m = re.search(rf"\b{key}=(\d+)", rec.get("config", ""))
    return int(m.group(1)) if m else None


def variant_failures(rec: dict) -> list[str]:
    if "error" in rec:
        return ["compile-error"]
    out = []
    if not rec["fits"]:
        out.append("smem")
    if rec["spill_bytes"] or rec["spill_insns"]:
        out.append("spill")
    has_dot = rec["dots_in_loops"] > 0 or rec["hmma"] > 0 or rec["hgmma"] > 0
    bm = _tile(rec, "M")
    ieee = "IEEE=True" in rec.get("flags", "")
    if (has_dot and rec["mma"] != "wgmma" and rec["warps"] % 4 == 0 and bm and bm % 64 == 0
            and not ieee):
        out.append("no-wgmma")
    if ("bf16" in rec["dtypes"] or "fp16" in rec["dtypes"]) and \
            rec["main_loop_scalar_2byte_ldg"] > 0:
        out.append("scalar-2B-load")
    return out


def cuda_failures(rec: dict) -> list[str]:
    out = []
    if rec["spill_bytes"] or rec.get("spill_insns"):
        out.append("spill")
    if not rec["fits"]:
        out.append("smem")
    if "bfloat16" in rec["kernel"] and rec.get("generic_ld", 0) and rec.get("mma") != "none":
        out.append("generic-ld-bf16")
    if rec.get("fsetp_ftz"):
        out.append("fsetp-ftz")
    return out


def read_known(path: Path = KNOWN) -> dict[tuple[str, str], str]:
    """{(kernel, rule): scope} from the known-failures list."""
    if not path.exists():
        return {}
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3 or parts[2] not in SCOPES:
            raise ValueError(f"{path.name}:{n}: want `kernel rule scope` with scope one of "
                             f"{SCOPES}, got {line!r}")
        out[(parts[0], parts[1])] = parts[2]
    return out


def evaluate(report: dict, launched: set[str], configs: str = "first",
             known: dict[tuple[str, str], str] | None = None) -> dict:
    """{failures: [(kernel, rule, count)], new: [...], fixed: [...]} against the known list.

    A compact run (configs "first") compiles a subset, so it can only declare fixed what the
    list says the compact run shows (scope `first`); a full run judges every entry."""
    found: dict[tuple[str, str], int] = {}
    for rec in report["variants"]:
        for rule in variant_failures(rec):
            found[(rec["kernel"], rule)] = found.get((rec["kernel"], rule), 0) + 1
    for rec in report.get("cuda", []):
        for rule in cuda_failures(rec):
            found[(rec["kernel"], rule)] = found.get((rec["kernel"], rule), 0) + 1
    for k in sorted(kernels_defined() - launched):
        found[(k, "unlaunched")] = 1
    known = read_known() if known is None else known
    judged = {k for k, scope in known.items() if configs == "all" or scope == "first"}
    # Only kernels this run looked at can be declared fixed (no CUDA build: no CUDA verdicts).
    seen = launched | kernels_defined() | {r["kernel"] for r in report.get("cuda", [])}
    return dict(failures=[[k, r, n] for (k, r), n in sorted(found.items())],
                new=sorted([list(x) for x in set(found) - set(known)]),
                fixed=sorted([list(x) for x in judged - set(found) if x[0] in seen]))
