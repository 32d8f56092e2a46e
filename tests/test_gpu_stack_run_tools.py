"""The pieces bench/run_gpu.sh relies on to keep what a cut-short run measured: the pytest plugin
scripts/bench_stream.py (one JSON line per benchmark, written when the test ends, before the
session does) and scripts/bench_table.py (the short table from those lines, whatever a kill cut)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TESTFILE = '''
import os, pytest

class Fake:  # stands for pytest-benchmark's fixture: the harness fills extra_info
    def __init__(self):
        self.extra_info = {}

@pytest.fixture
def benchmark():
    return Fake()

@pytest.mark.parametrize("prov,ms", [("cudnn", 2.0), ("triton", 1.0)])
def test_layer(benchmark, prov, ms):
    benchmark.extra_info.update(kind="layer", name="L1", mode="train", batch=256,
                                dtype="bf16", provider=prov, ms=ms)

def test_skipped(benchmark):
    pytest.skip("backend unavailable")

def test_killed(benchmark):
    # the stage's kill arrives here: the lines above must already be on disk
    assert len(open(os.environ["BENCH_STREAM"]).read().splitlines()) == 3
    os._exit(9)
'''


def test_results_stream_out_before_the_session_ends_and_make_the_table(tmp_path):
    (tmp_path / "test_fake_bench.py").write_text(TESTFILE)
    stream = tmp_path / "results.jsonl"
    env = dict(__import__("os").environ, BENCH_STREAM=str(stream), BENCH_STAGE="layers-b256",
               PYTHONPATH=str(ROOT / "scripts"))
    # (-p no:benchmark: pytest-benchmark refuses a stand-in for its fixture)
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "bench_stream", "-p", "no:benchmark",
                        "-p", "no:cacheprovider", "-q", "-o", "addopts=", str(tmp_path)],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 9, r.stdout + r.stderr  # killed mid-session
    recs = [json.loads(line) for line in stream.read_text().splitlines()]
    assert [r["outcome"] for r in recs] == ["passed", "passed", "skipped"], recs
    assert recs[1]["provider"] == "triton" and recs[1]["stage"] == "layers-b256", recs[1]
    assert "backend unavailable" in recs[2]["skip"], recs[2]
    stream.write_text(stream.read_text() + '{"cut by a kill')  # a torn last line is skipped
    md = tmp_path / "layers.md"
    t = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_table.py"), str(stream),
                        "--md", str(md)], capture_output=True, text=True)
    assert t.returncode == 0, t.stderr
    assert "train b256  bf16 triton    1 layers: cuDNN/ours geomean 2.00x, ours faster on 1" \
        in t.stdout, t.stdout
    assert "| train | 256 | bf16 | L1 | triton | 1.000 | 2.000 | 2.00 |" in md.read_text()
