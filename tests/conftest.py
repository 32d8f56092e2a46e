"""Fixtures shared by the test modules (the repo-root conftest.py sets up the interpreter)."""
import pytest


@pytest.fixture(scope="session")
def extension():
    """The compiled CUDA C++ extension, skipping where csrc/ cannot compile. Reuses the JIT
    cache (~/.cache/inception_fast/ext or $INCEPTION_FAST_EXT_DIR) that `inception-fast
    build-ext` fills (CI runs it before the tests); else builds (~1-2 min)."""
    from inception_fast import _build, ext

    why = _build.cannot_build_reason()
    if why:
        pytest.skip(f"cannot compile csrc/ on this machine: {why}")
    return ext.load()


@pytest.fixture
def ref_kernels(monkeypatch):
    """The cuda paths' kernels replaced by their torch stand-ins (ops/csrc_reference.py, through
    conv_bn_relu_cuda.kernels_override), so the cuda ops' Python side runs on CPU tensors."""
    from inception_fast.ops import conv_bn_relu_cuda, csrc_reference

    monkeypatch.setattr(conv_bn_relu_cuda, "kernels_override", csrc_reference)
    return csrc_reference


@pytest.fixture
def exact_fp32():
    """TF32 off around the test (helpers.no_tf32): on a GPU, fp32 against torch's fp32."""
    from helpers import no_tf32

    with no_tf32():
        yield


@pytest.fixture
def fresh_dynamo():
    """torch.compile's caches emptied before and after the test."""
    import torch

    torch.compiler.reset()
    yield
    torch.compiler.reset()


def pytest_collection_modifyitems(config, items):
    """One marker per op or area (`pytest -m conv_bn_relu`), from the module's name (areas.py)."""
    from areas import area_of

    for item in items:
        area = area_of(item.module.__name__.rsplit(".", 1)[-1]) if item.module else None
        if area:
            item.add_marker(getattr(pytest.mark, area))
