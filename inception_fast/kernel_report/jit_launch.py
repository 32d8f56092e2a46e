"""Compile one Triton launch for a GPU target exactly as the JIT would, without a GPU.

A real launch (JITFunction.run) does three things before compiling: it binds the arguments,
specializes them (an int equal to 1 becomes the constexpr 1; ints and pointers divisible by 16
carry `tt.divisibility = 16`, which is what lets the compiler emit 16-byte cp.async and vector
stores), and parses the options. Here the JIT's own pieces do the same (its binder
`create_function_from_signature`, its `_pack_args`, its `compile`), only with the target given
instead of asked of a driver, so the compiled variant is the one the GPU would run. Alignment
is read from `data_ptr()`: CPU tensors from torch's allocator are 64-byte aligned, meta tensors
report their byte offset from 0, and CUDA's allocator aligns to 512 bytes, so every base
pointer is 16-byte aligned in all three and a view's offset decides, as on the GPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

os.environ.setdefault("TRITON_INTERPRET", "0")

import triton  # noqa: E402
from triton import knobs  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: E402


@dataclass
class Specialized:
    """What the JIT hands the compiler for one launch."""
    jit: JITFunction
    signature: dict          # param name -> type string ("*bf16", "i32", "constexpr", ...)
    constexprs: dict         # path tuple -> value (specialized ints included)
    attrs: dict              # path tuple -> [["tt.divisibility", 16]]
    options: object          # the backend's parsed options (num_warps, num_stages, ...)
    target: GPUTarget
    bound: dict = field(repr=False, default_factory=dict)  # the bound arguments

    @property
    def name(self) -> str:
        return self.jit.fn.__name__

    def source(self) -> ASTSource:
        return ASTSource(self.jit, self.signature, self.constexprs, self.attrs)

    def cache_key(self) -> tuple:
        """Identity of the compiled variant (same key = same binary)."""
        return (self.jit.module, self.name, tuple(sorted(self.signature.items())),
                tuple(sorted((k, repr(v)) for k, v in self.constexprs.items())),
                tuple(sorted((k, repr(v)) for k, v in self.attrs.items())),
                repr(sorted(self.options.__dict__.items())), self.target.arch)

    def constexpr_values(self) -> dict:
        """{param name: value} of the constexprs, declared and specialized."""
        names = [p.name for p in self.jit.params]
        return {names[k[0]]: v for k, v in self.constexprs.items() if len(k) == 1}


_BINDERS: dict = {}


def _binder(jit: JITFunction, target: GPUTarget):
    key = (id(jit), target.arch)
    if key not in _BINDERS:
        backend = make_backend(target)
        _BINDERS[key] = (backend, create_function_from_signature(jit.signature, jit.params,
                                                                 backend))
    return _BINDERS[key]


def specialize(jit: JITFunction, args: tuple, kwargs: dict, target: GPUTarget) -> Specialized:
    """The JIT's specialization of jit[grid](*args, **kwargs) for `target` (as JITFunction.run)."""
    kwargs = dict(kwargs)
    kwargs["debug"] = kwargs.get("debug", jit.debug) or knobs.runtime.debug
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    backend, binder = _binder(jit, target)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = jit._pack_args(backend, kwargs, bound,
                                                           specialization, options)
    return Specialized(jit, signature, constexprs, attrs, options, target, bound)


def compile_specialized(spec: Specialized):
    """triton.compile of exactly that variant (Triton's on-disk cache applies)."""
    return triton.compile(spec.source(), target=spec.target, options=spec.options.__dict__)


def target_for(arch: int) -> GPUTarget:
    return GPUTarget("cuda", arch, 32)
