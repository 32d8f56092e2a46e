"""The CUDA C++ kernels (csrc/) as compiled for a target: one record per kernel instantiation
with the same resource and instruction-mix fields as the Triton variants, read from the
object files of the extension build (inception-fast build-ext), which compiles every kernel
for every arch in TORCH_CUDA_ARCH_LIST. No GPU is needed."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from . import sass
from .variants import SMEM_PER_BLOCK


def demangle(names: list[str]) -> list[str]:
    if not shutil.which("c++filt"):
        return names
    r = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    out = r.stdout.splitlines()
    return out if len(out) == len(names) else names


def short_name(demangled: str) -> str:
    """void ifast::(anonymous namespace)::asym_conv_mma_kernel<__half>(...) ->
    asym_conv_mma_kernel<__half>"""
    head = demangled.replace("(anonymous namespace)::", "").split("(", 1)[0]
    if head.startswith("void "):
        head = head[len("void "):]
    return head.rsplit("::", 1)[-1]


def cp_async_in_flight(code: sass.Sass) -> int:
    """The N of the main loop's `cp.async.wait_group N` (SASS DEPBAR.LE SB0, N): how many
    groups (pipeline steps) stay in flight while a step is multiplied, so a pipeline of N + 2
    stages when one step is issued per trip; -1 when the loop does not wait on cp.async."""
    loop = sass.main_loop(code)
    if loop is None:
        return -1
    ns = [int(m.group(1), 0) for i in code.insns[loop[0]:loop[1] + 1] if i.op == "DEPBAR.LE"
          for m in [re.search(r"SB0,\s*(0x[0-9a-f]+|\d+)", i.operands)] if m]
    return max(ns, default=-1)


def objects(build_dir: Path) -> list[Path]:
    return sorted(build_dir.glob("*.cuda.o"))


def report(build_dir: Path, arch: int) -> list[dict]:
    """Records for every kernel in the build's CUDA objects for sm_<arch>."""
    recs = []
    for obj in objects(build_dir):
        res = sass.resources(str(obj), arch)
        code = sass.sass(str(obj), arch)
        names = list(res)
        for mangled, pretty in zip(names, demangle(names)):
            r = res[mangled]
            rec = dict(kernel=short_name(pretty), file=obj.name.replace(".cuda.o", ".cu"),
                       arch=arch, regs=r["regs"], stack=r["stack"], spill_bytes=r["local"],
                       shared=r["shared_static"], fits=r["shared_static"] <= SMEM_PER_BLOCK)
            if mangled in code:
                rec.update(sass.summarize(code[mangled]))
                rec["fsetp_ftz"] = sum(1 for i in code[mangled].insns
                                       if i.op.startswith("FSETP") and ".FTZ" in i.op)
                rec["generic_ld"] = sum(1 for i in code[mangled].insns
                                        if i.op.startswith("LD.") or i.op == "LD")
                rec["spill_bytes"] = sass.spill_bytes(r, rec["spill_insns"])
                rec["cp_async_in_flight"] = cp_async_in_flight(code[mangled])
            recs.append(rec)
    return recs
