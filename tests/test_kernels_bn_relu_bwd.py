"""Fused ReLU + BatchNorm backward (kernels/bn_relu_bwd.py) against autograd of
relu(batch_norm(y)), in train and eval, which also checks the k1/k2/k3 formulas documented
in the module end to end. On CPU the kernels run in Triton's interpreter (conftest.py)."""
import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close_to_ref, random_in_layout
from inception_fast.kernels.bn_relu_bwd import (bn_relu_bwd_apply, bn_relu_bwd_coefficients,
                                                bn_relu_bwd_reduce)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
EPS = 1e-3

# (N, C, H, W, grad_out layout, y layout): channels not multiples of 8 and > one 64-channel
# tile, odd H and W, batch 1 and 3, M = N*H*W above 4 * 64 so the reduce loops over tiles.
CASES = [
    (2, 32, 9, 9, "slice", "channels_last"),
    (1, 5, 7, 9, "channels_last", "channels_last"),
    (3, 37, 11, 13, "slice", "channels_last"),
    (3, 70, 5, 7, "nchw", "channels_last"),
    (2, 13, 6, 5, "permuted", "nchw"),
]


def _make(n, c, h, w, layout):
    return random_in_layout(n, c, h, w, layout, DEVICE, wider=(11, 6))


def _params(c):
    gamma = torch.rand(c, device=DEVICE) + 0.5
    gamma[::4] *= -1  # negative scales flip the ReLU mask direction
    beta = torch.randn(c, device=DEVICE) * 0.5
    return gamma, beta


def _inputs(case, training):
    """y, grad_out, gamma, beta and the BN statistics (the batch's in training, random
    running statistics in eval) of one CASES entry."""
    n, c, h, w, g_layout, y_layout = case
    y = _make(n, c, h, w, y_layout) * 2 + 0.3
    grad_out = _make(n, c, h, w, g_layout)
    gamma, beta = _params(c)
    if training:
        mean, var = y.mean((0, 2, 3)), y.var((0, 2, 3), unbiased=False)
    else:
        mean, var = torch.randn(c, device=DEVICE) * 0.3, torch.rand(c, device=DEVICE) * 3 + 0.5
    return y, grad_out, gamma, beta, mean, var


def _reference(grad_out, y, gamma, beta, mean, var, training):
    """Autograd of relu(batch_norm(y)) in float64: (grad_y, grad_gamma, grad_beta)."""
    y64 = y.detach().double().requires_grad_()
    g64 = gamma.double().requires_grad_()
    b64 = beta.double().requires_grad_()
    rm, rv = (None, None) if training else (mean.double(), var.double())
    out = F.relu(F.batch_norm(y64, rm, rv, g64, b64, training, 0.0, EPS))
    out.backward(grad_out.double())
    return y64.grad, g64.grad, b64.grad


def _ours(grad_out, y, gamma, beta, mean, var, training):
    """The caller side of the kernels, exactly as bn_relu_bwd's docstring prescribes."""
    n, c, h, w = y.shape
    M = n * h * w
    invstd = torch.rsqrt(var + EPS)
    a = gamma * invstd
    cc = beta - mean * a
    sum_dz, sum_dz_yc = bn_relu_bwd_reduce(grad_out, y, a, cc, shift=mean)
    grad_beta = sum_dz
    grad_gamma = sum_dz_yc * invstd
    if training:
        k1 = gamma * invstd
        k2 = -gamma * invstd**2 * grad_gamma / M
        k3 = -gamma * invstd * sum_dz / M
    else:
        k1, k2, k3 = a, torch.zeros_like(a), torch.zeros_like(a)
    grad_y = bn_relu_bwd_apply(grad_out, y, a, cc, k1, k2, k3, shift=mean)
    return grad_y, grad_gamma, grad_beta, (sum_dz, sum_dz_yc, a, cc)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-{c[4]}" for c in CASES])
def test_bn_relu_backward_matches_autograd(case, training):
    torch.manual_seed(0)
    y, grad_out, gamma, beta, mean, var = _inputs(case, training)
    c = y.shape[1]
    ref_gy, ref_gg, ref_gb = _reference(grad_out, y, gamma, beta, mean, var, training)
    gy, gg, gb, (sum_dz, sum_dz_yc, a, cc) = _ours(grad_out, y, gamma, beta, mean, var, training)

    assert gy.shape == y.shape and gy.dtype == y.dtype
    assert gy.is_contiguous(memory_format=torch.channels_last)
    assert sum_dz.dtype == sum_dz_yc.dtype == torch.float32 and sum_dz.shape == (c,)
    assert_close_to_ref(gy, ref_gy, 3e-5)
    assert_close_to_ref(gg, ref_gg, 3e-5)
    assert_close_to_ref(gb, ref_gb, 1e-4)
    # The raw sums too, against a direct torch computation.
    dz = grad_out.double() * ((a.double()[:, None, None] * y.double() + cc.double()[:, None, None]) > 0)
    assert_close_to_ref(sum_dz, dz.sum((0, 2, 3)), 1e-5)
    yc = y.double() - mean.double()[:, None, None]
    assert_close_to_ref(sum_dz_yc, (dz * yc).sum((0, 2, 3)), 1e-5)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", CASES[:4], ids=[f"{c[0]}x{c[1]}x{c[2]}x{c[3]}" for c in CASES[:4]])
def test_coefficients_kernel_is_the_documented_maths(case, training):
    """bn_relu_bwd_coefficients (reduce + the coefficient kernel) gives what the module doc's
    torch formulas give, and through bn_relu_bwd_apply autograd's gradients (fp64)."""
    torch.manual_seed(3)
    y, grad_out, gamma, beta, mean, var = _inputs(case, training)
    invstd = torch.rsqrt(var + EPS)
    a, cc = gamma * invstd, beta - mean * gamma * invstd
    k1, k2, k3, gg, gb = bn_relu_bwd_coefficients(grad_out, y, a, cc, mean, invstd, gamma,
                                                  training=training)
    ref_gy, ref_gg, ref_gb = _reference(grad_out, y, gamma, beta, mean, var, training)
    assert_close_to_ref(gg, ref_gg, 3e-5)
    assert_close_to_ref(gb, ref_gb, 1e-4)
    assert_close_to_ref(bn_relu_bwd_apply(grad_out, y, a, cc, k1, k2, k3, shift=mean), ref_gy, 3e-5)
    if not training:
        assert torch.equal(k1, a) and not k2.any() and not k3.any()


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_coefficients_by_the_last_of_many_programs(monkeypatch, training):
    """With a GPU's SM count the reduce runs many programs per channel tile and the last one
    to finish computes the coefficients (kernels/last_program.py): the same values as with
    one program (to fp32 summation order), bit-identical on a repeat, and the counters reset
    to zero for the next launch."""
    from inception_fast.kernels import bn_relu_bwd, last_program
    torch.manual_seed(5)
    # 3x70x17x17: 2 channel tiles, 4 row tiles of the interpreter's 256
    y, grad_out, gamma, beta, mean, var = _inputs((3, 70, 17, 17, "slice", "channels_last"), True)
    invstd = torch.rsqrt(var + EPS)
    a, cc = gamma * invstd, beta - mean * gamma * invstd
    args = (grad_out, y, a, cc, mean, invstd, gamma)
    one = bn_relu_bwd_coefficients(*args, training=training)
    monkeypatch.setattr(bn_relu_bwd, "sm_count", lambda device: 2)  # P = min(4, 8 * 2 // 2)
    launched = []
    orig = bn_relu_bwd._partials

    def spy(*a_, **k):
        part, P = orig(*a_, **k)
        launched.append(P)
        return part, P
    monkeypatch.setattr(bn_relu_bwd, "_partials", spy)
    many = bn_relu_bwd_coefficients(*args, training=training)
    again = bn_relu_bwd_coefficients(*args, training=training)
    assert launched == [4, 4]
    for x1, xm, xa in zip(one, many, again):
        torch.testing.assert_close(xm, x1, rtol=1e-4, atol=1e-5)  # 867-term fp32 sums, reordered
        assert torch.equal(xm, xa)
    assert not last_program.arrival_counters(y.device, 2)[:2].any()


def test_coefficients_without_gamma_with_low_precision_gamma_and_into_slices():
    torch.manual_seed(4)
    y = _make(3, 37, 11, 13, "channels_last")
    g = _make(3, 37, 11, 13, "slice")
    mean, var = y.mean((0, 2, 3)), y.var((0, 2, 3), unbiased=False)
    invstd = torch.rsqrt(var + EPS)
    ones = torch.ones(37, device=DEVICE)
    k = bn_relu_bwd_coefficients(g, y, invstd, -mean * invstd, mean, invstd, None)
    k_ones = bn_relu_bwd_coefficients(g, y, invstd, -mean * invstd, mean, invstd, ones)
    for u, v in zip(k, k_ones):
        assert torch.equal(u, v)
    gamma = _params(37)[0].bfloat16()
    a = gamma.float() * invstd
    k_bf = bn_relu_bwd_coefficients(g, y, a, -mean * a, mean, invstd, gamma)
    k_f = bn_relu_bwd_coefficients(g, y, a, -mean * a, mean, invstd, gamma.float())
    for u, v in zip(k_bf, k_f):
        assert torch.equal(u, v)
    wide = torch.full((2, 50), float("nan"), device=DEVICE)
    out = bn_relu_bwd_coefficients(g, y, a, -mean * a, mean, invstd, gamma.float(),
                                   grads_out=(wide[0, 5:42], wide[1, 5:42]))
    assert torch.equal(wide[0, 5:42], k_f[3]) and torch.equal(wide[1, 5:42], k_f[4])
    assert out[3].data_ptr() == wide[0, 5:42].data_ptr() and wide[:, :5].isnan().all()
    with pytest.raises(ValueError, match="grads_out"):
        bn_relu_bwd_coefficients(g, y, a, -mean * a, mean, invstd, None,
                                 grads_out=(wide[0, :36], wide[1, :36]))
    with pytest.raises(ValueError, match="invstd"):
        bn_relu_bwd_coefficients(g, y, a, -mean * a, mean, invstd[:5], None)


def test_large_mean_is_centered():
    """y with |mean| / std ~ 400 (a conv of post-ReLU inputs can get there): with shift=mean
    the gradients stay fp32-accurate against fp64 (measured 1.1e-5 for grad_gamma); the
    uncentered algebra (sum(dz*y) - mean*sum(dz), k2*y + k3) gave 1.0e-4 here."""
    torch.manual_seed(2)
    n, c, h, w = 2, 37, 9, 7
    y = _make(n, c, h, w, "channels_last") * 0.05 + 20.0
    grad_out = _make(n, c, h, w, "slice")
    gamma, beta = _params(c)
    mean, var = y.double().mean((0, 2, 3)).float(), y.double().var((0, 2, 3), unbiased=False).float()
    ref_gy, ref_gg, _ = _reference(grad_out, y, gamma, beta, mean, var, True)
    gy, gg, _, _ = _ours(grad_out, y, gamma, beta, mean, var, True)
    assert_close_to_ref(gy, ref_gy, 3e-5)
    assert_close_to_ref(gg, ref_gg, 3e-5)


def test_apply_is_the_per_channel_affine_of_dz_and_y():
    """k1 * dz + k2 * (y - shift) + k3 with arbitrary coefficients (not only BN's); no shift
    means 0."""
    torch.manual_seed(1)
    y = _make(3, 11, 5, 7, "channels_last")
    g = _make(3, 11, 5, 7, "slice")
    a, c, k1, k2, k3, shift = (torch.randn(11, device=DEVICE) for _ in range(6))
    v = lambda t: t[:, None, None]  # noqa: E731
    dz = g * (v(a) * y + v(c) > 0)
    assert_close_to_ref(bn_relu_bwd_apply(g, y, a, c, k1, k2, k3), v(k1) * dz + v(k2) * y + v(k3), 1e-5)
    assert_close_to_ref(bn_relu_bwd_apply(g, y, a, c, k1, k2, k3, shift=shift),
                  v(k1) * dz + v(k2) * (y - v(shift)) + v(k3), 1e-5)
    _, s_dzy = bn_relu_bwd_reduce(g, y, a, c)
    assert_close_to_ref(s_dzy, (dz * y).sum((0, 2, 3)), 1e-5)


def test_bad_input():
    y = _make(2, 6, 4, 4, "channels_last")
    g = torch.randn_like(y)
    v = torch.ones(6, device=DEVICE)
    with pytest.raises(ValueError, match="4-D"):
        bn_relu_bwd_reduce(g[0], y[0], v, v)
    with pytest.raises(TypeError, match="dtype"):
        bn_relu_bwd_reduce(g.double(), y, v, v)
    with pytest.raises(ValueError, match="shape"):
        bn_relu_bwd_reduce(g[:, :5], y, v, v)
    with pytest.raises(ValueError, match=r"a must have shape \(6,\)"):
        bn_relu_bwd_reduce(g, y, torch.ones(5, device=DEVICE), v)
    with pytest.raises(TypeError, match="c must be float32"):
        bn_relu_bwd_reduce(g, y, v, v.half())
    with pytest.raises(ValueError, match="k2 must have shape"):
        bn_relu_bwd_apply(g, y, v, v, v, v[:3], v)
    with pytest.raises(TypeError, match="shift must be float32"):
        bn_relu_bwd_reduce(g, y, v, v, shift=v.double())
    with pytest.raises(ValueError, match="on meta"):
        bn_relu_bwd_reduce(g.to("meta"), y.to("meta"), v.to("meta"), v.to("meta"))
    with pytest.raises(ValueError, match="grad_out is on meta"):
        bn_relu_bwd_apply(g.to("meta"), y, v, v, v, v, v)
    with pytest.raises(TypeError, match="torch.Tensor"):
        bn_relu_bwd_reduce(g, y, [1.0] * 6, v)


# ----------------------------------------------------------------------------- GPU only


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gpu_full_size(dtype, training):
    """Mixed_5b-sized activation (batch 8, 35x35, 64 of 256 concat channels) in 16-bit."""
    torch.manual_seed(2)
    n, c, h, w = 8, 64, 35, 35
    y = (_make(n, c, h, w, "channels_last") * 2 + 0.3).to(dtype)
    big = torch.randn(n, 256, h, w, device=DEVICE).to(dtype).to(memory_format=torch.channels_last)
    grad_out = big[:, 96:96 + c]
    gamma, beta = _params(c)
    yf = y.float()
    if training:
        mean, var = yf.mean((0, 2, 3)), yf.var((0, 2, 3), unbiased=False)
    else:
        mean, var = torch.randn(c, device=DEVICE) * 0.3, torch.rand(c, device=DEVICE) * 3 + 0.5
    ref_gy, ref_gg, ref_gb = _reference(grad_out, yf, gamma, beta, mean, var, training)
    gy, gg, gb, _ = _ours(grad_out, y, gamma, beta, mean, var, training)
    assert gy.dtype == dtype
    rel = 1e-4 if dtype == torch.float32 else 1e-2
    assert_close_to_ref(gy, ref_gy, rel)
    assert_close_to_ref(gg, ref_gg, 1e-4)  # sums accumulate in fp32 from the same 16-bit inputs
    assert_close_to_ref(gb, ref_gb, 1e-4)


# ---- BN + ReLU + 3x3 / stride-2 max pool, fused (the stem's Conv2d_2b -> maxpool1) ----------

@pytest.mark.parametrize("n,c,h,w,layout", [(2, 32, 9, 9, "slice"), (3, 13, 8, 11, "nchw"),
                                            (1, 70, 7, 7, "channels_last")])
def test_pool_fused_bn_relu_forward_and_backward(n, c, h, w, layout):
    """Forward: max_pool3x3s2_fwd(y, bn_relu=(a, c)) is the max pool of the unit's output
    relu(a*y + c) in y's dtype (the same argmax); backward: the BN backward kernels fed the
    pool's output gradient and argmax give what they give on the pool backward's full-size
    gradient."""
    from inception_fast.kernels.max_pool3x3s2 import max_pool3x3s2_bwd, max_pool3x3s2_fwd

    torch.manual_seed(3)
    y = torch.randn(n, c, h, w, device=DEVICE).to(memory_format=torch.channels_last)
    gamma, beta = _params(c)
    mean, var = torch.randn(c, device=DEVICE) * 0.1, torch.rand(c, device=DEVICE) + 0.5
    invstd = (var + EPS).rsqrt()
    a = gamma * invstd
    cc = beta - mean * a
    y[0, 0, :3, :3] = -1e3 if a[0] > 0 else 1e3  # a window of ReLU zeros: the first tap wins
    z = torch.relu(y * a[:, None, None] + cc[:, None, None])
    ref, ref_idx = max_pool3x3s2_fwd(z.contiguous(memory_format=torch.channels_last))
    pooled, idx = max_pool3x3s2_fwd(y, bn_relu=(a, cc))
    torch.testing.assert_close(pooled, ref, rtol=0, atol=0)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(pooled, F.max_pool2d(z, 3, 2), rtol=0, atol=0)
    gp = _make(n, c, *pooled.shape[2:], layout)
    full = max_pool3x3s2_bwd(gp, idx, (h, w))
    for train in (True, False):
        want = bn_relu_bwd_coefficients(full, y, a, cc, mean, invstd, gamma, training=train)
        got = bn_relu_bwd_coefficients(gp, y, a, cc, mean, invstd, gamma, training=train,
                                       pool_argmax=idx)
        for g_, w_ in zip(got, want):
            torch.testing.assert_close(g_, w_, rtol=1e-5, atol=1e-5)
        k1, k2, k3 = want[:3]
        torch.testing.assert_close(
            bn_relu_bwd_apply(gp, y, a, cc, k1, k2, k3, shift=mean, pool_argmax=idx),
            bn_relu_bwd_apply(full, y, a, cc, k1, k2, k3, shift=mean), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="pool_argmax"):
        bn_relu_bwd_apply(gp, y, a, cc, a, a, a, pool_argmax=idx[:, :, :1])
