"""What the conv kernels do to an operand as they load it (kernels/conv_common.py): the
deferred BN + ReLU of the previous unit (in_bn: relu(a*x + c), 0 in the padding) in the forward
(one-loop and flat-K paths) and in wgrad (x tile as the dot's B operand, or as A when its C_in
tile allows wgmma), and 8-aligned channels (VEC: the zero-padded image) read as vectors; and the
cast + channel padding of the image (kernels/pad_channels.py, the registered
inception_fast::cast_pad_channels). Against torch in fp32 on CPU (interpreter)."""
import pytest
import torch
import torch.nn.functional as F

from inception_fast.backends import why_unavailable
from inception_fast.kernels.conv2d_bwd import conv2d_wgrad
from inception_fast.kernels.conv2d_fwd import conv2d_fwd
from inception_fast.kernels.conv_common import vec_of
from inception_fast.kernels.pad_channels import cast_pad_channels
from inception_fast.ops.aligned_input import cast_pad_channels_op

pytestmark = pytest.mark.skipif(why_unavailable("triton") is not None,
                                reason=f"triton unavailable: {why_unavailable('triton')}")
CL = torch.channels_last

# (N, C_in, H, W, C_out, kernel, stride, padding)
CASES = {
    "flat-k-5ch": (2, 5, 9, 11, 7, (3, 3), 1, (1, 1)),       # C_in < 16: the flattened K loop
    "stem-2a-shrunk": (2, 32, 11, 9, 8, (3, 3), 1, (0, 0)),   # Conv2d_2a: C_in 32
    "stem-4a-80ch": (2, 80, 9, 9, 12, (3, 3), 1, (0, 0)),     # Conv2d_4a: wgrad x tile as A
    "1x7-odd": (3, 24, 7, 10, 13, (1, 7), 1, (0, 3)),         # 24 channels: VEC = 8
    "stride2-batch1": (1, 20, 10, 9, 6, (3, 3), 2, (1, 1)),
}


def _act(x, a, c):
    return torch.relu(x * a.view(1, -1, 1, 1) + c.view(1, -1, 1, 1))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("layout", ["cl", "nchw"])
def test_in_bn_forward_and_wgrad_match_torch(case, layout):
    n, ci, h, w, co, k, s, p = CASES[case]
    torch.manual_seed(0)
    x = torch.randn(n, ci, h, w)
    x = x.contiguous(memory_format=CL) if layout == "cl" else x
    wt = torch.randn(co, ci, *k) * 0.2
    a, c = torch.rand(ci) + 0.5, torch.randn(ci) * 0.5
    ref = F.conv2d(_act(x, a, c), wt, None, s, p)
    got = conv2d_fwd(x, wt, stride=(s, s), padding=p, in_bn=(a, c))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    gy = torch.randn_like(ref)
    ref_w = torch.nn.grad.conv2d_weight(_act(x, a, c), wt.shape, gy, s, p)
    got_w = conv2d_wgrad(x, gy, k, stride=s, padding=p, in_bn=(a, c))
    torch.testing.assert_close(got_w, ref_w, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("ci,total,offset", [(8, 8, 0), (8, 16, 8), (24, 24, 0), (24, 40, 8)])
def test_aligned_channels_load_as_vectors_and_match_torch(ci, total, offset):
    """8-aligned channel counts that are not multiples of 16 (whole tensors and channel slices
    of wider ones) take VEC = 8; results equal torch's."""
    torch.manual_seed(0)
    x = torch.randn(3, total, 9, 8).contiguous(memory_format=CL)[:, offset:offset + ci]
    assert vec_of(x) == 8
    wt = torch.randn(5, ci, 3, 3) * 0.2
    ref = F.conv2d(x, wt, None, 2, 1)
    torch.testing.assert_close(conv2d_fwd(x, wt, stride=(2, 2), padding=(1, 1)), ref,
                               rtol=1e-4, atol=1e-4)
    gy = torch.randn_like(ref)
    torch.testing.assert_close(conv2d_wgrad(x, gy, (3, 3), stride=2, padding=1),
                               torch.nn.grad.conv2d_weight(x, wt.shape, gy, 2, 1),
                               rtol=1e-4, atol=1e-3)


def test_vec_needs_aligned_strides():
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=CL)
    assert vec_of(x) == 8
    assert vec_of(torch.randn(2, 8, 5, 5)) == 1                                 # NCHW
    assert vec_of(torch.randn(2, 13, 5, 5).contiguous(memory_format=CL)[:, 1:9]) == 1  # stride 13
    assert vec_of(torch.randn(2, 16, 5, 5).contiguous(memory_format=CL)) == 1   # Triton's own 16


def test_in_bn_errors():
    x, wt = torch.randn(1, 4, 5, 5), torch.randn(3, 4, 3, 3)
    with pytest.raises(ValueError, match="in_bn must be two contiguous float32 \\[4\\]"):
        conv2d_fwd(x, wt, in_bn=(torch.ones(3), torch.ones(4)))
    with pytest.raises(ValueError, match="in_bn must be two contiguous float32"):
        conv2d_wgrad(x, torch.randn(1, 3, 3, 3), (3, 3), in_bn=(torch.ones(4).double(),) * 2)
    with pytest.raises(ValueError, match="pool_out pools x itself"):
        conv2d_fwd(torch.randn(1, 4, 7, 7), wt, stride=(2, 2), in_bn=(torch.ones(4),) * 2,
                   pool_out=torch.empty(1, 4, 3, 3))


@pytest.mark.parametrize("layout", ["nchw", "cl", "noncontig"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cast_pad_channels_matches_torch(layout, dtype):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 7, 9)
    if layout == "cl":
        x = x.contiguous(memory_format=CL)
    elif layout == "noncontig":
        x = torch.randn(3, 7, 7, 9)[:, 1:4]
    out = cast_pad_channels(x, 8, dtype)
    assert out.shape == (x.shape[0], 8, 7, 9) and out.dtype == dtype
    assert out.is_contiguous(memory_format=CL)
    ref = F.pad(x, (0, 0, 0, 0, 0, 8 - x.shape[1])).to(dtype)
    # Exact, except that the interpreter's fp32 -> bf16 conversion (numpy has no bfloat16)
    # does not round to nearest as the GPU's does: within one bf16 ulp (2**-7 relative).
    interp_bf16 = dtype == torch.bfloat16 and x.device.type == "cpu"
    torch.testing.assert_close(out, ref, rtol=2 ** -7 if interp_bf16 else 0, atol=0)
    assert (out[:, x.shape[1]:] == 0).all()


def test_cast_pad_channels_op_opcheck_and_gradient():
    x = torch.randn(1, 3, 5, 4).contiguous(memory_format=CL)
    torch.library.opcheck(torch.ops.inception_fast.cast_pad_channels.default,
                          (x, 8, torch.float16),
                          test_utils=("test_schema", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))
    x.requires_grad_()
    out = cast_pad_channels_op(x, 8, torch.float32)
    g = torch.randn_like(out)
    out.backward(g)
    torch.testing.assert_close(x.grad, g[:, :3])


def test_cast_pad_channels_errors():
    with pytest.raises(ValueError, match="power of two >= 3"):
        cast_pad_channels(torch.randn(1, 3, 4, 4), 6, torch.float32)
    with pytest.raises(ValueError, match="floating-point"):
        cast_pad_channels(torch.ones(1, 3, 4, 4, dtype=torch.int64), 8, torch.float32)
