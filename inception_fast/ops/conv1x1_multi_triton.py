"""The Triton backend of conv1x1_multi (semantics: ops/conv1x1_multi.py) as two registered ops,
`inception_fast::conv1x1_multi_triton_fwd` and `..._bwd`, the only callers of the kernels.

How a group travels through a schema (ops/library.py): the units in plan order (the plain
units, at most 3, then the pool unit if `has_pool`), one flat list per role: `weights` (one per
unit), `bn_weights` / `bn_biases` / running statistics (only the units that have them, says
`flags`: HAS_GAMMA | HAS_BETA | HAS_RUNNING per unit), `offsets` (channel offset in `out`, -1:
an intermediate), `eps` / `momentum` (per unit).
Running statistics: in training they are `running_means` / `running_vars` (declared mutated:
updated in place); in eval they are `eval_means` / `eval_vars`, read only: declaring them
mutated would bump their versions on every call and defeat the fold cache, which is keyed on
them.

Forward = one implicit GEMM (kernels/conv2d_fwd.py, BN-statistics epilogue), bn_finalize, one
routed apply (kernels/conv1x1_multi.py) writing every plain unit into its destination, and for
the pool unit the avg-pool kernel (with statistics) + apply into its slice. Eval without grad:
BN folded into the concatenated weight once per parameter version (FOLD_CACHE), one routed
GEMM with bias + ReLU in its epilogue, the pool with bias + ReLU: no BN kernel.
Backward: ReLU+BN backward per unit into one dense gradient buffer, pool adjoint (the pool
itself), then ONE dgrad GEMM and ONE wgrad GEMM for the whole group.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .bn_math import eval_affine
from .library import absent, name
from .param_cache import ParamCache, version_key
from ..kernels.avg_pool3x3 import avg_pool3x3
from ..kernels.bn_relu_bwd import bn_relu_bwd_apply, bn_relu_bwd_coefficients
from ..kernels.bn_train import MAX_SEGMENTS, bn_finalize, bn_relu_apply
from ..kernels.conv1x1_multi import gemm1x1_routed, routed_apply
from ..kernels.conv2d_bwd import conv2d_dgrad, conv2d_wgrad
from ..kernels.conv2d_fwd import conv2d_fwd

CL = torch.channels_last
HAS_GAMMA, HAS_BETA, HAS_RUNNING = 1, 2, 4  # bits of `flags`, per unit
MAX_PLAIN = 3  # plain units per group (the routed kernels take 3 segments + the pool's)
N_SAVED = 10  # y, mean, invstd, a, c (plain units), z, mean, invstd, a, c (pool unit)

# first conv weight of the group -> its packed [C_in, C_tot] weights (BN-folded in FOLD_CACHE),
# rebuilt when one of the tensors they were made from changed.
PACK_CACHE = ParamCache("conv1x1_multi.pack")
FOLD_CACHE = ParamCache("conv1x1_multi.fold")


class _Unit(NamedTuple):
    weight: Tensor
    gamma: Optional[Tensor]
    beta: Optional[Tensor]
    mean: Optional[Tensor]  # running (train: updated in place) or eval statistics
    var: Optional[Tensor]
    offset: int  # -1: an intermediate
    eps: float
    momentum: float

    @property
    def c(self) -> int:
        return self.weight.shape[0]


def _units(weights, bn_weights, bn_biases, means, vars_, offsets, flags, eps=None,
           momentum=None):
    """The flat lists back into units, in plan order (a list given as None: not wanted)."""
    lists = [iter(t) if t is not None else None for t in (bn_weights, bn_biases, means, vars_)]
    bits = (HAS_GAMMA, HAS_BETA, HAS_RUNNING, HAS_RUNNING)
    units = []
    for i, w in enumerate(weights):
        g, b, m, v = (next(it) if it is not None and flags[i] & bit else None
                      for it, bit in zip(lists, bits))
        units.append(_Unit(w, g, b, m, v, offsets[i], eps[i] if eps is not None else 0.0,
                           momentum[i] if momentum is not None else 0.0))
    return units


def _split(units, has_pool):
    return (units[:-1], units[-1]) if has_pool else (units, None)


def _pack(weights, dtype, scales=None):
    """[C_in, C_tot] contiguous: column block u = weight_u^T (times scales[u] per column). One
    cat writes (and casts) every block: one launch per group, not one per weight."""
    c_in = weights[0].shape[1]
    c_tot = sum(w.shape[0] for w in weights)
    packed = torch.empty((c_in, c_tot), device=weights[0].device, dtype=dtype)
    with torch.no_grad():
        cols = [w.detach().reshape(w.shape[0], c_in).t() for w in weights]
        if scales is not None:
            cols = [col.float() * s[None, :] for col, s in zip(cols, scales)]
        torch.cat(cols, dim=1, out=packed)
    return packed


def _packed(weights, dtype):
    key = version_key(*weights)
    key = None if key is None else key + (dtype,)
    return PACK_CACHE.get(weights[0], key, lambda: _pack(weights, dtype))


def _gemm_weight(packed):
    """(C_tot, C_in, 1, 1) view of the packed [C_in, C_tot] weight (for shape checks / dgrad)."""
    return packed.t()[:, :, None, None]


def _fill(vecs, total, device):
    """Concatenate 1-D float32 tensors into one new one (slices of one buffer)."""
    buf = torch.empty(total, device=device, dtype=torch.float32)
    lo = 0
    for v in vecs:
        buf[lo:lo + v.numel()].copy_(v)
        lo += v.numel()
    return buf


def _affine(u):
    return eval_affine(u.gamma, u.beta, u.mean, u.var, u.eps)


def _finalize_unit(u, psum, pm2, count):
    return bn_finalize(psum, pm2, count, eps=u.eps, momentum=u.momentum, gamma=u.gamma,
                       beta=u.beta, running_mean=u.mean, running_var=u.var)


def _train_stats(units, psum, pm2, count, sizes, device):
    """bn_finalize for the plain units' columns of the GEMM partials -> (mean, invstd, a, c)
    float32 [sum(sizes)]; running stats updated in place. One launch (each unit's BN tensors
    a segment) when the units agree on eps, momentum and which tensors they have."""
    total = sum(sizes)
    u0 = units[0]
    same = (len(units) <= MAX_SEGMENTS and len({u.eps for u in units}) == 1
            and len({u.momentum for u in units}) == 1
            and len({(u.gamma is None, u.beta is None, u.mean is None) for u in units}) == 1
            and (u0.gamma is None) == (u0.beta is None))
    if same:  # a pool unit's trailing columns are past the segments (and ignored)
        def segs(f):
            return None if f(u0) is None else [f(u).detach() for u in units]
        stats = bn_finalize(psum, pm2, count, eps=u0.eps, momentum=u0.momentum,
                            gamma=segs(lambda u: u.gamma), beta=segs(lambda u: u.beta),
                            running_mean=segs(lambda u: u.mean),
                            running_var=segs(lambda u: u.var))
        return stats if psum.shape[1] == total else tuple(t[:total] for t in stats)
    parts, lo = [], 0
    for u, s in zip(units, sizes):
        parts.append(_finalize_unit(u, psum[:, lo:lo + s].contiguous(),
                                    pm2[:, lo:lo + s].contiguous(), count))
        lo += s
    return tuple(_fill([p[i] for p in parts], total, device) for i in range(4))


def _dests(x, out, plain):
    """Destination views of the plain units (finals: slices of out; else new tensors), and the
    intermediates among them."""
    n, _, h, w = x.shape
    views, inters = [], []
    for u in plain:
        if u.offset >= 0:
            views.append(out[:, u.offset:u.offset + u.c])
        else:
            t = torch.empty((n, u.c, h, w), device=x.device, dtype=x.dtype, memory_format=CL)
            views.append(t)
            inters.append(t)
    return views, inters


def _forward(x, out, plain, pool, training, packed):
    """Train or eval-with-grad forward: (intermediates, y, (mean, invstd, a, c) of the plain
    units, z = the pooled pool columns, (mean, invstd, a, c) of the pool unit)."""
    n, _, h, w = x.shape
    count = n * h * w
    sizes = [u.c for u in plain]
    c_main = sum(sizes)
    wv = _gemm_weight(packed)
    if training:
        y, psum, pm2 = conv2d_fwd(x, wv, stats=True, packed=packed)
        stats = _train_stats(plain, psum, pm2, count, sizes, x.device)
    else:
        y = conv2d_fwd(x, wv, packed=packed)
        aff = [_affine(u) for u in plain]
        stats = tuple(_fill([p[i] for p in aff], c_main, x.device) for i in range(4))
    views, inters = _dests(x, out, plain)
    routed_apply(y[:, :c_main], stats[2], stats[3], views, sizes)
    z = pstats = None
    if pool is not None:
        ypool = y[:, c_main:]
        if training:
            z, ps, pm = avg_pool3x3(ypool, stats=True)
            pstats = _finalize_unit(pool, ps, pm, count)
        else:
            z = avg_pool3x3(ypool)
            pstats = _affine(pool)
        bn_relu_apply(z, pstats[2].contiguous(), pstats[3].contiguous(),
                      out=out[:, pool.offset:pool.offset + pool.c])
    return inters, y, stats, z, pstats


def _forward_eval_folded(x, out, units, plain, pool):
    """Eval, nothing saved: folded weights (cached per parameter version), one routed GEMM
    with bias + ReLU, the pool with bias + ReLU into its slice. Returns the intermediates."""
    key = version_key(*[t for u in units for t in (u.weight, u.gamma, u.beta, u.mean, u.var)])
    key = None if key is None else key + (tuple(u.eps for u in units), pool is not None,
                                          x.dtype)
    sizes = [u.c for u in plain]
    c_main = sum(sizes)

    def make():
        with torch.no_grad():
            aff = [_affine(u) for u in units]
            packed = _pack([u.weight for u in units], x.dtype, scales=[p[2] for p in aff])
            biases = [p[3] for p in aff[:len(plain)]]
            if pool is not None:  # the pool's bias comes after the pool
                biases.append(torch.zeros(pool.c, device=x.device))
            bias = _fill(biases, packed.shape[1], x.device)
            return packed, bias, aff[-1][3] if pool is not None else None
    packed, bias, pool_bias = FOLD_CACHE.get(units[0].weight, key, make)
    n, _, h, w = x.shape
    views, inters = _dests(x, out, plain)
    if pool is not None:
        raw = torch.empty((n, pool.c, h, w), device=x.device, dtype=x.dtype, memory_format=CL)
        pad = MAX_PLAIN - len(views)
        views, sizes = views + [None] * pad + [raw], sizes + [0] * pad + [pool.c]
    gemm1x1_routed(x, packed, views, sizes, bias=bias, relu_end=c_main)
    if pool is not None:
        avg_pool3x3(raw, out=out[:, pool.offset:pool.offset + pool.c], bias=pool_bias,
                    relu=True)
    return inters


# ---- registered ops -------------------------------------------------------------------------

@torch.library.custom_op(name("conv1x1_multi_triton_fwd"),
                         mutates_args=("out", "running_means", "running_vars"))
def conv1x1_multi_triton_fwd(
        x: Tensor, out: Optional[Tensor], weights: list[Tensor], bn_weights: list[Tensor],
        bn_biases: list[Tensor], running_means: list[Tensor], running_vars: list[Tensor],
        eval_means: list[Tensor], eval_vars: list[Tensor], offsets: list[int],
        flags: list[int], eps: list[float], momentum: list[float], has_pool: bool,
        training: bool, save: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
           Tensor, Tensor, Tensor]:
    """The group's forward (module doc) writing the final units into `out`: returns the
    intermediates of the first MAX_PLAIN units (absent for a final unit or no unit), then,
    when `save`, what backward needs: y (the dense pre-BN GEMM output, all columns), mean,
    invstd, a, c (float32, the plain units' columns), z (the pooled pool columns), and the pool
    unit's mean, invstd, a, c (absent without a pool unit or without `save`)."""
    means, vars_ = (running_means, running_vars) if training else (eval_means, eval_vars)
    units = _units(weights, bn_weights, bn_biases, means, vars_, offsets, flags, eps, momentum)
    plain, pool = _split(units, has_pool)
    if not training and not save:
        inters, saved = _forward_eval_folded(x, out, units, plain, pool), ()
    else:
        inters, y, stats, z, pstats = _forward(x, out, plain, pool, training,
                                               _packed(weights, x.dtype))
        saved = ((y, *stats) + ((z, *pstats) if pool is not None else ())) if save else ()
    inters = list(inters)
    slots = [inters.pop(0) if i < len(plain) and plain[i].offset < 0 else absent(x)
             for i in range(MAX_PLAIN)]
    saved = saved + tuple(absent(x) for _ in range(N_SAVED - len(saved)))
    return (*slots, *saved)


@conv1x1_multi_triton_fwd.register_fake
def _(x, out, weights, bn_weights, bn_biases, running_means, running_vars, eval_means,
      eval_vars, offsets, flags, eps, momentum, has_pool, training, save):
    n, _, h, w = x.shape
    sizes = [wt.shape[0] for wt in weights]
    n_plain = len(weights) - int(has_pool)

    def act(c):
        return torch.empty((n, c, h, w), dtype=x.dtype, device=x.device, memory_format=CL)

    def vecs(c):
        return [x.new_empty((c,), dtype=torch.float32) for _ in range(4)]
    slots = [act(sizes[i]) if i < n_plain and offsets[i] < 0 else absent(x)
             for i in range(MAX_PLAIN)]
    saved = []
    if save:
        saved = [act(sum(sizes)), *vecs(sum(sizes[:n_plain]))]
        if has_pool:
            saved += [act(sizes[-1]), *vecs(sizes[-1])]
    saved += [absent(x) for _ in range(N_SAVED - len(saved))]
    return (*slots, *saved)


@torch.library.custom_op(name("conv1x1_multi_triton_bwd"), mutates_args=())
def conv1x1_multi_triton_bwd(
        grad_out: Optional[Tensor], grad_inters: list[Tensor], x: Tensor,
        weights: list[Tensor], bn_weights: list[Tensor], y: Tensor, mean: Tensor,
        invstd: Tensor, a: Tensor, c: Tensor, z: Tensor, pool_mean: Tensor,
        pool_invstd: Tensor, pool_a: Tensor, pool_c: Tensor, offsets: list[int],
        flags: list[int], has_pool: bool, training: bool, needs: list[int]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(grad_x, grad_w, grad_gamma, grad_beta): grad_w the float32 (C_tot, C_in, 1, 1)
    gradient of the concatenated weights, grad_gamma / grad_beta float32 [C_tot] (plan order,
    every unit's columns). grad_out: the gradient of the whole `out` (the final units read
    their slices), grad_inters: those of the intermediates (plan order). needs = [need_x,
    need_w]: grad_x / grad_w are absent when not needed."""
    need_x, need_w = (bool(v) for v in needs)
    units = _units(weights, bn_weights, None, None, None, offsets, flags)
    plain, pool = _split(units, has_pool)
    n, _, h, w = x.shape
    c_main = sum(u.c for u in plain)
    c_tot = c_main + (pool.c if pool is not None else 0)
    grad_y = (torch.empty((n, c_tot, h, w), device=x.device, dtype=x.dtype, memory_format=CL)
              if need_x or need_w else None)
    grad_gamma = torch.empty(c_tot, device=x.device, dtype=torch.float32)
    grad_beta = torch.empty(c_tot, device=x.device, dtype=torch.float32)
    inters = iter(grad_inters)
    lo = 0
    for u in plain:
        g = grad_out[:, u.offset:u.offset + u.c] if u.offset >= 0 else next(inters)
        seg = slice(lo, lo + u.c)
        k1, k2, k3, _, _ = bn_relu_bwd_coefficients(
            g, y[:, seg], a[seg], c[seg], mean[seg], invstd[seg], u.gamma, training=training,
            grads_out=(grad_gamma[seg], grad_beta[seg]))
        if grad_y is not None:
            bn_relu_bwd_apply(g, y[:, seg], a[seg], c[seg], k1, k2, k3, shift=mean[seg],
                              out=grad_y[:, seg])
        lo += u.c
    if pool is not None:
        g = grad_out[:, pool.offset:pool.offset + pool.c]
        k1, k2, k3, _, _ = bn_relu_bwd_coefficients(
            g, z, pool_a, pool_c, pool_mean, pool_invstd, pool.gamma, training=training,
            grads_out=(grad_gamma[c_main:], grad_beta[c_main:]))
        if grad_y is not None:
            grad_z = bn_relu_bwd_apply(g, z, pool_a, pool_c, k1, k2, k3, shift=pool_mean)
            avg_pool3x3(grad_z, out=grad_y[:, c_main:])  # the pool is self-adjoint
    grad_x, grad_w = absent(x), absent(x)
    if need_x:
        packed = _packed(weights, grad_y.dtype)
        grad_x = conv2d_dgrad(grad_y, _gemm_weight(packed), (h, w), packed=packed)
    if need_w:  # in the weights' dtype when they share one: no per-unit cast afterwards
        grad_w = conv2d_wgrad(x, grad_y, (1, 1), out=x.new_empty(
            (c_tot, x.shape[1], 1, 1), dtype=_grad_w_dtype(weights)))
    return grad_x, grad_w, grad_gamma, grad_beta


def _grad_w_dtype(weights):
    dtypes = {w.dtype for w in weights}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


@conv1x1_multi_triton_bwd.register_fake
def _(grad_out, grad_inters, x, weights, bn_weights, y, mean, invstd, a, c, z, pool_mean,
      pool_invstd, pool_a, pool_c, offsets, flags, has_pool, training, needs):
    c_tot = sum(wt.shape[0] for wt in weights)
    grad_x = (torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=CL)
              if needs[0] else absent(x))
    grad_w = (x.new_empty((c_tot, x.shape[1], 1, 1), dtype=_grad_w_dtype(weights)) if needs[1]
              else absent(x))
    return (grad_x, grad_w, x.new_empty((c_tot,), dtype=torch.float32),
            x.new_empty((c_tot,), dtype=torch.float32))
