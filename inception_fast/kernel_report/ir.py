"""What Triton's IR says about a kernel: which pointer arguments it loads from and stores to
(TTIR), how its main loops are pipelined and how conflict-prone its shared-memory accesses
are (TTGIR).

Read / written: each tt.load / tt.store / tt.atomic_* pointer is traced back through pointer
ops (addptr, splat, broadcast, expand_dims, reshape, loop-carried values) to the kernel's
arguments; arguments that constexpr flags make dead never appear.

Bank conflicts: for a ttg.local_load / local_store between a blocked register layout and a
swizzled_shared buffer, the first access of warp 0 is laid out exactly (lane -> element by the
blocked layout, element -> byte by the buffer's order and XOR swizzle) and the degree is the
worst bank's distinct 4-byte words over the ideal wavefront count (1 = conflict-free). Loads
into MMA operand layouts from nvmma_shared buffers (ldmatrix / wgmma on a 128-byte swizzle)
are conflict-free by construction and are not listed."""
from __future__ import annotations

import math
import re
from collections import defaultdict

_DEF = re.compile(r"^\s*(%[\w.]+)(?::\d+)?\s*=\s*([\w.]+)\s*(.*)$")
_VAL = re.compile(r"%[\w.]+")
_PTR_OPS = {"tt.addptr", "tt.splat", "tt.broadcast", "tt.expand_dims", "tt.reshape",
            "tt.trans", "arith.select", "ttg.convert_layout"}


def _func_args(ir: str) -> list[tuple[str, str]]:
    """[(ssa name, type)] of the public kernel function's arguments, in order."""
    m = re.search(r"tt\.func public @\w+\((.*?)\)\s*(attributes|\{)", ir, re.S)
    if not m:
        return []
    return re.findall(r"(%[\w.]+): ([^{,)]+(?:<[^>]*>)?)", m.group(1))


def pointer_access(ttir: str, param_names: list[str]) -> dict[str, set[str]]:
    """{"read": {param}, "write": {param}} of the kernel's pointer parameters (names in
    declaration order of the non-constexpr params, as in the TTIR signature)."""
    args = _func_args(ttir)
    argname = {ssa: ssa[1:] for ssa, ty in args if "ptr" in ty and ssa[1:] in param_names}
    defs: dict[str, tuple[str, list[str]]] = {}
    carried: dict[str, list[str]] = defaultdict(list)
    accesses: list[tuple[str, str]] = []  # (kind, pointer value)
    for line in ttir.splitlines():
        for it, init in re.findall(r"(%[\w.]+) = (%[\w.]+)", line.split("iter_args(", 1)[1]) \
                if "iter_args(" in line else []:
            carried[it].append(init)
        m = _DEF.match(line)
        body = line.strip()
        if m:
            name, op, rest = m.groups()
            defs[name] = (op, _VAL.findall(rest))
            if op == "tt.load":
                vals = _VAL.findall(rest)
                if vals:
                    accesses.append(("read", vals[0]))
            elif op.startswith("tt.atomic"):
                vals = _VAL.findall(rest)
                if vals:
                    accesses.append(("write", vals[0]))
                    accesses.append(("read", vals[0]))
        elif body.startswith("tt.store"):
            vals = _VAL.findall(body)
            if vals:
                accesses.append(("write", vals[0]))

    def roots(v: str, seen: set) -> set[str]:
        if v in seen:
            return set()
        seen.add(v)
        base = v.split("#")[0]
        if base in argname:
            return {argname[base]}
        found = set()
        for init in carried.get(base, ()):
            found |= roots(init, seen)
        d = defs.get(base)
        if d is not None and d[0] in _PTR_OPS:
            ops = d[1][:1] if d[0] == "tt.addptr" else d[1]
            if d[0] == "arith.select":
                ops = d[1][1:]
            for o in ops:
                found |= roots(o, seen)
        return found

    out = {"read": set(), "write": set()}
    for kind, v in accesses:
        out[kind] |= roots(v, set())
    return out


# ---------------------------------------------------------------------------------- TTGIR

def _attrs(text: str) -> dict:
    out = {}
    for k, v in re.findall(r"(\w+) = (\[[^\]]*\]|\d+|\w+)", text):
        out[k] = [int(x) for x in re.findall(r"\d+", v)] if v.startswith("[") else v
    return out


def _layouts(ttgir: str) -> dict[str, tuple[str, dict]]:
    out = {}
    for name, kind, body in re.findall(r"^(#[\w]+) = #ttg\.(\w+)<\{(.*?)\}>", ttgir, re.M):
        out[name] = (kind, _attrs(body))
    return out


def _elem_bytes(t: str) -> int:
    m = re.search(r"x(bf16|f16|f32|f64|i8|i16|i32|i64|i1|f8\w*)\b", t)
    if not m:
        return 4
    e = m.group(1)
    return {"bf16": 2, "f16": 2, "f32": 4, "f64": 8, "i8": 1, "i16": 2, "i32": 4,
            "i64": 8, "i1": 1}.get(e, 1)


def _shape(t: str) -> list[int]:
    m = re.match(r"\s*<?((?:\d+x)+)", t)
    return [int(x) for x in m.group(1).split("x")[:-1]] if m else []


def conflict_degree(shape, elem, blocked: dict, shared: dict) -> float | None:
    """Shared-memory wavefronts of warp 0's first access over the ideal count."""
    spt, tpw, order = blocked.get("sizePerThread"), blocked.get("threadsPerWarp"), \
        blocked.get("order")
    sorder = shared.get("order")
    if not spt or not tpw or not order or not sorder or len(shape) != len(spt):
        return None
    vec, per_phase, max_phase = (int(shared.get(k, 1)) for k in ("vec", "perPhase", "maxPhase"))
    fast = sorder[0]
    nbytes = min(spt[fast] if order[0] == fast else 1, max(1, 16 // elem)) * elem
    banks: dict[int, set] = defaultdict(set)
    for lane in range(32):
        coord, rest = [0] * len(shape), lane
        for d in order:
            coord[d] = (rest % tpw[d]) * spt[d] % max(shape[d], 1)
            rest //= tpw[d]
        col = coord[fast]
        row = coord[sorder[1]] if len(sorder) > 1 else 0
        phase = (row // per_phase) % max_phase
        col = ((col // vec) ^ phase) * vec + col % vec
        off = 0
        for d in reversed(sorder):
            off = off * shape[d] + (col if d == fast else coord[d])
        start = off * elem
        for w in range(start // 4, (start + nbytes - 1) // 4 + 1):
            banks[w % 32].add(w)
    worst = max(len(v) for v in banks.values())
    ideal = max(1, math.ceil(32 * nbytes / 128))
    return worst / ideal


def pipeline(ttgir: str) -> dict:
    """Main-loop structure and shared-memory access conflicts from the TTGIR."""
    layouts = _layouts(ttgir)
    lines = ttgir.splitlines()
    loops, stack = [], []  # [start, end, has_dot, has_async, waits0]
    for i, line in enumerate(lines):
        s = line.strip()
        if " scf.for " in line or s.startswith("scf.for"):
            stack.append([i, None, 0, 0, 0])
        elif s.startswith("}") and stack and line.index("}") <= \
                len(lines[stack[-1][0]]) - len(lines[stack[-1][0]].lstrip()):
            lp = stack.pop()
            lp[1] = i
            loops.append(lp)
        if stack:
            top = stack[-1]
            if "warp_group_dot " in s or " tt.dot " in s:
                for lp in stack:
                    lp[2] += 1
            if "async_copy_global_to_local" in s or "async_tma_copy" in s:
                top[3] += 1
            if "warp_group_dot_wait" in s and "pendings = 0" in s:
                top[4] += 1
    dot_loops = [lp for lp in loops if lp[2] and not any(
        o is not lp and o[0] > lp[0] and o[1] < lp[1] and o[2] for o in loops)]
    conflicts = []
    for line in lines:
        m = re.search(r"ttg\.local_(load|store) .*?!ttg\.memdesc<([^>]*)>.*?tensor<([^>]*)>",
                      line)
        if not m:
            continue
        mem, reg = m.group(2), m.group(3)
        sh = re.search(r"(#shared\d*)", mem)
        bl = re.search(r"(#blocked\d*)\s*$", reg.strip())
        if not sh or not bl or layouts.get(sh.group(1), ("",))[0] != "swizzled_shared":
            continue
        deg = conflict_degree(_shape(mem), _elem_bytes(mem), layouts[bl.group(1)][1],
                              layouts[sh.group(1)][1])
        if deg is not None:
            conflicts.append(deg)
    return dict(
        dot_loops=len(dot_loops),
        dots_in_loops=sum(lp[2] for lp in dot_loops),
        pipelined_loops=sum(1 for lp in dot_loops if lp[3]),
        dot_waits0_in_loop=sum(lp[4] for lp in dot_loops),
        gather="tt.gather" in ttgir,
        smem_conflict_max=max(conflicts, default=1.0),
        smem_conflicted_accesses=sum(1 for c in conflicts if c > 1),
    )
