"""The conv+BN+ReLU op's entry (ops/conv_bn_relu.py) on backend "triton" against backend
"torch", beyond the numerics of tests/test_conv_bn_relu_triton.py: writes into a channel slice
of `out` (one or two writers, gradients through `out`), the eval fold cache following
parameter changes, and the argument checks of the entry and of the Triton path itself."""
import pytest
import torch

from helpers import DEV, make_pair
from helpers import assert_rel_close as assert_close
from inception_fast.backends import why_unavailable
from inception_fast.ops import conv_bn_relu
from inception_fast.ops import conv_bn_relu_triton as cbr_triton

pytestmark = pytest.mark.skipif(why_unavailable("triton") is not None,
                                reason=f"triton backend unavailable: {why_unavailable('triton')}")


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_out_slice(training, grad, channels_last):
    """Writes only out[:, off:off+C_out]; returns that view; gradients flow through `out`."""
    torch.manual_seed(5)
    ci, co, off, total = 6, 5, 3, 13
    x = torch.randn(2, ci, 7, 6, device=DEV)
    w = torch.randn(co, ci, 3, 3, device=DEV) * 0.3
    gamma, beta = torch.rand(co, device=DEV) + 0.5, torch.randn(co, device=DEV) * 0.2
    results = []
    for backend in ("triton", "torch"):
        rm, rv = torch.zeros(co, device=DEV), torch.ones(co, device=DEV) * 1.5
        params = [t.clone().requires_grad_(grad) for t in (x, w, gamma, beta)]
        out = torch.full((2, total, 5, 4), 7.0, device=DEV)
        if channels_last:
            out = out.to(memory_format=torch.channels_last)
        sentinel = out.clone()
        with torch.set_grad_enabled(grad):
            view = conv_bn_relu(params[0], params[1], params[2], params[3], rm, rv,
                                training=training, out=out, out_offset=off, backend=backend)
            assert view.shape == (2, co, 5, 4)
            assert view.data_ptr() == out[:, off:].data_ptr()
            rest = torch.cat([out[:, :off], out[:, off + co:]], 1)
            assert torch.equal(rest, torch.cat([sentinel[:, :off], sentinel[:, off + co:]], 1))
            if grad:
                (out * torch.arange(out.numel(), device=DEV).reshape(out.shape).sin()).sum().backward()
        results.append([out.detach(), rm, rv] + ([p.grad for p in params] if grad else []))
    for i, (a, b) in enumerate(zip(*results)):
        assert_close(a, b, f"item {i}")


def test_two_writers_share_one_out_with_grad():
    """Two convs write disjoint slices of one output (a copy-free concat); backward matches."""
    torch.manual_seed(6)
    results = []
    for backend in ("triton", "torch"):
        torch.manual_seed(6)
        x = torch.randn(2, 4, 6, 6, device=DEV, requires_grad=True)
        ws = [torch.randn(c, 4, k, k, device=DEV, requires_grad=True) for c, k in ((3, 1), (5, 3))]
        out = torch.empty(2, 8, 6, 6, device=DEV).to(memory_format=torch.channels_last)
        conv_bn_relu(x, ws[0], None, None, None, None, training=True, out=out, out_offset=0,
                     backend=backend)
        conv_bn_relu(x, ws[1], None, None, None, None, padding=(1, 1), training=True, out=out,
                     out_offset=3, backend=backend)
        (out * torch.linspace(-1, 1, out.numel(), device=DEV).reshape(out.shape)).sum().backward()
        results.append((out.detach(), x.grad, ws[0].grad, ws[1].grad))
    for name, a, b in zip(("out", "grad_x", "grad_w0", "grad_w1"), *results):
        assert_close(a, b, name)


def test_fold_cache_follows_parameter_changes():
    """Eval without grad uses a cached folded weight, recomputed when any input changes,
    including running stats written by a Triton training step."""
    ref, tri = make_pair(8, 12, (3, 3), 1, (1, 1))
    x = torch.randn(2, 8, 6, 5, device=DEV)
    ref.eval(), tri.eval()
    with torch.no_grad():
        assert_close(tri(x), ref(x), "first")
        packed = cbr_triton.FOLD_CACHE.peek(tri.conv.weight)[0]
        tri(x)
        assert cbr_triton.FOLD_CACHE.peek(tri.conv.weight)[0] is packed  # cache hit
        for m in (ref, tri):
            m.bn.weight.mul_(1.5)
            m.bn.running_var.add_(0.5)
        assert_close(tri(x), ref(x), "after in-place BN changes")
        for m in (ref, tri):
            m.conv.weight.neg_()
        assert_close(tri(x), ref(x), "after in-place weight change")
        ref.train(), tri.train()
        assert_close(tri(x), ref(x), "train step")
        ref.eval(), tri.eval()
        assert_close(tri(x), ref(x), "eval after train step updated running stats")
        tri.load_state_dict(ref.state_dict())
        assert_close(tri(x), ref(x), "after load_state_dict")


def _args(ci=4, co=6, k=3):
    x = torch.randn(2, ci, 6, 6, device=DEV)
    w = torch.randn(co, ci, k, k, device=DEV)
    bn = [torch.ones(co, device=DEV), torch.zeros(co, device=DEV), torch.zeros(co, device=DEV),
          torch.ones(co, device=DEV)]
    return x, w, bn


@pytest.mark.parametrize("case", ["rank", "int_dtype", "float64", "weight_dtype", "channels",
                                  "device", "bn_shape", "out_offset", "out_shape", "out_dtype",
                                  "batch_of_one_value"])
def test_bad_input_errors(case):
    x, w, bn = _args()
    args = dict(x=x, weight=w, bn_weight=bn[0], bn_bias=bn[1], running_mean=bn[2],
                running_var=bn[3], backend="triton")
    exc, match, wrong = {  # each case's error and the wrong argument(s) that give it
        "rank": (ValueError, "4-D", dict(x=x[0])),
        "int_dtype": (TypeError, "dtype", dict(x=x.to(torch.int32))),
        "float64": (TypeError, "float32, float16 or bfloat16",
                    dict(x=x.double(), weight=w.double())),
        "weight_dtype": (TypeError, "weight dtype", dict(weight=w.half())),
        "channels": (ValueError, "channels", dict(weight=torch.randn(6, 5, 3, 3, device=DEV))),
        "device": (ValueError, "meta", dict(weight=w.to("meta"))),
        "bn_shape": (ValueError, "running_var", dict(running_var=torch.ones(7, device=DEV))),
        "out_offset": (ValueError, "does not fit",
                       dict(out=torch.zeros(2, 8, 4, 4, device=DEV), out_offset=3)),
        "out_shape": (ValueError, "expected", dict(out=torch.zeros(2, 8, 5, 4, device=DEV))),
        "out_dtype": (TypeError, "dtype",
                      dict(out=torch.zeros(2, 8, 4, 4, device=DEV, dtype=torch.float16))),
        "batch_of_one_value": (ValueError, "more than 1 value",
                               dict(x=x[:1, :, :3, :3], training=True)),
    }[case]
    with pytest.raises(exc, match=match):
        conv_bn_relu(**(args | wrong))


def test_direct_call_checks_out_slice():
    """conv_bn_relu_triton is callable without the checked entry point: it checks too."""
    x, w, bn = _args()
    with pytest.raises(ValueError, match="channel slice"):
        cbr_triton.conv_bn_relu_triton(x, w, *bn, out=torch.zeros(2, 8, 4, 4, device=DEV),
                                       out_offset=5)
