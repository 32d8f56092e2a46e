"""Registering the fused ops' kernel calls as torch.library ops (namespace `inception_fast`).

The pattern every op follows (see docs/DESIGN.md, "Registered ops"):
- each backend's kernel calls are registered ops, `inception_fast::<op>_<backend>_fwd` and
  `..._bwd`, declared with the arguments they mutate (out buffers, running statistics) and a
  fake (meta) implementation giving every output's shape, so torch.compile / export see them as
  opaque nodes and never trace a kernel launch or a host cache;
- a registered op returns fresh tensors only (never a view of an input); a tensor it has no
  value for is `absent()` (an empty tensor), turned back into None by `present()`;
- gradients: a torch.autograd.Function in the op's module calls the `_fwd` op, marks the `out`
  it wrote as dirty and returns it (copy-free concat), and calls the `_bwd` op in backward;
  Dynamo traces that Function, so fullgraph compile keeps the op whole.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

NS = "inception_fast"


def name(op: str) -> str:
    return f"{NS}::{op}"


def absent(like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The stand-in for "no tensor" among a registered op's outputs: a new one per slot (two
    outputs of one op may not be the same tensor)."""
    return like.new_empty((0,), dtype=dtype or like.dtype)


def absents(like: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    return tuple(absent(like) for _ in range(n))


def present(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None or t.numel() == 0 else t


def train_and_eval_ops(op: str, impl):
    """Two registrations of one BN op's forward implementation: `<op>_train_fwd` declares
    `out`, `running_mean` and `running_var` mutated, `<op>_eval_fwd` only `out`. A declared
    mutation bumps the tensor's version on every call, and the fold caches are keyed on the
    running statistics' versions: eval must not declare what it only reads."""
    train = torch.library.custom_op(name(f"{op}_train_fwd"), impl,
                                    mutates_args=("out", "running_mean", "running_var"))
    evaluate = torch.library.custom_op(name(f"{op}_eval_fwd"), impl, mutates_args=("out",))
    return train, evaluate


# The modules that register ops (imported lazily elsewhere: the Triton ones need triton).
OP_MODULES = ("aligned_input", "conv_bn_relu_triton", "conv_bn_relu_cuda",
              "conv1x1_multi_triton", "grid_reduction_cuda", "max_pool_slice",
              "label_smoothing_ce", "joint_opt_loss")


def load_all() -> None:
    """Import every module that registers ops, so the registry is complete."""
    import importlib

    for m in OP_MODULES:
        importlib.import_module(f"{__package__}.{m}")


def registered_ops() -> list[str]:
    """Every op this package registers (qualified names), for tests and `inception-fast info`."""
    load_all()
    ns = getattr(torch.ops, NS)
    return sorted(f"{NS}::{n}" for n in dir(ns) if not n.startswith("_") and
                  isinstance(getattr(ns, n, None), torch._ops.OpOverloadPacket))


@contextmanager
def implementations_on_meta():
    """Inside: a registered inception_fast op called on meta tensors runs its real
    implementation, not its fake. The static kernel report (kernel_report/) runs the model on
    meta tensors to record every kernel launch the host code makes; a fake launches nothing.
    (Swaps the fake that torch's CustomOpDef looks up at call time; restored on exit.)"""
    from torch._library.custom_ops import OPDEFS

    load_all()  # an op first imported inside would keep its fake
    defs = [d for q, d in list(OPDEFS.items()) if q.startswith(NS + "::")]
    saved = [d._abstract_fn for d in defs]
    for d in defs:
        d._abstract_fn = d._init_fn
    try:
        yield
    finally:
        for d, fn in zip(defs, saved):
            d._abstract_fn = fn


def implementation(op) -> "callable":
    """The Python implementation behind a registered inception_fast op (an OpOverload), for
    tools that look inside one (train/graphs.py's SyncCounter)."""
    from torch._library.custom_ops import OPDEFS

    return OPDEFS[op._schema.name]._init_fn
