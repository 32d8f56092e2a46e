"""backend="auto": the per-shape decision logic, its disk cache, describe() and clear().
Timing is injected (a fake timer) so the logic is tested on CPU; the real measurement of a
block on a GPU is a `gpu` test."""
from __future__ import annotations

import json

import pytest
import torch

import inception_fast.nn as ifnn
from inception_fast import backends, dispatch


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INCEPTION_FAST_CACHE_DIR", str(tmp_path))
    dispatch._MEM.clear()
    yield tmp_path
    dispatch._MEM.clear()


def _fake_timer(times):
    calls = []

    def timer(fn):
        calls.append(fn())
        return times[calls[-1]]
    return timer, calls


ALL = ["torch", "triton", "cuda"]


def _runners(names, fail=()):
    def make(n):
        def run():
            if n in fail:
                raise RuntimeError(f"{n} cannot run this shape")
            return n
        return run
    return {n: make(n) for n in names}


def test_picks_fastest_and_caches_on_disk(cache):
    path = cache / "d.json"
    timer, calls = _fake_timer({"torch": 2.0, "triton": 1.0, "cuda": 1.5})
    assert dispatch.decide("k1", _runners(ALL), path=path, timer=timer) == "triton"
    assert sorted(calls) == ["cuda", "torch", "triton"]
    rec = json.loads(path.read_text())["k1"]
    assert rec["backend"] == "triton" and rec["ms"]["torch"] == 2.0 and "2.00x" in rec["why"]
    # cached: no new measurement, also after the in-memory table is dropped (read from disk)
    dispatch._MEM.clear()
    assert dispatch.decide("k1", _runners(ALL), path=path, timer=timer) == "triton"
    assert len(calls) == 3


def test_never_slower_than_cudnn(cache):
    path = cache / "d.json"
    timer, _ = _fake_timer({"torch": 1.0, "triton": 1.0, "cuda": 3.0})
    assert dispatch.decide("tie", _runners(ALL), path=path, timer=timer) == "torch"
    timer, _ = _fake_timer({"torch": 1.0, "triton": 1.2})
    got = dispatch.decide("slower", _runners(["torch", "triton"]), path=path, timer=timer)
    assert got == "torch"


def test_failing_backend_is_never_chosen(cache):
    path = cache / "d.json"
    timer, _ = _fake_timer({"torch": 2.0, "triton": 0.1, "cuda": 1.0})
    got = dispatch.decide("f", _runners(["torch", "triton", "cuda"], fail=("triton",)), path=path,
                          timer=timer)
    assert got == "cuda"
    assert "cannot run" in json.loads(path.read_text())["f"]["errors"]["triton"]
    with pytest.raises(RuntimeError, match="no backend could run"):
        dispatch.decide("g", _runners(["torch"], fail=("torch",)), path=path, timer=timer)


def test_cache_file_keyed_by_gpu_and_versions(cache):
    p = dispatch.cache_path()
    assert p.parent == cache
    assert torch.__version__ in p.name and "triton" in p.name and "-if" in p.name


def test_describe_and_clear(cache, monkeypatch):
    path = dispatch.cache_path()
    timer, _ = _fake_timer({"torch": 2.0, "triton": 1.0})
    dispatch.decide("InceptionA|1x192x35x35|train|bfloat16", _runners(["torch", "triton"]),
                    path=path, timer=timer)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dispatch, "_gpu_name", lambda device=None: "cpu")  # same file name
    text = dispatch.describe()
    assert "InceptionA|1x192x35x35|train|bfloat16: triton" in text and "torch 2.000 ms" in text
    assert dispatch.clear() == 1
    assert not path.exists()
    assert "no decisions" in dispatch.describe()


def test_auto_on_cpu_is_torch_without_measuring(cache):
    called = []

    def runner(b):
        called.append(b)
        return lambda: None
    x = torch.randn(1, 4, 5, 5)
    assert backends.resolve("auto", x, key="k", runner=runner) == "torch"
    assert dispatch.choose("k", x, runner) == "torch"
    block = ifnn.InceptionA(8, pool_features=4)  # backend="auto"
    assert block._backend(torch.randn(1, 8, 5, 5)) == "torch"
    block(torch.randn(1, 8, 5, 5))
    unit = ifnn.ConvBNReLU(3, 5, 3)  # a unit outside a block (stem, aux head) dispatches too
    assert unit.backend_for(torch.randn(1, 3, 5, 5)) == "torch"
    unit(torch.randn(1, 3, 5, 5))
    assert called == [] and not list(cache.iterdir())


def test_dispatch_key_names_shape_mode_and_autocast():
    x = torch.randn(2, 8, 5, 7)
    assert ifnn.dispatch_key("InceptionA", x, True) == "InceptionA|2x8x5x7|train"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ifnn.dispatch_key("u", x, False) == "u|2x8x5x7|eval|autocast-bfloat16"


def test_autocast_dtype_on_devices_autocast_does_not_know():
    """Shape-only passes run the modules on "meta" tensors: no autocast there, no error."""
    from inception_fast.ops.amp import autocast_dtype

    assert autocast_dtype(torch.empty(2, 3, device="meta")) is None
    assert ifnn.dispatch_key("u", torch.empty(1, 2, 3, 3, device="meta"), True) == "u|1x2x3x3|train"


@pytest.mark.parametrize("train", [True, False])
def test_timing_runner_leaves_the_module_untouched(train):
    """What "auto" times runs a copy: the module's parameters, BN statistics and grads stay."""
    torch.manual_seed(0)
    for module, x in ((ifnn.ConvBNReLU(3, 5, 3), torch.randn(2, 3, 6, 6)),
                      (ifnn.InceptionA(8, pool_features=4), torch.randn(2, 8, 5, 5))):
        module.train()
        before = {k: v.clone() for k, v in module.state_dict().items()}
        run = ifnn.timing_runner(module, x, "torch", train)
        run()
        run()
        after = module.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert all(p.grad is None for p in module.parameters())


def test_explicit_backends_unchanged():
    x = torch.randn(1, 4, 5, 5)
    assert backends.resolve("torch", x) == "torch"
    with pytest.raises(backends.BackendUnavailableError):
        backends.resolve("cuda", x)


@pytest.mark.gpu
def test_auto_measures_a_single_unit_on_gpu(cache):
    unit = ifnn.ConvBNReLU(3, 32, 3, stride=2).cuda()
    x = torch.randn(4, 3, 75, 75, device="cuda").contiguous(memory_format=torch.channels_last)
    assert unit.backend_for(x) in backends.BACKENDS
    assert "ConvBNReLU 3->32 k(3, 3) s(2, 2) p(0, 0)|4x3x75x75|train|float32" in dispatch.describe()
    assert unit(x).shape == (4, 32, 37, 37)


@pytest.mark.gpu
def test_auto_measures_a_block_on_gpu(cache):
    block = ifnn.InceptionA(192, pool_features=32).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(8, 192, 35, 35, device="cuda").contiguous(memory_format=torch.channels_last)
    b = block._backend(x)
    assert b in backends.BACKENDS
    text = dispatch.describe()
    assert "InceptionA|8x192x35x35|train|float32" in text
    y = block(x)
    assert y.shape == (8, 256, 35, 35)
