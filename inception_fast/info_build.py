"""`inception-fast build-ext`: compile csrc/ into inception_fast._C now (JIT with ninja).
Needs a CUDA build of torch and a CUDA toolkit, not a GPU. Exit code 1 if it cannot."""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true", help="show the compiler's output")


def run(args: argparse.Namespace) -> int:
    from . import ext

    try:
        mod = ext.load(build=True, verbose=args.verbose)
    except RuntimeError as e:
        print(f"inception_fast._C: {e}", file=sys.stderr)
        return 1
    print(f"inception_fast._C built: {mod.__file__}")
    return 0
