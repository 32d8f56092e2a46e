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


@needs_triton
@pytest.mark.parametrize("layout", ["cl", "nchw"])
def test_global_avg_pool_gradient_is_a_channel_contiguous_broadcast(layout):
    x = torch.randn(3, 10, 5, 7, dtype=torch.float64)
    if layout == "cl":
        x = x.contiguous(memory_format=CL)
    x.requires_grad_()
    assert GlobalAvgPool("torch")(x).grad_fn.name() != "_GlobalAvgPoolFnBackward"
    y = GlobalAvgPool("triton")(x)
    ref = x.detach().mean((2, 3), keepdim=True)
    torch.testing.assert_close(y, ref)
    g = torch.randn(3, 10, 1, 1, dtype=torch.float64)
    (gx,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(gx, g.expand(3, 10, 5, 7) / 35)
    assert gx.stride() == (10, 1, 0, 0)  # channels contiguous, nothing of (N, C, H, W) written
    torch.autograd.gradcheck(GlobalAvgPool("triton"),
                             (x[:1, :2, :3, :2].detach().requires_grad_(),))


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


@needs_triton
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("n,c_in,c_out,h,w,k,pad", [
    (2, 5, 12, 11, 11, 3, 1),   # Conv2d_2b -> maxpool1, shrunk
    (3, 8, 19, 9, 10, 3, 0),    # Conv2d_4a -> maxpool2 (unpadded), odd channels, batch 3
    (1, 3, 8, 8, 7, 1, 0),      # batch 1, 1x1 conv, odd W
])
def test_unit_then_pool_fused_matches_reference(training, n, c_in, c_out, h, w, k, pad):
    """ConvBNReLU + MaxPool3x3s2 on Triton (BN + ReLU inside the pool, the pooled gradient
    gathered inside the BN backward) against the torch modules: output, every gradient and
    the BN buffers."""
    from inception_fast.nn import ConvBNReLU
    from inception_fast.nn.pool import unit_then_pool

    torch.manual_seed(1)
    ref = ConvBNReLU(c_in, c_out, k, padding=pad, backend="torch").double()
    with torch.no_grad():
        ref.bn.weight.uniform_(-1.0, 1.5)  # negative scales flip the ReLU mask
        ref.bn.bias.normal_()
        ref.bn.running_mean.normal_(0, 0.1)
        ref.bn.running_var.uniform_(0.5, 1.5)
    fused = ConvBNReLU(c_in, c_out, k, padding=pad, backend="triton")
    fused.load_state_dict({k_: v.float() for k_, v in ref.state_dict().items()})
    ref.train(training)
    fused.train(training)
    x = torch.randn(n, c_in, h, w, dtype=torch.float64)
    xr = x.clone().requires_grad_()
    xf = x.float().contiguous(memory_format=CL).requires_grad_()
    yr = unit_then_pool(MaxPool3x3s2("torch"), ref, xr)
    yf = unit_then_pool(MaxPool3x3s2("triton"), fused, xf)
    torch.testing.assert_close(yf.double(), yr, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(yr)
    yr.backward(g)
    yf.backward(g.float())
    torch.testing.assert_close(xf.grad.double(), xr.grad, rtol=1e-4, atol=1e-5)
    for (name, pr), pf in zip(ref.named_parameters(), fused.parameters()):
        torch.testing.assert_close(pf.grad.double(), pr.grad, rtol=1e-4, atol=1e-5, msg=name)
    for (name, br), bf in zip(ref.named_buffers(), fused.buffers()):
        torch.testing.assert_close(bf.double(), br.double(), rtol=1e-5, atol=1e-6, msg=name)
    with torch.no_grad():  # eval without gradients: BN folded into the conv, then the pool
        fused.eval(), ref.eval()
        torch.testing.assert_close(unit_then_pool(MaxPool3x3s2("triton"), fused, xf).double(),
                                   unit_then_pool(MaxPool3x3s2("torch"), ref, xr), rtol=1e-4,
                                   atol=1e-5)
