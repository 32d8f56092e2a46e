"""The benchmark suite's data and settings: the layer table copied into bench/layers.py must be
torchvision's network, its FLOPs must add up, and the run configuration must resolve sanely."""
import pytest
import torch
from torch import nn

from bench import layers as L
from bench.config import block_cases, layer_cases, make_config, model_cases
from bench.flops import count_conv_flops
from bench.timing import measure_host, peak_for_name

torchvision = pytest.importorskip("torchvision")


def _torchvision_convs():
    """{name: (c_in, h, w, c_out, oh, ow, kernel, stride, padding)} of every conv that runs in
    torchvision's inception_v3 in train mode at 299x299 (shapes from a meta-device forward)."""
    with torch.device("meta"):
        model = torchvision.models.inception_v3(weights=None, init_weights=False)
    seen = {}
    handles = [m.register_forward_hook(
        lambda mod, a, out, name=name: seen.__setitem__(
            name.removesuffix(".conv"),
            (a[0].shape[1], a[0].shape[2], a[0].shape[3], out.shape[1], out.shape[2], out.shape[3],
             mod.kernel_size, mod.stride, mod.padding)))
        for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    model.train()
    with torch.no_grad():
        model(torch.empty(2, 3, 299, 299, device="meta"))
    for h in handles:
        h.remove()
    return seen


def test_table_is_torchvisions_network():
    tv = _torchvision_convs()
    ours = {lay.name: (lay.c_in, lay.h, lay.w, lay.c_out, lay.oh, lay.ow, lay.kernel, lay.stride,
                       lay.padding) for lay in L.LAYERS}
    assert list(ours) == list(tv)  # same layers, same order
    assert ours == tv


def test_table_flops():
    for lay in L.LAYERS:  # the printed GFLOP is the shape's FLOPs to 3 decimals
        assert abs(lay.flops() / 1e9 - lay.gflop) <= 0.0005 + 1e-9, lay.name
    total = sum(lay.flops() for lay in L.LAYERS) / 1e9
    assert round(total, 2) == L.TOTAL_GFLOP
    tv = count_conv_flops(lambda: torchvision.models.inception_v3(weights=None, init_weights=False),
                          (299, 299), train=True)
    assert tv == sum(lay.flops() for lay in L.LAYERS)
    import inception_fast  # our model counts the same convs through its fused modules

    assert count_conv_flops(inception_fast.inception_v3, (299, 299), train=True) == tv
    # eval: no aux head
    aux = sum(lay.flops() for lay in L.LAYERS if lay.name.startswith("AuxLogits"))
    assert count_conv_flops(inception_fast.inception_v3, (299, 299), train=False) == tv - aux


def test_distinct_configurations():
    distinct = L.distinct_layers()
    assert len(distinct) == 45  # 43 in the main network (docs/DESIGN.md) + the aux head's 2
    assert len(L.distinct_layers([lay for lay in L.LAYERS if not lay.name.startswith("Aux")])) == 43
    assert sum(len(names) for _, names in distinct) == len(L.LAYERS)
    first, names = next(d for d in distinct if d[0].name == "Mixed_6b.branch1x1")
    assert "Mixed_6e.branch_pool" in names and "Mixed_7a.branch3x3_1" in names
    for name in L.COMPACT_LAYERS + L.SMOKE_LAYERS:
        L.by_name(name)
    with pytest.raises(KeyError, match="no layer"):
        L.by_name("Mixed_9z.branch1x1")


def test_shrunk_keeps_the_kernel():
    lay = L.by_name("Mixed_6a.branch3x3").shrunk(16, 7)
    assert (lay.c_in, lay.c_out, lay.h, lay.oh) == (16, 16, 7, 3)
    assert lay.kernel == (3, 3) and lay.stride == (2, 2)
    assert lay.gflop == lay.flops() / 1e9
    aux = L.by_name("AuxLogits.conv1").shrunk(16, 3)  # never smaller than the 5x5 kernel
    assert (aux.h, aux.oh) == (5, 1)


def test_block_gflop():
    assert L.block_gflop("Mixed_5b") == pytest.approx(0.030 + 0.023 + 0.188 + 0.030 + 0.135 + 0.203 + 0.015)
    for name, (cls, kwargs, c_in, hw) in L.BLOCKS.items():
        import inception_fast.nn as ifnn

        per_image = count_conv_flops(lambda: getattr(ifnn, cls)(**kwargs), (hw, hw), False, channels=c_in)
        assert per_image / 1e9 == pytest.approx(L.block_gflop(name), abs=0.003), name


def test_config_smoke_without_gpu():
    cfg = make_config(device="cpu", full=True, batches=[7])
    assert cfg.smoke and not cfg.full and cfg.scale == "smoke"  # no full run without a GPU
    assert cfg.batches == (2, 7) and cfg.dtypes == ("fp32",)
    ids = [c.id for c in layer_cases(cfg) + block_cases(cfg) + model_cases(cfg)]
    assert len(ids) == len(set(ids))
    assert "Mixed_5b.branch1x1-train-fp32-b7-triton" in ids
    assert "299-eval-bf16-b2-paper" in ids and "79-eval-bf16-b2-paper" not in ids


def test_config_full_and_compact_on_gpu_device():
    full = make_config(device="cuda", full=True)
    assert full.scale == "full" and full.batches == (32, 256) and full.dtypes == ("bf16", "fp16", "fp32")
    assert len(layer_cases(full)) == 45 * 2 * 3 * 2 * 5
    compact = make_config(device="cuda", dtypes="fp16", providers="cudnn,triton", modes="eval")
    assert compact.scale == "compact" and compact.batches == (256,)
    assert {(c.dtype, c.provider, c.mode) for c in layer_cases(compact)} == \
        {("fp16", "cudnn", "eval"), ("fp16", "triton", "eval")}


@pytest.mark.parametrize("kw, match", [(dict(dtypes="fp8"), "--bench-dtype"),
                                       (dict(providers="cudnn,tpu"), "--bench-providers"),
                                       (dict(batches=[0]), "--bench-batch")])
def test_config_rejects_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        make_config(device="cpu", **kw)


def test_peaks_and_host_timer():
    assert peak_for_name("NVIDIA H100 80GB HBM3", "bf16") == 989.0
    assert peak_for_name("NVIDIA H100 80GB HBM3", "fp32") == 494.0
    assert peak_for_name("NVIDIA H100 PCIe", "fp16") == 756.0
    assert peak_for_name("NVIDIA H200", "fp16") == 989.0
    assert peak_for_name("Some GPU", "bf16") is None
    calls = []
    t = measure_host(lambda: calls.append(1), rep_ms=1.0, min_reps=3, max_reps=3)
    assert t.reps == 3 and len(calls) == 4 and t.ms >= 0 and t.timer == "host"
