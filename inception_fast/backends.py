"""Which compute backends exist on this machine, and turning a user's `backend=` into one.

Backends:
  "torch"  the pure-torch reference (conv2d + batch_norm + relu; cuDNN on a GPU). Always there.
  "triton" the Triton kernels in inception_fast.kernels: compiled on a CUDA GPU, or run on CPU
           tensors by Triton's interpreter when TRITON_INTERPRET=1 was set before triton loaded.
  "cuda"   the CUDA C++ kernels in inception_fast._C: needs the built extension and a CUDA GPU.
  "auto"   per call: "torch" for CPU tensors; on a GPU, the fastest measured for that shape.
"""
from __future__ import annotations

import functools
import importlib.util

import torch

from .kernels.dtypes import interpreter_on as triton_interpreter_on  # one home: kernels/dtypes.py

BACKENDS = ("torch", "triton", "cuda")
CHOICES = BACKENDS + ("auto",)


class BackendUnavailableError(RuntimeError):
    """A backend was asked for explicitly but cannot run here; the message says why."""


@functools.lru_cache(maxsize=None)
def _triton_import_error() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    try:
        import triton  # noqa: F401
    except Exception as e:  # a broken install should say so, not crash later
        return f"triton failed to import ({type(e).__name__}: {e})"
    return None


def why_unavailable(backend: str) -> str | None:
    """None if `backend` can run on this machine, else a one-line reason."""
    if backend not in CHOICES:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(CHOICES)}")
    if backend in ("torch", "auto"):
        return None
    if backend == "triton":
        err = _triton_import_error()
        if err:
            return err
        if not torch.cuda.is_available() and not triton_interpreter_on():
            return ("no CUDA GPU, and the Triton interpreter is off "
                    "(set TRITON_INTERPRET=1 before triton is imported to run on CPU)")
        return None
    # cuda
    from . import ext

    if not torch.cuda.is_available():
        return "no CUDA GPU (the CUDA C++ kernels cannot run on CPU)"
    return ext.why_unavailable()


def available() -> dict[str, str | None]:
    """{backend: None if usable else reason}."""
    return {b: why_unavailable(b) for b in BACKENDS}


def check(backend: str) -> str:
    """Validate an explicitly requested backend; raise BackendUnavailableError if it can't run."""
    reason = why_unavailable(backend)
    if reason is not None:
        raise BackendUnavailableError(f"backend {backend!r} is not available: {reason}")
    return backend


def resolve(backend: str, x: torch.Tensor, key: str | None = None, runner=None) -> str:
    """The concrete backend for one call on input `x`. For "auto" on a GPU, a caller that gives
    a layer `key` and `runner(backend) -> callable` gets the measured choice
    (inception_fast.dispatch); otherwise "auto" is the reference."""
    if backend != "auto":
        if backend == "triton" and x.device.type == "cpu" and not triton_interpreter_on():
            raise BackendUnavailableError(
                "backend 'triton' got a CPU tensor but the Triton interpreter is off "
                "(move the model to a CUDA device, or set TRITON_INTERPRET=1 before importing triton)")
        if backend == "cuda" and x.device.type != "cuda":
            raise BackendUnavailableError(f"backend 'cuda' needs CUDA tensors, got a {x.device.type} tensor")
        return backend
    # "auto" never picks a path that has not been measured faster than cuDNN for this layer.
    if key is None or runner is None or x.device.type != "cuda":
        return "torch"
    from . import dispatch

    return dispatch.choose(key, x, runner)


def summary_line() -> str:
    """One line: which backends run here (logged once at import of the model)."""
    parts = []
    for b, why in available().items():
        parts.append(f"{b}=yes" if why is None else f"{b}=no ({why})")
    return "inception_fast backends: " + ", ".join(parts)
