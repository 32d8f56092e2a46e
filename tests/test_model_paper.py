"""inception_v3_paper: the paper's Table 1 network. Parameter count, grids and FLOPs against an
independent tabulation of the issue's layer list; variants, outputs, errors, `info --model`,
copy-free concat, and backend="triton" == backend="torch"."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from inception_fast import InceptionOutputs, inception_v3, inception_v3_paper
from inception_fast.backends import BackendUnavailableError
from inception_fast.cli import main
from inception_fast.models import get_model
from inception_fast.models.shapes import grid_sizes
from inception_fast.models.summary import summarize
from inception_fast.nn.paper_blocks import (InceptionAuxBN, InceptionFig5, InceptionFig6,
                                            InceptionReduction)
from whole_model import check_against_fp64, randomize_bn

K = 1000


# --- The network as the issue / Table 1 lists it, written out independently of the model code:
# conv units (C_in, C_out, kh, kw, output side at 299).
def _fig5(cin, s=35):
    return [(cin, 64, 1, 1, s), (cin, 48, 1, 1, s), (48, 64, 3, 3, s), (cin, 64, 1, 1, s),
            (64, 96, 3, 3, s), (96, 96, 3, 3, s), (cin, 64, 1, 1, s)]


def _reduction(cin, a, b, c, d, s_in, s_out):
    return [(cin, a, 1, 1, s_in), (a, b, 3, 3, s_out), (cin, c, 1, 1, s_in), (c, d, 3, 3, s_in),
            (d, d, 3, 3, s_out)]


def _fig6(c7, s=17):
    return [(768, 192, 1, 1, s), (768, c7, 1, 1, s), (c7, c7, 1, 7, s), (c7, 192, 7, 1, s),
            (768, c7, 1, 1, s), (c7, c7, 1, 7, s), (c7, c7, 7, 1, s), (c7, c7, 1, 7, s),
            (c7, 192, 7, 1, s), (768, 192, 1, 1, s)]


def _fig7(cin, s=8):
    return [(cin, 320, 1, 1, s), (cin, 384, 1, 1, s), (384, 384, 1, 3, s), (384, 384, 3, 1, s),
            (cin, 448, 1, 1, s), (448, 384, 3, 3, s), (384, 384, 1, 3, s), (384, 384, 3, 1, s),
            (cin, 192, 1, 1, s)]


MAIN_CONVS = ([(3, 32, 3, 3, 149), (32, 32, 3, 3, 147), (32, 64, 3, 3, 147), (64, 80, 3, 3, 71),
               (80, 192, 3, 3, 35), (192, 288, 3, 3, 35)]
              + _fig5(288) * 3
              + _reduction(288, 256, 384, 64, 96, 35, 17)
              + sum((_fig6(c7) for c7 in (128, 160, 160, 192, 192)), [])
              + _reduction(768, 192, 320, 128, 192, 17, 8)
              + _fig7(1280) + _fig7(2048))
AUX_CONVS = [(768, 128, 1, 1, 5), (128, 768, 5, 5, 1)]


def _conv_params(convs):
    return sum(ci * co * kh * kw + 2 * co for ci, co, kh, kw, _ in convs)  # + BN gamma, beta


def _conv_flops(convs):
    return sum(2 * ci * co * kh * kw * s * s for ci, co, kh, kw, s in convs)


EXPECTED_PARAMS = (_conv_params(MAIN_CONVS) + 2048 * K + K  # fc
                   + _conv_params(AUX_CONVS) + 768 * K + 2 * K)  # aux FC (no bias) + its BN
EXPECTED_FLOPS = _conv_flops(MAIN_CONVS) + 2 * 2048 * K
EXPECTED_AUX_FLOPS = _conv_flops(AUX_CONVS) + 2 * 768 * K

TABLE_GRIDS = {  # Table 1: the input of each stage is the output of the one before (C, H, W)
    "Conv2d_4b_3x3": (288, 35, 35), "Mixed_5b": (288, 35, 35), "Mixed_5c": (288, 35, 35),
    "Mixed_5d": (288, 35, 35), "Mixed_6a": (768, 17, 17), "Mixed_6b": (768, 17, 17),
    "Mixed_6c": (768, 17, 17), "Mixed_6d": (768, 17, 17), "Mixed_6e": (768, 17, 17),
    "Mixed_6f": (768, 17, 17), "Mixed_7a": (1280, 8, 8), "Mixed_7b": (2048, 8, 8),
    "Mixed_7c": (2048, 8, 8), "avgpool": (2048, 1, 1), "fc": (K,), "AuxLogits": (K,),
}


@pytest.fixture(scope="module")
def summary299():
    torch.manual_seed(0)
    return summarize(inception_v3_paper())


def test_parameter_count_matches_the_table(summary299):
    assert len(MAIN_CONVS) == 6 + 21 + 5 + 50 + 5 + 18  # 105 conv units outside the aux head
    model = inception_v3_paper()
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS == summary299.params
    n_units = sum(type(m).__name__ == "ConvBNReLU" for m in model.modules())
    assert n_units == len(MAIN_CONVS) + len(AUX_CONVS)
    no_aux = inception_v3_paper(aux_logits=False)
    assert sum(p.numel() for p in no_aux.parameters()) == \
        EXPECTED_PARAMS - _conv_params(AUX_CONVS) - 768 * K - 2 * K


def test_grids_at_299_are_the_tables(summary299):
    for name, shape in TABLE_GRIDS.items():
        assert summary299.row(name).out_shape == shape, name
    stem = [summary299.row(n).out_shape for n in
            ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_3x3",
             "Conv2d_4a_3x3")]
    assert stem == [(32, 149, 149), (32, 147, 147), (64, 147, 147), (64, 73, 73), (80, 71, 71),
                    (192, 35, 35)]
    conv_rows = [r for r in summary299.rows if r.kind == "ConvBNReLU" and not r.aux]
    assert [(r.out_shape[0], r.out_shape[1]) for r in conv_rows] == \
        [(co, s) for _, co, _, _, s in MAIN_CONVS]


def test_forward_flops_match_the_table_and_torchs_counter(summary299):
    assert summary299.flops == EXPECTED_FLOPS  # 12.88 GFLOP
    assert summary299.aux_flops == EXPECTED_AUX_FLOPS
    # An independent counter (torch's, from the dispatched conv/addmm ops) agrees.
    model = inception_v3_paper(backend="torch").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 299, 299))
    assert counter.get_total_flops() == EXPECTED_FLOPS


def test_summary_works_for_inception_v3_too():
    model = inception_v3(backend="torch")
    s = summarize(model)
    assert s.params == 27_161_264  # torchvision's inception_v3 with its aux head
    assert s.row("Mixed_6e").out_shape == (768, 17, 17)
    assert s.row("Mixed_7c").out_shape == (2048, 8, 8)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.randn(1, 3, 299, 299))
    assert s.flops == counter.get_total_flops()
    assert abs(s.flops / 1e9 - 11.43) < 0.01  # the 11.4 GFLOP/img of the layer table


@pytest.mark.parametrize("size", [151, 79])
def test_low_res_variant_grids_match_shapes_py(size):
    s = summarize(inception_v3_paper(input_size=size, aux_logits=False))
    g = grid_sizes(size, size)
    assert s.row("Mixed_5d").out_shape[1:] == (g["grid35"],) * 2
    assert s.row("Mixed_6f").out_shape == (768, g["grid17"], g["grid17"])
    assert s.row("Mixed_7c").out_shape == (2048, g["grid8"], g["grid8"])
    assert g["grid17"] == 17 and g["grid8"] == 8


def _bn_layers(m):
    return [b for b in m.modules() if isinstance(b, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d))]


def test_train_and_eval_outputs_and_buffers():
    torch.manual_seed(0)
    m = inception_v3_paper(input_size=79, num_classes=5)
    x = torch.randn(2, 3, 79, 79)
    m.eval()
    before = copy.deepcopy(m.state_dict())
    with torch.no_grad():
        y1, y2 = m(x), m(x)
    assert isinstance(y1, torch.Tensor) and y1.shape == (2, 5)
    assert torch.equal(y1, y2)  # eval is deterministic, buffers untouched
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    m.train()
    fc_out = []
    m.AuxLogits.fc.register_forward_hook(lambda mod, args, out: fc_out.append(out.detach()))
    out = m(x)
    assert isinstance(out, InceptionOutputs) and out.aux_logits.shape == (2, 5)
    # The aux logits are the FC output batch-normalized (batch statistics, gamma 1, beta 0).
    z = fc_out[0]
    expect = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-3)
    assert torch.allclose(out.aux_logits, expect, rtol=1e-4, atol=1e-5)
    bns = _bn_layers(m)
    assert len(bns) == 107 + 1 and all(int(b.num_batches_tracked) == 1 for b in bns)
    assert not torch.equal(before["AuxLogits.bn.running_mean"], m.AuxLogits.bn.running_mean)
    assert torch.allclose(m.AuxLogits.bn.running_mean, 0.1 * z.mean(0), atol=1e-6)
    no_aux = inception_v3_paper(input_size=79, num_classes=5, aux_logits=False).train()
    assert isinstance(no_aux(x), torch.Tensor)


def test_channels_last_input_gives_the_same_output():
    torch.manual_seed(0)
    m = inception_v3_paper(input_size=79, aux_logits=False).eval()
    x = torch.randn(2, 3, 79, 79)
    with torch.no_grad():
        a = m(x)
        b = m(x.to(memory_format=torch.channels_last))
        blk = m.Mixed_5b(torch.randn(2, 288, 9, 9).to(memory_format=torch.channels_last))
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()  # untrained eval logits are large
    assert blk.is_contiguous(memory_format=torch.channels_last)


def _cat_reference(block, x):
    """The block computed the plain way: every branch, then torch.cat in the block's order."""
    if isinstance(block, InceptionFig5):
        return torch.cat([block.branch1x1(x), block.branch3x3_2(block.branch3x3_1(x)),
                          block.branch3x3dbl_3(block.branch3x3dbl_2(block.branch3x3dbl_1(x))),
                          block.branch_pool(F.avg_pool2d(x, 3, 1, 1))], 1)
    if isinstance(block, InceptionFig6):
        bd = block.branch7x7dbl_3(block.branch7x7dbl_2(block.branch7x7dbl_1(x)))
        return torch.cat([block.branch1x1(x),
                          block.branch7x7_3(block.branch7x7_2(block.branch7x7_1(x))),
                          block.branch7x7dbl_5(block.branch7x7dbl_4(bd)),
                          block.branch_pool(F.avg_pool2d(x, 3, 1, 1))], 1)
    return torch.cat([block.branch3x3_2(block.branch3x3_1(x)),
                      block.branch3x3dbl_3(block.branch3x3dbl_2(block.branch3x3dbl_1(x))),
                      F.max_pool2d(x, 3, 2)], 1)


@pytest.mark.parametrize("make, cin, hw", [
    (lambda: InceptionFig5(288), 288, 9),
    (lambda: InceptionFig6(768, 160), 768, 7),
    (lambda: InceptionReduction(288, 256, 384, 64, 96), 288, 9),
    (lambda: InceptionReduction(768, 192, 320, 128, 192), 768, 7),
])
def test_copy_free_blocks_equal_cat_of_branches_forward_and_backward(make, cin, hw):
    torch.manual_seed(0)
    block = make().train()
    ref = copy.deepcopy(block)
    x = torch.randn(2, cin, hw, hw)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = block(xa), _cat_reference(ref, xb)
    assert a.shape == b.shape and a.shape[1] == block.out_channels
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    w = torch.randn(b.shape)
    (a * w).sum().backward()
    (b * w).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, rtol=1e-4, atol=1e-6)
    for (n, p), q in zip(block.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), n


def test_aux_head_is_fc_then_batch_norm():
    head = InceptionAuxBN(768, 10)
    assert head.fc.bias is None and isinstance(head.bn, torch.nn.BatchNorm1d)
    assert head.bn.num_features == 10 and head.bn.eps == 1e-3


def test_training_size_and_batch_errors():
    m = inception_v3_paper().train()
    with pytest.raises(ValueError, match="auxiliary classifier.*at least 299x299"):
        m(torch.randn(2, 3, 200, 200))
    with pytest.raises(ValueError, match="batch of at least 2"):
        m(torch.randn(1, 3, 299, 299))
    small = inception_v3_paper(input_size=79).train()
    with pytest.raises(ValueError, match="at least 77x77"):
        small(torch.randn(2, 3, 60, 60))
    with pytest.raises(ValueError, match="at least 21"):
        small.eval()(torch.randn(1, 3, 20, 20))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="input_size"):
        inception_v3_paper(input_size=224)
    with pytest.raises(ValueError, match="unknown backend"):
        inception_v3_paper(backend="cudnn")
    with pytest.raises(ValueError, match="unknown model"):
        get_model("inception_v4")
    assert type(get_model("inception_v3_paper", num_classes=3)).__name__ == "InceptionV3Paper"


def test_unavailable_backend_says_why(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
        inception_v3_paper(backend="cuda")


def test_info_model_prints_params_shapes_flops(capsys):
    assert main(["info", "--model", "inception_v3_paper"]) == 0
    out = capsys.readouterr().out
    assert "backends:" in out  # the usual report comes first
    assert f"parameters: {EXPECTED_PARAMS:,}" in out
    assert f"forward FLOPs/image: {EXPECTED_FLOPS / 1e9:.3f} GFLOP" in out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    for name, grid in [("Conv2d_4b_3x3", "35x35x288"), ("Mixed_5d", "35x35x288"),
                       ("Mixed_6a", "17x17x768"), ("Mixed_6f", "17x17x768"),
                       ("Mixed_7a", "8x8x1280"), ("Mixed_7c", "8x8x2048")]:
        assert grid in lines[name].split(), (name, lines[name])


def test_info_model_at_low_res_and_input_size_without_model(capsys):
    assert main(["info", "--model", "inception_v3", "--input-size", "79"]) == 0
    out = capsys.readouterr().out
    assert "input_size=79 variant" in out and "input 3x79x79" in out
    assert main(["info", "--input-size", "79"]) == 2
    assert "needs --model" in capsys.readouterr().out


# --- backend="triton" == backend="torch" (Triton interpreter on CPU; compiled on a GPU).
# Blocks: each backend's error is measured against an fp64 torch run; Triton's may be a few
# times torch's own fp32 error (summation order) plus a small fp32 floor. The whole model: the
# same idea with BN beta kept away from 0 (tests/whole_model.py says why).
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _randomize_bn(m, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for b in _bn_layers(m):
            b.running_mean.copy_(torch.randn(b.running_mean.shape, generator=g) * 0.1)
            b.running_var.copy_(torch.rand(b.running_var.shape, generator=g) + 0.5)
            b.weight.copy_(torch.rand(b.weight.shape, generator=g) + 0.5)
            b.bias.copy_(torch.randn(b.bias.shape, generator=g) * 0.1)


def _run(model, x, train, backward, seed=3):
    model.train(train)
    res = {}
    if backward:
        x = x.detach().clone().requires_grad_()
        y = model(x)
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)).to(y)
        (y * w).sum().backward()
        res["grad_x"] = x.grad
        res.update({"grad." + n: p.grad for n, p in model.named_parameters()})
    else:
        with torch.no_grad():
            y = model(x)
    res["out"] = y.detach()
    res.update({"buf." + n: b for n, b in model.named_buffers()})
    return res


def _assert_close_to_torch(make, x, train, backward):
    torch.manual_seed(0)
    ref = make("torch")
    _randomize_bn(ref)
    tri = make("triton")
    tri.load_state_dict(ref.state_dict())
    r64 = _run(copy.deepcopy(ref).double(), x.double(), train, backward)
    r32 = _run(ref.to(DEV), x.to(DEV), train, backward)
    rt = _run(tri.to(DEV), x.to(DEV), train, backward)
    assert rt.keys() == r32.keys() == r64.keys()
    for k in r64:
        if not r64[k].is_floating_point():
            assert torch.equal(rt[k].cpu(), r64[k]), k  # num_batches_tracked
            continue
        exact = r64[k]
        scale = exact.abs().max().item()
        e_torch = (r32[k].double().cpu() - exact).abs().max().item()
        e_triton = (rt[k].double().cpu() - exact).abs().max().item()
        assert e_triton <= 8 * e_torch + 2e-5 * scale + 1e-12, (k, e_triton, e_torch, scale)


def test_triton_equals_torch_whole_model_eval_and_train_step():
    """Whole model at 79x79 (input_size=79, aux head on), batch 2, against fp64 (see
    tests/whole_model.py): eval logits, then a train step's logits, aux logits, input grad,
    every parameter grad and BN buffer."""
    torch.manual_seed(0)
    model = randomize_bn(inception_v3_paper(input_size=79, dropout=0.0, num_classes=10,
                                            backend="torch"))
    x = torch.randn(2, 3, 79, 79, generator=torch.Generator().manual_seed(2))
    check_against_fp64(model, "triton", x, DEV)


@pytest.mark.parametrize("make, shape", [
    (lambda b: InceptionFig5(288, backend=b), (2, 288, 5, 5)),
    (lambda b: InceptionFig6(768, 160, backend=b), (2, 768, 5, 5)),
    (lambda b: InceptionReduction(288, 256, 384, 64, 96, backend=b), (2, 288, 7, 7)),
    (lambda b: InceptionReduction(768, 192, 320, 128, 192, backend=b), (2, 768, 5, 5)),
    (lambda b: InceptionAuxBN(768, 10, backend=b), (2, 768, 17, 17)),
], ids=["fig5", "fig6", "reduction_6a", "reduction_7a", "aux_bn"])
def test_triton_equals_torch_paper_blocks_train(make, shape):
    """Each paper block, batch 2, training forward and backward: output, input grad, parameter
    grads, BN buffers (the copy-free slices and the grid-reduction pool slice through autograd).
    Eval backward is covered by the whole-model test above."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    _assert_close_to_torch(make, x, train=True, backward=True)
