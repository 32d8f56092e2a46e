"""`pytest --benchmark` (root conftest.py) is `pytest bench/ --benchmark-only`; plain `pytest`
collects as before. Each check is a pytest run in a subprocess from the repo root."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE_BENCH = "test_layer and Conv2d_1a_3x3 and cudnn and eval"  # a CPU smoke case, ~1 s


def _pytest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True)


def _items(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if "::" in ln and not ln.startswith(" ")]


def test_benchmark_collects_the_bench_suite_only():
    r = _pytest("--benchmark", "--collect-only", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    items = _items(r.stdout)
    assert any(i.startswith("bench/bench_layers.py::test_layer[") for i in items), r.stdout[-2000:]
    assert not [i for i in items if i.startswith("tests/")], "--benchmark must not collect tests/"
    same = _pytest("bench", "--benchmark-only", "--collect-only", "-q")
    assert same.returncode == 0, same.stdout + same.stderr
    assert _items(same.stdout) == items, "--benchmark must collect what bench/ --benchmark-only does"


def test_benchmark_runs_benchmarks_and_skips_the_rest():
    r = _pytest("--benchmark", "-q", "-rs", "-k", f"({ONE_BENCH}) or test_peaks_and_host_timer")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "1 passed" in r.stdout and "1 skipped" in r.stdout, r.stdout[-2000:]
    assert "--benchmark-only active" in r.stdout, r.stdout[-2000:]


def test_plain_pytest_is_unchanged():
    r = _pytest("--collect-only", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    items = _items(r.stdout)
    assert any(i.startswith("tests/") for i in items)
    assert any(i.startswith("bench/") for i in items)
    # without --benchmark nothing is benchmark-only: a non-benchmark bench test runs
    r = _pytest("-q", "bench/test_layer_table.py", "-k", "test_peaks_and_host_timer")
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-2000:]
