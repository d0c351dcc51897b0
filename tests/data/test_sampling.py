"""Repeat-factor sampling (LVIS): factors by hand, determinism, expectation and sharding."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from trcgl.data.sampling import RepeatFactorSampler, class_repeat_factors, repeat_factors


@pytest.fixture
def labels() -> np.ndarray:
    y = np.zeros((10, 4), dtype=np.uint8)
    y[:5, 0] = 1  # f = 0.5
    y[[5, 6], 1] = 1  # f = 0.2
    y[6, 2] = 1  # f = 0.1; image 6 has classes 1 and 2
    # class 3: no image; images 7–9: no positive label
    return y


def test_repeat_factors_by_hand(labels):
    t = 0.5
    r_c = class_repeat_factors(labels, t)
    assert r_c.tolist() == pytest.approx([1.0, math.sqrt(0.5 / 0.2), math.sqrt(0.5 / 0.1), 1.0])
    r_i = repeat_factors(labels, t)
    expected = [1.0] * 5 + [math.sqrt(2.5), math.sqrt(5.0)] + [1.0] * 3
    assert r_i.tolist() == pytest.approx(expected)
    assert r_i.shape == (10,)


def test_repeat_factor_threshold_is_a_parameter(labels):
    assert np.all(repeat_factors(labels, 0.0) == 1.0)
    assert np.all(repeat_factors(labels) == 1.0)  # default t = 0.001: every f_c is above it
    assert repeat_factors(labels, 0.8)[0] == pytest.approx(math.sqrt(0.8 / 0.5))
    with pytest.raises(ValueError, match="threshold"):
        repeat_factors(labels, -1.0)


def test_unknown_labels_leave_the_frequency_denominator(labels):
    y = labels.astype(np.float64)
    y[7:10, 1] = np.nan  # class 1: 2 positives among the 7 images where it is known
    y[6, 2] = np.nan  # class 2: its only positive becomes unknown
    r_c = class_repeat_factors(y, 0.5)
    assert r_c.tolist() == pytest.approx([1.0, math.sqrt(0.5 / (2 / 7)), 1.0, 1.0])
    r_i = repeat_factors(y, 0.5)
    assert r_i.tolist() == pytest.approx([1.0] * 5 + [math.sqrt(0.5 / (2 / 7))] * 2 + [1.0] * 3)
    # the authors' variant: shares of the positive labels, an unknown cell being none
    from trcgl.data.sampling import authors_repeat_factors

    np.testing.assert_array_equal(
        authors_repeat_factors(y, 0.5), authors_repeat_factors(np.nan_to_num(y), 0.5)
    )


def test_bool_and_uncertain_labels(labels):
    as_bool = repeat_factors(labels.astype(bool), 0.5)
    with_uncertain = labels.astype(np.float32)
    with_uncertain[8, 2] = -1.0  # an "uncertain" code is not a positive
    assert as_bool.tolist() == pytest.approx(repeat_factors(with_uncertain, 0.5).tolist())


def test_same_seed_and_epoch_same_order_other_epoch_other_order():
    r = np.linspace(0.5, 3.0, 40)
    a, b = RepeatFactorSampler(r, seed=3), RepeatFactorSampler(r, seed=3)
    for epoch in (0, 5):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert list(a) == list(b)
        assert list(a) == list(a)  # iterating again replays the epoch
    a.set_epoch(0)
    b.set_epoch(1)
    assert list(a) != list(b)
    c = RepeatFactorSampler(r, seed=4)
    assert list(a) != list(c)


def test_len_agrees_with_iteration_and_integer_factors_are_exact():
    r = np.array([1.0, 2.0, 0.0, 3.0, 1.7, 0.2])
    sampler = RepeatFactorSampler(r, seed=0)
    assert sampler.expected_length == pytest.approx(r.sum())
    for epoch in range(20):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert len(sampler) == len(drawn)
        counts = Counter(drawn)
        assert (counts[0], counts[1], counts[2], counts[3]) == (1, 2, 0, 3)
        assert counts[4] in (1, 2) and counts[5] in (0, 1)


def test_expected_count_of_each_index_is_its_repeat_factor():
    r = np.array([1.0, 1.5, 2.25, 0.3, 3.9, 0.0, 1.05])
    sampler = RepeatFactorSampler(r, seed=123)
    epochs = 2000
    totals = np.zeros(len(r))
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        totals += np.bincount(np.fromiter(sampler, dtype=np.int64), minlength=len(r))
    np.testing.assert_allclose(totals / epochs, r, atol=0.05)


def test_no_shuffle_keeps_ascending_order():
    sampler = RepeatFactorSampler([2.0, 1.0, 3.0], shuffle=False)
    assert list(sampler) == [0, 0, 1, 2, 2, 2]


@pytest.mark.parametrize("replicas", [2, 3, 4])
def test_distributed_shards_are_equal_and_cover_the_epoch(replicas):
    r = np.linspace(0.4, 2.6, 23)
    full = RepeatFactorSampler(r, seed=7)
    shards = [
        RepeatFactorSampler(r, seed=7, num_replicas=replicas, rank=k) for k in range(replicas)
    ]
    for epoch in (0, 1):
        full.set_epoch(epoch)
        epoch_list = list(full)
        parts = []
        for s in shards:
            s.set_epoch(epoch)
            parts.append(list(s))
            assert len(s) == len(parts[-1])
        assert len({len(p) for p in parts}) == 1
        per_rank = len(parts[0])
        assert per_rank == math.ceil(len(epoch_list) / replicas)
        # interleaving the shards gives back the epoch's list, then the wrap-around padding
        merged = [parts[k][j] for j in range(per_rank) for k in range(replicas)]
        pad = len(merged) - len(epoch_list)
        assert 0 <= pad < replicas
        assert merged[: len(epoch_list)] == epoch_list
        assert merged[len(epoch_list) :] == epoch_list[:pad]


def test_sampler_arguments_are_validated():
    with pytest.raises(ValueError, match=">= 0"):
        RepeatFactorSampler([1.0, -0.5])
    with pytest.raises(ValueError, match="rank"):
        RepeatFactorSampler([1.0], num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="1-D"):
        RepeatFactorSampler(np.ones((2, 2)))


def test_works_with_a_dataloader(labels):
    dataset = TensorDataset(torch.arange(10))
    sampler = RepeatFactorSampler(repeat_factors(labels, 0.5), seed=1)
    sampler.set_epoch(2)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)
    seen = torch.cat([b[0] for b in loader]).tolist()
    assert seen == list(sampler)
    assert len(loader) == math.ceil(len(sampler) / 4)
