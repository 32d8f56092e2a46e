"""`inception-fast warmup`: compile, ahead of time and in parallel, every Triton kernel variant
the model launches for a size, batch, dtype, mode and target, into Triton's cache directory, so
that a GPU's first step (and its autotuning) finds them compiled.

The variants are the static report's (collect.record_launches: one step on meta tensors with
the interpreter off, each launch specialized as the JIT would, for each autotune config the
kernel's pruning keeps) and they are compiled by triton.compile into TRITON_CACHE_DIR: the same
key a real launch looks up (warmup_cache.py). It needs no GPU; on a GPU machine the target is
the visible GPU unless --arch says otherwise.

    inception-fast warmup --size 299 --batch 256 --mode train,eval      # all cores
    inception-fast warmup --dry-run        # the variants and an estimated compile time
    inception-fast warmup --check          # how many are already cached (compiles nothing)
    inception-fast warmup --binary-only    # then keep only cubin + metadata (~1/9 the size)
    inception-fast warmup --stack-check --cache-dir D   # was D built by this Triton for this
                                           # target? (reads its manifest; compiles nothing)

Python: warmup(size=299, batches=(256,), modes=("train", "eval"), ...) -> dict, in a process
whose Triton interpreter is off (TRITON_INTERPRET unset or 0 before triton is imported)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

CONFIGS = ("pruned", "all", "first")  # every config pruning keeps / no verdicts / the first


def default_arch() -> int:
    """The visible GPU's compute capability (e.g. 90), else 90 (H100 / H200)."""
    import torch

    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return major * 10 + minor
    return 90


def _check_interpreter_off() -> None:
    from triton import knobs

    if knobs.runtime.interpret:
        raise RuntimeError("warmup needs the Triton interpreter off (TRITON_INTERPRET=0 before "
                           "triton is imported): under it the host code picks other configs")


def plan(size: int = 299, batches=(256,), dtype: str = "bf16", modes=("train", "eval"),
         arch: int | None = None, configs: str = "pruned", model: str = "inception_v3"):
    """[(Specialized, [workload tags])]: each distinct variant the workloads launch, once.
    model: a comma list (e.g. "inception_v3,layers": the model and the per-layer benchmarks)."""
    import contextlib
    import itertools

    from inception_fast.kernels import configs as kconfigs

    from .collect import Workload, record_launches, select
    from .jit_launch import target_for

    if configs not in CONFIGS:
        raise ValueError(f"configs must be one of {CONFIGS}, got {configs!r}")
    _check_interpreter_off()
    target = target_for(arch or default_arch())
    chosen: dict = {}
    where: dict = {}
    with kconfigs.verdicts_disabled() if configs == "all" else contextlib.nullcontext():
        for mdl, b, m in itertools.product(model.split(","), batches, modes):
            w = Workload(mdl, size, b, dtype, m)
            launches, _ = record_launches(w, target)
            for key, spec in select(launches, "first" if configs == "first" else "all").items():
                chosen.setdefault(key, spec)
                where.setdefault(key, []).append(w.tag)
    return [(chosen[k], where[k]) for k in chosen]


def compile_one(spec) -> dict:
    """Compile one variant into the cache unless it is there; what happened, and how long."""
    from .jit_launch import compile_specialized
    from .variants import describe
    from .warmup_cache import is_cached

    cfg, flags = describe(spec)
    rec = dict(kernel=spec.name, config=cfg, flags=flags)
    if is_cached(spec):
        return dict(rec, cached=True, compile_s=0.0)
    t0 = time.perf_counter()
    try:
        compile_specialized(spec)
    except Exception as e:  # reported; the GPU's autotuner skips such a config too
        rec["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200]}"
    return dict(rec, cached=False, compile_s=round(time.perf_counter() - t0, 2))


def _use_cache_dir(cache_dir) -> Path:
    from .warmup_cache import cache_dir as current

    if cache_dir is not None:
        from triton import knobs

        os.environ["TRITON_CACHE_DIR"] = str(cache_dir)
        knobs.cache.dir = str(cache_dir)
    d = current()
    d.mkdir(parents=True, exist_ok=True)
    return d


def warmup(size: int = 299, batches=(256,), dtype: str = "bf16", modes=("train", "eval"),
           arch: int | None = None, configs: str = "pruned", cache_dir=None,
           jobs: int | None = None, binary_only: bool = False, progress=None,
           model: str = "inception_v3") -> dict:
    """Compile every variant of plan(...) that the cache lacks, in `jobs` worker processes
    (default: all cores); returns counts, seconds and the cache's summary, also written into
    the cache's manifest (warmup_cache.MANIFEST)."""
    import datetime

    from . import warmup_cache as wc
    from .parallel import pool_map

    t0 = time.time()
    d = _use_cache_dir(cache_dir)
    wc.rewrite_groups(d)  # a cache copied here: its groups name the old paths
    arch = arch or default_arch()
    variants = plan(size, batches, dtype, modes, arch, configs, model)
    recs = pool_map(compile_one, [s for s, _ in variants], jobs, progress)
    removed = wc.rewrite_groups(d, binaries_only=True) if binary_only else 0
    failed = [r for r in recs if "error" in r]
    old = wc.read_manifest(d) or {}
    workloads = sorted(set(old.get("workloads", [])) | {t for _, ts in variants for t in ts})
    info = dict(wc.stack_key(arch), date=datetime.date.today().isoformat(), configs=configs,
                workloads=workloads, variants=len(recs),
                compiled=sum(1 for r in recs if not r["cached"] and "error" not in r),
                cached=sum(1 for r in recs if r["cached"]), failed=len(failed),
                compile_s=round(sum(r["compile_s"] for r in recs), 1),
                wall_s=round(time.time() - t0, 1), jobs=jobs or os.cpu_count(),
                binary_only=binary_only,
                removed_bytes=removed)
    wc.write_manifest(d, info)
    return dict(info, cache=wc.summary(d), failures=failed)


def check(size=299, batches=(256,), dtype="bf16", modes=("train", "eval"), arch=None,
          configs="pruned", cache_dir=None, model: str = "inception_v3") -> dict:
    """How many of plan(...)'s variants the cache holds (compiles nothing)."""
    from . import warmup_cache as wc

    d = _use_cache_dir(cache_dir)
    wc.rewrite_groups(d)
    arch = arch or default_arch()
    variants = plan(size, batches, dtype, modes, arch, configs, model)
    hits = sum(1 for s, _ in variants if wc.is_cached(s))
    return dict(variants=len(variants), cached=hits, dir=str(d),
                mismatch=wc.manifest_mismatch(d, arch), cache=wc.summary(d))


def stack_check(cache_dir, arch=None) -> int:
    """0 when `cache_dir` holds a warmup manifest of this Triton build (version, the hash of
    its sources and libtriton, which differs per Python version) and this target (arch, ptxas),
    with its entries re-pointed at their files here; 1 otherwise, printing why."""
    from . import warmup_cache as wc

    d = Path(cache_dir) if cache_dir is not None else wc.cache_dir()
    arch = arch or default_arch()
    why = (f"no cache directory {d}" if not d.is_dir() else wc.manifest_mismatch(d, arch))
    if why:
        print(f"warmup --stack-check: {d} does not match this machine: {why}")
        return 1
    wc.rewrite_groups(d)
    m, s = wc.read_manifest(d), wc.summary(d)
    print(f"warmup --stack-check: {d} matches (Triton {m['triton']}, sm_{arch}, built "
          f"{m.get('date')}, {', '.join(m.get('workloads', []))}): {s['entries']} entries, "
          f"{s['bytes'] / 1e6:.1f} MB")
    return 0


def add_arguments(p) -> None:
    p.add_argument("--model", default="inception_v3",
                   help="comma list of inception_v3, inception_v3_paper, layers (each distinct "
                        "conv unit of inception_v3 on its own, as the per-layer benchmarks run "
                        "them) or units (two small convs: tests)")
    p.add_argument("--size", type=int, default=299, help="input size (299, 151, 79)")
    p.add_argument("--batch", default="256", help="comma list of batch sizes (default 256)")
    p.add_argument("--dtype", default="bf16", help="bf16, fp16 or fp32")
    p.add_argument("--mode", default="train,eval", help="comma list of train, train-joint, eval")
    p.add_argument("--arch", type=int, default=None,
                   help="compute capability (default: the visible GPU's, else 90)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="Triton cache directory (default TRITON_CACHE_DIR, else ~/.triton/cache)")
    p.add_argument("--jobs", type=int, default=os.cpu_count(), help="compile processes")
    p.add_argument("--configs", default="pruned", choices=CONFIGS,
                   help="pruned: every autotune config the kernels' pruning keeps (what a GPU's "
                        "first step compiles); all: no verdict pruning; first: one per launch")
    p.add_argument("--dry-run", action="store_true",
                   help="list the variants and an estimated compile time; compile nothing")
    p.add_argument("--check", action="store_true",
                   help="report how many variants the cache holds; compile nothing (exit 1 if "
                        "any is missing)")
    p.add_argument("--stack-check", action="store_true",
                   help="exit 0 if the cache's manifest names this Triton build and target (then "
                        "point its entries at where it now lies), else 1 saying why; no plan, "
                        "nothing compiled: what bench/run_gpu.sh asks of a cache brought along")
    p.add_argument("--binary-only", action="store_true",
                   help="after compiling, keep only the binaries and their metadata")
    p.add_argument("--quiet", action="store_true")


def _opts(args) -> dict:
    return dict(size=args.size, batches=[int(b) for b in args.batch.split(",")],
                dtype=args.dtype, modes=args.mode.split(","), arch=args.arch,
                configs=args.configs, model=args.model)


def run(args) -> int:
    os.environ["TRITON_INTERPRET"] = "0"  # every host decision the GPU's
    if "triton" in sys.modules:
        from triton import knobs

        knobs.runtime.interpret = False
    from .warmup_estimate import print_plan

    if args.stack_check:
        return stack_check(args.cache_dir, args.arch)
    if args.dry_run:
        opts = _opts(args)
        print_plan(plan(**opts), args.jobs, opts)
        return 0
    if args.check:
        r = check(**_opts(args), cache_dir=args.cache_dir)
        print(f"warmup --check: {r['cached']} of {r['variants']} variants cached in {r['dir']} "
              f"({r['cache']['entries']} entries, {r['cache']['bytes'] / 1e6:.1f} MB)")
        if r["mismatch"]:
            print(f"  manifest: {r['mismatch']}")
        return 0 if r["cached"] == r["variants"] else 1
    t0, n = time.time(), [0]

    def progress(rec):
        n[0] += 1
        if not args.quiet:
            what = "cached" if rec["cached"] else rec.get("error") or f"{rec['compile_s']:.1f} s"
            print(f"[{n[0]:4d} {time.time() - t0:6.0f}s] {rec['kernel']} {rec['config']}: "
                  f"{what}", flush=True)

    r = warmup(**_opts(args), cache_dir=args.cache_dir, jobs=args.jobs,
               binary_only=args.binary_only, progress=progress)
    print(f"warmup: {r['variants']} variants for sm_{r['arch']} in {r['wall_s']:.0f} s wall "
          f"({args.jobs} jobs): {r['compiled']} compiled, {r['cached']} already cached, "
          f"{r['failed']} failed; cache {r['cache']['dir']}: {r['cache']['entries']} entries, "
          f"{r['cache']['bytes'] / 1e6:.1f} MB" +
          (f" ({r['removed_bytes'] / 1e6:.1f} MB of IR removed)" if args.binary_only else ""))
    for f in r["failures"]:
        print(f"  failed: {f['kernel']} {f['config']} {f['flags']}: {f['error']}")
    return 0


def command_main(module, prog: str, argv=None) -> int:
    """Run a command module of this package (add_arguments / run, as `inception-fast` calls
    them) as a program of its own: `python -m inception_fast.kernel_report[.warmup]`."""
    import argparse

    p = argparse.ArgumentParser(prog=prog, description=module.__doc__)
    module.add_arguments(p)
    return module.run(p.parse_args(argv))


def main(argv=None) -> int:
    return command_main(sys.modules[__name__], "inception-fast warmup", argv)


if __name__ == "__main__":
    sys.exit(main())
