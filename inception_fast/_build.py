"""How csrc/ is compiled into inception_fast._C: shared by setup.py (build at install) and by
inception_fast.ext (just-in-time build with ninja). Imports nothing from the package so that
setup.py can load it by path before the package is installed."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

CSRC = Path(__file__).resolve().parent.parent / "csrc"
# A100, H100/H200 (sm_80, sm_90 SASS) + compute_90 PTX, which the driver JIT-compiles for newer
# GPUs (sm_100 B200, sm_120 RTX 50xx): without "+PTX" they get "no kernel image is available".
DEFAULT_ARCHS = "8.0;9.0+PTX"


def csrc_dir() -> Path:
    """csrc/ of a source checkout (editable install), else the copy shipped as package data."""
    if CSRC.is_dir():
        return CSRC
    return Path(__file__).resolve().parent / "csrc"


def sources() -> list[Path]:
    d = csrc_dir()
    return sorted(list(d.glob("*.cpp")) + list(d.glob("*.cu")))


def cxx_flags() -> list[str]:
    # No -std here: torch adds the C++ standard its own headers need (c++20 for torch 2.14);
    # forcing c++17 breaks bindings.cpp against torch 2.14's headers.
    return ["-O3"]


def nvcc_flags() -> list[str]:
    # No --use_fast_math: it implies -ftz=true, which compiles the max-pool's comparisons to
    # FSETP.*.FTZ, so a subnormal window maximum compares equal to 0 and the pool returns the
    # wrong value / argmax (torch keeps subnormals). The IEEE settings are spelled out so a
    # later flag cannot bring flush-to-zero back unnoticed (tests/test_cuda_ext_build.py); FMA
    # contraction (-fmad=true, the default) stays, and the kernels call no transcendental
    # intrinsics, so nothing else of fast math is missed.
    flags = ["-O3", "-std=c++17", "-ftz=false", "-prec-div=true", "-prec-sqrt=true",
             "-fmad=true", "--expt-relaxed-constexpr"]
    if os.environ.get("INCEPTION_FAST_LINEINFO") == "1":  # for Nsight Compute source view
        flags.append("-lineinfo")
    if os.environ.get("INCEPTION_FAST_DEBUG") == "1":
        flags += ["-G", "-g"]
    return flags


def find_cuda_home() -> str | None:
    """The toolkit root: $CUDA_HOME, else the one behind nvcc on PATH (which may be a wrapper
    script that execs the real nvcc, so follow what it execs when it is not a symlink)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var) and Path(os.environ[var], "bin", "nvcc").exists():
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    real = Path(nvcc).resolve()
    try:
        text = real.read_text(errors="ignore") if real.stat().st_size < 4096 else ""
    except OSError:
        text = ""
    for tok in text.split():
        if tok.endswith("/bin/nvcc") and Path(tok).exists():
            return str(Path(tok).parent.parent)
    return str(real.parent.parent)


def cannot_build_reason() -> str | None:
    """None when csrc/ can be compiled here, else why not (one short phrase)."""
    try:
        import torch
    except ImportError:
        return "torch is not importable in the build environment"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build (no c10/cuda headers)"
    if find_cuda_home() is None:
        return "no CUDA toolkit (nvcc not on PATH and CUDA_HOME unset)"
    if not sources():
        return "no sources in csrc/"
    os.environ.setdefault("CUDA_HOME", find_cuda_home())
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
    return None
