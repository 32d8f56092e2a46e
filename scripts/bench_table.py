"""The short table bench/run_gpu.sh prints last, from the JSON lines scripts/bench_stream.py
wrote (so it works on whatever a cut-short run measured):

    python scripts/bench_table.py RESULTS.jsonl [--md OUT.md]

Whole model: images/s per provider and its ratio to eager cuDNN. Per layer: for each (mode,
batch, dtype), how many layers ran, the geometric mean of cuDNN's time over ours (> 1: ours
faster) per provider, and how many layers ours won. --md also writes every layer's row."""
from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict


def load(path: str) -> list[dict]:
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut by a kill
                continue
    return [r for r in out if r.get("outcome") == "passed" and r.get("ms")]


def model_rows(recs):
    by = defaultdict(dict)
    for r in recs:
        if r.get("kind") == "model":
            by[(r["name"], r["mode"], r["batch"])][r["provider"]] = r.get("images_per_s")
    rows = []
    for (name, mode, batch), p in sorted(by.items()):
        base = p.get("cudnn")
        for prov, ips in sorted(p.items()):
            ratio = f"{ips / base:.2f}x" if base and ips else "-"
            rows.append(f"model {name} {mode:5s} b{batch:<4d} {prov:8s} {ips:9.0f} img/s  "
                        f"vs cuDNN {ratio}")
    return rows


def layer_table(recs):
    """{(mode, batch, dtype): {layer: {provider: ms}}}"""
    t = defaultdict(lambda: defaultdict(dict))
    for r in recs:
        if r.get("kind") == "layer":
            t[(r["mode"], r["batch"], r["dtype"])][r["name"]][r["provider"]] = r["ms"]
    return t


def layer_summary(t):
    rows = []
    for (mode, batch, dtype), layers in sorted(t.items()):
        provs = sorted({p for v in layers.values() for p in v} - {"cudnn"})
        for prov in provs:
            ratios = [v["cudnn"] / v[prov] for v in layers.values() if "cudnn" in v and prov in v]
            if not ratios:
                continue
            gm = math.exp(sum(map(math.log, ratios)) / len(ratios))
            wins = sum(1 for x in ratios if x > 1)
            rows.append(f"layers {mode:5s} b{batch:<4d} {dtype} {prov:7s} {len(ratios):3d} layers: "
                        f"cuDNN/ours geomean {gm:.2f}x, ours faster on {wins}")
    return rows


def layer_markdown(t) -> str:
    out = ["| mode | batch | dtype | layer | provider | ms | cuDNN ms | cuDNN/ours |",
           "|---|---|---|---|---|---|---|---|"]
    for (mode, batch, dtype), layers in sorted(t.items()):
        for name, p in layers.items():
            for prov, ms in sorted(p.items()):
                base = p.get("cudnn")
                b = f"{base:.3f}" if base else ""
                ratio = f"{base / ms:.2f}" if base and prov != "cudnn" else ""
                out.append(f"| {mode} | {batch} | {dtype} | {name} | {prov} | {ms:.3f} | {b} "
                           f"| {ratio} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("jsonl")
    ap.add_argument("--md", help="also write every layer's row here (markdown)")
    a = ap.parse_args(argv)
    recs = load(a.jsonl)
    t = layer_table(recs)
    rows = model_rows(recs) + layer_summary(t)
    print("\n".join(rows) if rows else "no benchmark result was recorded")
    if a.md and t:
        with open(a.md, "w") as f:
            f.write(layer_markdown(t))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
