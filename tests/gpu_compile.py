"""Compile every Triton kernel the model launches for a real GPU target, without a GPU.

The interpreter (how the CPU tests run the kernels) never lowers a kernel to PTX, so it cannot
see what only the GPU compiler rejects (tl.dot tile shapes, layouts of tl.gather, shared
memory, register pressure). This script runs the ops on CPU tensors with the interpreter OFF,
so every host-side decision is the GPU one (autotune config lists, block sizes), and replaces
each launch by triton.compile(..., target=GPUTarget("cuda", CC, 32)) of exactly that launch:
the kernel's argument types and constexpr values, once per autotune config the kernel's
pruning keeps for that problem. Nothing runs: the outputs hold garbage, which the workloads
only pass on. Prints one line per compiled variant and "compiled N, failed F".

    python tests/gpu_compile.py [--cc 90] [--max-configs 2] [--dtypes float16,...] [--quick]
                                [--per-kernel]
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback

os.environ["TRITON_INTERPRET"] = "0"  # before triton is imported

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.autotuner import Autotuner  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

_PTR = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16",
        torch.float64: "*fp64", torch.int64: "*i64", torch.int32: "*i32", torch.uint8: "*u8",
        torch.int8: "*i8", torch.bool: "*i1"}


# Constexprs that change a kernel's structure (kept apart even with --per-kernel).
_STRUCTURAL = ("ALONG_W", "FLAT_K", "STATS", "IEEE")


class Compiler:
    def __init__(self, cc: int, max_configs: int, per_kernel: bool = False):
        self.target = GPUTarget("cuda", cc, 32)
        self.max_configs = max_configs
        self.per_kernel = per_kernel  # one variant per kernel and argument types
        self.done: dict[tuple, str | None] = {}

    def _signature(self, jit: JITFunction, bound: dict):
        sig, consts = {}, {}
        for p in jit.params:
            v = bound.get(p.name, p.default)
            if p.is_constexpr:
                consts[p.name] = v
                sig[p.name] = "constexpr"
            elif isinstance(v, torch.Tensor):
                sig[p.name] = _PTR[v.dtype]
            elif isinstance(v, bool):
                sig[p.name] = "i1"
            elif isinstance(v, int):
                sig[p.name] = "i32" if -2**31 <= v < 2**31 else "i64"
            elif isinstance(v, float):
                sig[p.name] = "fp32"
            else:
                raise TypeError(f"{jit.__name__}: argument {p.name} of type {type(v).__name__}")
        return sig, consts

    def compile(self, jit: JITFunction, bound: dict, opts: dict) -> None:
        sig, consts = self._signature(jit, bound)
        key = (jit.__module__, jit.__name__, tuple(sorted(sig.items())),
               tuple((k, consts[k]) for k in _STRUCTURAL if k in consts))
        if not self.per_kernel:
            key += (tuple(sorted((k, repr(v)) for k, v in consts.items())),
                    tuple(sorted(opts.items())))
        if key in self.done:
            return
        label = (f"{jit.__name__} {','.join(t for t in sig.values() if t.startswith('*'))} "
                 + " ".join(f"{k}={v}" for k, v in consts.items()) + f" {opts}")
        try:
            triton.compile(ASTSource(fn=jit, signature=sig, constexprs=consts),
                           target=self.target, options=opts)
            self.done[key] = None
            print("ok  ", label, flush=True)
        except Exception:
            self.done[key] = traceback.format_exc(limit=3)
            print("FAIL", label, "\n", self.done[key], flush=True)

    def install(self) -> None:
        """Every launch compiles instead of running."""
        comp = self

        def jit_run(self, *args, grid, warmup, **kwargs):
            bound = {**dict(zip(self.arg_names, args)),
                     **{k: v for k, v in kwargs.items() if k in self.arg_names}}
            opts = {k: kwargs[k] for k in ("num_warps", "num_stages") if k in kwargs}
            comp.compile(self, bound, opts)

        def autotuner_run(self, *args, **kwargs):
            self.nargs = dict(zip(self.arg_names, args))
            configs = self.prune_configs(kwargs) if len(self.configs) > 1 else self.configs
            for cfg in configs[:comp.max_configs]:
                bound = {**self.nargs, **{k: v for k, v in kwargs.items() if k in self.arg_names},
                         **cfg.kwargs}
                comp.compile(self.fn, bound, dict(num_warps=cfg.num_warps,
                                                  num_stages=cfg.num_stages))

        JITFunction.run = jit_run
        Autotuner.run = autotuner_run

    @property
    def failed(self):
        return [k for k, v in self.done.items() if v is not None]


QUICK_UNITS = (0, 2, 4, 5, 8, 9)  # stem (flat K), 1x1, 1x7, 7x1, 3x3/2, 1x3 unpadded
QUICK_BLOCKS = (0, 1, 2)      # A (1x1 group, pool reordering), D (max-pool slice), B (conv+pool)


def _workloads(dts, quick):
    """The ops of the model (and the losses) on CPU tensors, in the dtypes `dts`; `quick`: one
    unit of each kind and two blocks."""
    from inception_fast import backends
    from inception_fast.kernels import dtypes
    import inception_fast.nn as ifnn
    from inception_fast.ops.joint_opt_loss import joint_optimization_loss_triton
    from inception_fast.ops.label_smoothing_ce import label_smoothing_cross_entropy_triton

    dtypes.check_runnable = lambda *a, **k: None  # CPU tensors stand in for CUDA ones
    backends.triton_interpreter_on = lambda: True
    cl = torch.channels_last
    units = [  # (C_in, C_out, kernel, stride, padding, H, W)
        (3, 32, 3, 2, 0, 35, 35), (32, 64, 3, 1, 1, 17, 17), (192, 64, 1, 1, 0, 9, 9),
        (48, 64, 5, 1, 2, 9, 9), (128, 128, (1, 7), 1, (0, 3), 17, 17),
        (128, 192, (7, 1), 1, (3, 0), 17, 17), (384, 384, (1, 3), 1, (0, 1), 8, 8),
        (384, 384, (3, 1), 1, (1, 0), 8, 8), (288, 384, 3, 2, 0, 17, 17),
        (64, 48, (1, 3), 1, (0, 0), 8, 8),  # not "same" padding: the taps-loop kernel
    ]
    blocks = [(ifnn.InceptionA(64, pool_features=32), 64, 9), (ifnn.InceptionD(96), 96, 9),
              (ifnn.InceptionB(96), 96, 9), (ifnn.InceptionE(160), 160, 8)]
    if quick:
        units = [units[i] for i in QUICK_UNITS]
        blocks = [blocks[i] for i in QUICK_BLOCKS]
    for dt in dts:
        for ci, co, k, s, p, h, w in units:
            m = ifnn.ConvBNReLU(ci, co, k, stride=s, padding=p, backend="triton")
            m.to(memory_format=cl)
            m.conv.to(dt)
            x = torch.randn(2, ci, h, w, dtype=dt).contiguous(memory_format=cl)
            yield m, x
        for block, c, hw in blocks:
            for u in block.modules():
                if isinstance(u, ifnn.ConvBNReLU):
                    u.backend = "triton"
                    u.conv.to(dt)
            yield block, torch.randn(2, c, hw, hw, dtype=dt).contiguous(memory_format=cl)
        logits = torch.randn(8, 10, dtype=dt, requires_grad=True)
        target = torch.randint(0, 10, (8,))
        label_smoothing_cross_entropy_triton(logits, target).backward()
        soft = torch.softmax(torch.randn(8, 10), 1)
        joint_optimization_loss_triton(logits, soft)[0].backward()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cc", type=int, default=90, help="compute capability (80, 90)")
    ap.add_argument("--max-configs", type=int, default=2, help="autotune configs per launch")
    ap.add_argument("--dtypes", default="float16,bfloat16,float32")
    ap.add_argument("--quick", action="store_true", help="one unit of each kind, two blocks")
    ap.add_argument("--per-kernel", action="store_true",
                    help="compile one variant per kernel and argument types (CI)")
    args = ap.parse_args(argv)
    comp = Compiler(args.cc, args.max_configs, args.per_kernel)
    comp.install()
    dts = [getattr(torch, d) for d in args.dtypes.split(",")]
    for module, x in _workloads(dts, args.quick):
        for train in (True, False):  # train step; eval without grad (the BN-folded path)
            module.train(train)
            with torch.set_grad_enabled(train):
                y = module(x.clone().requires_grad_(train))
            if train:
                y.float().sum().backward()
    print(f"compiled {len(comp.done) - len(comp.failed)}, failed {len(comp.failed)} "
          f"(sm_{args.cc}, triton {triton.__version__})")
    return 1 if comp.failed else 0


if __name__ == "__main__":
    sys.exit(main())
