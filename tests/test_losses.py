"""Fused losses (label-smoothing CE, joint-optimization loss): Triton kernels (through the
interpreter on CPU) against the torch references and torch autograd; input errors; modules."""
import pytest
import torch
import torch.nn.functional as F

from inception_fast.losses import (JointOptimizationLoss, LabelSmoothingCrossEntropy,
                                   joint_optimization_loss, label_smoothing_cross_entropy,
                                   resolve_backend)
from inception_fast.ops.joint_opt_loss import joint_optimization_loss_reference

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _close(a, b, rtol=1e-4, atol=1e-6):
    torch.testing.assert_close(a.float(), b.float(), rtol=rtol, atol=atol)


def _ce_value_and_grad(x, t, eps, backend):
    x = x.detach().clone().requires_grad_()
    loss = label_smoothing_cross_entropy(x, t, eps, backend=backend)
    loss.backward()
    return loss.detach(), x.grad


def _jo_value_and_grad(x, s, backend, **kw):
    x = x.detach().clone().requires_grad_()
    loss, terms = joint_optimization_loss(x, s, backend=backend, **kw)
    loss.backward()
    return loss.detach(), terms, x.grad


def _soft(b, k, gen):
    return torch.softmax(2 * torch.randn(b, k, generator=gen), 1).to(DEV)


# ---- label-smoothing cross-entropy ---------------------------------------------------------

@pytest.mark.parametrize("b, k", [(4, 10), (1, 1), (3, 7), (1, 1000), (5, 1000), (2, 5000)])
@pytest.mark.parametrize("eps", [0.1, 0.0, 0.35])
def test_ls_ce_matches_torch(b, k, eps):
    gen = torch.Generator().manual_seed(b * 7919 + k)
    x = (3 * torch.randn(b, k, generator=gen)).to(DEV)
    t = torch.randint(0, k, (b,), generator=gen).to(DEV)
    loss, grad = _ce_value_and_grad(x, t, eps, "triton")
    x_ref = x.clone().requires_grad_()
    ref = F.cross_entropy(x_ref, t, label_smoothing=eps)
    ref.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    _close(loss, ref)
    _close(grad, x_ref.grad)
    # The torch backend is exactly the reference.
    loss_t, grad_t = _ce_value_and_grad(x, t, eps, "torch")
    _close(loss_t, ref, rtol=0, atol=0)
    _close(grad_t, x_ref.grad, rtol=0, atol=0)


def test_ls_ce_extreme_logits():
    gen = torch.Generator().manual_seed(1)
    x = (torch.randint(0, 3, (6, 37), generator=gen).float() - 1) * 1e4  # -1e4, 0, +1e4
    x[0] = -1e4  # a row of all-equal very negative logits
    x[1, 5] = 1e4 + 1.0  # near-ties at +1e4
    x, t = x.to(DEV), torch.randint(0, 37, (6,), generator=gen).to(DEV)
    loss, grad = _ce_value_and_grad(x, t, 0.1, "triton")
    x_ref = x.clone().requires_grad_()
    ref = F.cross_entropy(x_ref, t, label_smoothing=0.1)
    ref.backward()
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    _close(loss, ref)
    _close(grad, x_ref.grad)


def _multi_chunk_extreme(k):
    """Rows whose max sits in the first chunk, in the last chunk, then a uniform row: the online
    max must carry across chunks (a plain per-chunk max overflows exp at +-1e4)."""
    x = torch.full((3, k), -1e4)
    x[0, 1] = 1e4
    x[1, -2] = 1e4
    x[1, : k // 2] = 5e3
    x[2] = 0.0
    return x.to(DEV)


def test_ls_ce_extreme_logits_across_chunks():
    x = _multi_chunk_extreme(4200)  # > 4096 classes: two chunks
    t = torch.tensor([1, 0, 7], device=DEV)
    """Against float64: with logits of +-1e4 across two chunks, torch's own float32 result is
    off by up to ~1.4e-4 of a gradient entry on some CPUs (AVX2), so it is no oracle here; ours
    may be off by at most 2x torch's float32 error plus 1e-6 of scale."""
    loss, grad = _ce_value_and_grad(x, t, 0.1, "triton")
    x64 = x.detach().double().requires_grad_()
    ref = F.cross_entropy(x64, t, label_smoothing=0.1)
    ref.backward()
    x32 = x.detach().clone().requires_grad_()
    ref32 = F.cross_entropy(x32, t, label_smoothing=0.1)
    ref32.backward()
    for ours, torch32, want in ((loss, ref32, ref), (grad, x32.grad, x64.grad)):
        scale = want.abs().max().item()
        e_torch = (torch32.double() - want).abs().max().item()
        e_ours = (ours.double() - want).abs().max().item()
        assert e_ours <= 2 * e_torch + 1e-6 * scale, (e_ours, e_torch, scale)


def test_ls_ce_backward_scales_by_grad_output_and_noncontiguous_logits():
    gen = torch.Generator().manual_seed(2)
    wide = torch.randn(5, 40, generator=gen).to(DEV)
    x = wide[:, 3:33].detach().requires_grad_()  # row stride 40, not 30
    t = torch.randint(0, 30, (5,), generator=gen).to(DEV)
    (2.5 * label_smoothing_cross_entropy(x, t, backend="triton")).backward()
    x_ref = x.detach().clone().requires_grad_()
    (2.5 * F.cross_entropy(x_ref, t, label_smoothing=0.1)).backward()
    _close(x.grad, x_ref.grad)
    xt = torch.randn(30, 5, generator=gen).to(DEV).t()  # column-major logits
    _close(label_smoothing_cross_entropy(xt, t, backend="triton"),
           F.cross_entropy(xt, t, label_smoothing=0.1))


def test_ls_ce_no_grad_path_gives_the_same_value():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 11, generator=gen).to(DEV).requires_grad_()
    t = torch.randint(0, 11, (4,), generator=gen).to(DEV)
    with torch.no_grad():
        v = label_smoothing_cross_entropy(x, t, backend="triton")
    assert v.grad_fn is None
    _close(v, F.cross_entropy(x.detach(), t, label_smoothing=0.1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ls_ce_half_logits(dtype):
    """Half logits: the loss is fp32 math on the same (rounded) inputs, so it matches the fp32
    reference of the upcast logits to fp32 accuracy; the gradient is stored in the logits'
    dtype, exactly as torch's autograd of F.cross_entropy(logits.float()) returns it, so the two
    differ by at most one rounding of that dtype."""
    gen = torch.Generator().manual_seed(4)
    x = (3 * torch.randn(6, 100, generator=gen)).to(DEV).to(dtype)
    t = torch.randint(0, 100, (6,), generator=gen).to(DEV)
    loss, grad = _ce_value_and_grad(x, t, 0.1, "triton")
    x_ref = x.clone().requires_grad_()
    ref = F.cross_entropy(x_ref.float(), t, label_smoothing=0.1)
    ref.backward()
    assert grad.dtype == dtype and loss.dtype == torch.float32
    _close(loss, ref)
    ulp = torch.finfo(dtype).eps
    _close(grad, x_ref.grad, rtol=ulp, atol=1e-6)


# ---- joint-optimization loss ---------------------------------------------------------------

@pytest.mark.parametrize("b, k", [(4, 10), (1, 1), (1, 7), (3, 1000), (37, 10), (2, 2500)])
def test_joint_opt_matches_reference_and_autograd(b, k):
    gen = torch.Generator().manual_seed(b * 31 + k)
    x = (3 * torch.randn(b, k, generator=gen)).to(DEV)
    s = _soft(b, k, gen)
    s[0, 0] = 0.0  # a zero soft target: 0 log 0 = 0
    loss, terms, grad = _jo_value_and_grad(x, s, "triton")
    x_ref = x.clone().requires_grad_()
    ref = joint_optimization_loss_reference(x_ref, s)
    ref[0].backward()
    _close(loss, ref[0], atol=1e-5)
    for name, v in zip(("L_c", "L_p", "L_e"), ref[1:]):
        assert terms[name].grad_fn is None
        _close(terms[name], v, atol=1e-5)
    _close(grad, x_ref.grad, atol=1e-7)


def test_joint_opt_reference_is_the_paper_loss():
    """The oracle itself against independent torch formulations of each term."""
    gen = torch.Generator().manual_seed(5)
    x, s = torch.randn(8, 6, generator=gen), torch.softmax(torch.randn(8, 6, generator=gen), 1)
    loss, l_c, l_p, l_e = joint_optimization_loss_reference(x, s, alpha=0.7, beta=0.3)
    logp = F.log_softmax(x, 1)
    _close(l_c, F.kl_div(logp, s, reduction="batchmean"))
    _close(l_p, -logp.exp().mean(0).log().mean() - torch.log(torch.tensor(6.0)))
    _close(l_e, torch.distributions.Categorical(logits=x).entropy().mean())
    _close(loss, l_c + 0.7 * l_p + 0.3 * l_e)


def test_joint_opt_prior_alpha_beta_and_one_hot_targets():
    gen = torch.Generator().manual_seed(6)
    b, k = 9, 13
    x = torch.randn(b, k, generator=gen).to(DEV)
    s = F.one_hot(torch.randint(0, k, (b,), generator=gen), k).float().to(DEV)
    prior = torch.rand(k, generator=gen)
    prior[3] = 0.0  # a class with zero prior
    prior = (prior / prior.sum()).to(DEV)
    kw = dict(alpha=0.5, beta=2.0, prior=prior)
    loss, terms, grad = _jo_value_and_grad(x, s, "triton", **kw)
    x_ref = x.clone().requires_grad_()
    ref = joint_optimization_loss_reference(x_ref, s, **kw)
    ref[0].backward()
    _close(loss, ref[0], atol=1e-5)
    _close(terms["L_p"], ref[2], atol=1e-5)
    _close(grad, x_ref.grad, atol=1e-7)


def test_joint_opt_extreme_logits():
    """+-1e4 logits, each class the winner of one row so that mean_i p_i stays positive."""
    k = 12
    x = torch.full((k, k), -1e4)
    x.fill_diagonal_(1e4)
    x[1, :] = 0.0  # a uniform row
    x[2, :] = -1e4  # and a uniform row at -1e4 (z - lse would lose bits here)
    gen = torch.Generator().manual_seed(7)
    x, s = x.to(DEV), _soft(k, k, gen)
    loss, terms, grad = _jo_value_and_grad(x, s, "triton")
    x_ref = x.clone().requires_grad_()
    ref = joint_optimization_loss_reference(x_ref, s)
    ref[0].backward()
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    _close(loss, ref[0])
    for name, v in zip(("L_c", "L_p", "L_e"), ref[1:]):
        _close(terms[name], v, atol=1e-5)
    _close(grad, x_ref.grad, atol=1e-7)


def test_joint_opt_extreme_logits_across_chunks():
    x = _multi_chunk_extreme(2100)  # > 1024 classes: three chunks
    s = _soft(3, 2100, torch.Generator().manual_seed(12))
    loss, terms, grad = _jo_value_and_grad(x, s, "triton")
    x_ref = x.clone().requires_grad_()
    ref = joint_optimization_loss_reference(x_ref, s)
    ref[0].backward()
    _close(loss, ref[0])
    for name, v in zip(("L_c", "L_p", "L_e"), ref[1:]):
        _close(terms[name], v, atol=1e-5)
    _close(grad, x_ref.grad, atol=1e-8)


def test_joint_opt_grad_output_scaling_no_grad_and_bf16():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(5, 20, generator=gen).to(DEV).requires_grad_()
    s = _soft(5, 20, gen)
    loss, _ = joint_optimization_loss(x, s, backend="triton")
    (-3.0 * loss).backward()
    x_ref = x.detach().clone().requires_grad_()
    (-3.0 * joint_optimization_loss_reference(x_ref, s)[0]).backward()
    _close(x.grad, x_ref.grad, atol=1e-7)
    with torch.no_grad():
        v, _ = joint_optimization_loss(x, s, backend="triton")
    assert v.grad_fn is None
    _close(v, joint_optimization_loss_reference(x.detach(), s)[0])
    xb = x.detach().bfloat16()  # bf16 logits and soft targets: one bf16 rounding of the grad
    loss_b, _, grad_b = _jo_value_and_grad(xb, s.bfloat16(), "triton")
    xb_ref = xb.clone().requires_grad_()
    joint_optimization_loss_reference(xb_ref, s.bfloat16())[0].backward()
    assert grad_b.dtype == torch.bfloat16
    _close(grad_b, xb_ref.grad, rtol=torch.finfo(torch.bfloat16).eps, atol=1e-6)


# ---- API: modules, backends, errors --------------------------------------------------------

def test_modules_match_functions():
    gen = torch.Generator().manual_seed(9)
    x, t = torch.randn(4, 6, generator=gen), torch.randint(0, 6, (4,), generator=gen)
    s = torch.softmax(torch.randn(4, 6, generator=gen), 1)
    prior = torch.softmax(torch.randn(6, generator=gen), 0)
    m = LabelSmoothingCrossEntropy(0.2, backend="triton")
    _close(m(x, t), F.cross_entropy(x, t, label_smoothing=0.2))
    j = JointOptimizationLoss(1.0, 0.5, prior=prior, backend="triton")
    assert torch.equal(j.prior, prior) and "prior" in dict(j.named_buffers())
    _close(j(x, s)[0], joint_optimization_loss_reference(x, s, 1.0, 0.5, prior)[0])
    assert JointOptimizationLoss()(x, s)[1].keys() == {"L_c", "L_p", "L_e"}


def test_auto_backend():
    assert resolve_backend("auto", torch.zeros(1, 1)) == "torch"
    if torch.cuda.is_available():
        assert resolve_backend("auto", torch.zeros(1, 1, device="cuda")) == "triton"
    with pytest.raises(ValueError, match="unknown loss backend"):
        resolve_backend("cuda", torch.zeros(1, 1))


X = torch.randn(3, 5)
T = torch.tensor([0, 4, 2])
S = torch.softmax(torch.randn(3, 5), 1)


@pytest.mark.parametrize("args, err, match", [
    ((torch.randn(3, 5, 2), T), ValueError, "2-D"),
    ((torch.randn(5), T), ValueError, "2-D"),
    ((X.long(), T), TypeError, "dtype"),
    ((torch.randn(3, 0), T), ValueError, "at least one"),
    ((X, T.int()), TypeError, "int64"),
    ((X, T[:2]), ValueError, "one index per row"),
    ((X, torch.tensor([0, 5, 1])), ValueError, r"target\[1\] = 5 .*\[0, 5\)"),
    ((X, torch.tensor([0, -1, 1])), ValueError, r"target\[1\] = -1"),
    ((X, T, 1.5), ValueError, "eps"),
    ((X, T, 0.1, "cuda"), ValueError, "unknown loss backend"),
])
def test_ls_ce_bad_inputs(args, err, match):
    with pytest.raises(err, match=match):
        label_smoothing_cross_entropy(*args)


@pytest.mark.parametrize("args, kw, err, match", [
    ((X, S[:, :4]), {}, ValueError, "soft_targets shape"),
    ((X, T), {}, TypeError, "floating point"),
    ((X.half().long(), S), {}, TypeError, "dtype"),
    ((X, S), {"prior": torch.ones(4) / 4}, ValueError, r"shape \(5,\)"),
    ((X, S), {"prior": -torch.ones(5)}, ValueError, "non-negative"),
    ((X, S), {"prior": torch.ones(5, dtype=torch.long)}, TypeError, "prior"),
])
def test_joint_opt_bad_inputs(args, kw, err, match):
    with pytest.raises(err, match=match):
        joint_optimization_loss(*args, **kw)


# ---- bf16 against torch's own bf16 error ---------------------------------------------------

def _check_bf16_no_worse_than_torch(b, k, device):
    """bf16 logits. Truth: fp64 math on the same bf16 values. Torch's own bf16 path
    (F.cross_entropy on bf16 logits) returns a bf16 loss (error ~ half a bf16 ulp of the loss)
    and builds its gradient from bf16 intermediates (log-probabilities rounded to bf16), so its
    gradient is off by far more than one rounding where p is small. Ours computes in fp32 and
    rounds only the final gradient to bf16. Required: loss error at most torch's; gradient
    within one bf16 ulp of the truth elementwise (plus fp32 noise of terms of size <= 1, scaled
    by 1/B), and its worst absolute error no larger than torch's own."""
    gen = torch.Generator().manual_seed(10)
    x = (4 * torch.randn(b, k, generator=gen)).to(device).bfloat16()
    t = torch.randint(0, k, (b,), generator=gen).to(device)
    x64 = x.double().requires_grad_()
    truth = F.cross_entropy(x64, t, label_smoothing=0.1)
    truth.backward()
    loss, grad = _ce_value_and_grad(x, t, 0.1, "triton")
    x_t = x.clone().requires_grad_()
    torch_loss = F.cross_entropy(x_t, t, label_smoothing=0.1)
    torch_loss.backward()
    ulp = torch.finfo(torch.bfloat16).eps
    torch_err = (torch_loss.double() - truth).abs().item()
    assert (loss.double() - truth).abs().item() <= torch_err + 1e-6 * truth.abs().item()
    err = (grad.double() - x64.grad).abs()
    assert (err <= ulp * x64.grad.abs() + 1e-6 / b).all()
    assert err.max() <= (x_t.grad.double() - x64.grad).abs().max()
    s = torch.softmax(torch.randn(b, k, generator=gen), 1).to(device)
    _, _, grad_j = _jo_value_and_grad(x, s, "triton")
    xr = x.double().requires_grad_()
    joint_optimization_loss_reference(xr, s.double())[0].backward()  # fp32 math: truth enough
    assert ((grad_j.double() - xr.grad).abs() <= 2 * ulp * xr.grad.abs() + 4e-6 / b).all()


def test_bf16_no_worse_than_torch_cpu():
    _check_bf16_no_worse_than_torch(64, 300, DEV)


@pytest.mark.gpu
@pytest.mark.parametrize("b, k", [(256, 1000), (31, 4097)])
def test_bf16_on_gpu_no_worse_than_torch(b, k):
    _check_bf16_no_worse_than_torch(b, k, "cuda")


@pytest.mark.gpu
def test_fp32_on_gpu_large():
    gen = torch.Generator().manual_seed(11)
    x = (3 * torch.randn(512, 1000, generator=gen)).cuda()
    t = torch.randint(0, 1000, (512,), generator=gen).cuda()
    loss, grad = _ce_value_and_grad(x, t, 0.1, "auto")
    x_ref = x.clone().requires_grad_()
    F.cross_entropy(x_ref, t, label_smoothing=0.1).backward()
    _close(loss, F.cross_entropy(x, t, label_smoothing=0.1))
    _close(grad, x_ref.grad, atol=1e-8)
    s = _soft(512, 1000, gen)
    loss_j, terms, grad_j = _jo_value_and_grad(x, s, "auto")
    xr = x.clone().requires_grad_()
    ref = joint_optimization_loss_reference(xr, s)
    ref[0].backward()
    _close(loss_j, ref[0], atol=1e-5)
    _close(grad_j, xr.grad, atol=1e-8)
