"""Helpers shared by the CUDA C++ extension's test modules (tests/test_cuda_*.py): no tests.

Low-precision tolerance of the `gpu` tests: the reference is computed in fp64 from the same
(rounded) inputs, and our error must be at most `factor` times torch's own error (cuDNN in the
same dtype) against that fp64 result, plus a tiny floor. Both accumulate in fp32 and round the
output to the dtype, so the output rounding dominates both errors: factor 2 for single kernels,
4 for whole forward+backward chains, whose intermediate roundings (conv output, gradients)
differ in place.
"""
from __future__ import annotations

import torch

CL = torch.channels_last
HAS_CUDA = torch.cuda.is_available()
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def cl(t):
    return t.contiguous(memory_format=CL)


def bn_params(c, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    gamma = (torch.rand(c, generator=g) + 0.5).to(device)
    beta = (torch.randn(c, generator=g) * 0.2).to(device)
    rm = (torch.randn(c, generator=g) * 0.1).to(device)
    rv = (torch.rand(c, generator=g) + 0.5).to(device)
    return gamma, beta, rm, rv


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / (b.double().abs().max() + 1e-12)).item()


def assert_lowp_close(ours, torch_lowp, ref64, factor=2.0, floor=1e-5, what=""):
    scale = ref64.abs().max().item() + 1e-12
    e_ours = (ours.double() - ref64).abs().max().item()
    e_torch = (torch_lowp.double() - ref64).abs().max().item()
    assert e_ours <= factor * e_torch + floor * scale, (
        f"{what}: max error {e_ours:.3g} vs fp64, torch's own {e_torch:.3g} (scale {scale:.3g})")
