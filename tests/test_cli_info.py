import subprocess
import sys

from inception_fast import backends
from inception_fast.cli import main


def test_info_lists_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for b in ("torch", "triton", "cuda"):
        assert f"  {b}" in out
    assert "torch " in out and "device:" in out


def test_python_dash_m_and_summary_line():
    r = subprocess.run([sys.executable, "-m", "inception_fast", "info"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "backends:" in r.stdout
    line = backends.summary_line()
    assert line.startswith("inception_fast backends:") and "torch=yes" in line


def test_info_shows_and_clears_the_dispatch_cache(tmp_path, monkeypatch, capsys):
    import json

    from inception_fast import dispatch

    monkeypatch.setenv("INCEPTION_FAST_CACHE_DIR", str(tmp_path))
    f = tmp_path / "dispatch-fake.json"
    f.write_text(json.dumps({"k": {"backend": "triton", "ms": {"torch": 2.0, "triton": 1.0}}}))
    assert main(["info", "--clear-dispatch"]) == 0
    out = capsys.readouterr().out
    assert "cleared 1 cached decision" in out and "dispatch:" in out
    assert not f.exists() and dispatch.clear() == 0
