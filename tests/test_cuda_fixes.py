"""Issue #14's bug fixes in the `cuda` backend, on CPU through the reference kernel set
(ops/csrc_reference.py as conv_bn_relu_cuda.kernels_override), plus the static check that the
compiled kernels keep no fp64 atomics (wherever csrc/ compiles):
(1) fp32 master weights with a half-precision input (autocast) in the grid reduction;
(3) only `out` needing a gradient: the eval one-kernel path, no BN backward;
(4) `out` sharing memory with the input, and overlapping conv / pool slices, are refused;
(6) deterministic BN statistics: the fixed order of the partials' reduction (the compiled
    kernels' lack of float atomics: tests/test_cuda_determinism.py).
The GPU halves of (4) and (6) are `gpu`-marked in tests/test_cuda_determinism.py."""
from __future__ import annotations

import pytest
import torch

from inception_fast import backends
from inception_fast.ops import conv_bn_relu_cuda as cbr_cuda
from inception_fast.ops import csrc_reference as R
from inception_fast.ops.conv_bn_relu import conv_bn_relu_reference
from inception_fast.ops.grid_reduction import grid_reduction_cuda, grid_reduction_reference
from inception_fast.ops.grid_reduction_cuda import grid_reduction_cuda_fwd

CL = torch.channels_last


class Recorder:
    """The reference kernel set, recording which kernels run (and with which epilogue)."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        fn = getattr(R, name)
        if not callable(fn) or name.startswith("asym_conv_max"):
            return fn

        def run(*args, **kwargs):
            folded = name in ("asym_conv", "grid_reduce") and args[-1] is not None
            self.calls.append(name + ("+bn_relu" if folded else ""))
            return fn(*args, **kwargs)
        return run


@pytest.fixture
def rec(monkeypatch):
    r = Recorder()
    monkeypatch.setattr(cbr_cuda, "kernels_override", r)
    return r


@pytest.fixture
def ref_kernels(monkeypatch):
    monkeypatch.setattr(cbr_cuda, "kernels_override", R)


def bn_params(c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(c, generator=g) + 0.5), torch.randn(c, generator=g) * 0.2,
            torch.randn(c, generator=g) * 0.1, torch.rand(c, generator=g) + 0.5)


# ---- (1) fp32 master weights with a bf16 input ------------------------------------------------

@pytest.mark.parametrize("training", [True, False])
def test_grid_reduction_cuda_takes_fp32_master_weights_under_autocast(ref_kernels, training):
    """Mixed_6a under autocast: bf16 activations, fp32 conv weight. Before the fix this raised
    `weight dtype torch.float32 differs from the input dtype`. The result equals the reference
    run on the weight cast to bf16, and the weight gradient comes back fp32."""
    torch.manual_seed(3)
    x0 = torch.randn(2, 6, 9, 11).to(torch.bfloat16)
    w0 = torch.randn(5, 6, 3, 3) * 0.3
    gamma, beta, rm, rv = bn_params(5)
    results = []
    for ours in (True, False):
        x = x0.clone().requires_grad_()
        w = w0.clone().requires_grad_()
        g, b = gamma.clone().requires_grad_(), beta.clone().requires_grad_()
        m, v = rm.clone(), rv.clone()
        out = torch.zeros(2, 15, 4, 5, dtype=torch.bfloat16).to(memory_format=CL)
        kw = dict(out=out, conv_offset=1, pool_offset=8, training=training)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if ours:
                grid_reduction_cuda(x, w, g, b, m, v, **kw)
            else:
                grid_reduction_reference(x, w.to(torch.bfloat16), g, b, m, v, **kw)
        (out.float() * torch.linspace(-1, 1, 15).view(1, -1, 1, 1)).sum().backward()
        results.append((out.detach().float(), x.grad.float(), w.grad, g.grad, m, v))
    assert results[0][2].dtype == torch.float32  # the master weight's own dtype
    for a, b in zip(*results):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=4e-2)


def test_mixed_6a_block_trains_under_autocast_on_the_cuda_backend(rec, monkeypatch):
    """The whole InceptionB (Mixed_6a) block, backend "cuda" (reference kernels on CPU: the
    backend checks are told this CPU may run it), one train step under bf16 autocast with fp32
    parameters: the fused grid reduction runs (it crashed at this block before the fix) and
    output and gradients match the torch-backend block under the same autocast."""
    from inception_fast.nn.blocks import InceptionB

    check, resolve = backends.check, backends.resolve
    monkeypatch.setattr(backends, "check", lambda b: b if b == "cuda" else check(b))
    monkeypatch.setattr(backends, "resolve",
                        lambda b, x, *a, **k: b if b == "cuda" else resolve(b, x, *a, **k))
    import copy

    torch.manual_seed(0)
    ours = InceptionB(8, backend="cuda").train()
    ref = InceptionB(8, backend="torch").train()
    ref.load_state_dict(ours.state_dict())
    ref64 = copy.deepcopy(ref).double()
    x = torch.randn(2, 8, 9, 9).bfloat16().float()  # the block's own cast is then exact
    res = []
    for m, amp in ((ours, True), (ref, True), (ref64, False)):
        xi = (x.double() if m is ref64 else x.clone()).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            y = m(xi)
        weights = torch.linspace(-1, 1, y.shape[1], dtype=torch.float64).view(1, -1, 1, 1)
        (y.double() * weights).sum().backward()
        res.append((y.detach(), xi.grad, m.branch3x3.conv.weight.grad,
                    m.branch3x3.bn.running_var.clone()))
    assert any(c.startswith("grid_reduce") for c in rec.calls), rec.calls
    assert res[0][2].dtype == torch.float32  # the master weight's dtype
    # Against float64: our error at most twice torch's own autocast error (bf16 rounds the
    # conv outputs of both paths, at different points) plus a small floor.
    for a, b, r, what in zip(*res, ("out", "grad x", "grad w", "running_var")):
        n = r.norm()
        e_ours, e_torch = ((a.double() - r).norm() / n).item(), ((b.double() - r).norm() / n).item()
        assert e_ours <= 2 * e_torch + 2e-3, f"{what}: ours {e_ours:.3g}, torch {e_torch:.3g}"


def test_grid_reduction_cuda_still_refuses_other_weight_dtypes(ref_kernels):
    x = torch.randn(1, 4, 7, 7, dtype=torch.bfloat16)
    out = torch.zeros(1, 7, 3, 3, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="weight dtype torch.float16 must be the input dtype"):
        grid_reduction_cuda(x, torch.randn(3, 4, 3, 3).half(), *bn_params(3), out=out,
                            pool_offset=3)


# ---- (3) only `out` needs a gradient ----------------------------------------------------------

def test_out_only_gradient_keeps_the_eval_one_kernel_path(rec):
    """conv_bn_relu_cuda in eval where only `out` requires grad (an earlier branch wrote into
    it): forward is the one asymmetric-conv kernel with BN + ReLU folded, nothing is saved, and
    backward runs no BN backward kernel; the gradient of `out` is `grad` with the slice zeroed."""
    torch.manual_seed(4)
    x = torch.randn(2, 4, 8, 9)
    w = torch.randn(3, 4, 1, 3) * 0.3
    base = torch.randn(2, 7, 8, 9).to(memory_format=CL).requires_grad_()
    out = base.clone()
    cbr_cuda.conv_bn_relu_cuda(x, w, *bn_params(3), padding=(0, 1), training=False, out=out,
                               out_offset=2)
    assert rec.calls == ["asym_conv+bn_relu"], rec.calls
    expected = conv_bn_relu_reference(x, w, *bn_params(3), padding=(0, 1), training=False)
    torch.testing.assert_close(out[:, 2:5].detach(), expected, rtol=1e-5, atol=1e-5)
    gout = torch.randn(out.shape)
    (out * gout).sum().backward()
    assert rec.calls == ["asym_conv+bn_relu"], rec.calls  # no bn_relu_bwd_* in backward
    want = gout.clone()
    want[:, 2:5] = 0
    torch.testing.assert_close(base.grad, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grid_reduction_out_only_gradient(rec, dtype):
    """The fused eval path (bf16) saves no pre-BN output; backward must not need it."""
    torch.manual_seed(5)
    x = torch.randn(2, 6, 9, 11).to(dtype)
    w = (torch.randn(5, 6, 3, 3) * 0.3).to(dtype)
    base = torch.randn(2, 15, 4, 5).to(dtype).to(memory_format=CL).requires_grad_()
    out = base.clone()
    grid_reduction_cuda(x, w, *bn_params(5), out=out, conv_offset=1, pool_offset=8,
                        training=False)
    if dtype == torch.bfloat16:
        assert rec.calls == ["grid_reduce+bn_relu"], rec.calls
    n_fwd = len(rec.calls)
    gout = torch.randn(out.shape).to(dtype)
    (out.float() * gout.float()).sum().backward()
    assert len(rec.calls) == n_fwd  # backward: a pass-through, no kernel
    want = gout.clone()
    want[:, 1:6] = 0
    want[:, 8:14] = 0
    torch.testing.assert_close(base.grad, want)


# ---- (4) aliasing and overlapping slices ------------------------------------------------------

def test_conv_bn_relu_cuda_refuses_out_sharing_the_input(ref_kernels):
    buf = torch.zeros(2, 8, 9, 11).to(memory_format=CL)
    x = buf[:, :4]  # the input is channels 0..3 of the very tensor written
    w = torch.randn(3, 4, 1, 7)
    with pytest.raises(ValueError, match=r"out shares memory with the input"):
        cbr_cuda.conv_bn_relu_cuda(x, w, *bn_params(3), padding=(0, 3), out=buf, out_offset=5)
    # a separate output of the same shape is fine
    cbr_cuda.conv_bn_relu_cuda(x, w, *bn_params(3), padding=(0, 3), out=buf.clone(),
                               out_offset=5)


def test_grid_reduction_cuda_refuses_out_sharing_the_input(ref_kernels):
    n, c, h, w = 1, 4, 7, 7
    storage = torch.zeros(n * c * h * w + n * 9 * 3 * 3)
    x = storage[:n * c * h * w].view(n, h, w, c).permute(0, 3, 1, 2)  # channels_last view
    out = storage[n * c * h * w - 5:][:n * 9 * 3 * 3].view(n, 3, 3, 9).permute(0, 3, 1, 2)
    with pytest.raises(ValueError, match="out shares memory with the input"):
        grid_reduction_cuda(x, None, None, None, None, None, out=out, pool_offset=2)


def test_grid_reduction_cuda_op_refuses_overlapping_slices(ref_kernels):
    """The registered op checks itself (grid_reduction's entry check is not on this path)."""
    x = torch.randn(2, 6, 9, 11).to(torch.bfloat16)
    w = torch.randn(5, 6, 3, 3).to(torch.bfloat16)
    out = torch.zeros(2, 12, 4, 5, dtype=torch.bfloat16).to(memory_format=CL)
    with pytest.raises(ValueError, match=r"conv slice \[0, 5\) and pool slice \[4, 10\)"):
        grid_reduction_cuda_fwd(x, w, *bn_params(5), out, 0, 4, 1e-3, 0.1, False, False)


def test_reference_kernels_refuse_aliasing_like_the_extension():
    """The reference kernel set carries csrc/bindings.cpp's checks (same messages)."""
    y = torch.randn(1, 4, 5, 5).to(memory_format=CL)
    s = torch.ones(4)
    with pytest.raises(ValueError, match="bn_apply_relu: out shares memory with y"):
        R.bn_apply_relu(y, s, s, y, 0)
    dx = torch.zeros(1, 4, 7, 7)
    arg = torch.zeros(1, 4, 3, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="maxpool_bwd: dx shares memory with grad"):
        R.maxpool_bwd(dx[:, :, :3, :3], 0, arg, dx, False)
    x = torch.randn(1, 4, 7, 7)
    out = torch.zeros(1, 8, 3, 3)
    with pytest.raises(ValueError, match="conv slice .* overlap"):
        R.grid_reduce(x, torch.randn(3, 4, 3, 3), out, 0, out, 2,
                      torch.zeros(1, 4, 3, 3, dtype=torch.uint8))


def test_shares_memory_sees_partial_overlap_only():
    buf = torch.zeros(10)
    assert R.shares_memory(buf[:5], buf[4:])
    assert not R.shares_memory(buf[:5], buf[5:])
    assert not R.shares_memory(buf, torch.zeros(10))
    assert not R.shares_memory(torch.empty(4, device="meta"), torch.empty(4, device="meta"))


# ---- (6) deterministic BN statistics ---------------------------------------------------------

def test_partials_sum_is_the_documented_fixed_order():
    """reduce_partials' order (csrc/bn_reduce.cu): lane l sums rows l, l + 8, ... in fp64, then the
    lanes 0..7 in order. The reference matches a scalar loop in that order bit for bit, and the
    order matters (a plain sequential sum of the same values rounds differently), which is why
    it is fixed rather than left to atomics."""
    g = torch.Generator().manual_seed(0)
    part = (torch.randn(37, 3, generator=g) * torch.logspace(0, 12, 37).view(-1, 1)).float()
    got = R.partials_sum(part)
    for c in range(3):
        lanes = []
        for lane in range(R.STAT_LANES):
            acc = 0.0
            for r in range(lane, part.shape[0], R.STAT_LANES):
                acc += float(part[r, c])
            lanes.append(acc)
        total = 0.0
        for acc in lanes:
            total += acc
        assert got[c].item() == total
    seq = [sum(float(v) for v in part[:, c]) for c in range(3)]
    assert any(got[c].item() != seq[c] for c in range(3)), "pick data where order matters"
    torch.testing.assert_close(got, part.double().sum(0), rtol=1e-12, atol=0)


def test_reference_reduce_partials_adds_into_the_fp64_vectors():
    part = torch.randn(2, 19, 4)
    s, ss = torch.ones(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    R.reduce_partials(part, s, ss)
    torch.testing.assert_close(s, 1 + part[0].double().sum(0))
    torch.testing.assert_close(ss, part[1].double().sum(0))


# ---- weights cast and packed once per weight version -------------------------------------------

def test_weights_are_cast_and_packed_once_per_version(ref_kernels):
    """fp32 master weights with a bf16 input: the op casts and packs the weight into the
    kernels' (taps, C_in, C_out) operand once per weight version (forward and backward reuse
    it), rebuilds it after an in-place update (an optimizer step), and the result follows."""
    cache = cbr_cuda.PACK_CACHE
    cache.clear()
    torch.manual_seed(8)
    x = torch.randn(2, 4, 6, 9).to(torch.bfloat16)
    w = (torch.randn(3, 4, 1, 3) * 0.3).requires_grad_()
    params = bn_params(3)

    def run():
        out = cbr_cuda.conv_bn_relu_cuda(x, w, *params, padding=(0, 1), training=False)
        ref = conv_bn_relu_reference(x, w.detach().to(torch.bfloat16), *params, padding=(0, 1),
                                     training=False)
        torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)
        return out

    run().float().sum().backward()
    assert w.grad.dtype == torch.float32
    assert cache.info()["misses"] == 1
    run()
    assert cache.info()["misses"] == 1 and cache.info()["hits"] >= 1
    packed = cache.peek(w)
    assert packed.dtype == torch.bfloat16 and tuple(packed.shape) == (3, 4, 3)
    with torch.no_grad():
        w.mul_(-2.0)  # an optimizer step: new version
    run()
    assert cache.info()["misses"] == 2


def test_reference_kernels_read_the_packed_operand():
    """The reference unpacks `packed=` itself, so a wrong packing gives a wrong result (the CPU
    tests of the ops check their packing through it)."""
    torch.manual_seed(9)
    x = torch.randn(1, 4, 5, 7)
    w = torch.randn(3, 4, 1, 3)
    a, b = torch.zeros(1, 3, 5, 7), torch.zeros(1, 3, 5, 7)
    R.asym_conv(x, w, 1, a, 0)
    R.asym_conv(x, w.double(), 1, b, 0, packed=R.pack_weight(w))  # fp64 master, fp32 operand
    torch.testing.assert_close(a, b)
    wrong = R.pack_weight(w).transpose(1, 2).contiguous().transpose(1, 2)  # right shape, no
    with pytest.raises(ValueError, match="packed must be the contiguous"):   # contiguity
        R.asym_conv(x, w, 1, b, 0, packed=wrong)
    with pytest.raises(TypeError, match="weight dtype"):
        R.asym_conv(x, w.double(), 1, b, 0)
