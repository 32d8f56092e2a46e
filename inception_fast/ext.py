"""Loading inception_fast._C, the CUDA C++ kernels of csrc/.

Built at install when the build environment has a CUDA torch and toolkit (setup.py), else
just-in-time here with ninja on first use, cached under $INCEPTION_FAST_EXT_DIR
(default ~/.cache/inception_fast/ext). `inception-fast build-ext` builds it eagerly.
Compiling needs no GPU; running its kernels does.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from . import _build

_module = None
_error: str | None = None


def build_dir() -> Path:
    d = os.environ.get("INCEPTION_FAST_EXT_DIR") or Path.home() / ".cache" / "inception_fast" / "ext"
    return Path(d)


def load(build: bool = True, verbose: bool = False):
    """Return the extension module, building it JIT if needed and `build` is true.
    Raises RuntimeError with the reason when it cannot be had."""
    global _module, _error
    if _module is not None:
        return _module
    try:
        _module = importlib.import_module("inception_fast._C")  # built at install
        return _module
    except ImportError:
        pass
    why = _build.cannot_build_reason()
    if why:
        _error = f"extension not built and cannot be built here: {why}"
        raise RuntimeError(_error)
    d = build_dir()
    if not build and not (d / "inception_fast_C.so").exists():
        raise RuntimeError("extension not built yet (run `inception-fast build-ext`)")
    from torch.utils.cpp_extension import load as jit_load

    d.mkdir(parents=True, exist_ok=True)
    try:
        _module = jit_load(
            name="inception_fast_C",
            sources=[str(p) for p in _build.sources()],
            extra_cflags=_build.cxx_flags(),
            extra_cuda_cflags=_build.nvcc_flags(),
            build_directory=str(d),
            verbose=verbose,
        )
    except Exception as e:
        _error = f"extension failed to build: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"
        raise RuntimeError(_error) from e
    sys.modules["inception_fast._C"] = _module
    return _module


def why_unavailable() -> str | None:
    """None if the extension is importable (building it JIT if possible), else why not."""
    try:
        load()
    except RuntimeError as e:
        return str(e)
    return None
