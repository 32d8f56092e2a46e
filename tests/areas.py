"""The area (op or part of the project) of each test module, used as a pytest marker
(`pytest -m conv_bn_relu`; tests/conftest.py sets it, pyproject.toml registers the names).
Every tests/test_*.py must match one pattern (tests/test_layering.py checks), so a new module
is filed where it belongs."""
from __future__ import annotations

from fnmatch import fnmatch

AREA_MARKERS = {
    "conv_bn_relu": ("test_conv_bn_relu_*", "test_kernels_conv_*", "test_kernels_bn_relu_bwd",
                     "test_kernels_configs", "test_registered_ops"),
    "blocks": ("test_blocks_fused", "test_conv1x1_multi*"),
    "grid_reduction": ("test_grid_reduction_*", "test_registered_ops_grid_reduction"),
    "pools": ("test_model_pools", "test_pools_*", "test_registered_ops_pools"),
    "losses": ("test_losses", "test_registered_ops_losses"),
    "cuda_ext": ("test_cuda_*",),
    "model": ("test_model_parity", "test_model_variants", "test_model_paper", "test_compile",
              "test_dispatch", "test_layering"),
    "train": ("test_train_*", "test_optim", "test_data"),
    "tooling": ("test_kernel_report*", "test_warmup", "test_gpu_stack_*", "test_bench_report",
                "test_profile", "test_cli_info", "test_pytest_benchmark_option"),
}


def area_of(module: str) -> str | None:
    for area, patterns in AREA_MARKERS.items():
        if any(fnmatch(module, p) for p in patterns):
            return area
    return None
