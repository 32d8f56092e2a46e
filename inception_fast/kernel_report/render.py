"""The report as markdown (report.md) and JSON (report.json)."""
from __future__ import annotations

import json
from pathlib import Path

from . import gate


def _kb(n) -> str:
    return "" if n is None else f"{n / 1024:.0f}"


def _gb(n) -> str:
    return f"{n / 1e9:.2f}"


def kernel_table(recs: list[dict]) -> list[str]:
    out = ["| kernel | dtypes | flags | config | layers | regs | spill B | smem KB | fits | "
           "blocks/SM (warps) | MMA | cp.async / TMA | widest LDG / STG | main loop: "
           "2-B LDG, dot loops, waits=0 | smem conflict | compile s | fails |",
           "|" + "---|" * 17]
    for r in sorted(recs, key=lambda r: (r["kernel"], r["dtypes"], r["flags"], r["config"])):
        layers = r.get("layers", [])
        where = (", ".join(layers[:2]) + (f" +{len(layers) - 2}" if len(layers) > 2 else ""))
        fails = ", ".join(gate.variant_failures(r)) if "cuda" not in r else ""
        if "error" in r:
            out.append(f"| {r['kernel']} | {r['dtypes']} | {r['flags']} | {r['config']} | "
                       f"{where} | compile error: {r['error'][:120]} |" + " |" * 11
                       + f" {fails} |")
            continue
        mma = r["mma"] + (f" ({r['hgmma'] or r['hmma']})" if r["mma"] != "none" else "")
        out.append(
            f"| {r['kernel']} | {r['dtypes']} | {r['flags']} | {r['config']} | {where} | "
            f"{r['regs']} | {r['spill_bytes']} | {_kb(r['shared'])} | "
            f"{'yes' if r['fits'] else '**no**'} | {r['blocks_per_sm']} ({r['warps_per_sm']}) | "
            f"{mma} | {r['cp_async_bytes'] or '-'} B x{r['cp_async']} / {r['tma']} | "
            f"{r['ldg_bytes']} / {r['stg_bytes']} B | {r['main_loop_scalar_2byte_ldg']}, "
            f"{r['dot_loops']}, {r['dot_waits0_in_loop']} | {r['smem_conflict_max']:g}-way | "
            f"{r['compile_s']} | {fails} |")
    return out


def cuda_table(recs: list[dict]) -> list[str]:
    out = ["| kernel | file | regs | spill B | static smem KB | MMA | LDSM | generic LD | "
           "widest LDG / STG | FSETP.FTZ | fails |", "|" + "---|" * 11]
    for r in recs:
        out.append(f"| {r['kernel']} | {r['file']} | {r['regs']} | {r['spill_bytes']} | "
                   f"{_kb(r['shared'])} | {r.get('mma', '?')} ({r.get('hmma', 0)}) | "
                   f"{r.get('ldsm', 0)} | {r.get('generic_ld', 0)} | {r.get('ldg_bytes', 0)} / "
                   f"{r.get('stg_bytes', 0)} B | {r.get('fsetp_ftz', 0)} | "
                   f"{', '.join(gate.cuda_failures(r))} |")
    return out


def layer_table(wl: dict) -> list[str]:
    out = ["| layer | GFLOP | fewest GB | ours GB | eager GB | ours launches (Triton) | "
           "eager launches | ours roofline ms | eager roofline ms |", "|" + "---|" * 9]
    rows = wl["layers"] + [dict(layer="**total**", **{k: v for k, v in wl["totals"].items()})]
    for r in rows:
        out.append(f"| {r['layer']} | {r['flops'] / 1e9:.1f} | {_gb(r['fewest'])} | "
                   f"{_gb(r['ours_bytes'])} | {_gb(r['eager_bytes'])} | {r['ours_launches']} "
                   f"({r['ours_triton']}) | {r['eager_launches']} | "
                   f"{r['ours_roofline_s'] * 1e3:.3f} | {r['eager_roofline_s'] * 1e3:.3f} |")
    return out


def _cold_compile(t: dict) -> str:
    line = (f"Cold compile of this step: {t['cold_variants']} variants (every config pruning "
            f"keeps); {t['cold_variants_compiled']} compiled here in "
            f"{t['cold_compile_s_measured']} s of compile (summed over workers)")
    done, cold = t["cold_variants_compiled"], t["cold_variants"]
    if 0 < done < cold:
        est = t["cold_compile_s_measured"] / done * cold
        line += (f"; all {cold} at the same mean: ~{est:.0f} s (an extrapolation, not a "
                 "measurement)")
    return line + "."


def pruned_table(doc: dict) -> list[str]:
    out = ["| kernel | element bytes | config | verdict |", "|---|---|---|---|"]
    for k, per in doc.get("kernels", {}).items():
        for elt, cfgs in per.items():
            out += [f"| {k} | {elt} | {c} | {why} |" for c, why in cfgs.items()]
    return out


def markdown(rep: dict) -> str:
    m = rep["meta"]
    g = rep["gate"]
    lines = [f"# Static kernel report: sm_{m['arch']}, commit {m['commit']}, {m['date']}", "",
             f"Triton {m['triton']}, torch {m['torch']}; configs compiled: {m['configs']}; "
             f"workloads: {'; '.join(m['workloads'])}.", "",
             "Everything here is read from compiled binaries and IR, or counted from the "
             "launch arguments: nothing ran on a GPU. " + m["model_note"] + ".", "",
             "## Gate", "",
             f"{len(g['failures'])} failing (kernel, rule) pairs; new (not in "
             f"known_failures.txt): {len(g['new'])}; fixed (listed, no longer failing): "
             f"{len(g['fixed'])}.", ""]
    lines += [f"- {k} `{r}` ({n} variant{'s' if n != 1 else ''})" for k, r, n in g["failures"]]
    for tag, wl in rep["workloads"].items():
        t = wl["totals"]
        lines += ["", f"## {tag}", "",
                  f"Launches: ours {t['ours_launches']} ({t['ours_triton']} Triton + "
                  f"{t['ours_aten_ops']} aten), eager {t['eager_launches']} aten ops. "
                  f"Bytes: ours {_gb(t['ours_bytes'])} GB, eager {_gb(t['eager_bytes'])} GB, "
                  f"fewest {_gb(t['fewest'])} GB. Roofline step time (model): ours "
                  f"{t['ours_roofline_s'] * 1e3:.2f} ms, eager {t['eager_roofline_s'] * 1e3:.2f}"
                  " ms.", "",
                  _cold_compile(t), ""]
        lines += layer_table(wl)
    lines += ["", "## Triton kernel variants", ""] + kernel_table(rep["variants"])
    pruned = rep.get("pruned") or {}
    if pruned.get("kernels"):
        lines += ["", "## Configs pruned before compile", "",
                  f"kernels/config_verdicts.json (from the full report of {pruned['date']}, "
                  f"commit {pruned['commit']}, Triton {pruned['triton']}): autotuning never "
                  "compiles these" + (" (not applied in this run: --write-verdicts)"
                                      if rep["meta"].get("verdicts_disabled") else "") + ".",
                  ""] + pruned_table(pruned)
    if rep.get("cuda"):
        lines += ["", "## CUDA C++ kernels", ""] + cuda_table(rep["cuda"])
    return "\n".join(lines) + "\n"


def write(rep: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=str))
    (out / "report.md").write_text(markdown(rep))
