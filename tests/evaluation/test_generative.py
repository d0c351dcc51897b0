"""KID, FID and improved precision / recall against hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from trcgl.errors import DataError
from trcgl.evaluation.generative import fid, kid, precision_recall, quality


def test_kid_is_the_unbiased_mmd_with_the_cubic_kernel():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 2)), rng.normal(size=(3, 2)) + 1.0

    def k(a, b):
        return (a @ b / 2 + 1) ** 3  # D = 2

    yy = sum(k(y[i], y[j]) for i in range(3) for j in range(3) if i != j) / (3 * 2)
    mean, sd1 = kid(x, y, subset_size=3, subsets=1, seed=0)  # 3 of x's 4 rows, all of y
    full, sd = kid(x[:3], y)  # whole sets of equal size: one exact estimate
    xx3 = sum(k(x[i], x[j]) for i in range(3) for j in range(3) if i != j) / 6
    xy3 = sum(k(x[i], y[j]) for i in range(3) for j in range(3)) / 9
    assert full == pytest.approx(xx3 + yy - 2 * xy3) and sd == 0.0
    assert np.isfinite(mean) and sd1 == 0.0  # one subset: no spread to report
    # the same distribution scores about 0, a shifted one clearly more
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    same, _ = kid(a, b, subset_size=100, subsets=20)
    shifted, _ = kid(a, b + 0.5, subset_size=100, subsets=20)
    assert abs(same) < 0.01 < shifted


def test_fid_in_one_dimension_and_for_a_shift():
    x = np.array([[0.0], [2.0], [4.0]])  # mean 2, sd 2 (n - 1)
    y = np.array([[1.0], [2.0], [3.0]])  # mean 2, sd 1
    assert fid(x, y) == pytest.approx((2.0 - 1.0) ** 2)  # (μ − μ')² + (σ − σ')²
    rng = np.random.default_rng(1)
    z = rng.normal(size=(50, 4))
    shift = np.array([1.0, -2.0, 0.5, 0.0])
    assert fid(z, z + shift) == pytest.approx((shift**2).sum(), abs=1e-6)
    assert fid(z, z) == pytest.approx(0.0, abs=1e-6)


def test_precision_and_recall_on_a_hand_worked_line():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # k = 1: each ball has radius 1
    fake = np.array([[0.5], [10.0], [3.9], [5.0]])
    # precision: 0.5 and 3.9 lie in a real ball, 10 and 5 do not
    # recall: fake radii (k = 1) are 3.4, 5, 1.1, 1.1; the ball around 0.5 holds every real point
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)
    assert precision_recall(real, real, k=1) == (1.0, 1.0)


def test_quality_leaves_out_what_the_set_sizes_do_not_allow():
    rng = np.random.default_rng(2)
    out = quality(rng.normal(size=(10, 3)), rng.normal(size=(2, 3)))
    assert out["real"] == 10 and out["synthetic"] == 2
    assert out["kid"] is not None and out["fid"] is not None
    assert out["precision"] is None and out["recall"] is None  # k = 3 needs 4 a set
    empty = quality(rng.normal(size=(10, 3)), np.zeros((0, 3)))
    assert empty["kid"] is None and empty["synthetic"] == 0
    with pytest.raises(DataError, match="N×D and M×D"):
        kid(np.zeros((3, 2)), np.zeros((3, 4)))
