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
    lines.append(triton_cache_line())
    return "\n".join(lines)


def triton_cache_line() -> str:
    """Triton's kernel cache: where, how many compiled kernels and autotune results (the
    winners the kernels' autotuners record per Triton build and target), and what
    `inception-fast warmup` last put there."""
    try:
        from .kernel_report import warmup_cache as wc
    except Exception as e:  # no triton: say so, don't crash
        return f"triton cache: unavailable ({type(e).__name__})"
    s = wc.summary()
    line = (f"triton cache: {s['dir']}: {s['entries']} compiled kernel(s), {s['autotune']} "
            f"autotune result(s), {s['bytes'] / 1e6:.1f} MB")
    m = wc.read_manifest(wc.cache_dir())
    if m:
        line += (f"\n  warmup {m.get('date')}: {m.get('variants')} variants for sm_{m.get('arch')}"
                 f" (Triton {m.get('triton')}, configs {m.get('configs')}"
                 f"{', binaries only' if m.get('binary_only') else ''}): "
                 + "; ".join(m.get("workloads", [])))
    return line


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
