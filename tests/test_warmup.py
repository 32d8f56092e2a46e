"""`inception-fast warmup` fills the Triton cache that a real launch reads: after warming a
small case into a temporary TRITON_CACHE_DIR, Triton's own JITFunction.run of the same launches
(interpreter off, in a fresh process) finds every variant and compiles nothing, also after the
cache is shrunk to its binaries and moved; the control: on a cold cache the same run compiles.
The phases are tests/warmup_cache_check.py, each in a subprocess without TRITON_INTERPRET (the
suite's conftest.py sets it, and it must be unset before triton is imported)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "tests" / "warmup_cache_check.py"


def _env(cache) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(cache)
    return env


def _phase(phase: str, cache) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), phase, str(cache)], cwd=ROOT,
                          env=_env(cache), capture_output=True, text=True)


def _cli(*args, cache) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inception_fast", "warmup", *args], cwd=ROOT,
                          env=_env(cache), capture_output=True, text=True)


CASE = ["--model", "units", "--size", "30", "--batch", "2", "--mode", "eval", "--arch", "90",
        "--configs", "first", "--jobs", "1"]


def test_cold_cache_compiles(tmp_path):
    r = _phase("hit", tmp_path / "cold")
    assert r.returncode == 3, r.stdout + r.stderr[-3000:]
    assert "compiled:" in r.stdout and "is_cached said False" in r.stdout, r.stdout


def test_warmed_cache_is_hit_and_compiles_nothing(tmp_path):
    cache = tmp_path / "cache"
    r = _phase("warm", cache)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "2 variants, 2 compiled" in r.stdout, r.stdout
    r = _phase("hit", cache)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "2 of 2 launches served from the cache" in r.stdout, r.stdout

    # --check counts them; a moved copy, shrunk to its binaries, still hits
    r = _cli(*CASE, "--check", "--cache-dir", str(cache), cache=cache)
    assert r.returncode == 0 and "2 of 2 variants cached" in r.stdout, r.stdout + r.stderr[-2000:]
    full = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    moved = tmp_path / "moved"
    shutil.copytree(cache, moved)
    shutil.rmtree(cache)
    r = _cli(*CASE, "--binary-only", cache=moved)  # all cached: compiles nothing, shrinks
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "0 compiled, 2 already cached" in r.stdout, r.stdout
    exts = {p.suffix for p in moved.rglob("*") if p.is_file() and not p.name.startswith("__grp")}
    assert exts <= {".cubin", ".json"}, exts
    small = sum(p.stat().st_size for p in moved.rglob("*") if p.is_file())
    assert small < full / 2, (small, full)
    manifest = json.loads((moved / "inception_fast_warmup.json").read_text())
    assert manifest["arch"] == 90 and manifest["binary_only"], manifest
    r = _cli("--stack-check", "--cache-dir", str(moved), "--arch", "90", cache=moved)
    assert r.returncode == 0 and "matches" in r.stdout, r.stdout + r.stderr[-2000:]
    r = _phase("hit", moved)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "2 of 2 launches served from the cache" in r.stdout, r.stdout
    info = subprocess.run([sys.executable, "-m", "inception_fast", "info"], cwd=ROOT,
                          env=_env(moved), capture_output=True, text=True)
    assert f"triton cache: {moved}: 2 compiled kernel(s)" in info.stdout, info.stdout
    assert "warmup " in info.stdout and "binaries only" in info.stdout, info.stdout


def test_dry_run_lists_the_plan(tmp_path):
    r = _cli(*CASE, "--dry-run", cache=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "warmup plan: 2 variants for sm_90" in r.stdout, r.stdout
    assert "estimated compile time" in r.stdout, r.stdout
    assert not any(tmp_path.rglob("*.cubin")), "a dry run compiles nothing"


def test_stack_check_refuses_a_cache_of_another_triton_or_arch(tmp_path):
    """bench/run_gpu.sh uses a brought cache only if this passes: a manifest of another Triton
    build (here its source/library hash changed, as between Python versions) or arch fails."""
    from inception_fast.kernel_report import warmup_cache as wc

    here = dict(wc.stack_key(90), workloads=[])
    for field, value in (("triton_key", "0" * 16), ("arch", 80), ("ptxas", "other")):
        d = tmp_path / field
        d.mkdir()
        wc.write_manifest(d, dict(here, **{field: value}))
        r = _cli("--stack-check", "--cache-dir", str(d), "--arch", "90", cache=d)
        assert r.returncode == 1 and field in r.stdout, r.stdout + r.stderr[-2000:]
    wc.write_manifest(tmp_path, here)  # the control: this stack's own manifest passes
    r = _cli("--stack-check", "--cache-dir", str(tmp_path), "--arch", "90", cache=tmp_path)
    assert r.returncode == 0 and "matches" in r.stdout, r.stdout + r.stderr[-2000:]
    r = _cli("--stack-check", "--cache-dir", str(tmp_path / "absent"), cache=tmp_path)
    assert r.returncode == 1 and "no cache directory" in r.stdout, r.stdout
