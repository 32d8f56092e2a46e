"""The stem's max-pools and the head's global average pool as the models build them
(inception_fast/nn/pool.py): the Triton max-pool against torch's, forward and backward, on the
model's and odd shapes; the global pool's broadcast gradient; and the one foreach bump of
num_batches_tracked per fused block (nn/conv_bn_relu.count_batches)."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from inception_fast.backends import why_unavailable
from inception_fast.nn import InceptionA
from inception_fast.nn.pool import GlobalAvgPool, MaxPool3x3s2

needs_triton = pytest.mark.skipif(why_unavailable("triton") is not None,
                                  reason=f"triton unavailable: {why_unavailable('triton')}")
CL = torch.channels_last


@needs_triton
@pytest.mark.parametrize("n,c,h,w,layout", [
    (2, 64, 15, 15, "cl"),      # maxpool1's shape, shrunk
    (3, 13, 9, 8, "cl"),        # channels not a multiple of 8, odd H / even W
    (1, 20, 7, 11, "nchw"),     # batch 1, contiguous NCHW input
    (2, 12, 10, 9, "strided"),  # a channel slice of a wider tensor
])
def test_max_pool_triton_matches_torch(n, c, h, w, layout):
    torch.manual_seed(0)
    x = torch.randn(n, c + 5 if layout == "strided" else c, h, w, dtype=torch.float64)
    x = x.float()
    if layout == "cl":
        x = x.contiguous(memory_format=CL)
    if layout == "strided":
        x = x.contiguous(memory_format=CL)[:, 2:2 + c]
    x[0, 0, :3, :3] = 0.0  # a window of ties: the first tap wins, as in torch
    xr = x.detach().clone().requires_grad_()
    x = x.detach().requires_grad_()
    y = MaxPool3x3s2("triton")(x)
    ref = F.max_pool2d(xr, 3, 2)
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    g = torch.randn_like(ref)
    y.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad, xr.grad, rtol=0, atol=1e-6)


def test_max_pool_torch_backend_and_errors():
    x = torch.randn(2, 3, 7, 7)
    assert torch.equal(MaxPool3x3s2("torch")(x), F.max_pool2d(x, 3, 2))
    with pytest.raises(RuntimeError):  # torch's own message for a too-small input
        MaxPool3x3s2("torch")(torch.randn(1, 2, 2, 5))


@pytest.mark.parametrize("layout", ["cl", "nchw"])
def test_global_avg_pool_gradient_is_a_channel_contiguous_broadcast(layout):
    x = torch.randn(3, 10, 5, 7, dtype=torch.float64)
    if layout == "cl":
        x = x.contiguous(memory_format=CL)
    x.requires_grad_()
    y = GlobalAvgPool()(x)
    ref = x.detach().mean((2, 3), keepdim=True)
    torch.testing.assert_close(y, ref)
    g = torch.randn(3, 10, 1, 1, dtype=torch.float64)
    (gx,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(gx, g.expand(3, 10, 5, 7) / 35)
    assert gx.stride() == (10, 1, 0, 0)  # channels contiguous, nothing of (N, C, H, W) written
    torch.autograd.gradcheck(GlobalAvgPool(), (x[:1, :2, :3, :2].detach().requires_grad_(),))


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func._schema.name.split("::")[-1])
        return func(*args, **(kwargs or {}))


def test_block_counts_batches_once_per_unit_in_one_launch():
    """Each unit's num_batches_tracked goes up by exactly one per training call, as
    BatchNorm2d's would, through one _foreach_add_ for the block (not an add_ per unit); eval
    leaves them alone."""
    block = InceptionA(16, pool_features=8, backend="torch").train()
    x = torch.randn(2, 16, 5, 5)
    block.forward(x)  # the reference path: each unit's own forward bumps it
    assert all(int(m.bn.num_batches_tracked) == 1 for m in block.children())
    for m in block.children():  # the units carry the backend (the block reads its first's)
        m.backend = "triton"
    if why_unavailable("triton") is not None:
        pytest.skip("triton unavailable")
    with _Ops() as ops:
        block(x)
    assert all(int(m.bn.num_batches_tracked) == 2 for m in block.children())
    assert ops.names.count("_foreach_add_") == 1 and "add_" not in ops.names, ops.names
    block.eval()
    with torch.no_grad():
        block(x)
    assert all(int(m.bn.num_batches_tracked) == 2 for m in block.children())
