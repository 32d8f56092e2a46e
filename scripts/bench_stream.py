"""pytest plugin for bench/run_gpu.sh: append each benchmark's result (its extra_info: median ms,
images/s, ...) or skip reason as one JSON line to $BENCH_STREAM the moment the test finishes.

Why: pytest-benchmark writes --benchmark-json only when the session ends; a stage killed hard
(SIGKILL at a device's time limit, an out-of-memory kill) loses everything it measured. One
flushed line per result keeps it. Load with `-p bench_stream` and scripts/ on PYTHONPATH."""
from __future__ import annotations

import json
import os
import time

import pytest


def _write(rec: dict) -> None:
    path = os.environ.get("BENCH_STREAM")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps(rec, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "setup" and rep.skipped or rep.when == "call":
        rec = dict(test=item.nodeid, outcome=rep.outcome, t=round(time.time(), 1),
                   stage=os.environ.get("BENCH_STAGE"))
        bench = getattr(item, "funcargs", {}).get("benchmark")
        if bench is not None and getattr(bench, "extra_info", None):
            rec.update(bench.extra_info)
        if rep.skipped and isinstance(rep.longrepr, tuple):
            rec["skip"] = str(rep.longrepr[2])[:300]
        elif rep.failed:
            rec["error"] = str(rep.longrepr)[-300:]
        _write(rec)
