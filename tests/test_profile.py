"""`inception-fast profile` on CPU: a training and an inference step under torch.profiler write a
Chrome trace with a range per block and per fused op, list the top ops, and print the Nsight
Compute command line."""
import json

import pytest
import torch

from inception_fast.cli import main
from inception_fast.profile import kernel_base_name, ncu_command


@pytest.fixture
def one_thread():
    """Small ops on a busy 2-core machine: OpenMP spinning would dominate the run."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _names(trace):
    return {e.get("name") for e in json.loads(trace.read_text())["traceEvents"]}


def test_profile_train_step_writes_trace(tmp_path, capsys, one_thread):
    trace = tmp_path / "train.json"
    rc = main(["profile", "--steps", "1", "--warmup", "0", "--mode", "train", "--size", "79",
               "--input", "77", "--batch", "2", "--top", "5", "--trace", str(trace)])
    out = capsys.readouterr().out
    assert rc == 0
    names = _names(trace)
    for rng in ("block:Conv2d_1a_3x3", "block:Mixed_5b", "block:Mixed_7c", "block:AuxLogits",
                "op:Mixed_5b.branch1x1", "op:Mixed_7c.branch3x3dbl_3b", "op:Conv2d_1a_3x3",
                "step 0", "backward", "optimizer"):
        assert rng in names, rng
    assert any(n and n.startswith("aten::convolution_backward") for n in names)
    assert "top 5 ops by self CPU time" in out
    assert "aten::" in out and "block:Mixed_6e" in out
    assert f"Chrome trace: {trace}" in out
    assert "ncu --set full -k regex:KERNEL" in out
    assert "--nvtx-include inception_fast.profile_step/" in out
    assert "INCEPTION_FAST_LINEINFO=1 inception-fast build-ext" in out


def test_profile_eval_paper_model(tmp_path, capsys, one_thread):
    trace = tmp_path / "eval.json"
    rc = main(["profile", "--model", "inception_v3_paper", "--steps", "1", "--warmup", "1",
               "--mode", "eval", "--size", "299", "--input", "75", "--batch", "1", "--top", "3",
               "--trace", str(trace)])
    assert rc == 0
    names = _names(trace)
    assert "block:Mixed_6f" in names and "backward" not in names  # the paper's 5th 17x17 block
    assert "block:AuxLogits" not in names  # eval: no aux head


def test_profile_without_torch_profiler(tmp_path, capsys, one_thread):
    trace = tmp_path / "none.json"
    rc = main(["profile", "--no-torch-profiler", "--steps", "1", "--warmup", "0", "--mode", "eval",
               "--size", "79", "--input", "21", "--batch", "1", "--trace", str(trace)])
    assert rc == 0 and not trace.exists()
    assert "no torch.profiler" in capsys.readouterr().out


@pytest.mark.parametrize("argv, msg", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--batch", "0"], "--batch must be at least 1"),
    (["--input", "20", "--size", "79"], "too small"),
    (["--backend", "cuda"], "backend 'cuda' is not available"),
])
def test_profile_bad_input(argv, msg, capsys, tmp_path):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("the cuda backend may be available on this machine")
    rc = main(["profile", "--mode", "eval", "--trace", str(tmp_path / "t.json")] + argv)
    assert rc == 2
    assert msg in capsys.readouterr().err


def test_kernel_names_for_ncu():
    assert kernel_base_name("void cudnn::ops::nhwcToNchwKernel<float, float, float, true>(int, float*)") \
        == "nhwcToNchwKernel"
    assert kernel_base_name("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc") \
        == "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc"
    assert kernel_base_name("conv2d_fwd_kernel") == "conv2d_fwd_kernel"

    class A:
        warmup, mode, batch, size, backend = 2, "train", 64, 299, "triton"
        model, input, dtype = "inception_v3", None, "bf16"

    cmd = ncu_command("void at::native::vectorized_elementwise_kernel<4, Foo>(int, Foo)", A)
    assert cmd.startswith("ncu --set full -k regex:vectorized_elementwise_kernel ")
    assert "--launch-count 1" in cmd and "-o ncu_vectorized_elementwise_kernel" in cmd
    assert cmd.endswith("inception-fast profile --no-torch-profiler --steps 1 --warmup 2 --mode train "
                        "--batch 64 --size 299 --backend triton --model inception_v3 --dtype bf16")
