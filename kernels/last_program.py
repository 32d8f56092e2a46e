"""The "last program to arrive" pattern: a kernel whose programs each write a partial result
lets the program that finishes last reduce them, in the same launch, instead of a second
launch doing it. Used by BN backward (partial sums -> coefficients), the split-K weight
gradient (splits -> the gradient) and BN finalize (merge pass -> statistics).

Determinism: the last program re-reads every partial (its own too) from memory in a fixed
order, so the result does not depend on which program came last.

Counters: one int32 per reduction group, in a per-device workspace that starts at zero and
that the last program resets to zero, so no memset launch is needed per call. Launches that
use it must not run concurrently on two streams (ours run on the caller's one stream); a
launch captured into a CUDA graph gets counters of its own (the graph's pool), zeroed once
at capture.

Ordering (PTX memory model): every thread's partial stores, then a CTA barrier, then one
release-acquire atomic at GPU scope: the barrier plus the release's cumulativity publish the
whole CTA's stores; the last program's acquire, and the barrier after it, make them visible
to all its threads. Its loads of the partials use .cg (L2, not the non-coherent L1)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_WORKSPACE: dict = {}


def arrival_counters(device: torch.device, n: int) -> torch.Tensor:
    """At least n zeroed int32 counters on `device` for one launch (see the module doc)."""
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    if capturing:  # a graph replays its own copy: never share it with eager launches
        return torch.zeros(max(n, 1), dtype=torch.int32, device=device)
    key = str(device)
    buf = _WORKSPACE.get(key)
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
        _WORKSPACE[key] = buf
    return buf


@triton.jit
def arrive_last(counter_ptr, expected):
    """Counts this program in at *counter_ptr; True in the one that arrives `expected`-th
    (last), which also resets the counter to 0 for the next launch."""
    tl.debug_barrier()
    old = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu")
    last = old == expected - 1
    if last:
        tl.atomic_xchg(counter_ptr, 0, sem="relaxed", scope="gpu")
    tl.debug_barrier()
    return last
