"""`inception-fast profile`: run N training or inference steps under torch.profiler, with a
named range per Inception block ("block:Mixed_5b") and per fused op ("op:Mixed_5b.branch1x1"),
as torch.profiler record_function ranges and, on a GPU, NVTX ranges (for Nsight Systems). Prints
the top kernels by GPU time (top ops by CPU time on CPU), the time per block, writes a Chrome
trace (chrome://tracing or https://ui.perfetto.dev), and prints the Nsight Compute command line
that profiles one named kernel.

    inception-fast profile --steps 5 --mode train --batch 64 --size 299 --backend auto \\
        --trace trace.json

The model files are not touched: the ranges come from forward pre/post hooks.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from contextlib import nullcontext

import torch

# The Triton interpreter must be chosen before triton is first imported (CPU runs).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

AMP = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
STEP_RANGE = "inception_fast.profile_step"  # NVTX range around each profiled step (ncu filter)
OUR_RANGES = ("block:", "op:", "step ", "warmup", "backward", "optimizer", STEP_RANGE)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .backends import CHOICES
    from .models import MODEL_NAMES

    p.add_argument("--model", default="inception_v3", choices=MODEL_NAMES)
    p.add_argument("--steps", type=int, default=5, help="profiled steps (default 5)")
    p.add_argument("--warmup", type=int, default=2,
                   help="steps run before profiling: compilation, autotuning (default 2)")
    p.add_argument("--mode", choices=("train", "eval"), default="train",
                   help="train: forward + backward + SGD step; eval: inference (default train)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 32 on GPU, 2 on CPU)")
    p.add_argument("--size", type=int, default=299, choices=(299, 151, 79),
                   help="model variant of the paper's section 9 and input side (default 299)")
    p.add_argument("--input", type=int, default=None, metavar="SIDE",
                   help="input side when not --size (e.g. smaller, for a quick CPU run)")
    p.add_argument("--backend", default="auto", choices=CHOICES)
    p.add_argument("--dtype", choices=tuple(AMP), default=None,
                   help="autocast dtype (default bf16 on GPU, fp32 on CPU)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    p.add_argument("--trace", default="inception_fast_trace.json", help="Chrome trace file to write")
    p.add_argument("--top", type=int, default=15, help="kernels/ops to list (default 15)")
    p.add_argument("--kernel", default=None,
                   help="kernel (name or part of it) for the ncu command line (default: top by GPU time)")
    p.add_argument("--no-torch-profiler", action="store_true",
                   help="only run the steps, with NVTX ranges: for ncu / nsys, which cannot share "
                        "CUPTI with torch.profiler")


def _check_args(args) -> None:
    for name in ("steps", "top"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if args.batch is not None and args.batch < 1:
        raise ValueError(f"--batch must be at least 1, got {args.batch}")


class BlockRanges:
    """record_function (+ NVTX on CUDA) ranges around every top-level child of the model
    ("block:<name>") and every fused ConvBNReLU ("op:<name>"), from forward hooks."""

    def __init__(self, model: torch.nn.Module, nvtx: bool):
        from .nn import ConvBNReLU

        self.nvtx, self.stack, self.handles = nvtx, [], []
        labels = {}
        for name, m in model.named_children():
            labels[m] = f"block:{name}"
        for name, m in model.named_modules():
            if isinstance(m, ConvBNReLU):
                labels.setdefault(m, f"op:{name}")
                if labels[m] != f"op:{name}":  # a top-level fused op gets both ranges
                    labels[m] = (labels[m], f"op:{name}")
        for m, label in labels.items():
            names = label if isinstance(label, tuple) else (label,)
            self.handles.append(m.register_forward_pre_hook(self._enter(names)))
            self.handles.append(m.register_forward_hook(self._exit(names)))

    def _enter(self, names):
        def hook(mod, args):
            for n in names:
                rf = torch.autograd.profiler.record_function(n)
                rf.__enter__()
                self.stack.append(rf)
                if self.nvtx:
                    torch.cuda.nvtx.range_push(n)
        return hook

    def _exit(self, names):
        def hook(mod, args, out):
            for _ in names:
                if self.nvtx:
                    torch.cuda.nvtx.range_pop()
                self.stack.pop().__exit__(None, None, None)
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _build(args, device):
    from .models import get_model

    size = args.size
    side = args.input or size
    model = get_model(args.model, input_size=size, backend=args.backend)
    model = model.to(device, memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, side, side, device=device).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 1000, (args.batch,), device=device)
    return model, x, target


def _step_fn(model, x, target, mode: str, amp_dtype, device):
    import torch.nn.functional as F

    def amp():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()

    if mode == "eval":
        model.eval()

        def step():
            with torch.inference_mode(), amp():
                model(x)
        return step
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        with amp():
            out = model(x)
            if isinstance(out, tuple):
                loss = F.cross_entropy(out[0], target)
                if out[1] is not None:
                    loss = loss + 0.4 * F.cross_entropy(out[1], target)
            else:
                loss = F.cross_entropy(out, target)
        with torch.autograd.profiler.record_function("backward"):
            loss.backward()
        with torch.autograd.profiler.record_function("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)
    return step


def _time(evt, device: bool, self_only: bool = False) -> float:
    """Total (or self) time in us of a key_averages() entry on the device or the CPU (the
    attribute names moved across torch versions: device_* first, then cuda_*)."""
    prefix = "self_" if self_only else ""
    kinds = ("device", "cuda") if device else ("cpu",)
    for kind in kinds:
        v = getattr(evt, f"{prefix}{kind}_time_total", None)
        if v is not None:
            return float(v)
    return 0.0


def top_kernels(prof, on_gpu: bool, n: int) -> list[tuple[str, int, float]]:
    """[(name, calls, self time us)] of GPU kernels (on a GPU) or CPU ops, largest first."""
    rows = []
    for evt in prof.key_averages():
        if evt.key.startswith(OUR_RANGES):
            continue  # our own ranges (also mirrored on the GPU timeline): shown per block below
        if on_gpu and getattr(evt, "device_type", None) != torch.autograd.DeviceType.CUDA:
            continue
        t = _time(evt, on_gpu, self_only=True)
        if t > 0:
            rows.append((evt.key, evt.count, t))
    rows.sort(key=lambda r: -r[2])
    return rows[:n]


def block_times(prof, on_gpu: bool) -> list[tuple[str, int, float]]:
    """[(block range, calls, total us)] in the order the blocks first ran."""
    rows: dict[str, tuple[str, int, float]] = {}
    for evt in prof.key_averages():
        if evt.key.startswith("block:"):
            t = _time(evt, on_gpu) or _time(evt, False)
            if evt.key not in rows or t > rows[evt.key][2]:  # a range may also appear GPU-side
                rows[evt.key] = (evt.key, evt.count, t)
    return list(rows.values())


def kernel_base_name(name: str) -> str:
    """'void ns::foo_kernel<128, 64>(float*, ...)' -> 'foo_kernel' (what ncu -k matches)."""
    base = re.sub(r"^void\s+", "", name.strip())
    depth, cut = 0, len(base)
    for i, ch in enumerate(base):  # the name ends at the first top-level '<' or '('
        if ch in "<(" and depth == 0:
            cut = i
            break
    base = base[:cut].split("::")[-1].strip()
    return base or name


def ncu_command(kernel: str, args) -> str:
    """The Nsight Compute command that profiles one launch of `kernel` in a profiled step."""
    rerun = ["inception-fast", "profile", "--no-torch-profiler", "--steps", "1",
             "--warmup", str(max(args.warmup, 1)), "--mode", args.mode, "--batch", str(args.batch),
             "--size", str(args.size), "--backend", args.backend, "--model", args.model]
    if args.input:
        rerun += ["--input", str(args.input)]
    if args.dtype:
        rerun += ["--dtype", args.dtype]
    base = kernel_base_name(kernel)
    out = "ncu_" + re.sub(r"[^A-Za-z0-9_]+", "_", base)[:60]
    ncu = ["ncu", "--set", "full", "-k", f"regex:{re.escape(base)}", "--nvtx", "--nvtx-include",
           f"{STEP_RANGE}/", "--launch-count", "1", "-o", out]
    return shlex.join(ncu + rerun)


def run(args: argparse.Namespace) -> int:
    try:
        _check_args(args)
        return _run(args)
    except ValueError as e:  # bad sizes, backend names, ...: one clear line
        print(f"inception-fast profile: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if type(e).__name__ == "BackendUnavailableError":
            print(f"inception-fast profile: {e}", file=sys.stderr)
            return 2
        raise


def _run(args) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    args.batch = args.batch or (32 if on_gpu else 2)
    amp_dtype = AMP[args.dtype or ("bf16" if on_gpu else "fp32")]
    model, x, target = _build(args, device)
    step = _step_fn(model, x, target, args.mode, amp_dtype, device)
    ranges = BlockRanges(model, nvtx=on_gpu)
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)

    def steps(n: int, label: str):
        for i in range(n):
            if on_gpu:
                torch.cuda.nvtx.range_push(label)
            with torch.autograd.profiler.record_function(f"step {i}" if label == STEP_RANGE else label):
                step()
            if on_gpu:
                torch.cuda.nvtx.range_pop()
        sync()

    autocast = args.dtype or ("bf16" if on_gpu else "fp32")
    where = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    what = (f"{args.model} {args.mode}, batch {args.batch}, input {args.input or args.size}, "
            f"variant {args.size}, backend {args.backend}, autocast {autocast}, on {where}")
    steps(args.warmup, "warmup")
    if args.no_torch_profiler:
        steps(args.steps, STEP_RANGE)
        ranges.remove()
        print(f"ran {args.steps} step(s) of {what} (no torch.profiler)")
        return 0
    acts = [torch.profiler.ProfilerActivity.CPU]
    if on_gpu:
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        steps(args.steps, STEP_RANGE)
    ranges.remove()
    prof.export_chrome_trace(args.trace)

    print(f"profiled {args.steps} step(s) of {what}")
    unit = "GPU" if on_gpu else "CPU"
    tops = top_kernels(prof, on_gpu, args.top)
    total = sum(r[2] for r in top_kernels(prof, on_gpu, 10**9)) or 1.0
    print(f"\ntop {len(tops)} {'kernels' if on_gpu else 'ops'} by self {unit} time "
          f"(over {args.steps} step(s)):")
    print(f"  {'ms':>9} {'%':>6} {'calls':>6}  name")
    for name, calls, t in tops:
        print(f"  {t / 1e3:9.3f} {100 * t / total:5.1f}% {calls:6d}  {name[:110]}")
    blocks = block_times(prof, on_gpu)
    if blocks:
        print(f"\nforward time per block ({unit} time incl. children, over {args.steps} step(s)):")
        for name, calls, t in blocks:
            print(f"  {t / 1e3:9.3f} ms {calls:4d}x  {name}")
    print(f"\nChrome trace: {args.trace} (open in https://ui.perfetto.dev or chrome://tracing)")
    if on_gpu:
        kernel = args.kernel or (tops[0][0] if tops else "KERNEL")
        if args.kernel:
            kernel = next((n for n, _, _ in tops if args.kernel in n), args.kernel)
        print(f"\nprofile one kernel with Nsight Compute ({kernel_base_name(kernel)}):")
    else:
        kernel = args.kernel or "KERNEL"
        print("\nno GPU kernels on CPU; on a GPU machine, profile one kernel with Nsight Compute "
              "(KERNEL = a name from the GPU run's list):")
    print("  " + ncu_command(kernel, args))
    print("  CUDA C++ kernels: build with line info first for ncu's source view:\n"
          "    INCEPTION_FAST_LINEINFO=1 inception-fast build-ext\n"
          "  (Triton kernels carry line info already; ncu-ui then maps SASS to source lines.)")
    return 0
