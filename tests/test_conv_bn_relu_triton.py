"""backend="triton" conv+BN+ReLU (inception_fast/ops/conv_bn_relu_triton.py) vs the torch
reference: forward, gradients (input, conv weight, BN weight/bias), running stats and
num_batches_tracked, in train and eval, on every distinct conv of the Inception-v3 layer table
at shrunk spatial size, odd shapes, BN statistics, autocast, and the whole model. Out-slice
writes, the fold cache and bad input: tests/test_conv_bn_relu_entry.py."""
import copy

import pytest
import torch
import torch.nn.functional as F

from helpers import DEV, make_pair, no_tf32, rel_err
from helpers import assert_rel_close as assert_close
from inception_fast import inception_v3
from inception_fast.backends import why_unavailable
from inception_fast.ops import conv_bn_relu
from whole_model import check_against_fp64, randomize_bn

pytestmark = pytest.mark.skipif(why_unavailable("triton") is not None,
                                reason=f"triton backend unavailable: {why_unavailable('triton')}")

# Every distinct (C_in, C_out, kernel, stride, padding) of docs/inception_v3_layers.md
# (44 of the 96 convs), with the layer's input size shrunk to (H, W), W != H where possible.
LAYERS = [
    pytest.param(3, 32, (3, 3), 2, (0, 0), (11, 10), id="Conv2d_1a_3x3"),
    pytest.param(32, 32, (3, 3), 1, (0, 0), (9, 8), id="Conv2d_2a_3x3"),
    pytest.param(32, 64, (3, 3), 1, (1, 1), (9, 8), id="Conv2d_2b_3x3"),
    pytest.param(64, 80, (1, 1), 1, (0, 0), (7, 6), id="Conv2d_3b_1x1"),
    pytest.param(80, 192, (3, 3), 1, (0, 0), (7, 6), id="Conv2d_4a_3x3"),
    pytest.param(192, 64, (1, 1), 1, (0, 0), (7, 6), id="Mixed_5b.branch1x1"),
    pytest.param(192, 48, (1, 1), 1, (0, 0), (7, 6), id="Mixed_5b.branch5x5_1"),
    pytest.param(48, 64, (5, 5), 1, (2, 2), (7, 6), id="Mixed_5b.branch5x5_2"),
    pytest.param(64, 96, (3, 3), 1, (1, 1), (7, 6), id="Mixed_5b.branch3x3dbl_2"),
    pytest.param(96, 96, (3, 3), 1, (1, 1), (7, 6), id="Mixed_5b.branch3x3dbl_3"),
    pytest.param(192, 32, (1, 1), 1, (0, 0), (7, 6), id="Mixed_5b.branch_pool"),
    pytest.param(256, 64, (1, 1), 1, (0, 0), (7, 6), id="Mixed_5c.branch1x1"),
    pytest.param(256, 48, (1, 1), 1, (0, 0), (7, 6), id="Mixed_5c.branch5x5_1"),
    pytest.param(288, 64, (1, 1), 1, (0, 0), (7, 6), id="Mixed_5d.branch1x1"),
    pytest.param(288, 48, (1, 1), 1, (0, 0), (7, 6), id="Mixed_5d.branch5x5_1"),
    pytest.param(288, 384, (3, 3), 2, (0, 0), (9, 8), id="Mixed_6a.branch3x3"),
    pytest.param(96, 96, (3, 3), 2, (0, 0), (9, 8), id="Mixed_6a.branch3x3dbl_3"),
    pytest.param(768, 192, (1, 1), 1, (0, 0), (7, 6), id="Mixed_6b.branch1x1"),
    pytest.param(768, 128, (1, 1), 1, (0, 0), (7, 6), id="Mixed_6b.branch7x7_1"),
    pytest.param(128, 128, (1, 7), 1, (0, 3), (6, 7), id="Mixed_6b.branch7x7_2"),
    pytest.param(128, 192, (7, 1), 1, (3, 0), (7, 6), id="Mixed_6b.branch7x7_3"),
    pytest.param(128, 128, (7, 1), 1, (3, 0), (7, 6), id="Mixed_6b.branch7x7dbl_2"),
    pytest.param(128, 192, (1, 7), 1, (0, 3), (6, 7), id="Mixed_6b.branch7x7dbl_5"),
    pytest.param(768, 160, (1, 1), 1, (0, 0), (7, 6), id="Mixed_6c.branch7x7_1"),
    pytest.param(160, 160, (1, 7), 1, (0, 3), (6, 7), id="Mixed_6c.branch7x7_2"),
    pytest.param(160, 192, (7, 1), 1, (3, 0), (7, 6), id="Mixed_6c.branch7x7_3"),
    pytest.param(160, 160, (7, 1), 1, (3, 0), (7, 6), id="Mixed_6c.branch7x7dbl_2"),
    pytest.param(160, 192, (1, 7), 1, (0, 3), (6, 7), id="Mixed_6c.branch7x7dbl_5"),
    pytest.param(192, 192, (1, 7), 1, (0, 3), (6, 7), id="Mixed_6e.branch7x7_2"),
    pytest.param(192, 192, (7, 1), 1, (3, 0), (7, 6), id="Mixed_6e.branch7x7_3"),
    pytest.param(128, 768, (5, 5), 1, (0, 0), (5, 5), id="AuxLogits.conv1"),
    pytest.param(192, 320, (3, 3), 2, (0, 0), (7, 8), id="Mixed_7a.branch3x3_2"),
    pytest.param(192, 192, (3, 3), 2, (0, 0), (7, 8), id="Mixed_7a.branch7x7x3_4"),
    pytest.param(1280, 320, (1, 1), 1, (0, 0), (5, 4), id="Mixed_7b.branch1x1"),
    pytest.param(1280, 384, (1, 1), 1, (0, 0), (5, 4), id="Mixed_7b.branch3x3_1"),
    pytest.param(384, 384, (1, 3), 1, (0, 1), (5, 4), id="Mixed_7b.branch3x3_2a"),
    pytest.param(384, 384, (3, 1), 1, (1, 0), (5, 4), id="Mixed_7b.branch3x3_2b"),
    pytest.param(1280, 448, (1, 1), 1, (0, 0), (5, 4), id="Mixed_7b.branch3x3dbl_1"),
    pytest.param(448, 384, (3, 3), 1, (1, 1), (5, 4), id="Mixed_7b.branch3x3dbl_2"),
    pytest.param(1280, 192, (1, 1), 1, (0, 0), (5, 4), id="Mixed_7b.branch_pool"),
    pytest.param(2048, 320, (1, 1), 1, (0, 0), (5, 4), id="Mixed_7c.branch1x1"),
    pytest.param(2048, 384, (1, 1), 1, (0, 0), (5, 4), id="Mixed_7c.branch3x3_1"),
    pytest.param(2048, 448, (1, 1), 1, (0, 0), (5, 4), id="Mixed_7c.branch3x3dbl_1"),
    pytest.param(2048, 192, (1, 1), 1, (0, 0), (5, 4), id="Mixed_7c.branch_pool"),
]


# Interpreter time grows with C_in * C_out * kh * kw (mostly in the backward kernels): above
# this budget both channel counts shrink by the same factor (kernel, stride, padding, spatial
# size and the non-multiple-of-16 channel counts stay). Measured: ~25 s per 1e6 on 2 CPU cores.
CHANNEL_BUDGET = 150_000


def shrink_channels(ci, co, k):
    f = min(1.0, (CHANNEL_BUDGET / (ci * co * k[0] * k[1])) ** 0.5)
    return max(3, round(ci * f)), max(3, round(co * f))


def run_step(m, x, grad_out):
    """Forward + backward; returns everything that must match the reference."""
    m.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    y = m(x)
    y.backward(grad_out)
    return dict(y=y.detach(), grad_x=x.grad, grad_w=m.conv.weight.grad,
                grad_gamma=m.bn.weight.grad, grad_beta=m.bn.bias.grad,
                running_mean=m.bn.running_mean.clone(), running_var=m.bn.running_var.clone(),
                num_batches_tracked=m.bn.num_batches_tracked.clone())


def tie_free(g, ref, x, training):
    """Zero the upstream gradient where the pre-ReLU value is within 1e-4 of 0 (from an fp64
    evaluation): there the ReLU mask may flip between two correct fp32 computations, and one
    flipped element would dominate the gradient comparison."""
    m = ref
    with torch.no_grad():
        z = F.batch_norm(F.conv2d(x.double(), m.conv.weight.double(), None, m.conv.stride,
                                  m.conv.padding),
                         m.bn.running_mean.double(), m.bn.running_var.double(),
                         m.bn.weight.double(), m.bn.bias.double(), training, 0.0, m.bn.eps)
    return torch.where(z.abs() < 1e-4, torch.zeros_like(g), g)


def compare_module(ref, tri, x, tol=1e-4):
    """Train step, eval step with grad, eval without grad: all vs the reference."""
    c = ref.conv
    oh, ow = ((x.shape[2 + i] + 2 * c.padding[i] - c.kernel_size[i]) // c.stride[i] + 1
              for i in (0, 1))
    for mode in ("train", "eval"):
        ref.train(mode == "train"), tri.train(mode == "train")
        g = torch.randn(x.shape[0], c.out_channels, oh, ow, device=x.device, dtype=x.dtype)
        g = tie_free(g, ref, x, mode == "train")
        a, b = run_step(tri, x, g), run_step(ref, x, g)
        for k in a:
            if k == "num_batches_tracked":
                assert torch.equal(a[k], b[k]), f"{mode} {k}"
            else:
                assert_close(a[k], b[k], f"{mode} {k}", tol)
    with torch.no_grad():  # eval, no grad: the folded-BN path
        ref.eval(), tri.eval()
        assert_close(tri(x), ref(x), "eval no-grad y", tol)


@pytest.mark.parametrize("ci,co,k,s,p,hw", LAYERS)
def test_layer_table(ci, co, k, s, p, hw):
    ci, co = shrink_channels(ci, co, k)
    ref, tri = make_pair(ci, co, k, s, p)
    x = torch.randn(2, ci, *hw, device=DEV).to(memory_format=torch.channels_last)
    compare_module(ref, tri, x)


@pytest.mark.parametrize("ci,co,k,s,p,shape,layout", [
    (3, 5, (3, 3), 2, (0, 0), (3, 11, 9), "nchw"),
    (13, 37, (3, 3), 1, (1, 1), (1, 7, 5), "channels_last"),
    (13, 5, (1, 7), 1, (0, 3), (3, 5, 9), "sliced"),
    (37, 13, (7, 1), 1, (3, 0), (1, 9, 5), "permuted"),
    (3, 37, (5, 5), 1, (2, 2), (3, 7, 7), "sliced"),
    (13, 37, (1, 1), 2, (0, 0), (3, 9, 7), "channels_last"),
    (13, 5, (1, 3), 1, (0, 1), (1, 5, 5), "nchw"),
    (5, 13, (3, 1), 2, (1, 0), (3, 9, 7), "permuted"),
])
def test_odd_shapes_and_layouts(ci, co, k, s, p, shape, layout):
    n, h, w = shape
    ref, tri = make_pair(ci, co, k, s, p, seed=1)
    if layout == "sliced":  # a non-contiguous channel/width slice of a bigger tensor
        x = torch.randn(n, ci + 4, h, w + 3, device=DEV)[:, 2:2 + ci, :, 1:1 + w]
    elif layout == "permuted":  # (N, C, W, H) storage, transposed view
        x = torch.randn(n, ci, w, h, device=DEV).transpose(2, 3)
    elif layout == "channels_last":
        x = torch.randn(n, ci, h, w, device=DEV).to(memory_format=torch.channels_last)
    else:
        x = torch.randn(n, ci, h, w, device=DEV)
    assert layout not in ("sliced", "permuted") or not x.is_contiguous()
    compare_module(ref, tri, x)


def test_momentum_none_and_repeated_steps():
    """Cumulative average (momentum=None: factor 1/num_batches_tracked) over three steps."""
    ref, tri = make_pair(13, 37, (3, 3), 1, (1, 1))
    ref.bn.momentum = tri.bn.momentum = None
    for step in range(3):
        x = torch.randn(2, 13, 6, 5, device=DEV) + step
        ref.train(), tri.train()
        with torch.no_grad():
            a, b = tri(x), ref(x)
        assert_close(a, b, f"step {step} y")
    assert torch.equal(tri.bn.num_batches_tracked, ref.bn.num_batches_tracked)
    assert_close(tri.bn.running_mean, ref.bn.running_mean, "running_mean")
    assert_close(tri.bn.running_var, ref.bn.running_var, "running_var")


def test_batch_stats_with_large_mean_are_accurate():
    """Conv outputs with |mean| >> std: the batch variance must not cancel (checked against an
    fp64 reference, tighter than the fp32 reference itself needs)."""
    torch.manual_seed(3)
    x = torch.randn(2, 8, 9, 9, device=DEV) * 0.05 + 20.0  # |mean| / std of y ~ 400
    w = torch.randn(16, 8, 1, 1, device=DEV)
    rm, rv = torch.zeros(16, device=DEV), torch.ones(16, device=DEV)
    y = conv_bn_relu(x, w, None, None, rm, rv, training=True, momentum=1.0, backend="triton")
    y64 = F.conv2d(x.double(), w.double())
    var64 = y64.var(dim=(0, 2, 3), unbiased=True)
    assert_close(rv, var64, "running_var (unbiased) vs fp64")  # E[y^2]-E[y]^2: ~1e-2 off
    assert_close(rm, y64.mean(dim=(0, 2, 3)), "running_mean vs fp64", 1e-6)
    ref = F.relu(F.batch_norm(y64, None, None, training=True, eps=1e-3))
    assert_close(y, ref, "normalized output vs fp64")


def test_track_running_stats_false_and_no_affine():
    """No running stats (batch stats in eval too) and BN without weight/bias."""
    torch.manual_seed(4)
    x = torch.randn(3, 5, 7, 6, device=DEV, requires_grad=True)
    w = torch.randn(13, 5, 3, 3, device=DEV, requires_grad=True)
    outs = []
    for backend in ("triton", "torch"):
        xx = x.detach().clone().requires_grad_(True)
        ww = w.detach().clone().requires_grad_(True)
        y = conv_bn_relu(xx, ww, None, None, None, None, padding=(1, 1), training=True,
                         backend=backend)
        y.square().sum().backward()
        outs.append((y, xx.grad, ww.grad))
    for name, a, b in zip(("y", "grad_x", "grad_w"), *outs):
        assert_close(a, b, name)



# Autocast's half dtype: bf16 on a GPU; fp16 in the interpreter, whose tl.dot has no bf16.
AMP = torch.bfloat16 if DEV == "cuda" else torch.float16


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("ci,co,k,s,p,hw", [LAYERS[19], LAYERS[7], LAYERS[15]])
def test_autocast_runs_the_fused_op_in_the_autocast_dtype(training, ci, co, k, s, p, hw):
    """Under torch.autocast the fused op computes as torch does there (conv in the half dtype
    with fp32 accumulation, BN in fp32, half output, fp32 master-weight gradients). Oracle: the
    fp64 computation on the half-rounded input and weight; our error may be 2x torch's own
    autocast error plus one rounding of the dtype (forward, input and weight gradients)."""
    ref, tri = make_pair(ci, co, k, s, p)
    ref.train(training), tri.train(training)
    x = torch.randn(3, ci, *hw, generator=torch.Generator().manual_seed(5)).to(DEV)
    gy = torch.randn(3, co, *[(n + 2 * q - kk) // s + 1 for n, q, kk in zip(hw, p, k)],
                     generator=torch.Generator().manual_seed(6)).to(DEV)
    oracle = copy.deepcopy(ref).double()
    with torch.no_grad():
        oracle.conv.weight.copy_(ref.conv.weight.to(AMP).double())
    gy = tie_free(gy, oracle, x.to(AMP), training)
    want = run_step(oracle, x.to(AMP).double(), gy.double())
    got = {}
    for name, m in (("torch", ref), ("ours", tri)):
        with torch.autocast(DEV, dtype=AMP):
            got[name] = run_step(m, x, gy)
        assert got[name]["y"].dtype == AMP
        assert got[name]["grad_w"].dtype == got[name]["grad_x"].dtype == torch.float32
    eps = torch.finfo(AMP).eps
    for key in ("y", "grad_x", "grad_w", "grad_gamma", "grad_beta", "running_var"):
        e_torch = rel_err(got["torch"][key], want[key])
        e_ours = rel_err(got["ours"][key], want[key])
        assert e_ours <= 2 * e_torch + eps, f"{key}: ours {e_ours:.2e} vs torch {e_torch:.2e}"


def _whole_model(size, aux_logits=True):
    torch.manual_seed(0)
    model = inception_v3(backend="torch", input_size=size, num_classes=10, dropout=0.0,
                         aux_logits=aux_logits)
    return randomize_bn(model)


def test_inception_v3_eval_and_train_step_match_torch():
    """The whole model (every kernel, forward and backward, the fused copy-free blocks) at
    79x79 (input_size=79 variant), batch 2, against fp64: ~1.5 min in the interpreter."""
    x = torch.randn(2, 3, 79, 79, generator=torch.Generator().manual_seed(2))
    check_against_fp64(_whole_model(79), "triton", x, DEV)


def test_inception_v3_299_batch1_eval_and_train_step_match_torch():
    """The whole model at 299x299, batch 1 (no aux head: in training its 1x1 grid would give
    BN one value per channel), against fp64: ~1 min in the interpreter."""
    x = torch.randn(1, 3, 299, 299, generator=torch.Generator().manual_seed(2))
    check_against_fp64(_whole_model(299, aux_logits=False), "triton", x, DEV)


# ----------------------------------------------------------------------------- GPU only


def _fp64_oracle(ref, x):
    """The reference module's output, computed in float64."""
    m = copy.deepcopy(ref).double()
    with torch.no_grad():
        return m(x.double())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("ci,co,k,s,p,hw", [LAYERS[4], LAYERS[7], LAYERS[19], LAYERS[20],
                                            LAYERS[15], LAYERS[37]])
def test_half_precision_vs_fp64(dtype, training, ci, co, k, s, p, hw):
    """Low precision: our error against an fp64 oracle must be of the order of torch's own
    error in that dtype (both round the inputs; we accumulate in fp32 like cuDNN). Allowed:
    2x torch's error plus one half-ulp of the dtype at the output scale."""
    ref32, _ = make_pair(ci, co, k, s, p)
    x32 = torch.randn(32, ci, *hw, device="cuda").to(memory_format=torch.channels_last)
    ref, tri = copy.deepcopy(ref32).to(dtype), copy.deepcopy(ref32).to(dtype)
    tri.backend = "triton"
    oracle = copy.deepcopy(ref).double().train(training)
    ref.train(training), tri.train(training)
    x = x32.to(dtype)
    with torch.no_grad():
        want = oracle(x.double())
        e_torch = rel_err(ref(x), want)
        e_ours = rel_err(tri(x), want)
    eps = torch.finfo(dtype).eps
    assert e_ours <= 2 * e_torch + eps, f"ours {e_ours:.2e} vs torch {e_torch:.2e}"
    if training:
        assert_close(tri.bn.running_var.double(), oracle.bn.running_var, "running_var",
                     2 * rel_err(ref.bn.running_var, oracle.bn.running_var) + eps)


@pytest.mark.gpu
def test_inception_v3_299_train_step_on_gpu_without_tf32():
    """The whole model at 299x299 (batch 2), TF32 off so that fp32 means fp32 on both sides."""
    with no_tf32():
        x = torch.randn(2, 3, 299, 299, generator=torch.Generator().manual_seed(2))
        check_against_fp64(_whole_model(299), "triton", x, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("ci,co,k,s,p,hw", LAYERS[::4])
def test_fp32_on_gpu_without_tf32(ci, co, k, s, p, hw):
    """On a GPU with TF32 off (torch's fp32 conv exact-ish), we match at 1e-4 too."""
    with no_tf32():
        ref, tri = make_pair(ci, co, k, s, p)
        x = torch.randn(8, ci, *hw, device="cuda").to(memory_format=torch.channels_last)
        compare_module(ref, tri, x)
