"""Caches keyed on parameter versions: a folded / packed weight is rebuilt only when one of the
tensors it was made from changed (identity or in-place version).

They live inside the registered ops' implementations (never in traced code), so eager,
torch.compile and export all see the same host logic. Under CUDA-graph capture nothing is
read from or written to a cache: the pack / fold kernels are captured into the graph and rerun
on every replay, so a replayed step sees the weights the optimizer wrote (a host cache hit
would freeze the capture-time weights).
"""
from __future__ import annotations

import torch
from torch.utils.weak import WeakIdKeyDictionary

_ALL: dict[str, "ParamCache"] = {}


def version_key(*tensors):
    """Identity, version, storage and dtype of each tensor (`p.data = t` or `module.to()` can
    swap a parameter's storage without bumping its version), or None when a version is not
    tracked (inference tensors): then nothing is cached."""
    key = []
    for t in tensors:
        if t is None:
            key.append(None)
            continue
        try:
            key.append((id(t), t._version, t.data_ptr(), t.dtype))
        except RuntimeError:
            return None
    return tuple(key)


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class ParamCache:
    """anchor tensor -> (key, value); weakly keyed, so a freed weight frees its entry."""

    def __init__(self, name: str):
        self.name = name
        self._table = WeakIdKeyDictionary()
        self.hits = self.misses = 0
        _ALL[name] = self

    def get(self, anchor, key, make):
        """The value made under `key` for `anchor`, else make() (stored unless key is None or a
        CUDA graph is being captured)."""
        if key is None or _capturing():
            return make()
        hit = self._table.get(anchor)
        if hit is not None and hit[0] == key:
            self.hits += 1
            return hit[1]
        self.misses += 1
        value = make()
        self._table[anchor] = (key, value)
        return value

    def peek(self, anchor):
        """The cached value for `anchor` (None if none): for tests and `info`."""
        hit = self._table.get(anchor)
        return None if hit is None else hit[1]

    def clear(self) -> None:
        self._table = WeakIdKeyDictionary()
        self.hits = self.misses = 0

    def info(self) -> dict:
        return {"entries": len(self._table), "hits": self.hits, "misses": self.misses}


def clear_all() -> None:
    for c in _ALL.values():
        c.clear()


def info_all() -> dict:
    return {name: c.info() for name, c in sorted(_ALL.items())}

