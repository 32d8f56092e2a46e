"""The CUDA kernels' tile and pipeline maths, checked on CPU (issue #14): csrc_reference mirrors
csrc/asym_conv.cu's block geometry (lines sharing one zero gap, GEMM rows over the block's
flattened output pixels), the cp.async pipelines' stage reuse of asym_conv / grid_reduce and
grid_reduce's thread slots / pool assignment; emulating the kernels with that maths must give
torch's conv and pool. The mirror's constants are read back from the sources, and the compiled
kernels' resources / instruction mix are checked wherever csrc/ compiles (no GPU needed)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from inception_fast.ops import csrc_reference as R

CSRC = Path(__file__).resolve().parents[1] / "csrc"

# (N, C_in, C_out, H, W, kernel, pad): every Inception-v3 asymmetric shape (small channels: the
# index maths do not depend on them) and odd ones: lines straddling blocks, Lo < L (pad 0),
# Lo > L (pad > (taps - 1) / 2), one-pixel lines (lb limited by the staged rows), 2 taps, the
# longest padded line.
ASYM = [
    (2, 3, 5, 17, 17, (1, 7), 3), (2, 3, 5, 17, 17, (7, 1), 3),
    (3, 3, 4, 8, 8, (1, 3), 1), (3, 3, 4, 8, 8, (3, 1), 1),
    (3, 2, 3, 9, 13, (1, 5), 2), (1, 2, 3, 11, 6, (7, 1), 1), (2, 2, 2, 7, 9, (1, 3), 0),
    (2, 2, 2, 5, 6, (3, 1), 3), (4, 2, 3, 5, 1, (1, 3), 1), (2, 2, 2, 6, 10, (1, 2), 1),
    (1, 2, 2, 3, 122, (1, 7), 3),
]


@pytest.mark.parametrize("case", ASYM, ids=lambda c: f"{c[3]}x{c[4]}_{c[5][0]}x{c[5][1]}p{c[6]}")
def test_asym_conv_tile_maths_give_torch_conv(case):
    N, ci, co, h, w, k, pad = case
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, ci, h, w, generator=g)
    wt = torch.randn(co, ci, *k, generator=g)
    padding = (pad, 0) if k[1] == 1 else (0, pad)
    torch.testing.assert_close(R.asym_conv_emulated(x, wt, pad), F.conv2d(x, wt, None, 1, padding),
                               rtol=1e-5, atol=1e-5)


def test_asym_conv_geometry_holds_for_every_supported_line():
    """Every line length / taps / pad the kernel accepts: at least one line per block, the GEMM
    rows fit the 128-row tile, every row read (a_row(m) + t) lies in the staged rows, the staged
    rows fit the shared tile."""
    for L in range(1, R.ASYM_CONV_MAX_PADDED_LINE + 1):
        for taps in range(2, R.ASYM_CONV_MAX_TAPS + 1):
            for pad in range((R.ASYM_CONV_MAX_PADDED_LINE - L) // 2 + 1):
                g = R.asym_conv_tiling(1, L, L, taps, pad, False)
                if g is None:
                    assert L + 2 * pad - taps + 1 < 1
                    continue
                assert g["lb"] >= 1 and g["lb"] * g["Lo"] <= R.ASYM_MT
                assert g["rows"] <= R.ASYM_A_ROWS
                last = R.asym_a_row(g, g["lb"] * g["Lo"] - 1)
                assert last + taps - 1 < g["rows"]


def test_asym_conv_wastes_few_mma_rows_on_inception_lines():
    """MMA rows computed but not stored per 128-row tile. Before (one padded line of L + 2 pad
    virtual rows per line, 128 // (L + 2 pad) lines): 43 at 17x17 / 7 taps, 32 at 8x8 / 3 taps."""
    old = lambda L, taps, pad: 128 - (128 // (L + 2 * pad)) * (L + 2 * pad - taps + 1)  # noqa
    assert (old(17, 7, 3), old(8, 3, 1)) == (43, 32)
    assert R.asym_conv_wasted_rows(17, 7, 3) == 9   # 7 lines of 17: 7 %
    assert R.asym_conv_wasted_rows(8, 3, 1) == 0    # 16 lines of 8


def test_asym_conv_refuses_one_tap():
    """The 3-stage pipeline keeps 2 line stages, which needs >= 2 taps per chunk."""
    x = torch.zeros(1, 2, 5, 5)
    with pytest.raises(ValueError, match="2 to 7 taps"):
        R.asym_conv(x, torch.zeros(3, 2, 1, 1), 0, torch.zeros(1, 3, 5, 5), 0)
    assert R.asym_conv_tiling(1, 5, 5, 1, 0, False) is None


@pytest.mark.parametrize("taps", range(2, 8))
@pytest.mark.parametrize("chunks", [1, 2, 5])
def test_pipelines_never_refill_a_stage_in_use(taps, chunks):
    assert R.pipeline_schedule(chunks * taps, taps, R.ASYM_A_STAGES, R.ASYM_B_STAGES, False) is None
    assert R.pipeline_schedule(chunks * 9, 9, R.GRID_STAGES, R.GRID_STAGES, True) is None


def test_pipeline_replay_finds_hazards():
    """The replay is not vacuous: 1 tap with 2 line stages, or 2 stages two steps ahead, race."""
    assert R.pipeline_schedule(6, 1, 2, 3, False) is not None
    assert R.pipeline_schedule(18, 9, 2, 2, True) is not None
    assert R.pipeline_schedule(14, 7, 2, 2, False) is not None


@pytest.mark.parametrize("shape", [(2, 20, 24, 10, 13), (1, 40, 8, 35, 35), (3, 72, 16, 9, 9)],
                         ids=lambda s: f"{s[1]}to{s[2]}_{s[3]}x{s[4]}")
@pytest.mark.parametrize("col_blocks", [1, 2, 3])
def test_grid_reduce_tile_maths_give_torch_conv_and_pool(shape, col_blocks):
    N, ci, co, h, w = shape
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-3, 4, (N, ci, h, w), generator=g).to(torch.bfloat16)  # ties: first max
    wt = torch.randn(co, ci, 3, 3, generator=g).to(torch.bfloat16)
    conv, pool, argmax = R.grid_reduce_emulated(x, wt, col_blocks)
    torch.testing.assert_close(conv, F.conv2d(x.float(), wt.float(), None, 2), rtol=1e-5,
                               atol=1e-4)
    v, idx = F.max_pool2d(x.float(), 3, 2, return_indices=True)
    torch.testing.assert_close(pool, v, rtol=0, atol=0)
    torch.testing.assert_close(argmax, R.pool_tap_from_index(idx, w), rtol=0, atol=0)


def _constant(path, name):
    m = re.search(rf"constexpr int {name} = (\d+);", (CSRC / path).read_text())
    assert m, f"{name} not found in csrc/{path}"
    return int(m.group(1))


def test_mirror_constants_match_the_sources():
    assert _constant("asym_conv.cu", "kMT") == R.ASYM_MT
    assert _constant("asym_conv.cu", "kARows") == R.ASYM_A_ROWS
    assert _constant("asym_conv.cu", "kAStages") == R.ASYM_A_STAGES
    assert _constant("asym_conv.cu", "kBStages") == R.ASYM_B_STAGES
    assert _constant("asym_conv.cu", "kMaxPaddedLine") == R.ASYM_CONV_MAX_PADDED_LINE
    assert _constant("asym_conv.cu", "kMaxTaps") == R.ASYM_CONV_MAX_TAPS
    assert _constant("asym_conv.cu", "kBK") == R.BK == _constant("grid_reduce.cu", "kBK")
    assert _constant("grid_reduce.cu", "kMT") == R.GRID_MT
    assert _constant("grid_reduce.cu", "kStages") == R.GRID_STAGES
    assert _constant("bn_common.cuh", "kPartLanes") == R.STAT_LANES


def test_compiled_tensor_core_kernels_static_properties(extension):
    """sm_90 SASS of the two tensor-core kernels (what `inception-fast kernels` reports): no
    spills, 64x32 warp tiles (32 HMMA.16816 and 12 LDSM per main-loop trip: 2 k16 steps x
    (4 A + 2 B) ldmatrix), operands by cp.async (LDGSTS) with one barrier per step, the
    3-stage wait (DEPBAR.LE SB0, 0x1: one step's group still in flight), 16-byte epilogue
    stores, registers within the launch bounds."""
    from inception_fast import ext
    from inception_fast.kernel_report import cuda_kernels

    recs = {r["kernel"]: r for r in cuda_kernels.report(ext.build_dir(), 90)}
    for name in ("asym_conv_mma_kernel", "grid_reduce_mma_kernel"):
        for t in ("__half", "__nv_bfloat16"):
            r = recs[f"{name}<{t}>"]
            assert r["spill_bytes"] == 0 and r["spill_insns"] == 0, r
            assert r["main_loop_mma"] == 32 and r["ldsm"] == 12 and r["main_loop_bar"] == 1, r
            assert r["cp_async"] > 0 and r["stg_bytes"] == 16 and r["generic_ld"] == 0, r
            assert r["fits"] and r["shared"] <= 48 * 1024, r
            assert r["cp_async_in_flight"] == 1, r  # 3 stages: step s + 1 stays in flight
    assert recs["grid_reduce_mma_kernel<__nv_bfloat16>"]["regs"] <= 128  # 4 blocks per SM


@pytest.mark.parametrize("arch", [80, 90])
def test_compiled_kernels_pass_the_cuda_gate(extension, arch):
    """Every CUDA kernel of the build, for both SASS archs: no spill or stack use, shared
    memory that fits, no generic bf16 loads, no flush-to-zero compares (the static report's
    gate; sm_80 had 8 / 16 spilled bytes in two pool kernels' byte punning)."""
    from inception_fast import ext
    from inception_fast.kernel_report import cuda_kernels, gate

    recs = cuda_kernels.report(ext.build_dir(), arch)
    assert len(recs) >= 40
    assert {r["kernel"]: gate.cuda_failures(r) for r in recs if gate.cuda_failures(r)} == {}
