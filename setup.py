"""Build script.

Pure-Python install by default. When the build environment already has a CUDA build of torch
and a CUDA toolkit (e.g. `pip install --no-deps --no-build-isolation -e .` on a GPU machine),
the CUDA C++ kernels in csrc/ are compiled here into inception_fast._C. Otherwise they are
compiled just-in-time with ninja on first use (`inception-fast build-ext` does it eagerly);
see inception_fast/_build.py, which both paths share.
"""
import importlib.util
import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def _load_build_config():
    spec = importlib.util.spec_from_file_location("_if_build", ROOT / "inception_fast" / "_build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ext_modules():
    if os.environ.get("INCEPTION_FAST_NO_EXT") == "1":
        return [], {}
    build = _load_build_config()
    why_not = build.cannot_build_reason()
    if why_not:
        print(f"inception_fast: not compiling csrc/ at install ({why_not}); it builds JIT on first use",
              file=sys.stderr)
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    ext = CUDAExtension(
        name="inception_fast._C",
        sources=[str(p.relative_to(ROOT)) for p in build.sources()],
        extra_compile_args={"cxx": build.cxx_flags(), "nvcc": build.nvcc_flags()},
    )
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = _ext_modules()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
