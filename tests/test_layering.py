"""The package's import graph, read from the source (ast): layers only import downward, no
module imports another module's _private name, and launchers are the only way into kernels
(no @triton.jit function is imported outside kernels/). docs/DESIGN.md, "Layers"."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lower number = lower layer. A module may import its own layer or lower ones. The package
# root's helpers (backends, ext, dispatch, ...) sit between the kernels and the ops; the
# tools (cli, info, profile, kernel_report) on top.
LAYERS = {
    "kernels": 0, "_build": 0, "version": 0,
    "backends": 1, "ext": 1, "dispatch": 1,
    "ops": 2,
    "nn": 3, "losses": 3,
    "models": 4, "data": 4,
    "train": 5,
    "profile": 6, "info": 6, "info_build": 6, "kernel_report": 6, "cli": 7, "__main__": 8,
    "(package)": 8,  # inception_fast/__init__.py: the public re-exports
}


def _modules():
    for path in sorted((ROOT / "inception_fast").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        yield path, parts
    for path in sorted((ROOT / "kernels").glob("*.py")):
        yield path, ["inception_fast", *path.relative_to(ROOT).with_suffix("").parts]


def _name(parts):
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(mod: str) -> str:
    p = mod.split(".")
    return "(package)" if len(p) == 1 else p[1]


def _is_module(mod: str) -> bool:
    """Whether `mod` is one of the package's source files (or packages)."""
    parts = mod.split(".")
    base = ROOT / "kernels" if parts[1:2] == ["kernels"] else ROOT / "inception_fast"
    rest = parts[2:] if parts[1:2] == ["kernels"] else parts[1:]
    path = base.joinpath(*rest) if rest else base
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path, parts):
    """(target module, imported name or None, line) for every inception_fast import."""
    me = _name(parts)
    pkg = me if parts[-1] == "__init__" else me.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("inception_fast"):
                    yield a.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("inception_fast"):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                if _is_module(sub):  # `from .. import backends`: the module itself
                    yield sub, None, node.lineno
                else:
                    yield target, a.name, node.lineno


def _jit_names():
    """Names of the @triton.jit / autotuned kernels defined in kernels/."""
    names = set()
    for path in (ROOT / "kernels").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any(
                    "jit" in ast.unparse(d) or "autotune" in ast.unparse(d)
                    for d in node.decorator_list):
                names.add(node.name)
    return names


def test_every_module_has_a_layer():
    missing = {_layer(_name(p)) for _, p in _modules()} - set(LAYERS)
    assert not missing, f"give these a layer in LAYERS: {sorted(missing)}"


def test_imports_go_downward():
    bad = []
    for path, parts in _modules():
        me = _name(parts)
        for target, _, line in _imports(path, parts):
            if LAYERS[_layer(target)] > LAYERS[_layer(me)]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_private_name_crosses_modules():
    bad = []
    for path, parts in _modules():
        me = _name(parts)
        for target, name, line in _imports(path, parts):
            if name and name.startswith("_") and not name.startswith("__") and target != me:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}.{name}")
    assert not bad, "private names imported:\n" + "\n".join(bad)


def test_kernels_are_reached_through_launchers_only():
    jits, bad = _jit_names(), []
    for path, parts in _modules():
        if parts[1] == "kernels":
            continue
        for target, name, line in _imports(path, parts):
            if name in jits:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports the kernel {name}")
    assert not bad, "\n".join(bad)


def test_the_checker_can_fail(tmp_path):
    """An upward import and a private import written into a scratch module are seen."""
    src = "from ..nn.blocks import InceptionA\nfrom .conv2d_fwd import _secret\n"
    path = tmp_path / "scratch.py"
    path.write_text(src)
    found = list(_imports(path, ["inception_fast", "kernels", "scratch"]))
    assert ("inception_fast.nn.blocks", "InceptionA", 1) in found
    assert ("inception_fast.kernels.conv2d_fwd", "_secret", 2) in found
    assert LAYERS[_layer("inception_fast.nn.blocks")] > LAYERS["kernels"]


def test_every_test_module_has_an_area_marker():
    """tests/conftest.py marks each test by its module's area (pytest -m <area>); a module
    that matches no pattern would silently have none."""
    from pathlib import Path

    from areas import area_of

    modules = [p.stem for p in Path(__file__).parent.glob("test_*.py")]
    assert modules and not [m for m in modules if area_of(m) is None]
    assert area_of("test_something_new") is None  # the check can fail
