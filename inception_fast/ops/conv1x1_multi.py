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

Triton backend: forward = one implicit GEMM (kernels/conv2d_fwd.py, BN-statistics epilogue),
bn_finalize, one routed apply (kernels/conv1x1_multi.py) writing every non-pool unit into its
destination, and for the pool unit the avg-pool kernel (with statistics) + apply into its slice.
Eval without grad: BN folded into the concatenated weight once per parameter version (cached),
one routed GEMM with bias + ReLU in its epilogue, the pool with bias + ReLU: no BN kernel.
Backward: ReLU+BN backward per unit into one dense gradient buffer (B's kernels), pool adjoint
(the pool itself), then ONE dgrad GEMM and ONE wgrad GEMM for the whole group.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.graph import increment_version
from torch.utils.weak import WeakIdKeyDictionary

from .param_cache import cached, version_key
from .. import backends
from .amp import autocast_input
from .checks import check_out_slice

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

_PACK_CACHE = WeakIdKeyDictionary()
_FOLD_CACHE = WeakIdKeyDictionary()


def _pack(weights, dtype, scales=None):
    """[C_in, C_tot] contiguous: column block u = weight_u^T (times scales[u] per column)."""
    c_in = weights[0].shape[1]
    c_tot = sum(w.shape[0] for w in weights)
    packed = torch.empty((c_in, c_tot), device=weights[0].device, dtype=dtype)
    lo = 0
    with torch.no_grad():
        for i, w in enumerate(weights):
            c = w.shape[0]
            wu = w.detach().reshape(c, c_in).float()
            if scales is not None:
                wu = wu * scales[i][:, None]
            packed[:, lo:lo + c].copy_(wu.t())
            lo += c
    return packed


def _bump(t):
    if t is not None:
        try:
            increment_version(t)
        except RuntimeError:
            pass


def _eval_affine(u):
    """Eval BN as relu(a*y + c) from the running statistics (float32)."""
    invstd = torch.rsqrt(u.running_var.float() + u.eps)
    mean = u.running_mean.float()
    a = invstd if u.bn_weight is None else u.bn_weight.float() * invstd
    c = -mean * a if u.bn_bias is None else u.bn_bias.float() - mean * a
    return mean, invstd, a, c


def _fill(vecs, total, device):
    """Concatenate 1-D float32 tensors into one (no aten::cat: slices of one buffer)."""
    buf = torch.empty(total, device=device, dtype=torch.float32)
    lo = 0
    for v in vecs:
        buf[lo:lo + v.numel()].copy_(v)
        lo += v.numel()
    return buf


def _train_stats(units, psum, pm2, count, sizes, device):
    """bn_finalize for the non-pool units' columns of the GEMM partials -> (mean, invstd, a, c)
    float32 [sum(sizes)]; running stats updated in place."""
    from ..kernels.bn_train import bn_finalize

    total = sum(sizes)
    same = (len({u.eps for u in units}) == 1 and len({u.momentum for u in units}) == 1
            and len({u.running_mean is None for u in units}) == 1)
    if same:  # one finalize over all columns (a pool unit's trailing columns are ignored)
        u0 = units[0]
        cols = psum.shape[1]
        extra = cols - total
        ones = [torch.ones(s, device=device) for s in sizes + [extra]]
        zeros = [torch.zeros(s, device=device) for s in sizes + [extra]]
        gamma = _fill([u.bn_weight.detach().float() if u.bn_weight is not None else o
                       for u, o in zip(units, ones)] + ones[len(units):], cols, device)
        beta = _fill([u.bn_bias.detach().float() if u.bn_bias is not None else z
                      for u, z in zip(units, zeros)] + zeros[len(units):], cols, device)
        rm = rv = None
        if u0.running_mean is not None:
            rm = _fill([u.running_mean.float() for u in units] + zeros[len(units):], cols, device)
            rv = _fill([u.running_var.float() for u in units] + ones[len(units):], cols, device)
        stats = bn_finalize(psum, pm2, count, eps=u0.eps, momentum=u0.momentum, gamma=gamma,
                            beta=beta, running_mean=rm, running_var=rv)
        if rm is not None:
            lo = 0
            with torch.no_grad():
                for u, s in zip(units, sizes):
                    u.running_mean.copy_(rm[lo:lo + s])
                    u.running_var.copy_(rv[lo:lo + s])
                    lo += s
        return tuple(t[:total] for t in stats)
    parts, lo = [], 0
    for u, s in zip(units, sizes):
        parts.append(_finalize_unit(u, psum[:, lo:lo + s].contiguous(),
                                    pm2[:, lo:lo + s].contiguous(), count))
        lo += s
    return tuple(_fill([p[i] for p in parts], total, device) for i in range(4))


def _finalize_unit(u, psum, pm2, count):
    from ..kernels.bn_train import bn_finalize

    res = bn_finalize(psum, pm2, count, eps=u.eps, momentum=u.momentum, gamma=u.bn_weight,
                      beta=u.bn_bias, running_mean=u.running_mean, running_var=u.running_var)
    _bump(u.running_mean)
    _bump(u.running_var)
    return res


class _Plan:
    """Column layout of one call: non-pool units first (<= 3, in order), then the pool unit."""

    def __init__(self, units, x, out, training):
        self.main = [u for u in units if not u.pool]
        pools = [u for u in units if u.pool]
        if len(self.main) > 3 or len(pools) > 1:
            raise ValueError("conv1x1_multi(backend='triton'): at most 3 plain units and 1 pool "
                             f"unit per group, got {len(self.main)} and {len(pools)}")
        if pools and pools[0].out_offset is None:
            raise ValueError("conv1x1_multi(backend='triton'): the pool unit must write into out")
        self.pool = pools[0] if pools else None
        self.ordered = self.main + pools
        self.sizes = [u.weight.shape[0] for u in self.main]
        self.c_main = sum(self.sizes)
        self.c_pool = self.pool.weight.shape[0] if self.pool else 0
        self.training = training
        self.has_out = out is not None
        n, _, h, w = x.shape
        self.shape = (n, h, w)
        self.dtype, self.device = x.dtype, x.device

    def dests(self, out):
        """Destination views of the non-pool units (finals: slices of out; else new tensors)."""
        n, h, w = self.shape
        views, inters = [], []
        for u, c in zip(self.main, self.sizes):
            if u.out_offset is not None:
                views.append(out[:, u.out_offset:u.out_offset + c])
            else:
                t = torch.empty((n, c, h, w), device=self.device, dtype=self.dtype,
                                memory_format=CL)
                views.append(t)
                inters.append(t)
        return views, inters


def _gemm_weight(packed):
    """(C_tot, C_in, 1, 1) view of the packed [C_in, C_tot] weight (for shape checks / dgrad)."""
    return packed.t()[:, :, None, None]


def _forward(x, plan, out, packed):
    """Train or eval-with-grad forward: returns (results per plan.ordered, saved tensors)."""
    from ..kernels.avg_pool3x3 import avg_pool3x3
    from ..kernels.bn_train import bn_relu_apply
    from ..kernels.conv1x1_multi import routed_apply
    from ..kernels.conv2d_fwd import conv2d_fwd

    n, h, w = plan.shape
    count = n * h * w
    wv = _gemm_weight(packed)
    if plan.training:
        y, psum, pm2 = conv2d_fwd(x, wv, stats=True, packed=packed)
        mean, invstd, a, c = _train_stats(plan.main, psum, pm2, count, plan.sizes, x.device)
    else:
        y = conv2d_fwd(x, wv, packed=packed)
        aff = [_eval_affine(u) for u in plan.main]
        mean, invstd, a, c = (_fill([p[i] for p in aff], plan.c_main, x.device) for i in range(4))
    views, inters = plan.dests(out)
    routed_apply(y[:, :plan.c_main], a, c, views, plan.sizes)
    z = pstats = None
    if plan.pool is not None:
        u = plan.pool
        ypool = y[:, plan.c_main:]
        if plan.training:
            z, ps, pm = avg_pool3x3(ypool, stats=True)
            pstats = _finalize_unit(u, ps, pm, count)
        else:
            z = avg_pool3x3(ypool)
            pstats = _eval_affine(u)
        bn_relu_apply(z, pstats[2].contiguous(), pstats[3].contiguous(),
                      out=out[:, u.out_offset:u.out_offset + plan.c_pool])
    return views, inters, (y, mean, invstd, a, c, z, pstats)


def _forward_eval_folded(x, plan, out):
    """Eval, no autograd: folded weights (cached per parameter version), one routed GEMM with
    bias + ReLU, the pool with bias + ReLU into its slice."""
    from ..kernels.avg_pool3x3 import avg_pool3x3
    from ..kernels.conv1x1_multi import gemm1x1_routed

    units = plan.ordered
    tensors = [t for u in units for t in (u.weight, u.bn_weight, u.bn_bias, u.running_mean,
                                          u.running_var)]
    key = version_key(*tensors)
    key = None if key is None else key + (tuple(u.eps for u in units), x.dtype)

    def make():
        with torch.no_grad():
            aff = [_eval_affine(u) for u in units]
            packed = _pack([u.weight for u in units], x.dtype, scales=[p[2] for p in aff])
            bias = _fill([p[3] for p in aff[:len(plan.main)]], plan.c_main, x.device)
            pool_bias = aff[-1][3].contiguous() if plan.pool is not None else None
            return packed, bias, pool_bias
    packed, bias, pool_bias = cached(_FOLD_CACHE, units[0].weight, key, make)
    n, h, w = plan.shape
    views, inters = plan.dests(out)
    sizes = list(plan.sizes)
    if plan.pool is not None:
        raw = torch.empty((n, plan.c_pool, h, w), device=x.device, dtype=x.dtype, memory_format=CL)
        views = views + [None] * (3 - len(views)) + [raw]
        sizes = sizes + [0] * (3 - len(sizes)) + [plan.c_pool]
        bias = _fill([bias, torch.zeros(plan.c_pool, device=x.device)],
                     plan.c_main + plan.c_pool, x.device)
    gemm1x1_routed(x, packed, views, sizes, bias=bias, relu_end=plan.c_main)
    if plan.pool is not None:
        u = plan.pool
        avg_pool3x3(raw, out=out[:, u.out_offset:u.out_offset + plan.c_pool], bias=pool_bias,
                    relu=True)
    return views[:len(plan.main)], inters


def _bwd_apply_into(g, y, a, c, k1, k2, k3, shift, dst):
    """grad_y = k1*dz + k2*(y - shift) + k3 (kernels/bn_relu_bwd.py's kernel) written into the
    view `dst` (a channel slice of the group's gradient buffer: no copy afterwards)."""
    import triton

    from ..kernels import bn_relu_bwd as K

    n, ch, h, w = y.shape
    m = n * h * w
    if m == 0 or ch == 0:
        return
    vecs = [t.contiguous() for t in (a, c, k1, k2, k3, shift)]
    block_m, block_c = K._blocks(ch)
    grid = (triton.cdiv(m, block_m), triton.cdiv(ch, block_c))
    K._bn_relu_bwd_apply_kernel[grid](g, y, *vecs, dst, m, ch, h * w, w, *g.stride(), *y.stride(),
                                      *dst.stride(), BLOCK_M=block_m, BLOCK_C=block_c, num_warps=4)


class _Conv1x1MultiFn(torch.autograd.Function):
    """Inputs: x, out (the block output; its written slices are marked dirty), the plan, then
    every unit's conv weight, BN weight, BN bias (plan.ordered order). Outputs: out (if given)
    followed by the intermediates."""

    @staticmethod
    def forward(ctx, x, out, plan, *params):
        k = len(plan.ordered)
        packed = cached(_PACK_CACHE, plan.ordered[0].weight,
                         _key_or_none(params[:k], x.dtype), lambda: _pack(params[:k], x.dtype))
        _, inters, saved = _forward(x, plan, out, packed)
        y, mean, invstd, a, c, z, pstats = saved
        pm = pi = pa = pc = None
        if pstats is not None:
            pm, pi, pa, pc = pstats
        ctx.save_for_backward(x, packed, y, mean, invstd, a, c, z, pm, pi, pa, pc, *params[k:])
        ctx.plan = plan
        ctx.w_dtypes = [p.dtype for p in params[:k]]
        ctx.b_dtypes = [None if p is None else p.dtype for p in params[k:]]
        if out is not None:
            ctx.mark_dirty(out)
            return (out, *inters)
        return tuple(inters)

    @staticmethod
    def backward(ctx, *grads):
        from ..kernels.avg_pool3x3 import avg_pool3x3
        from ..kernels.bn_relu_bwd import bn_relu_bwd_apply
        from ..kernels.conv2d_bwd import conv2d_dgrad, conv2d_wgrad
        from .conv_bn_relu_triton import bn_relu_bwd_coefficients

        plan = ctx.plan
        x, packed, y, mean, invstd, a, c, z, pm, pi, pa, pc, *bn = ctx.saved_tensors
        k = len(plan.ordered)
        gammas = bn[:k]  # then the betas, unused by the backward
        grad_out = grads[0] if plan.has_out else None
        grad_inters = list(grads[1:] if plan.has_out else grads)
        n, h, w = plan.shape
        grad_y = torch.empty((n, plan.c_main + plan.c_pool, h, w), device=x.device, dtype=x.dtype,
                             memory_format=CL)
        g_gamma, g_beta = [None] * k, [None] * k
        lo = 0
        for i, (u, s) in enumerate(zip(plan.main, plan.sizes)):
            g = (grad_out[:, u.out_offset:u.out_offset + s] if u.out_offset is not None
                 else grad_inters.pop(0))
            seg = slice(lo, lo + s)
            gam = gammas[i].float() if gammas[i] is not None else torch.ones_like(invstd[seg])
            k1, k2, k3, gg, gb = bn_relu_bwd_coefficients(g, y[:, seg], a[seg], c[seg],
                                                          mean[seg], invstd[seg], gam,
                                                          plan.training)
            _bwd_apply_into(g, y[:, seg], a[seg], c[seg], k1, k2, k3, mean[seg], grad_y[:, seg])
            g_gamma[i], g_beta[i] = gg, gb
            lo += s
        if plan.pool is not None:
            u, i = plan.pool, k - 1
            g = grad_out[:, u.out_offset:u.out_offset + plan.c_pool]
            gam = gammas[i].float() if gammas[i] is not None else torch.ones_like(pi)
            k1, k2, k3, gg, gb = bn_relu_bwd_coefficients(g, z, pa, pc, pm, pi, gam, plan.training)
            grad_z = bn_relu_bwd_apply(g, z, pa, pc, k1.contiguous(), k2.contiguous(),
                                       k3.contiguous(), shift=pm)
            avg_pool3x3(grad_z, out=grad_y[:, plan.c_main:])  # the pool is self-adjoint
            g_gamma[i], g_beta[i] = gg, gb
        need = ctx.needs_input_grad
        grad_x = None
        if need[0]:
            grad_x = conv2d_dgrad(grad_y, _gemm_weight(packed), (h, w))
        grad_ws = [None] * k
        if any(need[3:3 + k]):
            gw = conv2d_wgrad(x, grad_y, (1, 1))
            lo = 0
            for i, u in enumerate(plan.ordered):
                s = u.weight.shape[0]
                if need[3 + i]:
                    grad_ws[i] = gw[lo:lo + s].to(ctx.w_dtypes[i])
                lo += s
        gg_out = [gg.to(ctx.b_dtypes[i]) if need[3 + k + i] else None
                  for i, gg in enumerate(g_gamma)]
        gb_out = [gb.to(ctx.b_dtypes[k + i]) if need[3 + 2 * k + i] else None
                  for i, gb in enumerate(g_beta)]
        return (grad_x, None, None, *grad_ws, *gg_out, *gb_out)


def _key_or_none(weights, dtype):
    key = version_key(*weights)
    return None if key is None else key + (dtype,)


@torch.compiler.disable
def conv1x1_multi_triton(x, units, *, training, out=None):
    """The Triton backend of conv1x1_multi (inputs checked by conv1x1_multi)."""
    from ..kernels.dtypes import check_kernel_dtype

    check_kernel_dtype(x, "conv1x1_multi(backend='triton')", "input")
    for u in units:
        if not training and u.running_mean is None:
            raise ValueError("conv1x1_multi(backend='triton'): eval mode needs running statistics")
    plan = _Plan(units, x, out, training)
    params = ([u.weight for u in plan.ordered] + [u.bn_weight for u in plan.ordered]
              + [u.bn_bias for u in plan.ordered])
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in [x, *params])
    if needs_grad:
        res = _Conv1x1MultiFn.apply(x, out, plan, *params)
        res = list(res) if isinstance(res, (tuple, list)) else [res]
        if out is not None:
            res = res[1:]
        inters = iter(res)
    else:
        with torch.no_grad():
            if training:
                packed = cached(_PACK_CACHE, plan.ordered[0].weight,
                                 _key_or_none([u.weight for u in plan.ordered], x.dtype),
                                 lambda: _pack([u.weight for u in plan.ordered], x.dtype))
                _, inter_list, _ = _forward(x, plan, out, packed)
            else:
                _, inter_list = _forward_eval_folded(x, plan, out)
        _bump(out)
        inters = iter(inter_list)
    results = []
    for u in units:  # back to the caller's order
        c = u.weight.shape[0]
        results.append(out[:, u.out_offset:u.out_offset + c] if u.out_offset is not None
                       else next(inters))
    return results
