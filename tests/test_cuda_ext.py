"""The CUDA C++ extension (csrc/ -> inception_fast._C) and the ops built on it.

CPU (always run):
- the torch reference of every kernel (inception_fast/ops/csrc_reference.py) against torch's own
  ops and autograd: this pins down the maths each CUDA kernel implements;
- the autograd Functions of conv_bn_relu_cuda / grid_reduction run on CPU with that reference as
  their kernel set, against conv_bn_relu_reference / grid_reduction_reference (forward, input /
  weight / gamma / beta gradients, running statistics, output slices);
- dispatch and error paths (backend="cuda" without a GPU says why; bad shapes / dtypes);
- the extension compiles and imports wherever a CUDA toolkit and a CUDA build of torch exist.
GPU (`gpu` marker): every kernel against the reference, and the ops against the torch
reference, at Inception-v3 shapes and odd ones, fp32 / fp16 / bf16.

Low-precision tolerance: the reference is computed in fp64 from the same (rounded) inputs, and
our error must be at most `factor` times torch's own error (cuDNN in the same dtype) against
that fp64 result, plus a tiny floor. Both accumulate in fp32 and round the output to the
dtype, so the output rounding dominates both errors: factor 2 for single kernels, 4 for whole
forward+backward chains, whose intermediate roundings (conv output, gradients) differ in place.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from inception_fast import backends, ext
from inception_fast.backends import BackendUnavailableError
from inception_fast.ops import conv_bn_relu_cuda as cbr_cuda
from inception_fast.ops import csrc_reference as R
from inception_fast.ops.conv_bn_relu import conv_bn_relu, conv_bn_relu_reference
from inception_fast.ops.grid_reduction import (grid_reduction, grid_reduction_cuda,
                                               grid_reduction_reference)

CL = torch.channels_last
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture
def ref_kernels(monkeypatch):
    """Run the cuda-backend Functions with the torch reference kernels (CPU tensors)."""
    monkeypatch.setattr(cbr_cuda, "kernels_override", R)
    return R


def bn_params(c, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    gamma = (torch.rand(c, generator=g) + 0.5).to(device)
    beta = (torch.randn(c, generator=g) * 0.2).to(device)
    rm = (torch.randn(c, generator=g) * 0.1).to(device)
    rv = (torch.rand(c, generator=g) + 0.5).to(device)
    return gamma, beta, rm, rv


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / (b.double().abs().max() + 1e-12)).item()


def assert_lowp_close(ours, torch_lowp, ref64, factor=2.0, floor=1e-5, what=""):
    scale = ref64.abs().max().item() + 1e-12
    e_ours = (ours.double() - ref64).abs().max().item()
    e_torch = (torch_lowp.double() - ref64).abs().max().item()
    assert e_ours <= factor * e_torch + floor * scale, (
        f"{what}: max error {e_ours:.3g} vs fp64, torch's own {e_torch:.3g} (scale {scale:.3g})")


# ---------------------------------------------------------------- CPU: reference maths vs torch

@pytest.mark.parametrize("ties", [False, True])
def test_reference_pool_and_argmax_match_torch(ties):
    torch.manual_seed(0)
    x = torch.randint(0, 3, (2, 5, 9, 11)).float() if ties else torch.randn(2, 5, 9, 11)
    out = torch.full((2, 12, 4, 5), 7.0)
    argmax = torch.empty(2, 5, 4, 5, dtype=torch.uint8)
    R.grid_reduce(x, None, None, 0, out, 4, argmax)
    v, idx = F.max_pool2d(x, 3, 2, return_indices=True)
    torch.testing.assert_close(out[:, 4:9], v, rtol=0, atol=0)
    assert (out[:, :4] == 7).all() and (out[:, 9:] == 7).all()
    assert int(argmax.max()) <= 8
    torch.testing.assert_close(R.pool_tap_from_index(idx, 11), argmax.long(), rtol=0, atol=0)


@pytest.mark.parametrize("hw", [(9, 11), (35, 35), (3, 4)])
def test_reference_maxpool_backward_matches_autograd(hw):
    torch.manual_seed(1)
    x = torch.randn(2, 3, *hw, requires_grad=True)
    v, idx = F.max_pool2d(x, 3, 2, return_indices=True)
    g = torch.randn(2, 6, *v.shape[2:])  # the pool's gradient is channels [2, 5) of a wider one
    (expected,) = torch.autograd.grad(v, x, g[:, 2:5])
    argmax = R.pool_tap_from_index(idx, hw[1]).to(torch.uint8)
    dx = torch.empty(2, 3, *hw)
    R.maxpool_bwd(g, 2, argmax, dx, False)
    torch.testing.assert_close(dx, expected, rtol=1e-6, atol=1e-6)
    base = torch.randn(2, 3, *hw)
    dx = base.clone()
    R.maxpool_bwd(g, 2, argmax, dx, True)
    torch.testing.assert_close(dx, base + expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_reference_bn_kernels_match_torch_batch_norm(training):
    torch.manual_seed(2)
    N, C, H, W = 3, 6, 5, 7
    y = torch.randn(N, C, H, W) * 2 + 0.5
    gamma, beta, rm, rv = bn_params(C)
    count = N * H * W
    if training:
        s = torch.zeros(C, dtype=torch.float64)
        ss = torch.zeros_like(s)
        R.bn_stats(y, s, ss)
        mean, var, invstd, scale, shift = R.bn_finalize(s, ss, count, 1e-3, gamma, beta)
        var_t, mean_t = torch.var_mean(y, (0, 2, 3), unbiased=False)
        torch.testing.assert_close(mean, mean_t, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(var, var_t, rtol=1e-5, atol=1e-6)
    else:
        mean, invstd, scale, shift = cbr_cuda.eval_affine(gamma, beta, rm, rv, 1e-3)
    out = torch.zeros(N, C + 3, H, W)
    R.bn_apply_relu(y, scale, shift, out, 2)
    yr = y.clone().requires_grad_()
    gr, br = gamma.clone().requires_grad_(), beta.clone().requires_grad_()
    expected = F.relu(F.batch_norm(yr, rm.clone(), rv.clone(), gr, br, training, 0.1, 1e-3))
    torch.testing.assert_close(out[:, 2:2 + C], expected, rtol=1e-5, atol=1e-5)
    # backward: gradient of the slice, read from a wider gradient tensor at offset 2
    g = torch.randn(N, C + 3, H, W)
    dy_t, dg_t, db_t = torch.autograd.grad(expected, (yr, gr, br), g[:, 2:2 + C])
    sum_g = torch.zeros(C, dtype=torch.float64)
    sum_gx = torch.zeros_like(sum_g)
    R.bn_relu_bwd_reduce(g, 2, y, scale, shift, mean, invstd, sum_g, sum_gx)
    dy = R.bn_relu_bwd_apply(g, 2, y, scale, shift, mean, invstd, sum_g, sum_gx, count, training)
    torch.testing.assert_close(dy, dy_t, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sum_gx.float(), dg_t, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sum_g.float(), db_t, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k,pad", [((1, 7), 3), ((7, 1), 3), ((1, 3), 1), ((3, 1), 1), ((1, 5), 0)])
def test_reference_asym_conv_epilogues(k, pad):
    torch.manual_seed(3)
    x = torch.randn(2, 5, 8, 9)
    w = torch.randn(4, 5, *k) * 0.3
    padding = (pad, 0) if k[1] == 1 else (0, pad)
    y = F.conv2d(x, w, None, 1, padding)
    out = torch.zeros(2, 7, *y.shape[2:])
    s = torch.zeros(4, dtype=torch.float64)
    ss = torch.zeros_like(s)
    R.asym_conv(x, w, pad, out, 1, s, ss)
    torch.testing.assert_close(out[:, 1:5], y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s, y.double().sum((0, 2, 3)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ss, (y.double() ** 2).sum((0, 2, 3)), rtol=1e-5, atol=1e-5)
    scale, shift = torch.rand(4) + 0.5, torch.randn(4)
    R.asym_conv(x, w, pad, out, 3, None, None, scale, shift)
    expected = F.relu(y * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))
    torch.testing.assert_close(out[:, 3:7], expected, rtol=1e-5, atol=1e-5)


def test_grid_reduction_reference_is_cat_of_conv_and_pool():
    torch.manual_seed(4)
    x = torch.randn(2, 6, 9, 11)
    w = torch.randn(5, 6, 3, 3) * 0.3
    gamma, beta, rm, rv = bn_params(5)
    other = torch.randn(2, 3, 4, 5)  # the third branch (Mixed_6a's branch3x3dbl)
    out = torch.empty(2, 5 + 3 + 6, 4, 5)
    out[:, 5:8] = other
    grid_reduction_reference(x, w, gamma, beta, rm.clone(), rv.clone(), out=out, conv_offset=0,
                             pool_offset=8, training=False)
    conv = F.relu(F.batch_norm(F.conv2d(x, w, None, 2), rm, rv, gamma, beta, False, 0.1, 1e-3))
    expected = torch.cat([conv, other, F.max_pool2d(x, 3, 2)], 1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------- CPU: the cuda-backend Functions on reference kernels

def _run_both(fn_ours, fn_ref, inputs, out_shape, out_mode):
    """Run the op two ways on fresh copies; returns [(out, grads, running)] for ours and ref."""
    results = []
    for fn in (fn_ours, fn_ref):
        leaves = [t.detach().clone().requires_grad_(t.requires_grad) if t is not None else None
                  for t in inputs["leaves"]]
        rm, rv = inputs["rm"].clone(), inputs["rv"].clone()
        out = None
        if out_mode != "none":
            out = torch.full(out_shape, 5.0, dtype=leaves[0].dtype)
            if out_mode == "channels_last":
                out = out.to(memory_format=CL)
        res = fn(*leaves, rm, rv, out)
        full = res if out is None else out
        gout = torch.randn(full.shape, generator=torch.Generator().manual_seed(9)).to(full.dtype)
        want = [t for t in leaves if t is not None and t.requires_grad]
        grads = torch.autograd.grad((full.float() * gout.float()).sum(), want)
        results.append((full.detach(), grads, (rm, rv)))
    return results


CONV_CASES = [  # (C_in, C_out, H, W, kernel, stride, padding)
    (6, 5, 9, 11, (1, 7), (1, 1), (0, 3)),
    (6, 5, 9, 11, (7, 1), (1, 1), (3, 0)),
    (4, 3, 8, 8, (1, 3), (1, 1), (0, 1)),
    (4, 3, 8, 8, (3, 1), (1, 1), (1, 0)),
    (5, 7, 7, 9, (3, 3), (2, 2), (0, 0)),
    (5, 7, 7, 9, (1, 1), (1, 1), (0, 0)),
    (3, 4, 6, 5, (5, 5), (1, 1), (2, 2)),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[4][0]}x{c[4][1]}s{c[5][0]}")
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("out_mode", ["none", "channels_last", "contiguous"])
def test_conv_bn_relu_cuda_function_on_cpu(ref_kernels, case, training, out_mode):
    ci, co, h, w, k, s, p = case
    torch.manual_seed(5)
    x = torch.randn(2, ci, h, w, requires_grad=True)
    wt = (torch.randn(co, ci, *k) * 0.3).requires_grad_()
    gamma, beta, rm, rv = bn_params(co)
    oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1

    def make(fn):
        def run(x, wt, gamma, beta, rm, rv, out):
            return fn(x, wt, gamma, beta, rm, rv, stride=s, padding=p, eps=1e-3, momentum=0.1,
                      training=training, out=out, out_offset=2)
        return run

    inputs = dict(leaves=[x, wt, gamma.requires_grad_(), beta.requires_grad_()], rm=rm, rv=rv)
    ours, ref = _run_both(make(cbr_cuda.conv_bn_relu_cuda), make(conv_bn_relu_reference), inputs,
                          (2, co + 4, oh, ow), out_mode)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-4, atol=1e-5)
    for a, b in zip(ours[1], ref[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours[2][0], ref[2][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours[2][1], ref[2][1], rtol=1e-5, atol=1e-6)


def test_conv_bn_relu_cuda_two_branches_share_one_output(ref_kernels):
    """Two ops write adjacent slices of one tensor; gradients reach both (copy-free concat)."""
    torch.manual_seed(6)
    outs = []
    for fn in (cbr_cuda.conv_bn_relu_cuda, conv_bn_relu_reference):
        torch.manual_seed(6)
        x = torch.randn(2, 4, 8, 8, requires_grad=True)
        w1 = torch.randn(3, 4, 1, 3, requires_grad=True)
        w2 = torch.randn(5, 4, 3, 1, requires_grad=True)
        ps = [bn_params(3, seed=1), bn_params(5, seed=2)]
        out = torch.empty(2, 8, 8, 8).to(memory_format=CL)
        fn(x, w1, ps[0][0], ps[0][1], ps[0][2], ps[0][3], padding=(0, 1), training=True,
           out=out, out_offset=0)
        fn(x, w2, ps[1][0], ps[1][1], ps[1][2], ps[1][3], padding=(1, 0), training=True,
           out=out, out_offset=3)
        (out * torch.arange(8.0).view(1, -1, 1, 1)).sum().backward()
        outs.append((out.detach(), x.grad, w1.grad, w2.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("has_conv", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_grid_reduction_cuda_function_on_cpu(ref_kernels, dtype, has_conv, training):
    """bf16 takes the fused conv+pool route, fp32 the cuDNN-conv + pool-kernel route."""
    torch.manual_seed(7)
    x = torch.randn(2, 6, 9, 11, dtype=dtype, requires_grad=True)
    wt = (torch.randn(5, 6, 3, 3) * 0.3).to(dtype).requires_grad_() if has_conv else None
    gamma, beta, rm, rv = bn_params(5)

    def make(fn):
        def run(x, wt, gamma, beta, rm, rv, out):
            return fn(x, wt, gamma, beta, rm, rv, out=out, conv_offset=1, pool_offset=8,
                      training=training)
        return run

    gamma.requires_grad_(has_conv)  # unused without the conv branch
    beta.requires_grad_(has_conv)
    inputs = dict(leaves=[x, wt, gamma, beta], rm=rm, rv=rv)
    ours, ref = _run_both(make(grid_reduction_cuda), make(grid_reduction_reference), inputs,
                          (2, 15, 4, 5), "channels_last")
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=4e-2)
    torch.testing.assert_close(ours[0].float(), ref[0].float(), **tol)
    assert (ours[0][:, 0] == 5).all() and (ours[0][:, 6:8] == 5).all()  # other slices untouched
    for a, b in zip(ours[1], ref[1]):
        torch.testing.assert_close(a.float(), b.float(), **tol)
    torch.testing.assert_close(ours[2][0], ref[2][0], rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------- CPU: dispatch and error paths

@pytest.mark.skipif(HAS_CUDA, reason="checks the message given when there is no GPU")
def test_cuda_backend_without_gpu_says_why():
    why = backends.why_unavailable("cuda")
    assert why is not None and "no CUDA GPU" in why
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
        backends.check("cuda")


def test_cuda_backend_with_cpu_tensors_is_refused():
    x, w = torch.randn(1, 4, 8, 8), torch.randn(3, 4, 1, 7)
    gamma, beta, rm, rv = bn_params(3)
    with pytest.raises(BackendUnavailableError, match="needs CUDA tensors"):
        conv_bn_relu(x, w, gamma, beta, rm, rv, padding=(0, 3), backend="cuda")
    out = torch.empty(1, 7, 3, 3)
    with pytest.raises(BackendUnavailableError, match="needs CUDA tensors"):
        grid_reduction(x, None, None, None, None, None, out=out, pool_offset=3, backend="cuda")


def test_cuda_backend_rejects_float64_and_mixed_dtypes():
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    w = torch.randn(3, 4, 1, 7, dtype=torch.float64)
    gamma, beta, rm, rv = bn_params(3)
    with pytest.raises(TypeError, match="float64"):
        cbr_cuda.conv_bn_relu_cuda(x, w, gamma, beta, rm, rv, padding=(0, 3))
    with pytest.raises(TypeError, match="weight dtype"):
        cbr_cuda.conv_bn_relu_cuda(x.float(), w.half(), gamma, beta, rm, rv, padding=(0, 3))


def test_missing_extension_raises_backend_unavailable(monkeypatch):
    def fail(*a, **k):
        raise RuntimeError("extension not built and cannot be built here: no CUDA toolkit")

    monkeypatch.setattr(ext, "load", fail)
    with pytest.raises(BackendUnavailableError, match="no CUDA toolkit"):
        cbr_cuda.kernels()


def test_eval_without_running_stats_is_an_error(ref_kernels):
    x, w = torch.randn(1, 4, 8, 8), torch.randn(3, 4, 1, 3)
    with pytest.raises(ValueError, match="running_mean"):
        cbr_cuda.conv_bn_relu_cuda(x, w, None, None, None, None, padding=(0, 1), training=False)


def test_training_with_one_value_per_channel_is_an_error(ref_kernels):
    x, w = torch.randn(1, 4, 1, 1), torch.randn(3, 4, 1, 1)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        cbr_cuda.conv_bn_relu_cuda(x, w, None, None, None, None, training=True)


@pytest.mark.parametrize("wshape,stride,padding,hw,expected", [
    ((8, 8, 1, 7), (1, 1), (0, 3), (17, 17), True),
    ((8, 8, 7, 1), (1, 1), (3, 0), (17, 17), True),
    ((8, 8, 1, 3), (1, 1), (0, 1), (8, 8), True),
    ((8, 8, 1, 7), (1, 1), (1, 3), (17, 17), False),   # padding on the other axis too
    ((8, 8, 1, 7), (2, 2), (0, 3), (17, 17), False),   # strided
    ((8, 8, 3, 3), (1, 1), (1, 1), (17, 17), False),   # not asymmetric
    ((8, 8, 1, 9), (1, 1), (0, 4), (17, 17), False),   # more taps than the kernel holds
    ((8, 8, 1, 7), (1, 1), (0, 3), (17, 200), False),  # line longer than the tile
])
def test_asym_conv_dispatch(wshape, stride, padding, hw, expected):
    assert cbr_cuda.use_asym_conv(R, (2, 8) + hw, wshape, stride, padding) is expected


@pytest.mark.parametrize("kwargs,match", [
    (dict(weight=None, pool_offset=None), "nothing to compute"),
    (dict(pool_offset=10), "does not fit"),
    (dict(conv_offset=0, pool_offset=3), "overlap"),
    (dict(weight=torch.randn(5, 6, 1, 3)), "weight must be"),
    (dict(x=torch.randn(2, 6, 2, 9)), "at least 3x3"),
    (dict(out=torch.empty(2, 15, 5, 5)), "expected"),
])
def test_grid_reduction_input_errors(kwargs, match):
    args = dict(x=torch.randn(2, 6, 9, 11), weight=torch.randn(5, 6, 3, 3),
                out=torch.empty(2, 15, 4, 5), conv_offset=1, pool_offset=8)
    args.update(kwargs)
    gamma, beta, rm, rv = bn_params(5)
    with pytest.raises((ValueError, TypeError), match=match):
        grid_reduction(args["x"], args["weight"], gamma, beta, rm, rv, out=args["out"],
                       conv_offset=args["conv_offset"], pool_offset=args["pool_offset"])


# ------------------------------------------------------- the extension compiles and imports here

def test_extension_builds_and_imports(extension):
    for name in ("asym_conv", "grid_reduce", "maxpool_bwd", "bn_stats", "reduce_partials",
                 "bn_finalize", "bn_apply_relu", "bn_relu_bwd_reduce", "bn_relu_bwd_apply"):
        assert callable(getattr(extension, name)), name
    # The Python reference / dispatch use the same tile limits as the C++ kernel.
    assert extension.asym_conv_max_padded_line() == R.asym_conv_max_padded_line()
    assert extension.asym_conv_max_taps() == R.asym_conv_max_taps()


@pytest.mark.skipif(HAS_CUDA, reason="checks the messages for CPU tensors")
def test_extension_rejects_cpu_tensors_clearly(extension):
    s = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="bn_stats: y must be a CUDA tensor"):
        extension.bn_stats(torch.zeros(1, 4, 3, 3), s, s.clone())
    with pytest.raises(RuntimeError, match="asym_conv: input must be a CUDA tensor"):
        extension.asym_conv(torch.zeros(1, 4, 3, 3), torch.zeros(2, 4, 1, 3), 1,
                            torch.zeros(1, 2, 3, 3), 0)


# --------------------------------------------------------------------------------- GPU numerics

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _cl(t):
    return t.contiguous(memory_format=CL)


ASYM_SHAPES = [  # (N, C_in, C_out, H, W, kernel, pad)
    (2, 128, 128, 17, 17, (1, 7), 3),   # Mixed_6b.branch7x7_2
    (2, 160, 192, 17, 17, (7, 1), 3),   # Mixed_6c.branch7x7_3
    (2, 384, 384, 8, 8, (1, 3), 1),     # Mixed_7b.branch3x3_2a
    (2, 384, 384, 8, 8, (3, 1), 1),     # Mixed_7b.branch3x3_2b
    (3, 20, 36, 9, 13, (1, 5), 2),      # odd channels / sizes
    (1, 12, 70, 11, 6, (7, 1), 1),      # output shorter than input, C_out not a tile multiple
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ASYM_SHAPES,
                         ids=lambda s: f"{s[1]}x{s[3]}x{s[4]}_{s[5][0]}x{s[5][1]}")
def test_gpu_asym_conv_kernel(extension, dtype, shape):
    N, ci, co, h, w, k, pad = shape
    torch.manual_seed(10)
    x = _cl(torch.randn(N, ci, h, w, device="cuda").to(dtype))
    wt = (torch.randn(co, ci, *k, device="cuda") / (ci * k[0] * k[1]) ** 0.5).to(dtype)
    padding = (pad, 0) if k[1] == 1 else (0, pad)
    ref64 = F.conv2d(x.double(), wt.double(), None, 1, padding)
    torch_lowp = F.conv2d(x, wt, None, 1, padding)
    out = _cl(torch.full((N, co + 5, *ref64.shape[2:]), 3.0, device="cuda", dtype=dtype))
    s = torch.zeros(co, dtype=torch.float64, device="cuda")
    ss = torch.zeros_like(s)
    extension.asym_conv(x, wt, pad, out, 2, s, ss)
    assert_lowp_close(out[:, 2:2 + co], torch_lowp, ref64, what="asym_conv")
    assert (out[:, :2] == 3).all() and (out[:, 2 + co:] == 3).all()
    torch.testing.assert_close(s, ref64.sum((0, 2, 3)), rtol=1e-3, atol=1e-3 * ref64.numel() ** 0.5)
    torch.testing.assert_close(ss, (ref64 ** 2).sum((0, 2, 3)), rtol=2e-3, atol=1e-2)
    # eval epilogue: BN folded + ReLU
    scale = torch.rand(co, device="cuda") + 0.5
    shift = torch.randn(co, device="cuda") * 0.1
    sc, sh = scale.double().view(1, -1, 1, 1), shift.double().view(1, -1, 1, 1)
    extension.asym_conv(x, wt, pad, out, 5, None, None, scale, shift)
    assert_lowp_close(out[:, 5:5 + co], F.relu(torch_lowp * sc.to(dtype) + sh.to(dtype)),
                      F.relu(ref64 * sc + sh), what="asym_conv eval epilogue")


GRID_SHAPES = [  # (N, C_in, C_out, H, W)
    (2, 288, 384, 35, 35),   # Mixed_6a: branch3x3 + pool
    (3, 20, 24, 10, 13),     # odd channels / sizes
    (1, 96, 72, 17, 17),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", GRID_SHAPES, ids=lambda s: f"{s[1]}to{s[2]}_{s[3]}x{s[4]}")
def test_gpu_grid_reduce_fused_kernel(extension, dtype, shape):
    N, ci, co, h, w = shape
    torch.manual_seed(11)
    x = _cl(torch.randn(N, ci, h, w, device="cuda").to(dtype))
    wt = (torch.randn(co, ci, 3, 3, device="cuda") / (9 * ci) ** 0.5).to(dtype)
    ref64 = F.conv2d(x.double(), wt.double(), None, 2)
    pool_t, idx = F.max_pool2d(x, 3, 2, return_indices=True)
    oh, ow = ref64.shape[2:]
    out = _cl(torch.full((N, co + 7 + ci, oh, ow), 3.0, device="cuda", dtype=dtype))
    y = _cl(torch.empty(N, co, oh, ow, device="cuda", dtype=dtype))
    argmax = _cl(torch.empty(N, ci, oh, ow, device="cuda", dtype=torch.uint8))
    s = torch.zeros(co, dtype=torch.float64, device="cuda")
    ss = torch.zeros_like(s)
    extension.grid_reduce(x, wt, y, 0, out, co + 7, argmax, s, ss)
    assert_lowp_close(y, F.conv2d(x, wt, None, 2), ref64, what="grid conv")
    torch.testing.assert_close(out[:, co + 7:], pool_t, rtol=0, atol=0)
    torch.testing.assert_close(argmax.long(), R.pool_tap_from_index(idx, w), rtol=0, atol=0)
    assert (out[:, :co + 7] == 3).all()
    torch.testing.assert_close(s, ref64.sum((0, 2, 3)), rtol=1e-3, atol=1e-3 * ref64.numel() ** 0.5)
    torch.testing.assert_close(ss, (ref64 ** 2).sum((0, 2, 3)), rtol=2e-3, atol=1e-2)
    # eval: BN + ReLU folded into the conv epilogue, written into the same block output
    scale = torch.rand(co, device="cuda") + 0.5
    shift = torch.randn(co, device="cuda") * 0.1
    sc, sh = scale.double().view(1, -1, 1, 1), shift.double().view(1, -1, 1, 1)
    extension.grid_reduce(x, wt, out, 0, out, co + 7, argmax, None, None, scale, shift)
    assert_lowp_close(out[:, :co], F.relu(F.conv2d(x, wt, None, 2) * sc.to(dtype) + sh.to(dtype)),
                      F.relu(ref64 * sc + sh), what="grid conv eval epilogue")
    torch.testing.assert_close(out[:, co + 7:], pool_t, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 768, 17, 17), (3, 5, 10, 7)])
def test_gpu_pool_kernel_and_backward(extension, dtype, shape):
    torch.manual_seed(12)
    x = _cl(torch.randn(*shape, device="cuda").to(dtype)).requires_grad_()
    N, C, H, W = shape
    pool_t, idx = F.max_pool2d(x, 3, 2, return_indices=True)
    oh, ow = pool_t.shape[2:]
    out = _cl(torch.zeros(N, C + 4, oh, ow, device="cuda", dtype=dtype))
    argmax = _cl(torch.empty(N, C, oh, ow, device="cuda", dtype=torch.uint8))
    extension.grid_reduce(x.detach(), None, None, 0, out, 4, argmax)
    torch.testing.assert_close(out[:, 4:], pool_t.detach(), rtol=0, atol=0)
    torch.testing.assert_close(argmax.long(), R.pool_tap_from_index(idx, W), rtol=0, atol=0)
    g = _cl(torch.randn(N, C + 4, oh, ow, device="cuda").to(dtype))
    (dx_t,) = torch.autograd.grad(pool_t, x, g[:, 4:])
    dx = _cl(torch.empty(shape, device="cuda", dtype=dtype))
    extension.maxpool_bwd(g, 4, argmax, dx, False)
    dx_ref = torch.empty(shape, dtype=torch.float64, device="cuda")
    R.maxpool_bwd(g.double(), 4, argmax, dx_ref, False)
    assert_lowp_close(dx, dx_t, dx_ref, floor=1e-6, what="maxpool_bwd")
    base = _cl(torch.randn(shape, device="cuda").to(dtype))
    dx = base.clone()
    extension.maxpool_bwd(g, 4, argmax, dx, True)
    assert_lowp_close(dx, (base.double() + dx_ref).to(dtype), base.double() + dx_ref, floor=1e-3,
                      what="maxpool_bwd accumulate")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 192, 17, 17), (3, 37, 5, 9)])
@pytest.mark.parametrize("training", [True, False])
def test_gpu_bn_kernels(extension, dtype, shape, training):
    torch.manual_seed(13)
    N, C, H, W = shape
    y = _cl((torch.randn(shape, device="cuda") * 2 + 0.3).to(dtype))
    gamma, beta, rm, rv = bn_params(C, "cuda")
    count = N * H * W
    s = torch.zeros(C, dtype=torch.float64, device="cuda")
    ss = torch.zeros_like(s)
    extension.bn_stats(y, s, ss)
    torch.testing.assert_close(s, y.double().sum((0, 2, 3)), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(ss, (y.double() ** 2).sum((0, 2, 3)), rtol=1e-5, atol=1e-3)
    st = extension.bn_finalize(s, ss, count, 1e-3, gamma, beta)
    torch.testing.assert_close(st, R.bn_finalize(s, ss, count, 1e-3, gamma, beta), rtol=1e-5,
                               atol=1e-6)
    mean, var, invstd, scale, shift = st.unbind(0)
    if not training:
        mean, invstd, scale, shift = cbr_cuda.eval_affine(gamma, beta, rm, rv, 1e-3)
    out = _cl(torch.zeros(N, C + 3, H, W, device="cuda", dtype=dtype))
    extension.bn_apply_relu(y, scale.contiguous(), shift.contiguous(), out, 3)
    expected = torch.zeros_like(out)
    R.bn_apply_relu(y, scale, shift, expected, 3)
    torch.testing.assert_close(out, expected, rtol=1e-2 if dtype != torch.float32 else 1e-5,
                               atol=1e-5)
    g = _cl(torch.randn(N, C + 3, H, W, device="cuda").to(dtype))
    args = [t.contiguous() for t in (scale, shift, mean, invstd)]
    sums = [torch.zeros(C, dtype=torch.float64, device="cuda") for _ in range(4)]
    extension.bn_relu_bwd_reduce(g, 3, y, *args, sums[0], sums[1])
    R.bn_relu_bwd_reduce(g, 3, y, *args, sums[2], sums[3])
    torch.testing.assert_close(sums[0], sums[2], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(sums[1], sums[3], rtol=1e-4, atol=1e-3)
    dy = extension.bn_relu_bwd_apply(g, 3, y, *args, sums[2], sums[3], count, training)
    dy_ref = R.bn_relu_bwd_apply(g.double(), 3, y.double(), *args, sums[2], sums[3], count,
                                 training)
    assert dy.dtype == dtype and dy.is_contiguous(memory_format=CL)
    assert rel_err(dy, dy_ref) < (1e-5 if dtype == torch.float32 else 1e-2)


OP_CASES = [  # (N, C_in, C_out, H, W, kernel, stride, padding)
    (4, 128, 128, 17, 17, (1, 7), (1, 1), (0, 3)),
    (4, 128, 192, 17, 17, (7, 1), (1, 1), (3, 0)),
    (4, 384, 384, 8, 8, (3, 1), (1, 1), (1, 0)),
    (4, 64, 96, 35, 35, (3, 3), (1, 1), (1, 1)),   # cuDNN conv + extension BN
    (3, 20, 36, 9, 13, (1, 5), (1, 1), (0, 2)),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: f"{c[1]}x{c[3]}_{c[5][0]}x{c[5][1]}")
@pytest.mark.parametrize("training", [True, False])
def test_gpu_conv_bn_relu_cuda_matches_reference(extension, dtype, case, training):
    N, ci, co, h, w, k, s, p = case
    torch.manual_seed(14)
    x0 = _cl(torch.randn(N, ci, h, w, device="cuda"))
    w0 = torch.randn(co, ci, *k, device="cuda") / (ci * k[0] * k[1]) ** 0.5
    gamma, beta, rm, rv = bn_params(co, "cuda")
    oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    gout = torch.randn(N, co + 4, oh, ow, device="cuda")
    results = {}
    for name, fn, dt in (("ours", cbr_cuda.conv_bn_relu_cuda, dtype),
                         ("torch", conv_bn_relu_reference, dtype),
                         ("fp64", conv_bn_relu_reference, torch.float64)):
        x = x0.to(dt).requires_grad_()
        wt = w0.to(dt).requires_grad_()
        g = gamma.to(dt if name == "fp64" else torch.float32).requires_grad_()
        b = beta.to(g.dtype).requires_grad_()
        rm_, rv_ = rm.clone().to(g.dtype), rv.clone().to(g.dtype)
        out = _cl(torch.zeros(N, co + 4, oh, ow, device="cuda", dtype=dt))
        fn(x, wt, g, b, rm_, rv_, stride=s, padding=p, eps=1e-3, momentum=0.1,
           training=training, out=out, out_offset=3)
        grads = torch.autograd.grad((out * gout.to(dt)).sum(), (x, wt, g, b))
        results[name] = (out.detach(),) + grads + (rm_, rv_)
    names = ["out", "dx", "dw", "dgamma", "dbeta", "running_mean", "running_var"]
    for i, n in enumerate(names):
        ours, lowp, ref = results["ours"][i], results["torch"][i], results["fp64"][i]
        if dtype == torch.float32:
            # cuDNN may use TF32 for fp32 convs: compare both to fp64 with a TF32-level bound
            assert rel_err(ours, ref) <= max(2 * rel_err(lowp, ref), 1e-4), n
        else:
            assert_lowp_close(ours, lowp, ref, factor=4, floor=1e-4, what=n)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("has_conv", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_gpu_grid_reduction_cuda_matches_reference(extension, dtype, has_conv, training):
    """Mixed_6a (conv + pool, fused for fp16/bf16) and Mixed_7a's pool slice."""
    torch.manual_seed(15)
    N, ci, co, h, w = 4, 288, 384, 35, 35
    x0 = _cl(torch.randn(N, ci, h, w, device="cuda"))
    w0 = torch.randn(co, ci, 3, 3, device="cuda") / (9 * ci) ** 0.5
    gamma, beta, rm, rv = bn_params(co, "cuda")
    gout = torch.randn(N, 768, 17, 17, device="cuda")
    results = {}
    for name, fn, dt in (("ours", grid_reduction_cuda, dtype),
                         ("torch", grid_reduction_reference, dtype),
                         ("fp64", grid_reduction_reference, torch.float64)):
        x = x0.to(dt).requires_grad_()
        wt = w0.to(dt).requires_grad_() if has_conv else None
        g = gamma.to(dt if name == "fp64" else torch.float32).requires_grad_()
        b = beta.to(g.dtype).requires_grad_()
        rm_, rv_ = rm.clone().to(g.dtype), rv.clone().to(g.dtype)
        out = _cl(torch.zeros(N, 768, 17, 17, device="cuda", dtype=dt))
        fn(x, wt, g, b, rm_, rv_, out=out, conv_offset=0, pool_offset=480, training=training)
        leaves = (x, wt, g, b) if has_conv else (x,)
        grads = torch.autograd.grad((out * gout.to(dt)).sum(), leaves)
        results[name] = (out.detach(),) + grads
    for i in range(len(results["ours"])):
        ours, lowp, ref = results["ours"][i], results["torch"][i], results["fp64"][i]
        if dtype == torch.float32:
            assert rel_err(ours, ref) <= max(2 * rel_err(lowp, ref), 1e-4), i
        else:
            assert_lowp_close(ours, lowp, ref, factor=4, floor=1e-4, what=f"output {i}")
