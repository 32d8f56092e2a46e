"""kernels/config_verdicts.json from a full, unpruned report: the autotune configs that cannot
launch (compile error, shared memory over the limit) or that spill, per kernel and element
size, which kernels/configs.py prunes before anything is compiled or benchmarked."""
from __future__ import annotations

import json
from pathlib import Path

from . import gate
from .variants import ELEMENT_BYTES, FLOAT_TYPES

UNLAUNCHABLE = ("compile-error", "smem", "spill")


def _elt(rec: dict) -> int:
    """The record's element size (variants.elt_bytes; from its dtypes for reports written
    before the field existed)."""
    if "elt_bytes" in rec:
        return rec["elt_bytes"]
    return min(ELEMENT_BYTES[d] for d in rec["dtypes"].split(",") if d in FLOAT_TYPES)


def why(rec: dict) -> str | None:
    """The verdict of one variant ("smem 369 KB", "spill 400 B", "compile-error"), or None."""
    rules = [r for r in gate.variant_failures(rec) if r in UNLAUNCHABLE]
    if not rules:
        return None
    if rules[0] == "smem":
        return f"smem {rec['shared'] // 1024} KB"
    if rules[0] == "spill":
        return f"spill {rec['spill_bytes']} B, {rec['spill_insns']} spill instructions"
    return "compile-error"


def from_report(rep: dict) -> dict:
    """{kernel: {element size: {config: verdict}}}; a config with any failing variant (any
    flags or shape) is listed; smem / compile errors win over spills."""
    out: dict = {}
    for rec in rep["variants"]:
        w = why(rec)
        if w is None:
            continue
        slot = out.setdefault(rec["kernel"], {}).setdefault(str(_elt(rec)), {})
        if rec["config"] not in slot or slot[rec["config"]].startswith("spill"):
            slot[rec["config"]] = w
    return out


def write(rep: dict, path: Path) -> dict:
    """Rewrite `path` with this report's verdicts for the element sizes it compiled, keeping
    the entries for other element sizes."""
    if rep["meta"]["configs"] != "all":
        raise ValueError("verdicts come from a full run (--configs all): a compact run does not "
                         "see every config")
    old = json.loads(path.read_text()).get("kernels", {}) if path.exists() else {}
    sizes = {str(_elt(r)) for r in rep["variants"]}
    new = from_report(rep)
    merged = {k: {s: v for s, v in per.items() if s not in sizes} for k, per in old.items()}
    for k, per in new.items():
        merged.setdefault(k, {}).update(per)
    merged = {k: dict(sorted(v.items())) for k, v in sorted(merged.items()) if v}
    m = rep["meta"]
    doc = dict(note="written by `inception-fast kernels --configs all --write-verdicts`; "
                    "kernels/configs.py prunes these configs before compiling",
               arch=m["arch"], triton=m["triton"], commit=m["commit"], date=m["date"],
               workloads=m["workloads"], kernels=merged)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return merged
