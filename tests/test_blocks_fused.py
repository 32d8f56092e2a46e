"""Fused Inception blocks (no torch.cat, horizontal 1x1 GEMM, pool/conv reordering, copy-free
grid reductions) against the torchvision-structured reference (backend="torch").

On CPU the Triton kernels run in the interpreter, where the implicit-GEMM backward of a conv
with hundreds of channels costs tens of seconds; so the per-block train-step tests use small
input channel counts (InceptionA / C take them as arguments) or, for the fixed-width blocks
InceptionD / E, pin their non-1x1 units to "torch" (the fused structure, the 1x1 group, the
pools and the slices are what is under test there; the Triton conv units are A's and B's,
tested in their own files). The whole model (every block fused, eval + a full train step, at
79x79 in the interpreter and 299x299 on a GPU) is tested against fp64 in
tests/test_conv_bn_relu_triton.py; the 1x1 group alone in tests/test_conv1x1_multi.py, the
pool kernels in tests/test_pools_kernels.py.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import inception_fast
import inception_fast.nn as ifnn
from helpers import CL, close

DEV = "cuda" if torch.cuda.is_available() else "cpu"
# Triton 3.8's interpreter gets bf16 tl.dot wrong on CPU (any GEMM kernel, A's conv included):
# the half-precision checks use fp16 there and bf16 on a GPU.
LOW = torch.bfloat16 if DEV == "cuda" else torch.float16
AMP = LOW  # autocast's dtype here (the interpreter's tl.dot has no bf16: kernels/dtypes.py)


# ------------------------------------------------------------------- pool/conv reordering

def test_pool_conv_reordering_exact_fp64():
    """avg_pool(3, 1, 1, count_include_pad) then a bias-free 1x1 conv == the conv then the pool."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 9, 11, generator=g, dtype=torch.float64)
    w = torch.randn(5, 7, 1, 1, generator=g, dtype=torch.float64)
    a = F.conv2d(F.avg_pool2d(x, 3, 1, 1), w)
    b = F.avg_pool2d(F.conv2d(x, w), 3, 1, 1)
    assert (a - b).abs().max().item() < 1e-13
    # ... and the check can fail: without counting the padding, the border divisors differ,
    # but they are per pixel so it still commutes; a bias does not commute at the border.
    bias = torch.randn(5, generator=g, dtype=torch.float64)
    c = F.conv2d(F.avg_pool2d(x, 3, 1, 1), w, bias)
    d = F.avg_pool2d(F.conv2d(x, w, bias), 3, 1, 1)
    assert (c - d).abs().max().item() > 1e-3


# ----------------------------------------------------------------------------- blocks

# name -> (class, kwargs, C_in, units pinned to torch: the fixed-width convs of D and E)
BLOCKS = {
    "A": (ifnn.InceptionA, dict(in_channels=24, pool_features=8), 24, ()),
    "B": (ifnn.InceptionB, dict(in_channels=16), 16, ()),
    "C": (ifnn.InceptionC, dict(in_channels=24, channels_7x7=8), 24, ()),
    "D": (ifnn.InceptionD, dict(in_channels=16), 16,
          ("branch3x3_2", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4")),
    "E": (ifnn.InceptionE, dict(in_channels=16), 16,
          ("branch3x3_2a", "branch3x3_2b", "branch3x3dbl_2", "branch3x3dbl_3a",
           "branch3x3dbl_3b")),
}


# The non-1x1 units of A, B, C, pinned in the real-grid tests (interpreter time).
HEAVY = {
    "A": ("branch5x5_2", "branch3x3dbl_2", "branch3x3dbl_3"),
    "B": ("branch3x3", "branch3x3dbl_2", "branch3x3dbl_3"),
    "C": ("branch7x7_2", "branch7x7_3", "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4",
          "branch7x7dbl_5"),
}


def _pair_of_blocks(name, seed=0, pin_heavy=False):
    cls, kw, c_in, pinned = BLOCKS[name]
    if pin_heavy:
        pinned = pinned + HEAVY.get(name, ())
    torch.manual_seed(seed)
    ref = cls(**kw, backend="torch")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # not the trivial init: BN must matter
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    ref.to(DEV)
    fused = copy.deepcopy(ref)
    for n, m in fused.named_modules():
        if isinstance(m, ifnn.ConvBNReLU):
            m.backend = "torch" if n in pinned else "triton"
    return ref, fused, c_in


def _train_step_and_eval(ref, fused, x):
    """A train step (forward, backward) and an eval forward on both; asserts equality."""
    g = torch.Generator().manual_seed(9)
    ref.train(), fused.train()
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yf = ref(xr), fused(xf)
    close(yf, yr, what="train forward")
    gy = torch.randn(yr.shape, generator=g).to(DEV)
    yr.backward(gy)
    yf.backward(gy)
    close(xf.grad, xr.grad, what="input grad")
    pf = dict(fused.named_parameters())
    for k, p in ref.named_parameters():
        close(pf[k].grad, p.grad, rtol=2e-4, what=f"grad {k}")
    bf = dict(fused.named_buffers())
    for k, b in ref.named_buffers():
        close(bf[k], b, what=f"buffer {k}")
    ref.eval(), fused.eval()
    with torch.no_grad():
        close(fused(x), ref(x), what="eval forward")
    return yf


@pytest.mark.parametrize("name,hw", [("A", 5), ("B", 7), ("C", 6), ("D", 7), ("E", 3)])
def test_block_fused_equals_reference_small(name, hw):
    ref, fused, c_in = _pair_of_blocks(name)
    x = torch.randn(2, c_in, hw, hw + 1).to(DEV)
    y = _train_step_and_eval(ref, fused, x)
    assert y.is_contiguous(memory_format=CL)


@pytest.mark.parametrize("name,hw", [("A", 35), ("B", 35), ("C", 17), ("D", 17), ("E", 8)])
def test_block_fused_equals_reference_real_grid(name, hw):
    """The grid sizes of the 299 (and 79) model, batch 1; the kxk / 1xn convs pinned to torch
    (the fused structure, 1x1 group, pools and slices at the real grid are under test)."""
    ref, fused, c_in = _pair_of_blocks(name, seed=1, pin_heavy=True)
    _train_step_and_eval(ref, fused, torch.randn(1, c_in, hw, hw).to(DEV))


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


FORBIDDEN = ("cat", "batch_norm", "native_batch_norm", "_native_batch_norm_legit",
             "_native_batch_norm_legit_no_training", "cudnn_batch_norm", "relu", "relu_",
             "threshold", "clamp_min", "avg_pool2d", "max_pool2d", "max_pool2d_with_indices")


@pytest.mark.parametrize("name", ["A", "B", "C", "D", "E"])
@pytest.mark.parametrize("train", [True, False])
def test_fused_forward_calls_no_cat_bn_relu(name, train):
    cls, kw, c_in, _ = BLOCKS[name]
    torch.manual_seed(0)
    ref = cls(**kw, backend="torch").to(DEV).train(train)
    fused = copy.deepcopy(ref)
    for m in fused.modules():
        if isinstance(m, ifnn.ConvBNReLU):
            m.backend = "triton"
    x = torch.randn(1, c_in, 7, 7).to(DEV).requires_grad_(train)
    with _OpCounter() as c:
        ref(x)
    assert "cat" in c.names  # the counter sees what the reference does
    assert any("batch_norm" in n for n in c.names)
    if name in ("D", "E"):  # their wide convs are the Triton kernels' own (slow here): eval,
        fused.eval()        # forward only, where the op count is what matters
        x = x.detach()
    with _OpCounter() as c:
        fused(x)
    bad = sorted({n for n in c.names if n in FORBIDDEN})
    assert not bad, f"fused forward of {name} called {bad}"


def _count_triton_launches(monkeypatch):
    """Names of the Triton kernels launched (compiled or interpreted)."""
    import triton.runtime.interpreter as interp
    import triton.runtime.jit as jit

    names = []
    for cls in (jit.JITFunction, interp.InterpretedFunction):
        orig = cls.run

        def run(self, *a, _orig=orig, **k):
            names.append(self.fn.__name__ if hasattr(self, "fn") and hasattr(self.fn, "__name__")
                         else getattr(self, "__name__", "?"))
            return _orig(self, *a, **k)
        monkeypatch.setattr(cls, "run", run)
    return names


@pytest.mark.parametrize("name", ["A", "C", "E"])
def test_eval_fast_path_runs_no_bn_kernel(name, monkeypatch):
    """Eval without grad: BN folded into the weights (1x1 group and single units alike), so no
    BN-statistics, BN-apply or routed-apply kernel runs; only GEMMs and the pools."""
    ref, fused, c_in = _pair_of_blocks(name, pin_heavy=name == "E")
    fused.eval(), ref.eval()
    x = torch.randn(1, c_in, 5, 5).to(DEV)
    names = _count_triton_launches(monkeypatch)
    with torch.no_grad():
        y = fused(x)
    assert names, "no Triton kernel was seen"
    bn_kernels = [n for n in names if "bn" in n or "apply" in n]
    assert not bn_kernels, f"eval forward launched {bn_kernels}"
    assert "_gemm1x1_routed_kernel" in names and "_avg_pool3x3_kernel" in names
    with torch.no_grad():
        close(y, ref(x), what="eval")


def test_fused_block_layouts_autocast_compile():
    ref, fused, c_in = _pair_of_blocks("A")
    ref.eval(), fused.eval()
    x = torch.randn(1, c_in, 5, 5).to(DEV)
    with torch.no_grad():
        y_cl = fused(x.contiguous(memory_format=CL))
        y_c = fused(x.contiguous())
        close(y_cl, y_c, what="channels_last vs contiguous input")
        close(y_c, ref(x), what="vs reference")
        # autocast: the fused block casts its input once and its convs compute in the half
        # dtype, as the reference's do: same dtype, equal to half-precision accuracy.
        with torch.autocast(DEV, dtype=AMP):
            ya, yr = fused(x), ref(x)
        assert ya.dtype == yr.dtype == AMP
        close(ya, yr, rtol=5e-2, atol=5e-2, what="autocast")
    # A half-precision block (convs in bf16 / fp16, BN kept fp32, as the benchmarks run it).
    fb = copy.deepcopy(fused).to(LOW)
    for m in fb.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.float()
    with torch.no_grad():
        close(fb(x.to(LOW)), ref(x), rtol=5e-2, atol=5e-2, what="half-precision block")


@pytest.mark.parametrize("name", ["A", "D"])
def test_fused_block_train_step_under_autocast(name):
    """A train step under autocast: the block output (one buffer, every slice) in the half
    dtype and fp32 parameter gradients, as the reference's. Accuracy against an fp64 run of
    the same (half-rounded) input: our error at most 4x torch's own autocast error plus one
    rounding of the dtype, per tensor. BN beta is shifted by +2 so that pre-ReLU values stay
    away from 0 (a half-precision rounding flipping a ReLU mask moved one BN-bias gradient by
    16% in either backend). The input is half, as inside an autocast model (an fp32 input
    makes the reference's torch.cat promote D's output to fp32 for the max-pool slice)."""
    ref, fused, c_in = _pair_of_blocks(name, pin_heavy=name == "D")
    with torch.no_grad():
        for m in (*ref.modules(), *fused.modules()):
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.add_(2.0)
    x = torch.randn(2, c_in, 5, 5, generator=torch.Generator().manual_seed(3)).to(DEV, AMP)
    runs = []
    for m, amp in ((copy.deepcopy(ref).double(), False), (ref, True), (fused, True)):
        xx = (x if amp else x.double()).clone().requires_grad_()
        with torch.autocast(DEV, dtype=AMP, enabled=amp):
            y = m(xx)
        assert y.dtype == (AMP if amp else torch.float64)
        y.double().square().sum().backward()
        runs.append({"y": y.detach(), "x": xx.grad,
                     **{k: p.grad for k, p in m.named_parameters()}})
    exact, torch_amp, ours = runs
    eps = torch.finfo(AMP).eps
    for k, want in exact.items():
        assert ours[k].dtype == torch_amp[k].dtype, k
        scale = want.abs().max().item()
        e_torch = (torch_amp[k].double() - want).abs().max().item() / scale
        e_ours = (ours[k].double() - want).abs().max().item() / scale
        assert e_ours <= 4 * e_torch + eps, f"{k}: ours {e_ours:.2e} vs torch {e_torch:.2e}"


def test_reference_unit_writes_an_autocast_slice_from_an_fp32_input():
    """Under autocast a conv's result has the autocast dtype, on the reference backend too: a
    half block buffer takes it even when the unit's input is still fp32 (a block's first)."""
    unit = ifnn.ConvBNReLU(4, 3, 3, padding=1, backend="torch").to(DEV).eval()
    x = torch.randn(1, 4, 5, 5, device=DEV)
    out = torch.zeros(1, 6, 5, 5, device=DEV, dtype=AMP)
    with torch.autocast(DEV, dtype=AMP), torch.no_grad():
        unit(x, out=out, out_offset=2)
        want = unit(x)
    assert want.dtype == AMP and torch.equal(out[:, 2:5], want)
    assert (out[:, :2] == 0).all() and (out[:, 5:] == 0).all()


def test_fused_block_torch_compile():
    """torch.compile of a fused block must not error (graph breaks allowed)."""
    ref, fused, c_in = _pair_of_blocks("C")
    fused.eval(), ref.eval()
    x = torch.randn(1, c_in, 4, 4).to(DEV)
    torch._dynamo.reset()
    compiled = torch.compile(fused, backend="eager")  # the graph capture is what is tested here
    with torch.no_grad():
        close(compiled(x), ref(x), what="compiled")


def test_unit_backend_follows_set_backend():
    model = inception_fast.inception_v3(backend="torch", input_size=79, aux_logits=False,
                                        init_weights=False)
    x = torch.randn(1, 768, 17, 17)
    assert model.Mixed_6b._backend(x) == "torch"
    model.set_backend("triton")
    assert model.Mixed_6b._backend(x) == "triton"
    sd = model.state_dict()
    assert not any("_FIRST" in k for k in sd)


def _saved_bytes(model, x):
    """Bytes autograd keeps for backward in one train forward (distinct storages, parameters
    excluded)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x.requires_grad_())
    return sum(seen.values())


def _activation_bytes_per_sample(model, shape):
    """Saved bytes at batch 2 minus batch 1: the activations, without what does not grow with
    the batch (the fused 1x1 group saves its packed weight, a parameter copy it caches anyway)."""
    x = torch.randn(2, *shape, device=DEV)
    return _saved_bytes(model, x.clone()) - _saved_bytes(model, x[:1].clone())


def test_fused_model_keeps_less_activation_memory_for_backward():
    """Whole inception_v3 at 79x79, train mode: the fused blocks (no cat copies, the pool
    applied to the pool-branch conv's few channels) keep fewer activation bytes per sample for
    backward than the torchvision structure (measured: 75.2 -> 59.0 MiB per sample)."""
    torch.manual_seed(0)
    ref = inception_fast.inception_v3(backend="torch", input_size=79, aux_logits=False,
                                      init_weights=False).to(DEV).train()
    fused = copy.deepcopy(ref).set_backend("triton")
    b_ref, b_fused = (_activation_bytes_per_sample(m, (3, 79, 79)) for m in (ref, fused))
    print(f"activations saved for backward per sample: torchvision structure "
          f"{b_ref / 2**20:.1f} MiB, fused {b_fused / 2**20:.1f} MiB")
    assert b_fused < 0.9 * b_ref
