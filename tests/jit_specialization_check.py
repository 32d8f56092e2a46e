"""The report's specialization of a launch is the JIT's own (run by tests/test_kernel_report.py
in a process with the interpreter off).

A fused 1x1 conv + BN (training) on channels_last bf16 CPU tensors is recorded as the report
records it (capture.recording -> jit_launch.specialize), then the same bound arguments go
through Triton's real JITFunction.run against a stand-in driver that reports an sm_90 target:
first with knobs.runtime.jit_cache_hook returning True (Triton hands the hook the signature,
constexprs, attributes and options it would compile, and compiles nothing), then without it
and warmup=True (Triton compiles and returns the kernel, launching nothing). Both must equal
the report's: same signature, constexprs, attributes, options, and the same PTX and cache hash.
The launch must also show what the issue says the old harness missed: the channels_last
channel stride specialized to the constexpr 1 and 16-divisible pointers, giving cp.async."""
import os
import sys

os.environ["TRITON_INTERPRET"] = "0"

import torch  # noqa: E402
from triton import knobs  # noqa: E402
from triton.runtime import driver  # noqa: E402

from inception_fast.kernel_report import capture, jit_launch, workload  # noqa: E402
from inception_fast.nn import ConvBNReLU  # noqa: E402

TARGET = jit_launch.target_for(90)


class StandInDriver:
    """What JITFunction.run asks the active driver for, answered for an sm_90 device 0."""

    def get_current_target(self):
        return TARGET

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")


def recorded_launch():
    with workload.triton_on_meta():
        m = ConvBNReLU(64, 96, 1, backend="triton").to(memory_format=torch.channels_last)
        m.conv.to(torch.bfloat16)
        x = torch.randn(2, 64, 9, 9, dtype=torch.bfloat16).contiguous(
            memory_format=torch.channels_last)
        with capture.recording(TARGET) as launches:
            m.train()
            m(x)
    conv = [la for la in launches if la.kernel == "_conv2d_fwd_kernel"]
    assert conv, f"no conv launch recorded: {[la.kernel for la in launches]}"
    return conv[0].variants[0]


def main() -> int:
    spec = recorded_launch()
    names = [p.name for p in spec.jit.params]
    cv = spec.constexpr_values()
    assert spec.signature["sxc"] == "constexpr" and cv["sxc"] == 1, \
        "the channels_last channel stride (1) must be specialized to a constexpr"
    assert spec.attrs[(names.index("x_ptr"),)] == [["tt.divisibility", 16]], spec.attrs

    driver.set_active(StandInDriver())
    opts = dict(num_warps=spec.options.num_warps, num_stages=spec.options.num_stages)
    seen = {}

    def hook(**kw):
        seen.update(kw["compile"])
        return True  # Triton: "handled", compile nothing

    knobs.runtime.jit_cache_hook = hook
    spec.jit.run(**spec.bound, **opts, grid=(1,), warmup=True)
    assert seen, "the JIT never reached its compile hook"
    assert seen["signature"] == spec.signature, (seen["signature"], spec.signature)
    assert seen["constants"] == spec.constexprs, (seen["constants"], spec.constexprs)
    assert seen["configs"][0] == spec.attrs, (seen["configs"][0], spec.attrs)
    for k in ("num_warps", "num_stages", "num_ctas", "enable_fp_fusion"):
        assert seen[k] == getattr(spec.options, k), (k, seen[k], getattr(spec.options, k))

    knobs.runtime.jit_cache_hook = None
    jit_kernel = spec.jit.run(**spec.bound, **opts, grid=(1,), warmup=True)
    ours = jit_launch.compile_specialized(spec)
    assert jit_kernel.hash == ours.hash, (jit_kernel.hash, ours.hash)
    assert jit_kernel.asm["ptx"] == ours.asm["ptx"]
    n = ours.asm["ptx"].count("cp.async.cg")
    assert n > 0, "the launch-exact 1x1 conv must load with 16-byte cp.async"
    print(f"ok: {spec.name} specialization and PTX equal the JIT's own "
          f"({len(spec.constexprs)} constexprs, {n} cp.async.cg)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
