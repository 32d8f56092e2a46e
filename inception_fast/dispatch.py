"""backend="auto" on a GPU: per layer shape, dtype and mode, the fastest measured implementation.

The first call for a key times every backend that can run here (torch = cuDNN, triton, cuda)
with triton.testing.do_bench (CUDA events when Triton is missing) and keeps the fastest, except
that a backend is picked over "torch" only when it is strictly faster than cuDNN for that key.
Decisions are cached in memory and on disk as JSON, one file per GPU model and
torch / triton / inception_fast version (a new driver stack re-measures):
    $INCEPTION_FAST_CACHE_DIR or ~/.cache/inception_fast/dispatch-<gpu>-<versions>.json
On CPU, "auto" is always "torch" and nothing is measured.

    choose(key, x, make_runner) -> backend   make_runner(backend) -> a zero-argument callable
                                              running the layer once with that backend
    describe() -> str                         the cached decisions, for `inception-fast info`
    clear() -> int                            forget them (memory and disk); returns how many
"""
from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Callable

import torch

_LOCK = threading.Lock()
_MEM: dict[str, dict] = {}   # cache file path -> {key: record}


def cache_dir() -> Path:
    d = os.environ.get("INCEPTION_FAST_CACHE_DIR")
    return Path(d) if d else Path.home() / ".cache" / "inception_fast"


def _versions() -> str:
    try:
        import triton
        tv = triton.__version__
    except Exception:  # no triton: the key says so
        tv = "none"
    from .version import __version__ as ifv

    return f"torch{torch.__version__}-triton{tv}-if{ifv}"


def _gpu_name(device=None) -> str:
    if not torch.cuda.is_available():
        return "cpu"
    return torch.cuda.get_device_name(device)


def cache_path(device=None) -> Path:
    slug = re.sub(r"[^A-Za-z0-9.+-]+", "_", f"{_gpu_name(device)}-{_versions()}")
    return cache_dir() / f"dispatch-{slug}.json"


def _table(path: Path) -> dict:
    key = str(path)
    if key not in _MEM:
        try:
            _MEM[key] = json.loads(path.read_text())
        except (OSError, ValueError):
            _MEM[key] = {}
    return _MEM[key]


def _save(path: Path, table: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:  # a read-only home must not break the model: decisions stay in memory
        pass


def _time_ms(fn: Callable[[], object]) -> float:
    """Median milliseconds per call on the current CUDA stream."""
    try:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=10, rep=40))
    except ImportError:
        pass
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def decide(key: str, runners: dict[str, Callable[[], object]], *, path: Path | None = None,
           timer: Callable[[Callable[[], object]], float] = _time_ms) -> str:
    """The cached decision for `key`, or measure every runner now and record the winner.
    A runner that raises is recorded as failed and never chosen; "torch" wins ties and every
    case where nothing measured faster than it."""
    path = path or cache_path()
    with _LOCK:
        table = _table(path)
        hit = table.get(key)
        if hit is not None and hit.get("backend") in runners:
            return hit["backend"]
    times, errors = {}, {}
    for name, fn in runners.items():
        try:
            times[name] = timer(fn)
        except Exception as e:  # unsupported shape/dtype on that backend: not a candidate
            errors[name] = f"{type(e).__name__}: {e}"[:200]
    if not times:
        raise RuntimeError(f"dispatch: no backend could run {key}: {errors}")
    best = min(times, key=times.get)
    if "torch" in times and times[best] >= times["torch"]:
        best = "torch"
    if best == "torch":
        why = "cuDNN fastest" if len(times) > 1 else "only torch ran"
    else:
        why = (f"{times['torch'] / times[best]:.2f}x vs cuDNN" if "torch" in times
               else "torch failed")
    record = {"backend": best, "ms": {k: round(v, 4) for k, v in times.items()}, "why": why}
    if errors:
        record["errors"] = errors
    with _LOCK:
        table = _table(path)
        table[key] = record
        _save(path, table)
    return best


def choose(key: str, x: torch.Tensor, make_runner: Callable[[str], Callable[[], object]]) -> str:
    """The backend for one layer call: "torch" off-GPU, else decide() over the backends that
    can run here."""
    if x.device.type != "cuda":
        return "torch"
    from . import backends

    cands = [b for b in backends.BACKENDS if backends.why_unavailable(b) is None]
    full = f"{key}|{str(x.dtype).replace('torch.', '')}"
    return decide(full, {b: make_runner(b) for b in cands}, path=cache_path(x.device))


def describe() -> str:
    """The decisions cached for this GPU and these versions (one line each)."""
    path = cache_path()
    if not torch.cuda.is_available():
        return (f"dispatch: no CUDA GPU, backend='auto' is 'torch' everywhere "
                f"(cache dir {cache_dir()})")
    with _LOCK:
        table = dict(_table(path))
    if not table:
        return f"dispatch: no decisions cached yet ({path})"
    lines = [f"dispatch: {len(table)} decision(s) in {path}"]
    for key in sorted(table):
        r = table[key]
        ms = ", ".join(f"{k} {v:.3f} ms" for k, v in sorted(r.get("ms", {}).items()))
        lines.append(f"  {key}: {r['backend']} ({r.get('why', '')}; {ms})")
    return "\n".join(lines)


def clear() -> int:
    """Forget every cached decision (all GPUs and versions in the cache dir); returns the
    number of decisions removed."""
    n = 0
    with _LOCK:
        paths = {Path(p) for p in _MEM} | set(cache_dir().glob("dispatch-*.json"))
        for p in paths:
            n += len(_table(p))
            try:
                p.unlink()
            except OSError:
                pass
        _MEM.clear()
    return n
