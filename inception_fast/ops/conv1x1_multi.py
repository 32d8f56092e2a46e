"""Horizontal 1x1 fusion: the 1x1 conv+BN+ReLU units of an Inception block that read the same
input, run as ONE GEMM (weights concatenated along C_out), outputs routed per branch; and its
pure-torch reference.

Semantics (all backends), for each unit u (in the order given):
    y_u = conv2d(x, u.weight)                                   (1x1, no bias)
    y_u = avg_pool2d(y_u, 3, stride=1, padding=1)               if u.pool
    r_u = relu(batch_norm(y_u, u.running_mean, u.running_var, u.bn_weight, u.bn_bias,
                          training, u.momentum, u.eps))
BN statistics per original channel (for a pool unit: of the POOLED tensor), running stats of
every unit updated in place exactly as torch does. u.out_offset given: r_u is written into
out[:, off:off + C_u] (a final branch output) and that view is returned; else r_u is a new
tensor (an intermediate). Returns the list of r_u.

Pool reordering: avg_pool2d(3, 1, 1, count_include_pad=True) followed by a bias-free 1x1 conv
equals the conv followed by the pool (both linear, the zero padding maps to zero), so the block's
branch_pool conv joins the GEMM and the pool runs on its few output channels (32 instead of 192
in Mixed_5b); see tests/test_blocks_fused.py for the fp64 proof.

Triton backend (ops/conv1x1_multi_triton.py, the registered ops): forward = one implicit
GEMM with a BN-statistics epilogue, bn_finalize, one routed apply writing every non-pool unit
into its destination, and for the pool unit the avg-pool kernel (with statistics) + apply into
its slice; eval without grad: BN folded into the concatenated weight (cached per parameter
version), one routed GEMM with bias + ReLU, the pool with bias + ReLU. Backward: ReLU+BN
backward per unit into one dense gradient buffer, the pool adjoint, then ONE dgrad GEMM and ONE
wgrad GEMM for the whole group. _Conv1x1MultiFn (below) is its autograd, traced whole by
torch.compile.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import backends
from .amp import autocast_input
from .checks import check_out_slice
from .library import present

CL = torch.channels_last


@dataclass
class Unit1x1:
    """One ConvBNReLU of the group (tensors are the module's own, updated in place)."""
    weight: torch.Tensor                  # (C_u, C_in, 1, 1)
    bn_weight: torch.Tensor | None
    bn_bias: torch.Tensor | None
    running_mean: torch.Tensor | None     # None: batch statistics, nothing updated
    running_var: torch.Tensor | None
    eps: float = 1e-3
    momentum: float = 0.1                 # the resolved exponential-average factor
    out_offset: int | None = None         # channel offset in `out`, or None (intermediate)
    pool: bool = False                    # avg_pool2d(3, 1, 1) between conv and BN


def _check_input(x, what="conv1x1_multi"):
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{what}: input must be a 4-D (N, C, H, W) tensor")
    if not x.is_floating_point():
        raise TypeError(f"{what}: input must be floating point, got {x.dtype}")


def _check(x, units, out):
    what = "conv1x1_multi"
    _check_input(x, what)
    if not units:
        raise ValueError(f"{what}: no units")
    n, c_in, h, w = x.shape
    for i, u in enumerate(units):
        wt = u.weight
        if wt.dim() != 4 or tuple(wt.shape[1:]) != (c_in, 1, 1):
            raise ValueError(f"{what}: unit {i} weight must be (C_out, {c_in}, 1, 1), got "
                             f"{tuple(wt.shape)}")
        if wt.device != x.device:
            raise ValueError(f"{what}: unit {i} weight is on {wt.device}, the input on {x.device}")
        if (u.running_mean is None) != (u.running_var is None):
            raise ValueError(f"{what}: unit {i}: give both running_mean and running_var, "
                             "or neither")
        if u.out_offset is not None:
            if out is None:
                raise ValueError(f"{what}: unit {i} has out_offset={u.out_offset} but no out given")
            check_out_slice(out, x.shape, wt.shape[0], u.out_offset, h, w, x.dtype, x.device, what)


# ------------------------------------------------------------------------------- reference

def conv1x1_multi_reference(x, units, *, training, out=None):
    """The oracle: one conv2d over the concatenated weights, then per unit (pool), batch_norm,
    relu with torch's own functions."""
    w = torch.cat([u.weight.to(x.dtype) for u in units])
    y = F.conv2d(x, w)
    results, lo = [], 0
    for u in units:
        c = u.weight.shape[0]
        yu = y[:, lo:lo + c]
        lo += c
        if u.pool:
            yu = F.avg_pool2d(yu, 3, stride=1, padding=1)
        r = F.relu(F.batch_norm(yu, u.running_mean, u.running_var, u.bn_weight, u.bn_bias,
                                training or u.running_mean is None, u.momentum, u.eps))
        if u.out_offset is not None:
            view = out[:, u.out_offset:u.out_offset + c]
            view.copy_(r)
            r = view
        results.append(r)
    return results


def conv1x1_multi(x, units, *, training, out=None, backend="torch"):
    """Checked entry point (module doc). Backend "cuda" uses the Triton path when Triton runs
    here (the group has no CUDA C++ kernel), else the reference."""
    _check_input(x)
    b = backends.resolve(backend, x)
    if b == "cuda":
        b = "triton" if backends.why_unavailable("triton") is None else "torch"
    if b != "torch":
        x = autocast_input(x)  # as autocast casts a conv input (ops/amp.py)
    _check(x, units, out)
    if b == "torch":
        return conv1x1_multi_reference(x, units, training=training, out=out)
    return conv1x1_multi_triton(x, units, training=training, out=out)


# ---------------------------------------------------------------------------------- triton

def _triton_fwd(x, out, spec, weights, gammas, betas, means, vars_, save):
    """inception_fast::conv1x1_multi_triton_fwd on one group. spec: (offsets, flags, eps,
    momentum, has_pool, training), python constants built by conv1x1_multi_triton; the running
    statistics go in as mutated in training, as read-only eval statistics otherwise."""
    from .conv1x1_multi_triton import conv1x1_multi_triton_fwd

    offsets, flags, eps, momentum, has_pool, training = spec
    run, stats = ((means, vars_), ([], [])) if training else (([], []), (means, vars_))
    return conv1x1_multi_triton_fwd(x, out, weights, gammas, betas, *run, *stats, list(offsets),
                                    list(flags), list(eps), list(momentum), has_pool, training,
                                    save)


def _flags(u):
    from .conv1x1_multi_triton import HAS_BETA, HAS_GAMMA, HAS_RUNNING

    return ((HAS_GAMMA if u.bn_weight is not None else 0)
            | (HAS_BETA if u.bn_bias is not None else 0)
            | (HAS_RUNNING if u.running_mean is not None else 0))


def _n_plain(spec):
    return len(spec[0]) - int(spec[4])


class _Conv1x1MultiFn(torch.autograd.Function):
    """Inputs: x, out (the block output, marked dirty: its written slices), the spec (python
    constants), then the flat tensor lists: conv weights (one per unit, plan order), the BN
    weights and biases present, the running statistics present (not differentiable). Outputs:
    out (if given) followed by the intermediates. Traced whole by torch.compile."""

    @staticmethod
    def forward(ctx, x, out, spec, *tensors):
        from .conv1x1_multi_triton import MAX_PLAIN

        k, n_g, n_b, n_r = _counts(spec)
        weights, gammas, betas = (list(tensors[:k]), list(tensors[k:k + n_g]),
                                  list(tensors[k + n_g:k + n_g + n_b]))
        stats = tensors[k + n_g + n_b:]
        res = _triton_fwd(x, out, spec, weights, gammas, betas, list(stats[:n_r]),
                          list(stats[n_r:]), True)
        ctx.save_for_backward(x, *res[MAX_PLAIN:], *weights, *gammas)
        ctx.spec, ctx.has_out = spec, out is not None
        ctx.dtypes = [t.dtype for t in tensors[:k + n_g + n_b]]
        inters = [r for r, off in zip(res[:MAX_PLAIN], spec[0][:_n_plain(spec)])
                  if off < 0]
        if out is not None:
            ctx.mark_dirty(out)
            return (out, *inters)
        return tuple(inters)

    @staticmethod
    def backward(ctx, *grads):
        from .conv1x1_multi_triton import HAS_BETA, HAS_GAMMA, N_SAVED, conv1x1_multi_triton_bwd

        spec = ctx.spec
        offsets, flags, _, _, has_pool, training = spec
        k, n_g, n_b, n_r = _counts(spec)
        x, *rest = ctx.saved_tensors
        saved, weights, gammas = rest[:N_SAVED], rest[N_SAVED:N_SAVED + k], rest[N_SAVED + k:]
        grad_out = grads[0] if ctx.has_out else None
        grad_inters = list(grads[1:] if ctx.has_out else grads)
        need = ctx.needs_input_grad[3:3 + k + n_g + n_b]
        need_x, need_w = ctx.needs_input_grad[0], any(need[:k])
        gx, gw, gg, gb = conv1x1_multi_triton_bwd(
            grad_out, grad_inters, x, list(weights), list(gammas), *saved, list(offsets),
            list(flags), has_pool, training, [int(need_x), int(need_w)])
        grad_w, grad_g, grad_b = [], [], []
        lo = 0
        for i, wt in enumerate(weights):  # per unit: its columns, in its parameter's dtype
            seg = slice(lo, lo + wt.shape[0])
            lo = seg.stop
            grad_w.append(gw[seg].to(ctx.dtypes[i]) if need[i] else None)
            if flags[i] & HAS_GAMMA:
                j = k + len(grad_g)
                grad_g.append(gg[seg].to(ctx.dtypes[j]) if need[j] else None)
            if flags[i] & HAS_BETA:
                j = k + n_g + len(grad_b)
                grad_b.append(gb[seg].to(ctx.dtypes[j]) if need[j] else None)
        return (present(gx) if need_x else None, None, None, *grad_w, *grad_g, *grad_b,
                *([None] * (2 * n_r)))


def _counts(spec):
    """Units, BN weights, BN biases and running-statistics pairs in the flat tensor list."""
    from .conv1x1_multi_triton import HAS_BETA, HAS_GAMMA, HAS_RUNNING

    flags = spec[1]
    return (len(flags), sum(1 for f in flags if f & HAS_GAMMA),
            sum(1 for f in flags if f & HAS_BETA), sum(1 for f in flags if f & HAS_RUNNING))


def conv1x1_multi_triton(x, units, *, training, out=None):
    """The Triton backend of conv1x1_multi (inputs checked by conv1x1_multi)."""
    from ..kernels.dtypes import check_kernel_dtype
    from .conv1x1_multi_triton import MAX_PLAIN

    what = "conv1x1_multi(backend='triton')"
    check_kernel_dtype(x, what, "input")
    for u in units:
        if not training and u.running_mean is None:
            raise ValueError(f"{what}: eval mode needs running statistics")
    plain = [u for u in units if not u.pool]
    pools = [u for u in units if u.pool]
    if len(plain) > MAX_PLAIN or len(pools) > 1:
        raise ValueError(f"{what}: at most {MAX_PLAIN} plain units and 1 pool unit per group, "
                         f"got {len(plain)} and {len(pools)}")
    if len(pools) > 0 and pools[0].out_offset is None:
        raise ValueError(f"{what}: the pool unit must write into out")
    ordered = plain + pools  # the plan order: the GEMM's column blocks
    # len(pools) > 0, not bool(pools): torch 2.11's dynamo cannot trace bool() of a list.
    spec = (tuple(-1 if u.out_offset is None else u.out_offset for u in ordered),
            tuple(_flags(u) for u in ordered), tuple(float(u.eps) for u in ordered),
            tuple(float(u.momentum) for u in ordered), len(pools) > 0, bool(training))
    weights = [u.weight for u in ordered]
    gammas = [u.bn_weight for u in ordered if u.bn_weight is not None]
    betas = [u.bn_bias for u in ordered if u.bn_bias is not None]
    means = [u.running_mean for u in ordered if u.running_mean is not None]
    vars_ = [u.running_var for u in ordered if u.running_mean is not None]
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in [x, *weights, *gammas, *betas])
    if needs_grad:
        res = _Conv1x1MultiFn.apply(x, out, spec, *weights, *gammas, *betas, *means, *vars_)
        res = list(res) if isinstance(res, (tuple, list)) else [res]
        if out is not None:
            out, res = res[0], res[1:]
        inters = iter(res)
    else:
        res = _triton_fwd(x, out, spec, weights, gammas, betas, means, vars_, False)
        inters = iter([r for r, u in zip(res[:MAX_PLAIN], plain) if u.out_offset is None])
    results = []
    for u in units:  # back to the caller's order
        c = u.weight.shape[0]
        results.append(out[:, u.out_offset:u.out_offset + c] if u.out_offset is not None
                       else next(inters))
    return results
