"""The whole-model check's max-pool routing (tests/whole_model.py), on one 3x3 window: found
under the GPU machine's stack (torch 2.11), where a maxpool2 window whose top two inputs differ
by 6e-7 relative made the 299 check fail on our fp32 run's legitimate choice of the runner-up.
The fp64 oracle must follow a run's choice inside POOL_MARGIN, and only there."""
import copy
import sys
from collections import OrderedDict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from whole_model import (POOL_MARGIN, eval_and_train_step, pool_sites,  # noqa: E402
                         record_pool_taps, routed_fp64_step)

from inception_fast.nn.pool import MaxPool3x3s2  # noqa: E402


def _model():
    conv = torch.nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)  # the pool sees x itself
    return torch.nn.Sequential(OrderedDict(conv=conv, pool=MaxPool3x3s2("torch")))


def _x(runner_up: float):
    x = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    x[0, 0, 0, 0], x[0, 0, 1, 1] = runner_up, 1.0  # tap 0 vs the fp64 winner, tap 4
    return x


def test_sites_are_found():
    assert pool_sites(_model(), _x(0.5).float()) == ["pool"]


def test_oracle_follows_a_runs_choice_inside_the_margin_only():
    m = _model()
    # 1 - 1e-9 is 1.0 in fp32: an exact tie there, and the fp32 run takes the first tap (0),
    # which fp64 ranks second by 1e-9 (< POOL_MARGIN): either is a right choice for fp32.
    x = _x(1.0 - 1e-9)
    assert 1e-9 < POOL_MARGIN
    with record_pool_taps(m, ["pool"]) as taps:
        run = eval_and_train_step(m, x.float())
    assert taps["pool"].flatten().tolist() == [0]
    plain = eval_and_train_step(copy.deepcopy(m).double(), x)  # fp64, its own winner
    routed = routed_fp64_step(m, x, taps)
    assert run["grad x"][0, 0, 0, 0] != 0 and plain["grad x"][0, 0, 0, 0] == 0
    assert torch.allclose(routed["grad x"], run["grad x"].double()), (routed, run)
    # Outside the margin the oracle keeps its winner: a wrong tap still shows as an error.
    y = _x(1.0 - 10 * POOL_MARGIN)
    routed = routed_fp64_step(m, y, {"pool": torch.zeros(1, 1, 1, 1, dtype=torch.long)})
    assert routed["grad x"][0, 0, 0, 0] == 0 and routed["grad x"][0, 0, 1, 1] != 0
