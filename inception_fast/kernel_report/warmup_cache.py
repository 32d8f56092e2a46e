"""Triton's on-disk kernel cache as warmup sees it: where a variant's entry lives (the key
triton.compile computes), what a cache directory holds, shrinking it to what the runtime loads,
and the manifest that says which Triton / target a cache was built for.

The key is computed by Triton's own functions, in triton.compile's order (triton_key, the
source's hash, the backend's hash with its ptxas version, the parsed options, the
cache-invalidating environment): a warmed entry is found by the same lookup a GPU's first
launch does. tests/test_warmup.py checks that the hash equals the one triton.compile returns."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from triton import knobs
from triton.compiler import make_backend
from triton.runtime.cache import get_cache_manager, get_cache_key, triton_key

from .jit_launch import Specialized

MANIFEST = "inception_fast_warmup.json"
BINARY_EXTS = ("cubin", "hsaco", "json")  # what CompiledKernel loads to launch
_GROUP = "__grp__"


def cache_dir() -> Path:
    """The directory Triton reads and writes (TRITON_CACHE_DIR, else ~/.triton/cache)."""
    return Path(knobs.cache.dir)


def _env_vars() -> dict:
    from triton._C.libtriton import get_cache_invalidating_env_vars

    return get_cache_invalidating_env_vars()


def entry_hash(spec: Specialized) -> str:
    """The hash triton.compile files this variant under (CompiledKernel.hash)."""
    src = spec.source()
    backend = make_backend(spec.target)
    options = backend.parse_options(dict(spec.options.__dict__, **src.parse_options()))
    key = get_cache_key(src, backend, options, env_vars=_env_vars())
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def is_cached(spec: Specialized) -> bool:
    """Whether the cache directory holds this variant (triton.compile's cache-hit test)."""
    group = get_cache_manager(entry_hash(spec)).get_group(f"{spec.source().name[:150]}.json")
    return bool(group) and any(c.endswith(".json") for c in group)


def stack_key(arch: int) -> dict:
    """What every entry's key shares for one target: the Triton build (its version and the hash
    of its sources and library) and the backend (ptxas version, arch). A cache built elsewhere
    can only hit when these are equal."""
    from triton.backends.compiler import GPUTarget
    import triton
    import torch

    backend = make_backend(GPUTarget("cuda", arch, 32)).hash()
    ptxas = next((ln for ln in backend.splitlines() if "release" in ln), backend[:80])
    return dict(triton=triton.__version__, torch=torch.__version__, arch=arch,
                triton_key=hashlib.sha256(triton_key().encode()).hexdigest()[:16],
                backend=hashlib.sha256(backend.encode()).hexdigest()[:16], ptxas=ptxas.strip())


def write_manifest(d: Path, info: dict) -> None:
    (d / MANIFEST).write_text(json.dumps(info, indent=1, sort_keys=True))


def read_manifest(d: Path) -> dict | None:
    try:
        return json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def manifest_mismatch(d: Path, arch: int) -> str | None:
    """None when the cache in `d` was built by this Triton for `arch`, else why not."""
    m = read_manifest(d)
    if m is None:
        return f"no {MANIFEST} in {d}"
    here = stack_key(arch)
    bad = [f"{k} {m.get(k)} != {v}" for k, v in here.items() if k != "torch" and m.get(k) != v]
    return "; ".join(bad) or None


def _groups(d: Path):
    for g in d.glob(f"*/{_GROUP}*.json"):
        try:
            yield g, json.loads(g.read_text())
        except (OSError, ValueError):
            continue


def summary(d: Path | None = None) -> dict:
    """Compiled entries, autotune results and bytes in a cache directory."""
    d = Path(d or cache_dir())
    if not d.is_dir():
        return dict(dir=str(d), entries=0, autotune=0, bytes=0)
    files = [p for p in d.rglob("*") if p.is_file()]
    return dict(dir=str(d), entries=sum(1 for _ in _groups(d)),
                autotune=sum(1 for p in files if p.name.endswith(".autotune.json")),
                bytes=sum(p.stat().st_size for p in files))


def rewrite_groups(d: Path | None = None, binaries_only: bool = False) -> int:
    """Point every entry's group at the files beside it (Triton records absolute paths, and a
    group naming a missing file is a miss: a cache moved or copied elsewhere would never hit);
    with binaries_only, also drop each entry's IR and source (ttir, ttgir, llir, ptx, .source),
    keeping the binary and its metadata json. Returns the bytes removed."""
    d = Path(d or cache_dir())
    removed = 0
    for g, data in _groups(d):
        children = data.get("child_paths", {})
        keep = {c: str(g.parent / Path(p).name) for c, p in children.items()
                if not binaries_only or c.rsplit(".", 1)[-1] in BINARY_EXTS}
        if keep == children:
            continue
        for c in set(children) - set(keep):
            p = g.parent / Path(children[c]).name
            if p.exists():
                removed += p.stat().st_size
                p.unlink()
        tmp = g.with_suffix(".tmp")
        tmp.write_text(json.dumps({**data, "child_paths": keep}))
        tmp.replace(g)
    return removed
