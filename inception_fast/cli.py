"""The `inception-fast` command line (also `python -m inception_fast`).

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args)`;
they are imported only when chosen, so `inception-fast info` stays quick."""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    # name: (module, one-line help)
    "info": ("inception_fast.info", "versions, device, available backends (and why not)"),
    "build-ext": ("inception_fast.info_build", "compile the CUDA C++ extension now (JIT, ninja)"),
    "train": ("inception_fast.train.cli", "train inception_v3 (default: bundled digits data set)"),
    "profile": ("inception_fast.profile", "profile training/inference steps with torch.profiler"),
    "kernels": ("inception_fast.kernel_report.cli",
                "static sm_90 report of every kernel variant and the traffic per layer (no GPU)"),
    "warmup": ("inception_fast.kernel_report.warmup",
               "compile every Triton kernel variant ahead of time into Triton's cache (no GPU)"),
}


def _module_has_cli(modname: str) -> bool:
    return importlib.util.find_spec(modname.rsplit(".", 1)[0]) is not None and \
        importlib.util.find_spec(modname) is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inception-fast", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # Parse the subcommand name first so that only its module gets imported.
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (modname, help_) in SUBCOMMANDS.items():
        if not _module_has_cli(modname):
            continue
        p = sub.add_parser(name, help=help_, description=help_)
        if name == chosen:
            mod = importlib.import_module(modname)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
