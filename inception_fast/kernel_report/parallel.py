"""One function over many kernel variants in forked worker processes (compiles are CPU-bound
and independent): the report's inspect and warmup's compile both go through `pool_map`."""
from __future__ import annotations

import multiprocessing
import os
from typing import Callable

_TASK: list = [None, []]  # [fn, items]: set before the fork, read by the workers


def _work(i: int):
    fn, items = _TASK
    return i, fn(items[i])


def pool_map(fn: Callable, items: list, jobs: int | None = None, progress=None) -> list:
    """[fn(x) for x in items] in `jobs` forked processes (default: all cores), in order;
    progress(result) is called as each one finishes."""
    jobs = jobs or os.cpu_count() or 1
    _TASK[:] = [fn, list(items)]
    out: list = [None] * len(items)
    try:
        if jobs == 1 or len(items) <= 1:
            for i in range(len(items)):
                out[i] = _work(i)[1]
                if progress:
                    progress(out[i])
            return out
        with multiprocessing.get_context("fork").Pool(min(jobs, len(items))) as pool:
            for i, rec in pool.imap_unordered(_work, range(len(items))):
                out[i] = rec
                if progress:
                    progress(rec)
        return out
    finally:
        _TASK[:] = [None, []]
