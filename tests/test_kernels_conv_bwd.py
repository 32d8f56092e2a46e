"""Triton conv backward (kernels/conv2d_bwd.py) against torch.nn.grad.conv2d_input / conv2d_weight.

On CPU the kernels run in Triton's interpreter (conftest.py), so shapes are small; on a GPU
the same tests run on CUDA. The reference is computed in float64."""
import pytest
import torch
import torch.nn.functional as F

from bench.layers import by_name
from helpers import assert_close_to_ref, expect_errors, random_in_layout
from inception_fast.kernels.conv2d_bwd import conv2d_dgrad, conv2d_wgrad

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# fp32 means fp32 on both sides: the backward kernels follow the forward's dot-precision rule
# (TF32 where torch allows it for convolutions), as cuDNN does.
pytestmark = pytest.mark.usefixtures("exact_fp32")

# Every kernel / stride / padding combination of Inception-v3's layer table
# (docs/inception_v3_layers.md), channels and H/W shrunk; batch 2.
# (layer, C_in, C_out, H, W, kernel, stride, padding)
TABLE = [
    ("Conv2d_1a_3x3", 3, 16, 15, 15, (3, 3), 2, (0, 0)),
    ("Conv2d_2a_3x3", 16, 16, 11, 11, (3, 3), 1, (0, 0)),
    ("Conv2d_2b_3x3", 16, 24, 11, 11, (3, 3), 1, (1, 1)),
    ("Conv2d_3b_1x1", 24, 40, 9, 9, (1, 1), 1, (0, 0)),
    ("Mixed_5b.branch5x5_2", 24, 32, 9, 9, (5, 5), 1, (2, 2)),
    ("Mixed_6a.branch3x3", 40, 48, 11, 11, (3, 3), 2, (0, 0)),
    ("Mixed_6b.branch7x7_2", 16, 16, 9, 9, (1, 7), 1, (0, 3)),
    ("Mixed_6b.branch7x7_3", 16, 24, 9, 9, (7, 1), 1, (3, 0)),
    ("AuxLogits.conv1", 32, 48, 5, 5, (5, 5), 1, (0, 0)),
    ("Mixed_7b.branch3x3_2a", 48, 48, 6, 6, (1, 3), 1, (0, 1)),
    ("Mixed_7b.branch3x3_2b", 48, 48, 6, 6, (3, 1), 1, (1, 0)),
]

# Odd shapes: channels not multiples of 8, odd / unequal H and W, batch 1 and 3, every grad_y
# layout. (N, C_in, C_out, H, W, kernel, stride, padding, grad_y layout)
ODD = [
    (1, 13, 37, 7, 9, (3, 3), 1, (1, 1), "nchw"),
    (3, 3, 5, 9, 7, (3, 3), 2, (0, 0), "channels_last"),
    (3, 13, 5, 10, 12, (3, 3), 2, (0, 0), "slice"),  # last row and column reached by no output
    (1, 5, 37, 8, 11, (3, 3), 2, (1, 1), "permuted"),  # stride 2 with padding
    (2, 13, 5, 7, 6, (1, 7), 1, (0, 3), "nchw"),
    (3, 3, 37, 5, 7, (7, 1), 1, (3, 0), "slice"),
    (1, 37, 13, 5, 5, (5, 5), 1, (2, 2), "channels_last"),
    (2, 5, 3, 4, 9, (1, 3), (1, 2), (0, 1), "slice"),  # unequal strides
]


def _case(n, cin, cout, h, w, k, stride, pad, layout, x_layout="channels_last"):
    x = torch.randn(n, cin, h, w, device=DEVICE)
    if x_layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif x_layout == "slice":
        big = torch.randn(n, cin + 5, h, w, device=DEVICE).to(memory_format=torch.channels_last)
        x = big[:, 2:2 + cin]
    wt = torch.randn(cout, cin, *k, device=DEVICE) / (cin * k[0] * k[1]) ** 0.5
    oh, ow = F.conv2d(x[:1, :, :, :], wt, stride=stride, padding=pad).shape[2:]
    gy = random_in_layout(n, cout, oh, ow, layout, DEVICE)
    return x, wt, gy


def _check_dgrad(x, wt, gy, stride, pad, rel=1e-4):
    gx = conv2d_dgrad(gy, wt, x.shape[2:], stride=stride, padding=pad)
    ref = torch.nn.grad.conv2d_input(x.shape, wt.double(), gy.double(), stride=stride, padding=pad)
    assert gx.shape == x.shape and gx.dtype == gy.dtype
    assert gx.is_contiguous(memory_format=torch.channels_last)
    assert_close_to_ref(gx, ref, rel)
    return gx


def _check_wgrad(x, wt, gy, stride, pad, rel=1e-4, **kw):
    gw = conv2d_wgrad(x, gy, wt.shape[2:], stride=stride, padding=pad, **kw)
    ref = torch.nn.grad.conv2d_weight(x.double(), wt.shape, gy.double(), stride=stride, padding=pad)
    assert gw.shape == wt.shape and gw.dtype == torch.float32 and gw.is_contiguous()
    assert_close_to_ref(gw, ref, rel)
    return gw


@pytest.mark.parametrize("which", ["dgrad", "wgrad"])
@pytest.mark.parametrize("layer", TABLE, ids=[t[0] for t in TABLE])
def test_layer_table(layer, which):
    torch.manual_seed(0 if which == "dgrad" else 1)
    _, cin, cout, h, w, k, s, p = layer
    x, wt, gy = _case(2, cin, cout, h, w, k, s, p, "slice")
    (_check_dgrad if which == "dgrad" else _check_wgrad)(x, wt, gy, s, p)


@pytest.mark.parametrize("case", ODD, ids=[f"odd{i}" for i in range(len(ODD))])
def test_dgrad_odd_shapes(case):
    torch.manual_seed(2)
    x, wt, gy = _case(*case)
    _check_dgrad(x, wt, gy, case[6], case[7])


@pytest.mark.parametrize("i", range(len(ODD)), ids=[f"odd{i}" for i in range(len(ODD))])
def test_wgrad_odd_shapes(i):
    """x in every layout too (NCHW, channels_last, channel slice), cycling over the cases."""
    torch.manual_seed(3)
    case = ODD[i]
    x, wt, gy = _case(*case, x_layout=("nchw", "channels_last", "slice")[i % 3])
    _check_wgrad(x, wt, gy, case[6], case[7])


def test_dgrad_unreached_pixels_are_zero():
    """3x3 / stride 2 / pad 0 on 12x12: no output pixel reads row 11 or column 11."""
    torch.manual_seed(4)
    x, wt, gy = _case(2, 5, 7, 12, 12, (3, 3), 2, (0, 0), "nchw")
    gx = _check_dgrad(x, wt, gy, 2, (0, 0))
    assert (gx[:, :, 11, :] == 0).all() and (gx[:, :, :, 11] == 0).all()
    assert (gx[:, :, :11, :11] != 0).any()


@pytest.mark.parametrize("split_k", [1, 2, 5, 1000])
def test_wgrad_split_k(split_k):
    """Partial sums over K chunks (the default picks the count from the shape), added by the
    last split of each tile to finish, which leaves the arrival counters at zero."""
    from inception_fast.kernels import last_program
    torch.manual_seed(5)
    x, wt, gy = _case(3, 13, 37, 9, 11, (3, 3), 1, (1, 1), "slice", x_layout="nchw")
    _check_wgrad(x, wt, gy, 1, (1, 1), split_k=split_k)
    assert not last_program.arrival_counters(x.device, 1024).any()


def test_dgrad_weight_any_layout():
    torch.manual_seed(6)
    x, wt, gy = _case(2, 6, 10, 7, 7, (3, 3), 1, (1, 1), "nchw")
    _check_dgrad(x, wt.to(memory_format=torch.channels_last), gy, 1, (1, 1))
    _check_dgrad(x, wt.transpose(2, 3).contiguous().transpose(2, 3), gy, 1, (1, 1))


def test_bad_input():
    """dgrad's and wgrad's argument errors, one table: (function, error, message, args[,
    kwargs])."""
    gy = torch.randn(2, 8, 5, 5, device=DEVICE)
    wt = torch.randn(8, 4, 3, 3, device=DEVICE)
    x = torch.randn(2, 4, 7, 7, device=DEVICE)
    hw, k, dg, wg = (7, 7), (3, 3), conv2d_dgrad, conv2d_wgrad
    cases = [
        (dg, ValueError, "4-D", (gy[0], wt, hw)),
        (dg, TypeError, "dtype", (gy.to(torch.int32), wt, hw)),
        (dg, ValueError, "channels", (gy, torch.randn(6, 4, 3, 3, device=DEVICE), hw)),
        (dg, ValueError, "gives 3x3", (gy, wt, (5, 5))),
        (dg, ValueError, "does not fit", (gy, wt, (1, 1))),
        (dg, ValueError, "on meta", (gy.to("meta"), wt.to("meta"), hw)),
        (dg, ValueError, "weight on meta", (gy, wt.to("meta"), hw)),
        (dg, ValueError, "stride", (gy, wt, hw), dict(stride=0)),
        (dg, TypeError, "torch.Tensor", (gy.tolist(), wt, hw)),
        (wg, ValueError, "4-D", (x[0], gy, k)),
        (wg, TypeError, "must match", (x.half(), gy, k)),
        (wg, TypeError, "dtype", (x.double(), gy.double(), k)),
        (wg, ValueError, "batch", (x[:1], gy, k)),
        (wg, ValueError, "gives 3x3", (x, gy, (5, 5))),
        (wg, ValueError, "on meta", (x.to("meta"), gy.to("meta"), k)),
        (wg, ValueError, "x is on", (x, gy.to("meta"), k)),
        (wg, ValueError, "padding", (x, gy, k), dict(padding=-1)),
    ]
    for fn, *case in cases:
        expect_errors(fn, [case])


# ----------------------------------------------------------------------------- GPU only

# Full-size Inception-v3 layers (batch 4): stride-2 reductions, asymmetric, 1x1, 5x5, read
# from the layer table (bench/layers.py, checked against torchvision by bench/test_layer_table.py).
GPU_LAYERS = [(n, lay.c_in, lay.c_out, lay.h, lay.w, lay.kernel, lay.stride[0], lay.padding)
              for n in ("Conv2d_2b_3x3", "Mixed_5b.branch5x5_2", "Mixed_6a.branch3x3",
                        "Mixed_6e.branch7x7_2", "Mixed_6e.branch7x7_3", "Mixed_7a.branch3x3_2",
                        "Mixed_7c.branch3x3_1", "Mixed_7b.branch3x3_2b")
              for lay in [by_name(n)]]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layer", GPU_LAYERS, ids=[t[0] for t in GPU_LAYERS])
def test_gpu_full_size_layers(layer, dtype):
    torch.manual_seed(7)
    _, cin, cout, h, w, k, s, p = layer
    x, wt, gy = _case(4, cin, cout, h, w, k, s, p, "slice")
    x, wt, gy = x.to(dtype), wt.to(dtype), gy.to(dtype)
    rel = 1e-4 if dtype == torch.float32 else 2e-2
    _check_dgrad(x, wt, gy, s, p, rel=rel)
    _check_wgrad(x, wt, gy, s, p, rel=rel)


@pytest.mark.parametrize("split_k", [1, 3])
def test_wgrad_into_out_of_the_weights_dtype_and_layout(split_k):
    """`out` (a channels_last bf16 weight's layout, or fp32 NCHW) receives the fp32 sum rounded
    once, whether the split-K partials are one (the GEMM kernel stores into `out` itself) or
    several (the split-sum kernel adds them in fp32 and stores into `out`). Triton's
    interpreter casts fp32 to bf16 by truncation (the GPU rounds to nearest even, as torch
    does): on CPU a bf16 value may be one unit in the last place (2**-7 relative) off torch's. 512 pixels: split_k=3 gives two
    splits of 256 (whole 128-pixel steps)."""
    torch.manual_seed(7)
    x = torch.randn(2, 5, 16, 16, device=DEVICE)
    gy = torch.randn(2, 6, 16, 16, device=DEVICE)
    ref = conv2d_wgrad(x, gy, (1, 3), padding=(0, 1), split_k=split_k)
    for dtype, fmt in ((torch.float32, torch.contiguous_format), (torch.bfloat16, torch.channels_last)):
        out = torch.full((6, 5, 1, 3), float("nan"), device=DEVICE, dtype=dtype).contiguous(
            memory_format=fmt)
        got = conv2d_wgrad(x, gy, (1, 3), padding=(0, 1), split_k=split_k, out=out)
        assert got is out and out.is_contiguous(memory_format=fmt)
        if dtype == torch.bfloat16 and DEVICE == "cpu":
            torch.testing.assert_close(out.float(), ref, rtol=2 ** -7, atol=0)
        else:
            assert torch.equal(out, ref.to(dtype))
    with pytest.raises(ValueError, match="out must be"):
        conv2d_wgrad(x, gy, (1, 3), padding=(0, 1), out=torch.empty(6, 5, 3, 1, device=DEVICE))
