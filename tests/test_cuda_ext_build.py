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


@pytest.mark.parametrize("env", [{}, {"INCEPTION_FAST_LINEINFO": "1"}, {"INCEPTION_FAST_DEBUG": "1"}])
def test_nvcc_flags_keep_ieee_floats(monkeypatch, env):
    """No fast math: --use_fast_math implies -ftz=true, and the max-pool's FSETP.FTZ then takes
    a subnormal maximum for 0 (wrong value and argmax)."""
    for k in ("INCEPTION_FAST_LINEINFO", "INCEPTION_FAST_DEBUG"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    flags = _build.nvcc_flags()
    joined = " ".join(flags).lower()
    assert "use_fast_math" not in joined and "use-fast-math" not in joined
    assert "-ftz=true" not in flags
    for f in ("-ftz=false", "-prec-div=true", "-prec-sqrt=true"):
        assert f in flags, f


# ------------------------------------------------- the pool reference on subnormal maxima

TINY = torch.finfo(torch.float32).tiny  # smallest normal; subnormals lie below it


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_reference_pool_picks_subnormal_maxima_like_torch(dtype):
    """Windows whose maximum is subnormal in the dtype, next to zeros and negative subnormals:
    the reference (what every pool kernel must match) gives torch's value and index."""
    from inception_fast.ops import csrc_reference as R
    import torch.nn.functional as F

    sub = (torch.finfo(dtype).tiny / 4) if dtype != torch.float32 else TINY / 8
    g = torch.Generator().manual_seed(0)
    pick = torch.randint(0, 4, (2, 3, 9, 11), generator=g)
    levels = torch.tensor([0.0, -sub, sub, 2 * sub], dtype=torch.float64)
    x = levels[pick].to(dtype)
    x[0, 0, 0:3, 0:3] = torch.tensor([[0.0, -sub, 0.0], [0.0, sub, 0.0], [0.0, 0.0, 0.0]],
                                     dtype=torch.float64).to(dtype)  # max at tap 4, not tap 0
    x[0, 1, 0:3, 0:3] = -sub  # all-negative-subnormal window: tap 0 (first maximum kept)
    x[0, 1, 1, 2] = -sub / 2 if dtype == torch.float32 else -sub  # ties elsewhere
    assert (x.float().abs() < torch.finfo(dtype).tiny).all() and (x != 0).any()
    out = torch.zeros(2, 5, 4, 5, dtype=dtype)
    argmax = torch.empty(2, 3, 4, 5, dtype=torch.uint8)
    R.grid_reduce(x, None, None, 0, out, 1, argmax)
    v, idx = F.max_pool2d(x.float(), 3, 2, return_indices=True)
    torch.testing.assert_close(out[:, 1:4].float(), v, rtol=0, atol=0)
    assert (out[:, 1:4].float() == v).all() and (v > 0).any()  # bitwise, subnormals kept
    torch.testing.assert_close(argmax.long(), R.pool_tap_from_index(idx, 11), rtol=0, atol=0)
    assert int(argmax[0, 0, 0, 0]) == 4 and out[0, 1, 0, 0].float().item() == sub
    if dtype == torch.float32:
        assert int(argmax[0, 1, 0, 0]) == 5  # -sub/2 > -sub
    else:
        assert int(argmax[0, 1, 0, 0]) == 0
