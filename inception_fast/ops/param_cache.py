"""Caches keyed on parameter versions: a folded / packed weight is rebuilt only when one of the
tensors it was made from changed (identity or in-place version)."""
from __future__ import annotations


def version_key(*tensors):
    """Identity + version of each tensor, or None when a version is not tracked (inference
    tensors): then nothing is cached."""
    key = []
    for t in tensors:
        if t is None:
            key.append(None)
            continue
        try:
            key.append((id(t), t._version))
        except RuntimeError:
            return None
    return tuple(key)


def cached(cache, anchor, key, make):
    """cache[anchor] if it was made under `key`, else make() (stored unless key is None)."""
    if key is not None:
        hit = cache.get(anchor)
        if hit is not None and hit[0] == key:
            return hit[1]
    value = make()
    if key is not None:
        cache[anchor] = (key, value)
    return value
