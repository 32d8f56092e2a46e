"""Whole-model check of a fused backend against a float64 oracle (shared by the model tests).

Why against fp64: with batch-statistics BN, a handful of the ~10^7 pre-ReLU values lie within
fp32 rounding of 0 and flip their ReLU mask between any two fp32 runs; through the BN backward
each flip moves whole channels' gradients. Two fp32 runs of torch itself (contiguous and
channels_last input) differ from fp64 by a median 1.7% (up to 24%) of the parameter-gradient
scale with torch's default BN init (beta = 0). So the models here get BN beta in [2, 3] (most
pre-ReLU values far from 0), the few channels still holding a pre-ReLU value within 1e-3 of 0
get their bias moved off it (keep_relu_inputs_off_zero), and a tensor passes when our error
against fp64 is at most K times torch's own fp32 error plus ATOL times the tensor's scale.

Max-pool windows are the same hazard for the gradient's routing: at 299 a window whose two
largest inputs differ by less than fp32 rounding (seen: 6.2e-7 relative in maxpool2, channel
119, under torch 2.11's init) sends the gradient to either, and one such choice moves
Conv2d_4a's weight gradient by 8.4e-5 (2% of its scale): exactly the failure "grad
Conv2d_4a_3x3.conv.weight: 8.43e-05 vs torch fp32 7.52e-06" (issue 16), where torch's two fp32
runs happened to pick fp64's winner and ours the runner-up. Unlike a ReLU input, no BN
parameter moves such a tie (a channel's shift or scale keeps its order); torch's fp32 runs move
such gaps by up to 2.4e-5 of the window's max, and fp64 gaps under 1e-4 number 26 to 77 per
pool at 299. So each run (ours and torch's fp32 runs) is compared with an fp64 run routed as
that run routed wherever fp64's top two lie within POOL_MARGIN of each other, and by the fp64
winner in every other window, so a wrong choice still fails. Made to take that maxpool2
runner-up, our run failed the plain fp64 comparison (grad x and the stem's gradients) and
passes this one.

Measured (CPU interpreter): inception_v3 at 79 batch 2, worst ratio 0.93 of the allowance; it
can fail: a 0.1% error put into the BN backward's k3 exceeded the allowance 355x (96 tensors),
one in the 1x7 weight gradient 8x (4 tensors)."""
import copy

import torch
import torch.nn.functional as F

K, ATOL = 8.0, 1e-5
# fp64 top-two gap, relative to the window's max, under which either tap is a right max-pool
# choice for fp32: 4x the largest error of such a gap measured in torch's fp32 runs at 299.
POOL_MARGIN = 1e-4


def randomize_bn(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """BN gamma in [0.5, 1], beta in [2, 3], random running stats (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) + 2.0)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def keep_relu_inputs_off_zero(model: torch.nn.Module, x: torch.Tensor,
                              margin: float = 1e-3) -> torch.nn.Module:
    """Even with beta in [2, 3] a pre-ReLU value can land within fp32 rounding of 0 (seen:
    1.5e-6 in the paper model's Mixed_6d at 79x79), and then any two fp32 runs may disagree on
    that ReLU's mask. In a float64 training forward, unit by unit in execution order, each
    channel holding a pre-ReLU value within `margin` of 0 gets its BN bias shifted (by 3 or -3
    margins, whichever leaves no value of the channel within the margin); the batch statistics
    do not depend on the bias, so the shift moves that channel's values by exactly that much.
    Model and input stay as they are otherwise; the same model then goes to every backend."""
    from inception_fast.nn import ConvBNReLU

    ref = copy.deepcopy(model).double().train()
    units = dict(ref.named_modules())

    def adjust(unit, args):
        bn = unit.bn
        with torch.no_grad():
            y = F.conv2d(args[0], unit.conv.weight, None, unit.conv.stride, unit.conv.padding)
            z = F.batch_norm(y, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
            for c in torch.nonzero((z.abs() < margin).flatten(2).any(2).any(0)).flatten():
                zc = z[:, c]
                for shift in (3 * margin, -3 * margin, 6 * margin, -6 * margin):
                    if not ((zc + shift).abs() < margin).any():
                        bn.bias[c] += shift
                        break

    hooks = [m.register_forward_pre_hook(adjust) for m in units.values()
             if isinstance(m, ConvBNReLU)]
    try:
        ref(x.double())
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, ConvBNReLU):
                m.bn.bias.copy_(units[name].bn.bias)
    return model


class _Sites:
    """Which module each 3x3/2 max-pool call belongs to (the innermost module running, whose
    first input is the pool's input): maxpool1/2, and the grid reductions' pool branches."""

    def __init__(self, model):
        self.stack, self.names = [], {}
        self.hooks = []
        for name, m in model.named_modules():
            self.names[m] = name
            self.hooks.append(m.register_forward_pre_hook(self._enter))
            self.hooks.append(m.register_forward_hook(self._leave))

    def _enter(self, m, args):
        self.stack.append((m, args[0] if args else None))

    def _leave(self, m, args, out):
        self.stack.pop()

    def current(self, t):
        """(name, module) of the innermost running module whose first input is `t`, else None."""
        for m, inp in reversed(self.stack):
            if isinstance(inp, torch.Tensor) and inp.shape == t.shape and torch.equal(inp, t):
                return self.names[m], m
        return None

    def remove(self):
        for h in self.hooks:
            h.remove()


def _windows(t: torch.Tensor) -> torch.Tensor:
    """(N, C, Ho, Wo, 9): each 3x3, stride-2, unpadded window."""
    return t.unfold(2, 3, 2).unfold(3, 3, 2).flatten(-2)


def pool_sites(model: torch.nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the modules (of the reference, backend="torch") that call F.max_pool2d(t, 3, 2)
    on their own input: the sites whose choices record_pool_taps reads in any backend."""
    m = copy.deepcopy(model).double().train()
    sites, orig = _Sites(m), F.max_pool2d
    found = []

    def spy(t, kernel_size, stride=None, *a, **k):
        site = sites.current(t) if (kernel_size, stride) in ((3, 2), ((3, 3), (2, 2))) else None
        if site and site[0] not in found:
            found.append(site[0])
        return orig(t, kernel_size, stride, *a, **k)

    F.max_pool2d = spy
    try:
        with torch.no_grad():
            m(x.double())
    finally:
        F.max_pool2d = orig
        sites.remove()
    return found


class record_pool_taps:
    """While active, each training forward of a site records which of its 9 taps each window
    took ({site: (N, C, Ho, Wo) index}), read from the site's input and its pooled output (the
    module's output, or a grid reduction's last C_in channels, where its pool slice lies)."""

    def __init__(self, model, sites):
        self.taps, mods = {}, dict(model.named_modules())
        self.hooks = [mods[s].register_forward_hook(self._hook(s)) for s in sites]

    def _hook(self, site):
        def hook(m, args, out):
            if not m.training:
                return
            t = args[0].detach()
            pooled = out.detach()[:, -t.shape[1]:]
            hit = _windows(t) == pooled.unsqueeze(-1)
            assert hit.any(-1).all(), f"{site}: a pooled value is none of its window's inputs"
            self.taps[site] = hit.to(torch.uint8).argmax(-1)
        return hook

    def __enter__(self):
        return self.taps

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()


def routed_fp64_step(model: torch.nn.Module, x: torch.Tensor, taps: dict) -> dict:
    """eval_and_train_step in float64, each site's training max-pool taking the fp64 winner
    except where its top two are within POOL_MARGIN: there the tap of `taps` (the fp32 run's)."""
    m = copy.deepcopy(model).to(x.device).double()
    sites, orig = _Sites(m), F.max_pool2d

    def routed(t, kernel_size, stride=None, *a, **k):
        site = sites.current(t) if (kernel_size, stride) in ((3, 2), ((3, 3), (2, 2))) else None
        if site is None or not site[1].training or site[0] not in taps:
            return orig(t, kernel_size, stride, *a, **k)
        w = _windows(t)
        top = w.topk(2, -1)
        near = (top.values[..., 0] - top.values[..., 1]) <= POOL_MARGIN * top.values[..., 0].abs()
        idx = torch.where(near, taps[site[0]].to(top.indices.device), top.indices[..., 0])
        return w.gather(-1, idx.unsqueeze(-1)).squeeze(-1)

    F.max_pool2d = routed
    try:
        return eval_and_train_step(m, x.double())
    finally:
        F.max_pool2d = orig
        sites.remove()


def eval_and_train_step(model: torch.nn.Module, x: torch.Tensor) -> dict:
    """Eval logits (no grad), then one train step: logits, aux logits (if any), input and
    parameter gradients, every buffer afterwards."""
    model.eval()
    with torch.no_grad():
        res = {"eval logits": model(x)}
    model.train()
    x = x.detach().clone().requires_grad_()
    out = model(x)
    logits, aux = (out.logits, out.aux_logits) if hasattr(out, "logits") else (out, None)
    g = torch.Generator().manual_seed(3)
    loss = (logits * torch.randn(logits.shape, generator=g).to(logits)).sum()
    res["train logits"] = logits.detach()
    if aux is not None:
        loss = loss + 0.4 * (aux * torch.randn(aux.shape, generator=g).to(aux)).sum()
        res["train aux logits"] = aux.detach()
    loss.backward()
    res["grad x"] = x.grad
    res.update({"grad " + n: p.grad for n, p in model.named_parameters()})
    res.update({n: b.clone() for n, b in model.named_buffers()})
    return res


def check_against_fp64(reference: torch.nn.Module, backend: str, x: torch.Tensor,
                       device: str) -> None:
    """`reference` (backend="torch") run in fp64 is the oracle (routed through max-pool
    near-ties as the run it judges, routed_fp64_step); torch's own fp32 error is the larger of a
    contiguous and a channels_last fp32 run's; a copy switched to `backend` must stay within K
    times that plus ATOL times the tensor's max |fp64|: eval logits, then a train step's logits,
    aux logits, input gradient, every parameter gradient, every BN buffer."""
    keep_relu_inputs_off_zero(reference, x)
    sites = pool_sites(reference, x)

    def run(model, xx):
        with record_pool_taps(model, sites) as taps:
            res = eval_and_train_step(model, xx)
        return res, routed_fp64_step(reference, x.to(device), taps)

    torch32 = [run(copy.deepcopy(reference).to(device), xx.to(device))
               for xx in (x, x.to(memory_format=torch.channels_last))]
    ours, exact = run(copy.deepcopy(reference).set_backend(backend).to(device), x.to(device))
    assert ours.keys() == exact.keys()
    bad = []
    for k, want in exact.items():
        if not want.is_floating_point():
            assert torch.equal(ours[k], want), k  # num_batches_tracked
            continue
        scale = want.abs().max().item()
        e_torch = max((t[k].double() - w[k]).abs().max().item() for t, w in torch32)
        e_ours = (ours[k].double() - want).abs().max().item()
        if not e_ours <= K * e_torch + ATOL * scale + 1e-30:
            bad.append(f"{k}: {e_ours:.2e} vs torch fp32 {e_torch:.2e} (scale {scale:.2e})")
    assert not bad, "error vs fp64 beyond K x torch's own:\n" + "\n".join(bad)
