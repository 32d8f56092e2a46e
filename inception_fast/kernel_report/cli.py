"""`inception-fast kernels`: the static kernel report (see the package doc)."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"  # every host decision the GPU's; set before triton loads


def add_arguments(p) -> None:
    p.add_argument("--model", default="inception_v3,units",
                   help="comma list of inception_v3, inception_v3_paper, units (the fused op's "
                        "paths the model does not take; its own input, ignores --size)")
    p.add_argument("--size", type=int, default=299, help="input size (299, 151, 79)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dtype", default="bf16", help="comma list of bf16, fp16, fp32")
    p.add_argument("--mode", default="train,train-joint,eval", help="comma list of train, train-joint (the joint-optimization loss), eval")
    p.add_argument("--arch", type=int, default=90, help="compute capability (90, 80)")
    p.add_argument("--configs", default="first", choices=["first", "all"],
                   help="compile the first autotune config each launch keeps (compact, CI) or "
                        "all of them (what a GPU's first step compiles)")
    p.add_argument("--jobs", type=int, default=os.cpu_count(), help="compile processes")
    p.add_argument("--no-cuda", action="store_true", help="skip the CUDA C++ objects")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default bench/results/static-<date>-sm<arch>)")
    p.add_argument("--warm-cache", action="store_true",
                   help="use Triton's usual cache (a rerun is fast, compile seconds are not "
                        "cold); default: a fresh cache, so the report's compile seconds are "
                        "what a GPU's first step pays")
    p.add_argument("--write-verdicts", action="store_true",
                   help="with --configs all: compile every config (no verdict pruning) and "
                        "rewrite kernels/config_verdicts.json from what cannot launch or spills")
    p.add_argument("--quiet", action="store_true")


def _cuda_build_dir(arch: int) -> Path | None:
    """The extension build's folder, building it if needed; None (with a line saying why)
    when there is no toolkit or no CUDA torch."""
    from inception_fast import _build, ext
    why = _build.cannot_build_reason()
    if why:
        print(f"CUDA C++ kernels not reported: {why}", file=sys.stderr)
        return None
    try:
        ext.load()
    except RuntimeError as e:
        print(f"CUDA C++ kernels not reported: {e}", file=sys.stderr)
        return None
    return ext.build_dir()


@contextlib.contextmanager
def _fresh_triton_cache():
    """Compile into an empty, temporary Triton cache (cold compile seconds)."""
    from triton import knobs

    saved = knobs.cache.dir
    with tempfile.TemporaryDirectory(prefix="ifast-kernels-") as d:
        knobs.cache.dir = d
        try:
            yield
        finally:
            knobs.cache.dir = saved


def run(args) -> int:
    if args.write_verdicts and args.configs != "all":
        print("--write-verdicts needs --configs all (every config judged)", file=sys.stderr)
        return 2
    from .build import ROOT, build
    from .collect import Workload
    from inception_fast.kernels import configs

    from . import verdicts
    from .render import write

    works = [Workload(n, args.size, args.batch, d, m) for n in args.model.split(",")
             for d in args.dtype.split(",") for m in args.mode.split(",")
             if not (n == "units" and m == "train-joint")]  # units have no loss head
    t0 = time.time()
    n = [0]

    def progress(rec):
        n[0] += 1
        if not args.quiet:
            print(f"[{n[0]:4d} {time.time() - t0:6.0f}s] {rec['kernel']} {rec['config']} "
                  f"{rec.get('error', '')[:120]}", flush=True)

    cuda_dir = None if args.no_cuda else _cuda_build_dir(args.arch)
    with contextlib.ExitStack() as stack:
        if not args.warm_cache:
            stack.enter_context(_fresh_triton_cache())
        if args.write_verdicts:
            stack.enter_context(configs.verdicts_disabled())
        rep = build(works, args.arch, args.configs, args.jobs, cuda_dir, progress)
    rep["meta"]["wall_s"] = round(time.time() - t0, 1)
    rep["meta"]["verdicts_disabled"] = args.write_verdicts
    if configs.VERDICTS.exists():
        rep["pruned"] = json.loads(configs.VERDICTS.read_text())
    rep["meta"]["jobs"] = args.jobs
    out = args.out or ROOT / "bench" / "results" / f"static-{rep['meta']['date']}-sm{args.arch}"
    write(rep, out)
    if args.write_verdicts:
        merged = verdicts.write(rep, configs.VERDICTS)
        print(f"wrote {configs.VERDICTS}: {sum(len(c) for v in merged.values() for c in v.values())}"
              " pruned configs")
    g = rep["gate"]
    print(f"wrote {out}/report.md: {len(rep['variants'])} variants in {time.time() - t0:.0f} s; "
          f"gate: {len(g['failures'])} failing, {len(g['new'])} new, {len(g['fixed'])} fixed")
    for k, r in g["new"]:
        print(f"  NEW failure: {k} {r}")
    for k, r in g["fixed"]:
        print(f"  fixed (delete from known_failures.txt): {k} {r}")
    return 1 if g["new"] or g["fixed"] else 0


def main(argv=None) -> int:
    from .warmup import command_main
    return command_main(sys.modules[__name__], "inception-fast kernels", argv)


if __name__ == "__main__":
    sys.exit(main())
