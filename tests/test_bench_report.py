"""bench.report: the speedup / geometric-mean arithmetic on known numbers, and the whole path
on a real smoke run (a few benchmarks of each kind run into a JSON file by a pytest subprocess,
then `python -m bench.report` turns it into markdown and PNGs)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rec(provider, ms, name="L1", kind="layer", mode="eval", **kw):
    return dict(kind=kind, name=name, mode=mode, dtype="bf16", batch=32, provider=provider, ms=ms, **kw)


def test_speedup_and_geomean_arithmetic():
    recs = [_rec("cudnn", 2.0), _rec("triton", 1.0), _rec("cuda", 4.0),
            _rec("cudnn", 8.0, name="L2"), _rec("triton", 1.0, name="L2"),
            _rec("triton", 1.0, name="L3")]  # no cudnn row for L3: no speedup
    rows = report.speedup_table(recs)
    assert rows[("layer", "L1", "eval", "bf16", 32)]["cudnn"]["speedup"] == 1.0
    assert rows[("layer", "L1", "eval", "bf16", 32)]["triton"]["speedup"] == 2.0
    assert rows[("layer", "L1", "eval", "bf16", 32)]["cuda"]["speedup"] == 0.5
    assert rows[("layer", "L3", "eval", "bf16", 32)]["triton"]["speedup"] is None
    gm = {(g["mode"], g["batch"]): g["speedups"] for g in report.geomeans(rows)}
    assert gm[("eval", "32")]["triton"] == (pytest.approx(4.0), 2)  # sqrt(2 * 8)
    assert gm[("all", "all")]["cuda"] == (pytest.approx(0.5), 1)
    assert "cudnn" not in gm[("eval", "32")]
    assert report.geomean([]) is None
    assert math.isclose(report.geomean([1, 10, 100]), 10.0)


def test_markdown_on_synthetic_gpu_records(tmp_path):
    model = dict(kind="model", name="299", mode="train")
    recs = [_rec("cudnn", 2.0, tflops=100.0, frac_peak=0.101),
            _rec("triton", 1.0, tflops=200.0, frac_peak=0.202),
            _rec("cudnn", 50.0, images_per_s=640.0, peak_mem_gib=9.5, **model),
            _rec("auto", 40.0, images_per_s=800.0, peak_mem_gib=8.0, **model)]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({
        "benchmarks": [{"extra_info": r} for r in recs] + [{"extra_info": {}}],  # a foreign one
        "datetime": "2026-11-24T10:00:00+00:00",
        "inception_fast": {"device": "NVIDIA H100 80GB HBM3", "scale": "compact", "smoke": False,
                           "skipped": [{"test": "bench/bench_layers.py::test_layer[L1-eval-bf16-b32-cuda]",
                                        "reason": "backend 'cuda' unavailable: not built"}]}}))
    out = report.write_report([path], tmp_path / "out")
    md = out.read_text()
    assert "CPU smoke run" not in md
    assert "2 ms · 1.00× · 100 TF/s (10%)" in md and "1 ms · 2.00× · 200 TF/s (20%)" in md
    assert "| layer | eval | bf16 | 32 | 2.00× (n=1) |" in md
    assert "| 299 |  | train | 32 | auto | 800 | 1.25× | 40 |" in md
    assert "| cuda | backend 'cuda' unavailable: not built | 1 |" in md
    assert (tmp_path / "out" / "run.json").exists()  # the data travels with its report
    assert report.default_out({"datetime": "2026-11-24T10:00:00", "device": "NVIDIA H100 80GB HBM3"}).name \
        == "2026-11-24-nvidia-h100-80gb-hbm3"


def test_report_cli_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    assert report.main(["--json", str(bad), "--out", str(tmp_path / "o")]) == 1
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"benchmarks": []}))
    assert report.main(["--json", str(empty), "--out", str(tmp_path / "o")]) == 1
    with pytest.raises(SystemExit):
        report.main(["--json", str(tmp_path / "missing.json")])


@pytest.fixture(scope="module")
def smoke_json(tmp_path_factory):
    """A real smoke run: one layer, one block, the 79 model, eval, every provider."""
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    cmd = [sys.executable, "-m", "pytest", "bench/bench_layers.py", "bench/bench_blocks.py",
           "bench/bench_model.py", "--benchmark-only", "-q", "-p", "no:cacheprovider",
           "--bench-smoke", "--bench-mode", "eval", "--benchmark-json", str(out),
           "-k", "Mixed_5b.branch1x1 or Mixed_5b- or 79-"]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # the CPU smoke path, even on a GPU machine
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "CPU smoke run: GPU numbers need a GPU" in proc.stdout
    return out


def test_smoke_json_records(smoke_json):
    data = json.loads(smoke_json.read_text())
    recs = [b["extra_info"] for b in data["benchmarks"]]
    assert {r["kind"] for r in recs} == {"layer", "block", "model"}
    assert {r["provider"] for r in recs} >= {"cudnn", "auto"}
    for r in recs:
        assert r["ms"] > 0 and r["smoke"] and r["timer"] == "host" and r["mode"] == "eval"
        assert r["note"] == "CPU smoke run: GPU numbers need a GPU"
        assert r["tflops"] == pytest.approx(r["flops"] / (r["ms"] * 1e-3) / 1e12)
    lay = next(r for r in recs if r["kind"] == "layer" and r["provider"] == "cudnn")
    assert lay["flops"] == 2 * 2 * 16 * 7 * 7 * 16  # batch 2, 16 -> 16 channels at 7x7, 1x1
    assert lay["count"] == 2 and "Mixed_5b.branch3x3dbl_1" in lay["layers"]  # same config
    assert lay["table_gflop"] == 0.030
    model = next(r for r in recs if r["kind"] == "model" and r["provider"] == "cudnn")
    assert model["images_per_s"] == pytest.approx(2 / (model["ms"] * 1e-3))
    skipped = data["inception_fast"]["skipped"]
    assert any("compile" in s["test"] and "GPU only" in s["reason"] for s in skipped)
    assert data["inception_fast"]["note"] == "CPU smoke run: GPU numbers need a GPU"


def test_report_from_smoke_run(smoke_json, tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "bench.report", "--json", str(smoke_json),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "CPU smoke run: GPU numbers need a GPU" in md
    for section in ("## Geometric-mean speedup", "## Layers", "## Mixed blocks", "## Whole model",
                    "## Not run", "Mixed_5b.branch1x1", "| Mixed_5b |"):
        assert section in md, section
    assert "1.00×" in md  # the cudnn baseline against itself
    for png in ("layers_speedup.png", "blocks_speedup.png", "model_throughput.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC, png
        assert f"]({png})" in md
