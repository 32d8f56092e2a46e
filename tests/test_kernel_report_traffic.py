"""The report's launch and op counts (kernel_report.collect / traffic / capture) count what a GPU
step would issue: the aten ops inside this package's registered ops (not the ops themselves),
no copies that only the recording causes, and the GPU's split-K choice on meta tensors.

Recording needs the interpreter off, which this process has switched on before Triton loaded:
the counts are taken in a subprocess."""
import json
import os
import subprocess
import sys

import pytest

from inception_fast.backends import why_unavailable

pytestmark = pytest.mark.skipif(why_unavailable("triton") is not None, reason="needs triton")

_COUNT = """
import json
from inception_fast.kernel_report import collect
from inception_fast.kernel_report.jit_launch import target_for
c = collect.collect(collect.Workload("units", 0, 256, "bf16", "train"), target_for(90))
print(json.dumps({"ours": dict(c.ours_aten.ops), "eager": dict(c.eager_aten.ops),
                  "triton": sorted(l.kernel for l in c.launches)}))
"""


@pytest.fixture(scope="module")
def counts():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", _COUNT], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_registered_ops_are_counted_by_what_they_issue(counts):
    # The two ConvBNReLU units of the workload run as registered ops: their Triton launches
    # are recorded, and no op of the package's namespace is itself counted as a kernel.
    assert counts["triton"].count("_conv2d_fwd_kernel") == 2
    assert counts["triton"].count("_dgrad_kernel") == 1  # the input needs no gradient
    assert not [op for op in counts["ours"] if op.startswith("conv_bn_relu")]


def test_no_gradient_copies(counts):
    # A recording that held the launches' tensors made autograd copy every BN gradient (it
    # only takes over a tensor nothing else references): 2 copy_ per layer that a GPU step
    # does not issue. The weight gradients are stored in the weight's layout by a kernel.
    assert counts["ours"].get("copy_", 0) == 0, counts["ours"]


def test_meta_tensors_get_the_gpus_split_k(counts):
    # 256 x 30 x 30 pixels per wgrad: on an H100 the K range is split, and the last split of
    # each tile sums the splits inside the same launch (no second kernel; the interpreter
    # would keep one split).
    assert counts["triton"].count("_wgrad_kernel") == 2
    assert not [k for k in counts["triton"] if "split_sum" in k or "coef" in k]


_STEP = """
import json
from inception_fast.kernel_report import collect
from inception_fast.kernel_report.jit_launch import target_for
c = collect.collect(collect.Workload("inception_v3", 299, 256, "bf16", "train"), target_for(90))
print(json.dumps({"ours_aten": sum(c.ours_aten.ops.values()), "triton": len(c.launches),
                  "eager": sum(c.eager_aten.ops.values()), "ops": dict(c.ours_aten.ops)}))
"""


def test_training_step_launches_fewer_kernels_than_eager():
    """The Triton issue's launch target: a whole training step of inception_v3 at 299, batch
    256, bf16 (forward, the trainer's losses, backward; counted on meta tensors as a GPU would
    issue them) launches at most 0.8x the aten ops of eager cuDNN's step. What got it there:
    BN finalize in one launch (last-program merge), one foreach bump of num_batches_tracked
    per block, the ReLU + BN backward coefficients inside the reduction launch, the wgrad
    split-K sum inside the wgrad launch."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", _STEP], env=env, capture_output=True, text=True,
                         check=True)
    n = json.loads(out.stdout.strip().splitlines()[-1])
    ours = n["ours_aten"] + n["triton"]
    assert ours <= 0.8 * n["eager"], n
    assert n["ops"].get("add_", 0) <= 1, n["ops"]  # num_batches_tracked: foreach per block


_LAYERS = """
import json
from inception_fast.kernel_report.collect import Workload, record_launches
from inception_fast.kernel_report.jit_launch import target_for
la, _ = record_launches(Workload("layers", 299, 32, "bf16", "eval"), target_for(90))
keys = ("C_in", "C_out", "H", "W", "KH", "KW", "SH", "PH", "PW")
print(json.dumps(sorted({tuple(v.bound[k] for k in keys)
                         for l in la for v in l.variants[:1] if "KH" in v.bound})))
"""


def test_layers_workload_is_the_per_layer_benchmarks_convs():
    """warmup --model layers: inception_v3's 43 distinct conv units, each launched on its own
    (what bench/bench_layers.py times), so a warmed cache covers the per-layer benchmarks."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", _LAYERS], env=env, capture_output=True,
                         text=True, check=True)
    convs = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(convs) == 43, convs
    assert [64, 80, 73, 73, 1, 1, 1, 0, 0] in convs  # Conv2d_3b_1x1
    assert [288, 64, 35, 35, 1, 1, 1, 0, 0] in convs  # a block's 1x1 unit, as its own GEMM
