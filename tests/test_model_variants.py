"""Low-resolution variants (paper section 9) and bad-input errors of the models (inception_v3
and inception_v3_paper: one input check, models/base.py)."""
import pytest
import torch

from inception_fast import InceptionOutputs, inception_v3, inception_v3_paper
from inception_fast.backends import BackendUnavailableError
from inception_fast.models.shapes import grid_sizes, min_input_size

MODELS = {"inception_v3": inception_v3, "inception_v3_paper": inception_v3_paper}


@pytest.mark.parametrize("size", [79, 151])
@pytest.mark.parametrize("name", MODELS)
def test_low_res_variant_forward_backward(name, size):
    torch.manual_seed(0)
    m = MODELS[name](input_size=size, num_classes=7).train()
    x = torch.randn(2, 3, size, size, requires_grad=True)
    out = m(x)
    assert isinstance(out, InceptionOutputs)
    assert out.logits.shape == (2, 7) and out.aux_logits.shape == (2, 7)
    (out.logits.sum() + out.aux_logits.square().sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    m.eval()
    with torch.no_grad():
        assert m(x).shape == (2, 7)


def test_variants_share_parameters_and_reach_the_same_grids():
    shapes = {k: v.shape for k, v in inception_v3().state_dict().items()}
    for size in (79, 151):
        assert {k: v.shape for k, v in inception_v3(input_size=size).state_dict().items()} == shapes
    assert grid_sizes(299, 299)["grid17"] == grid_sizes(151, 151)["grid17"] == 17
    assert grid_sizes(79, 79)["grid17"] == 17 and grid_sizes(299, 299)["grid8"] == 8


def test_min_input_sizes():
    assert min_input_size(299) == 75  # torchvision's documented minimum
    assert min_input_size(299, aux=True) == 299
    assert min_input_size(151, aux=True) == 151
    assert min_input_size(79) < 79 and min_input_size(79, aux=True) <= 79


def test_smallest_accepted_input_runs():
    m = inception_v3(aux_logits=False).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 75, 75)).shape == (1, 1000)


def _bad_inputs(name):
    """(model name, input, exception, message): inputs each model must refuse clearly."""
    return [(name, *case) for case in [
        (torch.randn(1, 3, 74, 74), ValueError, "at least 75"),
        (torch.randn(1, 3, 299, 60), ValueError, f"too small for {name}"),
        (torch.randn(1, 1, 299, 299), ValueError, r"\(N, 3, H, W\)"),
        (torch.randn(3, 299, 299), ValueError, r"\(N, 3, H, W\)"),
        (torch.zeros(1, 3, 299, 299, dtype=torch.uint8), TypeError, "floating-point"),
        ([[1.0]], TypeError, "torch.Tensor"),
    ]]


@pytest.fixture(scope="module")
def eval_models():
    return {name: make(aux_logits=False, num_classes=3).eval() for name, make in MODELS.items()}


@pytest.mark.parametrize("name, x, err, match", _bad_inputs("inception_v3")
                         + _bad_inputs("inception_v3_paper"))
def test_bad_inputs_clear_errors(name, x, err, match, eval_models):
    with pytest.raises(err, match=match):
        eval_models[name](x)


def test_aux_head_too_small_in_training_is_a_clear_error():
    m = inception_v3().train()
    with pytest.raises(ValueError, match="auxiliary classifier"):
        m(torch.randn(2, 3, 200, 200))
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 200, 200)).shape == (1, 1000)  # no aux in eval


def test_bad_variant_and_backend():
    with pytest.raises(ValueError, match="input_size"):
        inception_v3(input_size=224)
    with pytest.raises(ValueError, match="unknown backend"):
        inception_v3(backend="cudnn")


def test_unavailable_backend_says_why(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
        inception_v3(backend="cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BackendUnavailableError, match="interpreter"):
        inception_v3(backend="triton")
