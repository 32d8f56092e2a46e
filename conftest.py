"""Shared pytest setup for tests/ and bench/.

Without a CUDA GPU, Triton kernels run on CPU tensors through Triton's interpreter, which must
be switched on before triton is first imported: that is done here, first thing."""
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
