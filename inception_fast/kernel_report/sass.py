"""What a compiled GPU binary says about a kernel's shape, read with the tools Triton's wheel
ships (cuobjdump): resources (registers, stack, local memory = spills, static shared memory)
and the SASS instruction mix (matrix instructions, global and shared access widths, cp.async /
TMA, barriers), with loops found from backward branches so that the main loop's accesses can
be told from the prologue's and epilogue's. Works on any cubin or object file with sm_XX code
(Triton's and nvcc's alike)."""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field


@functools.lru_cache(maxsize=None)
def cuobjdump() -> str:
    """Triton's bundled cuobjdump (or one on PATH)."""
    try:
        import triton
        path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                            "cuobjdump")
        if os.path.exists(path):
            return path
    except ImportError:
        pass
    found = shutil.which("cuobjdump")
    if not found:
        raise RuntimeError("cuobjdump not found (it ships in Triton's wheel and the CUDA toolkit)")
    return found


def _run(args: list[str], binary: bytes | str) -> str:
    if isinstance(binary, bytes):
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(binary)
            f.flush()
            return _run(args, f.name)
    r = subprocess.run([cuobjdump(), *args, binary], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"cuobjdump {' '.join(args)} failed: {r.stderr.strip()[:500]}")
    return r.stdout


def _arch_section(text: str, arch: int | None) -> str:
    """The part of a multi-arch dump for sm_<arch> (a fatbin prints one section per arch);
    all of it for a single cubin or arch=None."""
    if arch is None or "arch = sm_" not in text:
        return text
    parts = re.split(r"^\s*arch = (sm_\w+)\s*$", text, flags=re.M)
    return "".join(body for a, body in zip(parts[1::2], parts[2::2])
                   if a in (f"sm_{arch}", f"sm_{arch}a"))


_RES = re.compile(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def spill_bytes(res: dict, spill_insns: int) -> int:
    """Bytes spilled: ptxas puts register spills in the stack frame (cuobjdump's LOCAL stays 0
    for them), so the stack frame of a function whose SASS stores / loads local memory (STL /
    LDL), or LOCAL where it is set."""
    return res.get("local") or (res.get("stack", 0) if spill_insns else 0)


def resources(binary: bytes | str, arch: int | None = None) -> dict[str, dict]:
    """{function: {regs, stack, shared_static, local}} per function in the binary."""
    out = {}
    text = _arch_section(_run(["--dump-resource-usage"], binary), arch)
    for name, reg, stack, shared, local in _RES.findall(text):
        out[name] = dict(regs=int(reg), stack=int(stack), shared_static=int(shared),
                         local=int(local))
    return out


_FUNC = re.compile(r"^\s*Function : (\S+)")
_INSN = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")


@dataclass
class Insn:
    addr: int
    op: str
    operands: str


@dataclass
class Sass:
    """One function's instructions and its loops ((first, last) instruction index ranges)."""
    insns: list[Insn]
    loops: list[tuple[int, int]] = field(default_factory=list)

    def ops(self, lo: int = 0, hi: int | None = None) -> Counter:
        hi = len(self.insns) - 1 if hi is None else hi
        return Counter(i.op for i in self.insns[lo:hi + 1])


def sass(binary: bytes | str, arch: int | None = None) -> dict[str, Sass]:
    """{function: Sass} from cuobjdump -sass; a loop is a branch back to an earlier address
    (cuobjdump prints absolute targets; a branch to itself is the end-of-kernel trap)."""
    funcs: dict[str, Sass] = {}
    cur = None
    for line in _arch_section(_run(["-sass"], binary), arch).splitlines():
        m = _FUNC.match(line)
        if m:
            cur = funcs.setdefault(m.group(1), Sass([]))
            continue
        m = _INSN.match(line) if cur is not None else None
        if m:
            cur.insns.append(Insn(int(m.group(1), 16), m.group(3), m.group(4)))
    for s in funcs.values():
        index = {i.addr: n for n, i in enumerate(s.insns)}
        for n, i in enumerate(s.insns):
            t = re.match(r"(0x[0-9a-f]+)", i.operands.strip()) if i.op.startswith("BRA") else None
            if t and int(t.group(1), 16) < i.addr and int(t.group(1), 16) in index:
                s.loops.append((index[int(t.group(1), 16)], n))
    return funcs


# ------------------------------------------------------------------------------ classification

def mma_kind(ops: Counter) -> str:
    if any(o.startswith("HGMMA") for o in ops):
        return "wgmma"
    if any(o.startswith(("HMMA", "IMMA")) for o in ops):
        return "mma.sync"
    return "none"


def access_bytes(op: str) -> int | None:
    """Bytes per thread of a global/shared load or store opcode (LDG.E.128 -> 16,
    LDG.E.U16 -> 2, LDG.E -> 4), None for other opcodes."""
    if not op.startswith(("LDG", "STG", "LDS", "STS", "LDGSTS", "LD.", "ST.")):
        return None
    if op.startswith(("LDSM", "STSM")):
        return None
    parts = op.split(".")
    for p, n in (("128", 16), ("64", 8), ("U16", 2), ("S16", 2), ("U8", 1), ("S8", 1)):
        if p in parts:
            return n
    return 4


def widest(ops: Counter, prefixes: tuple[str, ...]) -> int:
    widths = [access_bytes(o) or 0 for o in ops if o.startswith(prefixes)]
    return max(widths, default=0)


def main_loop(s: Sass) -> tuple[int, int] | None:
    """The loop holding the most matrix (or, lacking those, global-load) instructions: where
    a kernel spends its time."""
    def weight(lo_hi):
        c = s.ops(*lo_hi)
        mm = sum(v for k, v in c.items() if k.startswith(("HGMMA", "HMMA", "FFMA")))
        ld = sum(v for k, v in c.items() if k.startswith(("LDG", "LDGSTS", "UTMALDG")))
        return (mm, ld, lo_hi[1] - lo_hi[0])
    return max(s.loops, key=weight) if s.loops else None


def summarize(s: Sass) -> dict:
    """The instruction-mix fields of the report for one function."""
    ops = s.ops()
    loop = main_loop(s)
    lops = s.ops(*loop) if loop else Counter()

    def count(c, *prefixes):
        return sum(v for k, v in c.items() if k.startswith(prefixes))

    scalar16 = sum(v for k, v in lops.items()
                   if k.startswith("LDG") and access_bytes(k) is not None and access_bytes(k) <= 2)
    return dict(
        mma=mma_kind(ops), hgmma=count(ops, "HGMMA"), hmma=count(ops, "HMMA"),
        ffma=count(ops, "FFMA"), ldsm=count(ops, "LDSM"),
        cp_async=count(ops, "LDGSTS"), cp_async_bytes=widest(ops, ("LDGSTS",)),
        tma=count(ops, "UTMALDG", "UBLKCP"),
        ldg_bytes=widest(ops, ("LDG",)), stg_bytes=widest(ops, ("STG",)),
        lds_u16=count(ops, "LDS.U16", "LDS.S16"), spill_insns=count(ops, "STL", "LDL"),
        loops=len(s.loops),
        main_loop_insns=(loop[1] - loop[0] + 1) if loop else 0,
        main_loop_mma=count(lops, "HGMMA", "HMMA"),
        main_loop_ldg_bytes=widest(lops, ("LDG",)),
        main_loop_scalar_2byte_ldg=scalar16,
        main_loop_bar=count(lops, "BAR"),
        insns=len(s.insns),
    )
