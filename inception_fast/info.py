"""`inception-fast info`: versions, device, and which backends run here (and why not).
`inception-fast info --model NAME`: also the model's parameter count, per-layer output shapes
and forward FLOPs, measured by running it once with forward hooks (models/summary.py)."""
from __future__ import annotations

import argparse
import platform


def report() -> str:
    import torch

    from . import backends, ext
    from .version import __version__

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
    from . import dispatch

    lines.append(dispatch.describe())
    return "\n".join(lines)


def model_report(name: str, input_size: int | None = None) -> str:
    from .models import get_model
    from .models.summary import summarize

    kwargs = {} if input_size is None else {"input_size": input_size}
    model = get_model(name, backend="torch", **kwargs)
    return summarize(model).format(f"model {name} (input_size={model.input_size} variant)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .models import MODEL_NAMES

    p.add_argument("--model", choices=MODEL_NAMES, default=None,
                   help="also print this model's parameter count, per-layer output shapes and "
                        "forward FLOPs")
    p.add_argument("--input-size", type=int, choices=(299, 151, 79), default=None,
                   help="the model variant (paper section 9) and input side for --model "
                        "(default 299)")
    p.add_argument("--clear-dispatch", action="store_true",
                   help="forget the cached per-shape backend decisions of backend='auto'")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "clear_dispatch", False):
        from . import dispatch

        print(f"dispatch: cleared {dispatch.clear()} cached decision(s)")
    print(report())
    if getattr(args, "model", None):
        print()
        print(model_report(args.model, args.input_size))
    elif getattr(args, "input_size", None):
        print("--input-size needs --model")
        return 2
    return 0
