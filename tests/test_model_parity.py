"""inception_fast.inception_v3 is a drop-in for torchvision's: state_dict, outputs, BN buffers."""
import pytest
import torch

from inception_fast import InceptionOutputs, inception_v3

tv_models = pytest.importorskip("torchvision.models")


def _pair(**kw):
    torch.manual_seed(0)
    tv = tv_models.inception_v3(weights=None, init_weights=True, **kw)
    ours = inception_v3(backend="torch", **kw)
    ours.load_state_dict(tv.state_dict(), strict=True)
    return tv, ours


def _max_diff(a, b):
    return (a - b).abs().max().item()


def test_state_dict_identical_both_directions():
    tv = tv_models.inception_v3(weights=None, init_weights=True)
    ours = inception_v3()
    sd_tv, sd_ours = tv.state_dict(), ours.state_dict()
    assert list(sd_tv.keys()) == list(sd_ours.keys())
    for k in sd_tv:
        assert sd_tv[k].shape == sd_ours[k].shape, k
        assert sd_tv[k].dtype == sd_ours[k].dtype, k
    ours.load_state_dict(sd_tv, strict=True)
    tv.load_state_dict(ours.state_dict(), strict=True)
    assert all(torch.equal(sd_tv[k], ours.state_dict()[k]) for k in sd_tv)


def test_eval_outputs_match():
    tv, ours = _pair()
    tv.eval(), ours.eval()
    x = torch.randn(2, 3, 299, 299)
    with torch.no_grad():
        a, b = ours(x), tv(x)
    assert isinstance(a, torch.Tensor) and a.shape == (2, 1000)
    assert _max_diff(a, b) <= 1e-4


def test_train_outputs_and_bn_buffers_after_step_match():
    tv, ours = _pair()
    tv.train(), ours.train()
    x = torch.randn(2, 3, 299, 299)
    outs = []
    for m in (ours, tv):
        torch.manual_seed(1)  # same dropout mask
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        o = m(x)
        (o.logits.square().mean() + 0.4 * o.aux_logits.square().mean()).backward()
        opt.step()
        outs.append(o)
    assert type(outs[0]).__name__ == "InceptionOutputs" and isinstance(outs[0], InceptionOutputs)
    assert _max_diff(outs[0].logits, outs[1].logits) <= 1e-4
    assert _max_diff(outs[0].aux_logits, outs[1].aux_logits) <= 1e-4
    sd_o, sd_t = ours.state_dict(), tv.state_dict()
    for k in sd_t:
        if sd_t[k].is_floating_point():
            assert _max_diff(sd_o[k], sd_t[k]) <= 1e-4, k
        else:
            assert torch.equal(sd_o[k], sd_t[k]), k  # num_batches_tracked


@pytest.mark.parametrize("kw", [dict(aux_logits=False), dict(num_classes=10),
                                dict(transform_input=True)])
def test_options_match(kw):
    tv, ours = _pair(**kw)
    x = torch.randn(2, 3, 299, 299)  # batch 2: BN in the aux head sees 1x1 maps
    for mode in ("eval", "train"):
        getattr(tv, mode)(), getattr(ours, mode)()
        torch.manual_seed(2)
        a = ours(x)
        torch.manual_seed(2)
        b = tv(x)
        if mode == "train" and kw.get("aux_logits", True):
            a, b = a.logits, b.logits
        assert isinstance(a, torch.Tensor)
        assert a.shape == (2, kw.get("num_classes", 1000))
        assert _max_diff(a, b) <= 1e-4


def test_weights_from_path_and_dict(tmp_path):
    tv = tv_models.inception_v3(weights=None, init_weights=True)
    p = tmp_path / "w.pth"
    torch.save(tv.state_dict(), p)
    for w in (str(p), tv.state_dict()):
        m = inception_v3(weights=w)
        assert all(torch.equal(m.state_dict()[k], v) for k, v in tv.state_dict().items())
    m = inception_v3(weights=str(p), aux_logits=False)  # aux head of the checkpoint dropped
    assert m.AuxLogits is None
    with pytest.raises(FileNotFoundError, match="not found"):
        inception_v3(weights=str(tmp_path / "missing.pth"))
    with pytest.raises(TypeError, match="state_dict"):
        inception_v3(weights=3)


def _calibrate_bn(model, x):
    """Running stats := statistics of one batch, so eval activations have a sane scale
    (fresh init has running stats 0/1 and explodes, which hides relative errors)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def test_channels_last_input_matches():
    _, ours = _pair()
    x = torch.randn(2, 3, 299, 299)
    _calibrate_bn(ours, x)
    with torch.no_grad():
        a = ours(x)
        b = ours.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    # Another conv algorithm (NHWC) over 94 layers: compare at 1e-4 of the logits' scale.
    assert _max_diff(a, b) <= 1e-4 * b.abs().max().item()
