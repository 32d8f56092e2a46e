"""A warmed Triton cache is the one a real launch finds (run by tests/test_warmup.py, each phase
in its own process with the interpreter off and TRITON_CACHE_DIR set to the cache under test).

    warm DIR   inception_fast.kernel_report.warmup.warmup() of the case below into DIR
    hit DIR    record the same launches afresh, then put each through Triton's real
               JITFunction.run (warmup=True: compile, launch nothing) against a stand-in sm_90
               driver, with the NVIDIA backend's add_stages (the first step of any compile)
               made to raise. Exit 0 only if every launch was served from DIR, nothing was
               compiled and no file in DIR was added or changed; exit 3 ("compiled") if any
               launch had to compile.
The case: the `units` workload (two small ConvBNReLU layers), eval, bf16, batch 2, sm_90, the
first autotune config of each launch: two variants, about 30 s of compiling on one core."""
import os
import sys

os.environ["TRITON_INTERPRET"] = "0"

from jit_specialization_check import TARGET, StandInDriver  # noqa: E402

from inception_fast.kernel_report import warmup, warmup_cache  # noqa: E402

CASE = dict(model="units", size=30, batches=(2,), dtype="bf16", modes=("eval",), arch=90,
            configs="first")


class Compiled(Exception):
    pass


def _files(d):
    out = {}
    for root, _, names in os.walk(d):
        for n in names:
            p = os.path.join(root, n)
            out[p] = os.stat(p).st_mtime_ns
    return out


def warm(d) -> int:
    r = warmup.warmup(**CASE, cache_dir=d, jobs=1)
    print(f"warm: {r['variants']} variants, {r['compiled']} compiled, {r['failed']} failed")
    return 0 if r["variants"] == r["compiled"] + r["cached"] and not r["failed"] else 1


def hit(d) -> int:
    from triton import knobs
    from triton.compiler import make_backend
    from triton.runtime import driver

    knobs.cache.dir = d
    warmup_cache.rewrite_groups(d)  # as warmup does for a cache copied from elsewhere
    before = _files(d)
    backend = type(make_backend(TARGET))

    def no_compile(self, *a, **k):
        raise Compiled("a launch compiled instead of hitting the cache")

    backend.add_stages = no_compile
    driver.set_active(StandInDriver())
    variants = warmup.plan(**CASE)
    served = 0
    for spec, _ in variants:
        listed = warmup_cache.is_cached(spec)  # warmup's own lookup, before the JIT's
        opts = dict(num_warps=spec.options.num_warps, num_stages=spec.options.num_stages)
        try:
            k = spec.jit.run(**spec.bound, **opts, grid=(1,), warmup=True)
        except Compiled as e:
            print(f"compiled: {spec.name} (is_cached said {listed}): {e}")
            return 3
        assert listed, f"the JIT found {spec.name} but is_cached said it was missing"
        assert k.hash == warmup_cache.entry_hash(spec), (k.hash, warmup_cache.entry_hash(spec))
        served += 1
    after = _files(d)
    assert after == before, f"the cache changed: {set(after) ^ set(before)}"
    print(f"hit: {served} of {len(variants)} launches served from the cache, nothing compiled")
    return 0 if served == len(variants) > 0 else 1


if __name__ == "__main__":
    phase, d = sys.argv[1], sys.argv[2]
    sys.exit({"warm": warm, "hit": hit}[phase](d))
