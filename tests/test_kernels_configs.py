"""kernels/configs.py: the autotune lists as data and the pruning of configs the static kernel
report found unlaunchable (config_verdicts.json)."""
import json

import pytest
import torch

from inception_fast.kernels import configs
from inception_fast.kernels.configs import (CONV_FWD, config_key, element_size, gpu_configs,
                                            launchable, pruner)

VERDICTS = {"_k": {"2": {"M=128 N=128 K=32 w8 s3": "smem 369 KB",
                         "M=64 N=32 K=32 w2 s4": "spill 400 B, 12 spill instructions"}}}


def test_config_key_is_the_reports_name():
    c = gpu_configs([(128, 64, 32, 4, 4)])[0]
    assert config_key(c.kwargs, c.num_warps, c.num_stages) == "M=128 N=64 K=32 w4 s4"
    assert config_key({"BLOCK_M": 64, "BLOCK_C": 32, "X": 1}, 4, 3) == "M=64 C=32 w4 s3"


def test_launchable_drops_listed_configs_for_that_element_size_only():
    cs = gpu_configs([(128, 128, 32, 8, 3), (64, 32, 32, 2, 4), (128, 64, 32, 4, 4)])
    kept = launchable("_k", cs, 2, VERDICTS)
    assert [config_key(c.kwargs, c.num_warps, c.num_stages) for c in kept] == \
        ["M=128 N=64 K=32 w4 s4"]
    assert launchable("_k", cs, 4, VERDICTS) == cs          # fp32: no verdicts
    assert launchable("_other", cs, 2, VERDICTS) == cs


def test_when_all_are_listed_the_spilling_ones_stay():
    cs = gpu_configs([(128, 128, 32, 8, 3), (64, 32, 32, 2, 4)])
    kept = launchable("_k", cs, 2, VERDICTS)
    assert [c.num_warps for c in kept] == [2]
    only_smem = gpu_configs([(128, 128, 32, 8, 3)])
    assert launchable("_k", only_smem, 2, VERDICTS) == only_smem  # the GPU reports it


def test_verdicts_can_be_switched_off_for_the_report():
    cs = gpu_configs([(128, 128, 32, 8, 3), (128, 64, 32, 4, 4)])
    with configs.verdicts_disabled():
        assert launchable("_k", cs, 2, VERDICTS) == cs
    assert len(launchable("_k", cs, 2, VERDICTS)) == 1


def test_element_size_is_the_data_not_the_fp32_partials():
    args = dict(x_ptr=torch.empty(2, dtype=torch.bfloat16), psum=torch.empty(2), M=5)
    assert element_size(args) == 2
    assert element_size(dict(x=torch.empty(2))) == 4
    assert element_size(dict(x=torch.empty(2, dtype=torch.float16),
                             idx=torch.empty(2, dtype=torch.uint8))) == 2


def test_pruner_runs_size_pruning_after_the_verdicts():
    seen = []

    def by_size(cs, named_args, **kw):
        seen.append(len(cs))
        return cs[:1]

    prune = pruner("_conv2d_fwd_kernel", by_size)
    out = prune(gpu_configs(CONV_FWD), {"x_ptr": torch.empty(1, dtype=torch.float16)})
    assert len(out) == 1 and seen and seen[0] <= len(CONV_FWD)


def test_committed_verdicts_leave_every_kernel_a_config_that_fits():
    """No kernel has every config of its list over the shared-memory limit (or failing to
    compile): pruning leaves each launch one it can run."""
    doc = json.loads(configs.VERDICTS.read_text())
    assert {"arch", "triton", "commit", "kernels"} <= set(doc)
    for kernel, per in doc["kernels"].items():
        assert kernel in configs.LISTS, f"{kernel}: verdicts for a kernel without a list"
        for elt, bad in per.items():
            fits = [c for c in gpu_configs(configs.LISTS[kernel])
                    if not bad.get(config_key(c.kwargs, c.num_warps, c.num_stages),
                                   "").startswith(("smem", "compile-error"))]
            assert fits, f"{kernel} ({elt}-byte data): no config fits"


def test_modelled_time_prefers_big_tiles_on_big_problems_and_small_on_small():
    """The model's two regimes: a 10^6 x 768 GEMM fills every SM either way, so the tile with
    least operand traffic per MMA wins; an 8,192 x 64 one makes less than a wave of tiles, so
    a tile of half the rows with the same warps (twice the CTAs, fewer idle SMs) wins."""
    big = [configs.modelled_time(10 ** 6, 768, 768, *t[:4]) for t in [(128, 128, 32, 8),
                                                                      (64, 64, 32, 4)]]
    assert big[0] < big[1]
    small = [configs.modelled_time(8192, 64, 288, *t[:4]) for t in [(128, 64, 32, 4),
                                                                   (64, 64, 32, 4)]]
    assert small[1] < small[0]
    # grids multiply the tile count: 4 stride phases cost at least as much as one.
    assert configs.modelled_time(10 ** 5, 192, 192, 128, 64, 32, 4, grids=4) >= \
        configs.modelled_time(10 ** 5, 192, 192, 128, 64, 32, 4)


def test_size_pruner_keeps_at_most_keep_configs_that_fit_the_problem():
    prune = configs.size_pruner(lambda a: (a["M"], a["C_out"], a["C_in"], 1))
    cs = gpu_configs(CONV_FWD)
    for m, n, k in [(10 ** 6, 768, 2048), (50, 32, 3), (2 * 17 * 17, 192, 160),
                    (256 * 35 * 35, 48, 288)]:
        kept = prune(cs, {}, M=m, C_out=n, C_in=k)
        assert 1 <= len(kept) <= configs.KEEP
        assert all(c.kwargs["BLOCK_N"] <= max(32, 1 << (n - 1).bit_length()) for c in kept)
        ranked = sorted(configs.modelled_time(m, n, k, c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"],
                                              c.kwargs["BLOCK_K"], c.num_warps) for c in cs
                        if c in configs.fits_problem(cs, m, n, k))
        assert [configs.modelled_time(m, n, k, c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"],
                                      c.kwargs["BLOCK_K"], c.num_warps) for c in kept] \
            == ranked[:len(kept)]
    # C_out = 32 (the stem's first convs): the 4-warp 128x32 config is a candidate.
    assert any(c.kwargs["BLOCK_M"] == 128 and c.kwargs["BLOCK_N"] == 32 and c.num_warps == 4
               for c in prune(cs, {}, M=256 * 149 * 149, C_out=32, C_in=3))
