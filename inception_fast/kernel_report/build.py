"""Assemble the static report: collect the workloads, compile their variants, read the CUDA
objects, count traffic per layer, and apply the gate's rules."""
from __future__ import annotations

import datetime
import subprocess
from collections import defaultdict
from pathlib import Path

import torch

from . import gate, traffic
from .collect import Workload, collect, select
from .jit_launch import target_for
from .variants import inspect_all

ROOT = Path(__file__).resolve().parents[2]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def layer_rows(c, recs_by_key) -> tuple[list[dict], dict]:
    """Per top-level module: FLOPs, fewest bytes, ours and eager's bytes / launches, rooflines
    (modelled) of both; and the totals."""
    dt = c.work.torch_dtype
    ours: dict[tuple, traffic.Count] = defaultdict(traffic.Count)
    for (layer, phase), cnt in c.ours_aten.counts.items():
        ours[(traffic.top_level(layer), phase)].add(cnt)
    triton_launches: dict[str, int] = defaultdict(int)
    unknown = 0
    for la in c.launches:
        rec = recs_by_key.get(la.variants[0].cache_key())
        if rec is None or "reads" not in rec:
            unknown += 1
            access = {"read": {t.name for t in la.tensors}, "write": set()}
        else:
            access = {"read": set(rec["reads"]), "write": set(rec["writes"])}
        r, w = traffic.launch_bytes(la.tensors, access)
        key = (traffic.top_level(la.layer), la.phase)
        ours[key].add(traffic.Count(1, r, w, 0.0))
        triton_launches[key[0]] += 1
    eager: dict[tuple, traffic.Count] = defaultdict(traffic.Count)
    for (layer, phase), cnt in c.eager_aten.counts.items():
        eager[(traffic.top_level(layer), phase)].add(cnt)
    names = list(dict.fromkeys([k[0] for k in eager] + [k[0] for k in ours]))
    rows = []
    for n in names:
        row = dict(layer=n, flops=0.0, fewest=c.fewest.fwd.get(n, 0) + c.fewest.bwd.get(n, 0),
                   ours_launches=0, ours_triton=triton_launches.get(n, 0), ours_bytes=0,
                   eager_launches=0, eager_bytes=0, ours_roofline_s=0.0, eager_roofline_s=0.0)
        for phase in ("forward", "backward"):
            e, o = eager.get((n, phase), traffic.Count()), ours.get((n, phase), traffic.Count())
            flops = e.flops  # the same maths on both sides
            row["flops"] += flops
            row["ours_launches"] += o.launches
            row["ours_bytes"] += o.bytes
            row["eager_launches"] += e.launches
            row["eager_bytes"] += e.bytes
            if o.launches:
                row["ours_roofline_s"] += traffic.roofline_s(flops, o.bytes, dt)
            if e.launches:
                row["eager_roofline_s"] += traffic.roofline_s(flops, e.bytes, dt)
        rows.append(row)
    tot = {k: sum(r[k] for r in rows) for k in rows[0] if k != "layer"} if rows else {}
    tot["launches_without_access_info"] = unknown
    tot["ours_aten_ops"] = sum(v.launches for v in c.ours_aten.counts.values())
    tot["eager_aten_ops"] = sum(v.launches for v in c.eager_aten.counts.values())
    return rows, tot


def build(works: list[Workload], arch: int = 90, configs: str = "first", jobs: int | None = None,
          cuda_build_dir: Path | None = None, progress=None) -> dict:
    target = target_for(arch)
    collected = [collect(w, target) for w in works]
    chosen: dict = {}
    where: dict[tuple, set] = defaultdict(set)
    for c in collected:
        for key, spec in select(c.launches, configs).items():
            chosen.setdefault(key, spec)
        for la in c.launches:
            for spec in la.variants:
                where[spec.cache_key()].add(f"{c.work.where}: {la.layer}")
    keys = list(chosen)
    recs = inspect_all([chosen[k] for k in keys], jobs, progress)
    by_key = dict(zip(keys, recs))
    for k, r in by_key.items():
        r["layers"] = sorted(where[k])
    report = dict(
        meta=dict(date=datetime.date.today().isoformat(), commit=_commit(), arch=arch,
                  configs=configs, triton=_version("triton"), torch=torch.__version__,
                  workloads=[w.tag for w in works],
                  model_note="roofline times are a model at H100 SXM ceilings "
                             f"({traffic.PEAK_FLOPS[torch.bfloat16] / 1e12:.0f} TFLOP/s bf16 "
                             f"dense, {traffic.HBM_BYTES_PER_S / 1e12:.2f} TB/s), not "
                             "measurements"),
        variants=recs, workloads={}, cuda=[])
    for c in collected:
        rows, tot = layer_rows(c, by_key)
        all_keys = {s.cache_key() for la in c.launches for s in la.variants}
        done = [by_key[k] for k in all_keys if k in by_key]
        tot["cold_variants"] = len(all_keys)
        tot["cold_variants_compiled"] = len(done)
        tot["cold_compile_s_measured"] = round(sum(r.get("compile_s", 0) for r in done), 1)
        report["workloads"][c.work.tag] = dict(layers=rows, totals=tot,
                                               ours_ops=dict(c.ours_aten.ops),
                                               eager_ops=dict(c.eager_aten.ops))
    if cuda_build_dir is not None:
        from . import cuda_kernels
        report["cuda"] = cuda_kernels.report(cuda_build_dir, arch)
    launched = {r["kernel"] for r in recs}
    report["gate"] = gate.evaluate(report, launched, configs)
    return report


def _version(mod: str) -> str:
    try:
        return __import__(mod).__version__
    except ImportError:
        return "missing"
