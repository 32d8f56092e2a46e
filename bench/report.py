"""Benchmark JSON (pytest-benchmark's --benchmark-json, one file or several) -> a markdown report
with the speedup over cuDNN eager per row and geometric means, and PNG plots.

    python -m bench.report --json bench/results/run/layers.json [more.json ...] [--out DIR]

Writes report.md, layers_speedup.png, blocks_speedup.png, model_throughput.png (those with data)
into DIR, by default bench/results/<date>-<gpu>/, and copies the JSON files there too.
Speedup = cudnn ms / provider ms: above 1 is faster than cuDNN eager (the `cudnn` row is 1).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path

PROVIDER_ORDER = ("cudnn", "compile", "triton", "cuda", "auto", "paper")
KEY_FIELDS = ("kind", "name", "mode", "dtype", "batch")
RESULTS = Path(__file__).resolve().parent / "results"


def load(paths) -> dict:
    """Merge benchmark JSON files: {"info": run info, "records": [extra_info...], "skipped": [...]}.
    A case measured twice keeps its last measurement."""
    info, records, skipped = {}, {}, []
    for path in paths:
        data = json.loads(Path(path).read_text())
        if "benchmarks" not in data:
            raise ValueError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' key)")
        run = data.get("inception_fast") or data.get("machine_info", {}).get("inception_fast") or {}
        if not info:
            info = {k: v for k, v in run.items() if k != "skipped"}
            info["datetime"] = data.get("datetime", "")
        skipped += run.get("skipped", [])
        for b in data["benchmarks"]:
            ex = b.get("extra_info") or {}
            if "kind" not in ex or "ms" not in ex:
                continue  # not one of ours
            records[tuple(ex[k] for k in KEY_FIELDS) + (ex["provider"],)] = ex
    return {"info": info, "records": list(records.values()), "skipped": skipped}


def speedup_table(records) -> dict:
    """{row key (kind, name, mode, dtype, batch): {provider: record with 'speedup' added}}."""
    rows: dict[tuple, dict] = defaultdict(dict)
    for r in records:
        rows[tuple(r[k] for k in KEY_FIELDS)][r["provider"]] = dict(r)
    for provs in rows.values():
        base = provs.get("cudnn")
        for r in provs.values():
            r["speedup"] = base["ms"] / r["ms"] if base and r["ms"] > 0 else None
    return dict(rows)


def geomean(xs) -> float | None:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def geomeans(rows: dict) -> list[dict]:
    """Geometric-mean speedup per provider for each (kind, mode, dtype, batch) and per kind."""
    groups: dict[tuple, dict] = defaultdict(lambda: defaultdict(list))
    for (kind, _name, mode, dtype, batch), provs in rows.items():
        for p, r in provs.items():
            if p != "cudnn" and r["speedup"]:
                groups[(kind, mode, dtype, str(batch))][p].append(r["speedup"])
                groups[(kind, "all", "all", "all")][p].append(r["speedup"])
    out = []
    for key in sorted(groups, key=lambda k: (k[0], k[1] == "all", k[1:])):
        out.append({"kind": key[0], "mode": key[1], "dtype": key[2], "batch": key[3],
                    "speedups": {p: (geomean(v), len(v)) for p, v in groups[key].items()}})
    return out


def _providers(rows) -> list[str]:
    seen = {p for provs in rows.values() for p in provs}
    return [p for p in PROVIDER_ORDER if p in seen] + sorted(seen - set(PROVIDER_ORDER))


def _num(x, fmt="{:.3g}") -> str:
    return "—" if x is None else fmt.format(x)


def _x(speedup) -> str:
    if speedup is None:
        return "—"
    return f"{speedup:.2f}×" if speedup >= 0.01 else f"{speedup:.1e}×"


def _cell(r) -> str:
    if r is None:
        return "—"
    parts = [f"{r['ms']:.3g} ms", _x(r.get("speedup"))]
    if r.get("tflops"):
        peak = f" ({r['frac_peak'] * 100:.0f}%)" if r.get("frac_peak") else ""
        parts.append(f"{r['tflops']:.3g} TF/s{peak}")
    return " · ".join(parts)


def _table(header, rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def markdown(data: dict, plots: list[str]) -> str:
    info, rows = data["info"], speedup_table(data["records"])
    provs = _providers(rows)
    out = [f"# inception_fast benchmarks: {info.get('device', '?')}, {info.get('datetime', '')[:10]}", ""]
    if info.get("smoke") or info.get("device") == "cpu":
        out += ["**CPU smoke run: GPU numbers need a GPU.** Tiny sizes, host timer; these numbers "
                "only show that the harness works.", ""]
    out += [f"Scale `{info.get('scale', '?')}`; torch {info.get('torch', '?')}, triton "
            f"{info.get('triton', '?')}, CUDA {info.get('cuda', '?')}, cuDNN {info.get('cudnn', '—')}; "
            f"torch.compile mode `{info.get('compile_mode', '?')}` (layers, blocks), "
            f"`{info.get('model_compile_mode', '?')}` (model).", "",
            "Each cell: median time per step (CUDA events, L2 flushed before each repetition; "
            "host timer on CPU) · speedup over cuDNN eager (`cudnn` ms / provider ms, above 1 is "
            "faster) · achieved TFLOP/s from the layer table's FLOPs (train = fwd + bwd = 3x the "
            "forward) and its fraction of the GPU's dense peak for the dtype (H100/H200: bf16 and "
            "fp16 989, TF32 494). Layer and block inputs: channels_last, convs in the dtype, "
            "BatchNorm in fp32; `fp32` runs allow TF32.", ""]
    gm = geomeans(rows)
    if gm:
        others = [p for p in provs if p != "cudnn"]
        out += ["## Geometric-mean speedup over cuDNN eager", ""]
        out += _table(["kind", "mode", "dtype", "batch"] + others,
                      [[g["kind"], g["mode"], g["dtype"], g["batch"]]
                       + [f"{_x(g['speedups'][p][0])} (n={g['speedups'][p][1]})"
                          if p in g["speedups"] else "—" for p in others] for g in gm])
        out.append("")
    for kind, title in (("layer", "Layers (conv + BN + ReLU)"), ("block", "Mixed blocks")):
        keys = [k for k in rows if k[0] == kind]
        if not keys:
            continue
        kprovs = [p for p in provs if any(p in rows[k] for k in keys)]
        first = next(iter(rows[keys[0]].values()))
        shape_col = "shape" if "shape" in first else "input"
        out += [f"## {title}", ""]
        out += _table([kind, shape_col, "mode", "dtype", "batch"] + kprovs,
                      [[k[1], next(iter(rows[k].values())).get(shape_col, ""), k[2], k[3], k[4]]
                       + [_cell(rows[k].get(p)) for p in kprovs] for k in keys])
        out.append("")
    mkeys = [k for k in rows if k[0] == "model"]
    if mkeys:
        out += ["## Whole model (AMP bf16, channels_last; train = forward + backward + SGD step)", ""]
        body = []
        for k in mkeys:
            for p in _providers({k: rows[k]}):
                r = rows[k][p]
                pct = r["frac_peak"] * 100 if r.get("frac_peak") else None
                body.append([k[1], r.get("input", ""), k[2], k[4], p,
                             _num(r.get("images_per_s"), "{:.0f}"), _x(r.get("speedup")),
                             f"{r['ms']:.3g}", _num(r.get("tflops")), _num(pct, "{:.0f}%"),
                             _num(r.get("peak_mem_gib"), "{:.2f}"), r.get("impl", "")])
        out += _table(["size", "input", "mode", "batch", "provider", "images/s", "speedup",
                       "ms/step", "TFLOP/s", "% peak", "peak mem GiB", "what"], body)
        out.append("")
    if data["skipped"]:
        reasons: dict[str, int] = defaultdict(int)
        for s in data["skipped"]:
            m = re.search(r"-(\w+)\]$", s["test"])
            reasons[(m.group(1) if m else "?", s["reason"])] += 1
        out += ["## Not run", ""]
        out += _table(["provider", "reason", "cases"], [[p, r, n] for (p, r), n in sorted(reasons.items())])
        out.append("")
    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(out)


def _plot_speedups(rows, kind: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in rows if k[0] == kind]
    if not keys:
        return False
    panels = sorted({k[2:] for k in keys}, key=str)
    provs = [p for p in _providers({k: rows[k] for k in keys}) if p != "cudnn"]
    names = list(dict.fromkeys(k[1] for k in keys))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, 0.35 * len(names) * max(1, len(provs)) + 2),
                                                       3.2 * len(panels)), squeeze=False)
    width = 0.8 / max(1, len(provs))
    for ax, panel in zip(axes[:, 0], panels):
        got = []
        for i, p in enumerate(provs):
            ys = [(rows.get((kind, n) + panel, {}).get(p) or {}).get("speedup") or float("nan")
                  for n in names]
            got += [y for y in ys if y == y]
            ax.bar([j + i * width for j in range(len(names))], ys, width, label=p)
        if got and max(got) / min(got) > 20:  # e.g. an interpreter run next to compiled code
            ax.set_yscale("log")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([j + width * (len(provs) - 1) / 2 for j in range(len(names))])
        ax.set_xticklabels(names, rotation=75, ha="right", fontsize=7)
        ax.set_ylabel("speedup vs cuDNN")
        ax.set_title(f"{kind}s: {panel[0]}, {panel[1]}, batch {panel[2]}", fontsize=9)
        if provs:
            ax.legend(fontsize=7, ncol=len(provs))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_model(rows, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in rows if k[0] == "model"]
    if not keys:
        return False
    provs = _providers({k: rows[k] for k in keys})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(keys) * len(provs) / 2), 4))
    width = 0.8 / len(provs)
    for i, p in enumerate(provs):
        ys = [(rows[k].get(p) or {}).get("images_per_s") or 0 for k in keys]
        ax.bar([j + i * width for j in range(len(keys))], ys, width, label=p)
    ax.set_xticks([j + width * (len(provs) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels([f"{k[1]}px {k[2]} b{k[4]}" for k in keys], fontsize=8)
    ax.set_ylabel("images/s")
    ax.set_title("inception_v3 throughput per provider (AMP bf16)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def default_out(info: dict) -> Path:
    date = (info.get("datetime") or "")[:10] or "undated"
    gpu = re.sub(r"[^a-z0-9]+", "-", str(info.get("device", "unknown")).lower()).strip("-")
    return RESULTS / f"{date}-{gpu}"


def write_report(paths, out: Path | None = None) -> Path:
    """Write report.md and the PNGs; return the report's path."""
    data = load(paths)
    if not data["records"]:
        raise ValueError("no inception_fast benchmark records in " + ", ".join(map(str, paths)))
    out = Path(out) if out else default_out(data["info"])
    out.mkdir(parents=True, exist_ok=True)
    rows = speedup_table(data["records"])
    plots = []
    for name, make in (("layers_speedup.png", lambda p: _plot_speedups(rows, "layer", p)),
                       ("blocks_speedup.png", lambda p: _plot_speedups(rows, "block", p)),
                       ("model_throughput.png", lambda p: _plot_model(rows, p))):
        if make(out / name):
            plots.append(str(out / name))
    for p in map(Path, paths):
        if p.resolve().parent != out.resolve():
            shutil.copy(p, out / p.name)
    report = out / "report.md"
    report.write_text(markdown(data, plots))
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="extend", nargs="+", required=True, metavar="FILE",
                    help="pytest-benchmark JSON file(s) from `pytest bench/ --benchmark-json FILE`")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default bench/results/<date>-<gpu>/)")
    args = ap.parse_args(argv)
    missing = [p for p in args.json if not Path(p).is_file()]
    if missing:
        ap.error(f"no such JSON file: {', '.join(missing)}")
    try:
        report = write_report(args.json, args.out)
    except ValueError as e:
        print(f"bench.report: {e}", file=sys.stderr)
        return 1
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
