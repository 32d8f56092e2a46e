"""Issue #14 (4) and (6) on the compiled extension: deterministic BN statistics (no float
atomics: per-block partials summed in a fixed order by reduce_partials) and the C++ refusals of
aliased outputs / overlapping slices. The static check runs wherever csrc/ compiles (no GPU);
the rest is `gpu`-marked. The CPU halves (reference maths, the ops' own checks) are in
tests/test_cuda_fixes.py."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from inception_fast import ext
from inception_fast.ops import csrc_reference as R

CL = torch.channels_last


def _cuobjdump():
    import triton

    p = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(p) if p.exists() else shutil.which("cuobjdump")


def test_compiled_kernels_have_no_float_atomics(extension):
    """No floating-point atomic add in any CUDA kernel's sm_90 SASS: BN statistics and every
    other reduction are per-block partials summed in a fixed order, so two runs give the same
    bits and torch.use_deterministic_algorithms(True) holds. Fails on the old kernels
    (REDG.E.ADD.F64.RN... in the conv epilogues and in bn_stats / bn_relu_bwd_reduce)."""
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump")
    objs = sorted(ext.build_dir().glob("*.cuda.o"))
    assert objs, "the build left no CUDA objects"
    bad = []
    for obj in objs:
        sass = subprocess.run([tool, "-sass", "-arch", "sm_90", str(obj)], capture_output=True,
                              text=True, check=True).stdout
        assert "Function" in sass, f"no sm_90 SASS in {obj.name}"
        bad += [f"{obj.name}: {m}" for m in re.findall(r"\b(?:RED|ATOM)[GS]?\.\S*?ADD\.F\S*",
                                                        sass)]
    assert not bad, "floating-point atomics (non-deterministic sums):\n" + "\n".join(bad[:20])


def test_extension_has_reduce_partials(extension):
    assert callable(extension.reduce_partials)


# ---- GPU ---------------------------------------------------------------------------------------

def _cl(t):
    return t.contiguous(memory_format=CL)


@pytest.mark.gpu
@pytest.mark.parametrize("rows,C", [(1, 5), (37, 70), (2048, 64)])
def test_gpu_reduce_partials_is_the_reference_order_bit_for_bit(extension, rows, C):
    g = torch.Generator().manual_seed(rows)
    part = (torch.randn(2, rows, C, generator=g) * torch.logspace(0, 8, rows).view(1, -1, 1))
    s, ss = torch.full((C,), 0.5, dtype=torch.float64), torch.zeros(C, dtype=torch.float64)
    sd, ssd = s.cuda(), ss.cuda()
    extension.reduce_partials(part.cuda(), sd, ssd)
    R.reduce_partials(part, s, ss)
    assert torch.equal(sd.cpu(), s) and torch.equal(ssd.cpu(), ss)


def _stats_runs(extension, dtype):
    """Every kernel that sums per channel, run twice on the same data."""
    torch.manual_seed(20)
    x = _cl(torch.randn(8, 64, 17, 17, device="cuda").to(dtype))
    w7 = (torch.randn(96, 64, 1, 7, device="cuda") / 20).to(dtype)
    xg = _cl(torch.randn(4, 96, 35, 35, device="cuda").to(dtype))
    wg = (torch.randn(128, 96, 3, 3, device="cuda") / 30).to(dtype)
    g = _cl(torch.randn(8, 64, 17, 17, device="cuda").to(dtype))
    vec = torch.rand(64, device="cuda") + 0.5
    runs = []
    for _ in range(2):
        z = lambda c: torch.zeros(c, dtype=torch.float64, device="cuda")  # noqa: E731
        r = [z(96), z(96), z(64), z(64), z(64), z(64)]
        out = _cl(torch.empty(8, 96, 17, 17, device="cuda", dtype=dtype))
        extension.asym_conv(x, w7, 3, out, 0, r[0], r[1])
        extension.bn_stats(x, r[2], r[3])
        extension.bn_relu_bwd_reduce(g, 0, x, vec, vec * 0.1, vec * 0.2, vec, r[4], r[5])
        if dtype != torch.float32:
            y = _cl(torch.empty(4, 128, 17, 17, device="cuda", dtype=dtype))
            r += [z(128), z(128)]
            extension.grid_reduce(xg, wg, y, 0, None, 0, None, r[6], r[7])
        runs.append(r)
    return runs


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_statistics_are_bitwise_reproducible(extension, dtype):
    first, second = _stats_runs(extension, dtype)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.gpu
def test_gpu_training_step_under_deterministic_algorithms(extension):
    from inception_fast.ops.conv_bn_relu_cuda import conv_bn_relu_cuda

    torch.manual_seed(21)
    x = _cl(torch.randn(4, 32, 17, 17, device="cuda", dtype=torch.bfloat16))
    w = torch.randn(48, 32, 7, 1, device="cuda") * 0.05
    results = []
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for _ in range(2):
            wi = w.clone().requires_grad_()
            gamma = torch.ones(48, device="cuda", requires_grad=True)
            beta = torch.zeros(48, device="cuda", requires_grad=True)
            rm, rv = torch.zeros(48, device="cuda"), torch.ones(48, device="cuda")
            y = conv_bn_relu_cuda(x, wi, gamma, beta, rm, rv, padding=(3, 0), training=True)
            y.float().square().sum().backward()
            results.append((y, wi.grad, gamma.grad, beta.grad, rm, rv))
    finally:
        torch.use_deterministic_algorithms(prev)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.gpu
def test_gpu_extension_refuses_aliasing(extension):
    w = torch.randn(8, 16, 1, 3, device="cuda", dtype=torch.float16)
    buf = torch.randn(2 * 9 * 9 * 24, device="cuda", dtype=torch.float16)
    x_in = buf[:2 * 9 * 9 * 16].view(2, 9, 9, 16).permute(0, 3, 1, 2)  # channels_last views
    out_in = buf.view(2, 9, 9, 24).permute(0, 3, 1, 2)                  # of one buffer
    with pytest.raises(RuntimeError, match="asym_conv: out shares memory with the input"):
        extension.asym_conv(x_in, w, 1, out_in, 16)
    y = _cl(torch.randn(2, 8, 9, 9, device="cuda", dtype=torch.float16))
    with pytest.raises(RuntimeError, match="bn_apply_relu: out shares memory with y"):
        extension.bn_apply_relu(y, torch.ones(8, device="cuda"), torch.zeros(8, device="cuda"),
                                y, 0)
    xg = _cl(torch.randn(2, 16, 9, 9, device="cuda", dtype=torch.float16))
    wg = torch.randn(8, 16, 3, 3, device="cuda", dtype=torch.float16)
    out = _cl(torch.zeros(2, 20, 4, 4, device="cuda", dtype=torch.float16))
    arg = _cl(torch.zeros(2, 16, 4, 4, device="cuda", dtype=torch.uint8))
    with pytest.raises(RuntimeError, match=r"conv slice \[0, 8\) and pool slice \[4, 20\)"):
        extension.grid_reduce(xg, wg, out, 0, out, 4, arg)
    g = _cl(torch.randn(2, 16, 4, 4, device="cuda", dtype=torch.float16))
    dx = _cl(torch.zeros(2, 16, 9, 9, device="cuda", dtype=torch.float16))
    extension.maxpool_bwd(g, 0, arg, dx, False)  # separate tensors: fine
    flat = torch.zeros(2 * 9 * 9 * 16, device="cuda", dtype=torch.float16)
    dx_alias = flat.view(2, 9, 9, 16).permute(0, 3, 1, 2)  # channels_last views of one buffer
    g_alias = flat[:2 * 4 * 4 * 16].view(2, 4, 4, 16).permute(0, 3, 1, 2)
    with pytest.raises(RuntimeError, match="maxpool_bwd: dx shares memory with grad"):
        extension.maxpool_bwd(g_alias, 0, arg, dx_alias, True)
    # disjoint slices of one block output are the intended use
    ok = _cl(torch.zeros(2, 24, 4, 4, device="cuda", dtype=torch.float16))
    extension.grid_reduce(xg, wg, ok, 0, ok, 8, arg)
    torch.testing.assert_close(ok[:, 8:], F.max_pool2d(xg, 3, 2), rtol=0, atol=0)
