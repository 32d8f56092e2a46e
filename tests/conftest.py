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
