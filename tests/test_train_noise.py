"""Noisy labels (rates, class maps) and joint optimization's label bookkeeping."""
import pytest
import torch

from inception_fast.train.distributed import GlobalBatchSampler, check_global_batch
from inception_fast.train.joint_opt import EpochOutputs, LabelState
from inception_fast.train.noisy_labels import CLASS_MAPS, make_noisy_labels


def test_symmetric_noise_rate_and_reproducibility():
    clean = torch.arange(2000) % 10
    noisy, flip = make_noisy_labels(clean, 10, "symmetric", 0.4, seed=3)
    assert flip == pytest.approx(float((noisy != clean).float().mean()))
    # 800 samples redrawn uniformly, 1/10 of them keep their class: flip ~ 0.36.
    assert 0.33 < flip < 0.39
    again, _ = make_noisy_labels(clean, 10, "symmetric", 0.4, seed=3)
    other, _ = make_noisy_labels(clean, 10, "symmetric", 0.4, seed=4)
    assert torch.equal(noisy, again) and not torch.equal(noisy, other)
    assert make_noisy_labels(clean, 10, "symmetric", 0.0, seed=0)[1] == 0.0


@pytest.mark.parametrize("dataset", ["digits", "cifar10"])
def test_asymmetric_noise_follows_the_class_map(dataset):
    clean = torch.arange(1000) % 10  # 100 per class
    noisy, flip = make_noisy_labels(clean, 10, "asymmetric", 0.3, seed=0, dataset=dataset)
    cmap = CLASS_MAPS[dataset]
    for k in range(10):
        got = noisy[clean == k]
        if k in cmap:
            assert int((got == cmap[k]).sum()) == 30 and int((got == k).sum()) == 70
        else:
            assert bool((got == k).all())
    assert flip == pytest.approx(0.3 * len(cmap) / 10)
    if dataset == "digits":
        assert cmap == {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}
    else:  # truck->automobile, bird->airplane, cat<->dog, deer->horse
        assert cmap == {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}


def test_noise_errors():
    y = torch.zeros(10, dtype=torch.long)
    for r in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"noise-rate must be in \[0, 1\)"):
            make_noisy_labels(y, 10, "symmetric", r, 0)
    with pytest.raises(ValueError, match="class map"):
        make_noisy_labels(y, 10, "asymmetric", 0.2, 0, dataset="synthetic")


def test_label_state_ring_buffer_updates():
    clean = torch.tensor([0, 1, 2, 0])
    noisy = torch.tensor([0, 2, 2, 1])
    st = LabelState(clean, noisy, 3, begin=3, track=True)
    assert st.accuracy() == 0.5 and st.noisy_accuracy() == 0.5
    torch.manual_seed(0)
    hist = [torch.softmax(torch.randn(4, 3), 1) for _ in range(13)]
    for e, p in enumerate(hist, 1):
        changed = st.update(p)
        assert changed == (e >= 3)
        if e < 3:
            assert torch.equal(st.soft, torch.nn.functional.one_hot(noisy, 3).float())
        else:
            want = torch.stack(hist[max(0, e - 10):e]).mean(0)  # mean of the last <= 10
            torch.testing.assert_close(st.soft, want)
    assert st.accuracy() == float((want.argmax(1) == clean).float().mean())
    st2 = LabelState(clean, noisy, 3, begin=3, track=True)
    st2.load_state_dict(st.state_dict())
    st.update(hist[0])
    st2.update(hist[0])
    assert torch.equal(st.soft, st2.soft)


@pytest.mark.parametrize("world", [2, 3])
def test_epoch_outputs_same_for_any_number_of_ranks(world):
    """Soft-label bookkeeping across ranks: each rank records (index, output) in its sample
    order; the assembled (N, K) must equal the one-process result, duplicates from padding
    included (each recorded output depends on its global position, so a wrong pick shows)."""
    n, k, batch = 10, 3, 6  # padded to 12: two samples seen twice

    def run(w):
        per_rank = []
        for r in range(w):
            s = GlobalBatchSampler(n, batch, r, w, seed=5)
            s.set_epoch(2)
            out = EpochOutputs()
            for step, b in enumerate(s.batches()):
                pos = torch.tensor([step * batch + r + w * j for j in range(len(b))])
                out.add(torch.tensor(b), torch.stack([pos.float(), pos.float() * 2,
                                                      torch.tensor(b).float()], 1))
            per_rank.append(out)
        if w == 1:
            return per_rank[0].assemble(n, k)
        parts = {"idx": [], "probs": []}
        for o in per_rank:
            parts["idx"].append(torch.cat(o.idx))
            parts["probs"].append(torch.cat(o.probs))
        calls = iter([parts["idx"], parts["probs"]])
        return per_rank[0].assemble(n, k, gather=lambda t: next(calls))

    one = run(1)
    assert torch.equal(one[:, 2], torch.arange(n).float())  # every sample, right row
    assert torch.equal(run(world), one)


def test_global_batch_sampler_splits_each_global_batch():
    n, B = 13, 8
    one = GlobalBatchSampler(n, B, 0, 1, seed=1).batches()
    two = [GlobalBatchSampler(n, B, r, 2, seed=1).batches() for r in range(2)]
    assert len(one) == 2 and all(len(b) == B for b in one)
    for i, b in enumerate(one):
        assert two[0][i] == b[0::2] and two[1][i] == b[1::2]
    assert sorted(set(sum(one, []))) == list(range(n))
    with pytest.raises(ValueError, match="below the number of processes"):
        check_global_batch(1, 2)
    with pytest.raises(ValueError, match="divisible"):
        check_global_batch(6, 2, 2)
