"""How csrc/ is compiled (inception_fast/_build.py, shared by setup.py and the JIT build):
target archs (issue #14: PTX for GPUs newer than the SASS archs) and IEEE-exact float flags
(no flush-to-zero, which broke the max-pool on subnormal maxima). CPU only."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from inception_fast import _build

ROOT = Path(__file__).resolve().parents[1]


def test_default_archs_embed_ptx_for_newer_gpus():
    assert _build.DEFAULT_ARCHS == "8.0;9.0+PTX"
    archs = _build.DEFAULT_ARCHS.split(";")
    assert archs[-1].endswith("+PTX"), "the newest arch must carry PTX (sm_100 / sm_120 JIT it)"


def test_default_archs_become_a_compute_90_ptx_gencode(monkeypatch):
    """What torch's extension builder makes of the default list: sm_80 / sm_90 SASS and a
    compute_90 PTX image (what the driver JIT-compiles on sm_100 / sm_120)."""
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", _build.DEFAULT_ARCHS)
    flags = cpp_extension._get_cuda_arch_flags()
    assert "-gencode=arch=compute_80,code=sm_80" in flags
    assert "-gencode=arch=compute_90,code=sm_90" in flags
    assert "-gencode=arch=compute_90,code=compute_90" in flags


def test_build_sets_the_default_archs_when_unset(monkeypatch):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    if _build.cannot_build_reason() is not None:
        pytest.skip("no CUDA toolkit / CUDA torch here: the arch list is not set")
    import os

    assert os.environ["TORCH_CUDA_ARCH_LIST"] == _build.DEFAULT_ARCHS


def test_setup_py_and_jit_build_share_the_build_config():
    """setup.py loads inception_fast/_build.py by path: same archs and flags as ext.load()."""
    spec = importlib.util.spec_from_file_location("_if_build_t", ROOT / "inception_fast" / "_build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.DEFAULT_ARCHS == _build.DEFAULT_ARCHS
    assert mod.nvcc_flags() == _build.nvcc_flags()
    text = (ROOT / "setup.py").read_text()
    assert "build.nvcc_flags()" in text and "build.cannot_build_reason()" in text
