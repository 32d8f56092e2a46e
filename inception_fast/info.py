"""`inception-fast info`: versions, device, and which backends run here (and why not)."""
from __future__ import annotations

import argparse
import platform


def report() -> str:
    import torch

    from . import __version__, backends, ext

    lines = [f"inception_fast {__version__}", f"python {platform.python_version()}",
             f"torch {torch.__version__} (CUDA build: {torch.version.cuda or 'no'})"]
    try:
        import triton

        lines.append(f"triton {triton.__version__} (interpreter: "
                     f"{'on' if backends.triton_interpreter_on() else 'off'})")
    except Exception as e:  # report, don't crash
        lines.append(f"triton: not importable ({type(e).__name__})")
    if torch.cuda.is_available():
        lines.append(f"device: {torch.cuda.get_device_name()} "
                     f"(sm_{''.join(map(str, torch.cuda.get_device_capability()))})")
    else:
        lines.append("device: cpu (no CUDA GPU)")
    try:
        ext.load(build=False)
        lines.append("extension inception_fast._C: built")
    except RuntimeError as e:
        lines.append(f"extension inception_fast._C: {e}")
    lines.append("backends:")
    for b, why in backends.available().items():
        lines.append(f"  {b:7s} {'available' if why is None else 'unavailable: ' + why}")
    lines.append("  auto    torch reference on CPU; per-shape choice on GPU")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print(report())
    return 0
