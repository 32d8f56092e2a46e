"""warmup --dry-run: the variants it would compile, and an estimate of their compile time on N
cores, from the compile seconds a static report recorded per variant
(bench/results/static-*/report.json; by kernel, config and flags, else the kernel's mean, else
the mean of all), scheduled longest first onto N workers. Without a report it says it guesses."""
from __future__ import annotations

import heapq
import json
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUESS_S = 5.0  # seconds per variant when no report recorded any


def recorded_times(results: Path = ROOT / "bench" / "results", arch: int = 90):
    """(source, {(kernel, config, flags): s}, {kernel: mean s}) of the newest static report for
    `arch` with compile times; (None, {}, {}) when there is none."""
    for rep in sorted(results.glob("static-*/report.json"), reverse=True):
        try:
            data = json.loads(rep.read_text())
        except (OSError, ValueError):
            continue
        recs = [v for v in data.get("variants", [])
                if v.get("compile_s") and "error" not in v and v.get("arch") == arch]
        if not recs:
            continue
        exact = {(v["kernel"], v["config"], v["flags"]): float(v["compile_s"]) for v in recs}
        per = defaultdict(list)
        for v in recs:
            per[v["kernel"]].append(float(v["compile_s"]))
        means = {k: sum(x) / len(x) for k, x in per.items()}
        meta = data.get("meta", {})
        src = (f"{rep.relative_to(ROOT) if rep.is_relative_to(ROOT) else rep} (commit "
               f"{meta.get('commit', '?')}, Triton {meta.get('triton', '?')}, "
               f"{meta.get('jobs', '?')} jobs)")
        return src, exact, means
    return None, {}, {}


def makespan(times: list[float], jobs: int) -> float:
    """Wall seconds of `times` on `jobs` workers, longest first to the least loaded."""
    loads = [0.0] * max(1, jobs)
    for t in sorted(times, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + t)
    return max(loads)


def estimate(rows: list[tuple[str, str, str]], jobs: int, arch: int = 90) -> dict:
    """rows: (kernel, config, flags) per variant -> per-variant seconds, wall on `jobs`, how
    each was estimated."""
    src, exact, means = recorded_times(arch=arch)
    overall = sum(means.values()) / len(means) if means else GUESS_S
    secs, how = [], defaultdict(int)
    for r in rows:
        if r in exact:
            secs.append(exact[r]); how["recorded"] += 1
        elif r[0] in means:
            secs.append(means[r[0]]); how["kernel mean"] += 1
        else:
            secs.append(overall); how["overall mean" if means else "guess"] += 1
    return dict(source=src, seconds=secs, how=dict(how), cpu_s=sum(secs),
                wall_s=makespan(secs, jobs), jobs=jobs)


def print_plan(variants, jobs: int, opts: dict) -> dict:
    from .variants import describe

    rows = [(s.name, *describe(s)) for s, _ in variants]
    arch = variants[0][0].target.arch if variants else 90
    est = estimate(rows, jobs, arch)
    per = defaultdict(lambda: [0, 0.0])
    for r, t in zip(rows, est["seconds"]):
        per[r[0]][0] += 1
        per[r[0]][1] += t
    print(f"warmup plan: {len(rows)} variants for sm_{arch} "
          f"({opts['dtype']}, size {opts['size']}, batch {opts['batches']}, modes "
          f"{','.join(opts['modes'])}, configs {opts['configs']})")
    for k, (n, t) in sorted(per.items(), key=lambda kv: -kv[1][1]):
        print(f"  {k:32s} {n:4d} variants  ~{t:7.0f} s")
    how = ", ".join(f"{n} {k}" for k, n in est["how"].items())
    if est["source"]:
        print(f"estimated compile time: {est['cpu_s']:.0f} CPU-s, ~{est['wall_s']:.0f} s wall on "
              f"{jobs} cores (per-variant seconds from {est['source']}: {how})")
    else:
        print(f"estimated compile time: a guess ({GUESS_S:.0f} s per variant, no static report "
              f"recorded compile times): ~{est['wall_s']:.0f} s wall on {jobs} cores")
    return est
