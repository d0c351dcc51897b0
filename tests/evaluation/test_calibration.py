"""Calibration (``trcgl.evaluation.calibration``) against the definitions written out here."""

from __future__ import annotations

import numpy as np
import pytest

from trcgl.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 4)) * 2.0
    y = rng.random((500, 4)) < 1 / (1 + np.exp(-logits / 0.5))  # sharper than the scores say
    return y.astype(int), 1 / (1 + np.exp(-logits))


def test_ece_equals_the_binned_definition(data):
    y, p = data
    bins = 10
    expected = []
    for c in range(p.shape[1]):
        total = 0.0
        for b in range(bins):
            low, high = b / bins, (b + 1) / bins
            inside = (p[:, c] >= low) & ((p[:, c] < high) if b < bins - 1 else (p[:, c] <= high))
            if inside.any():
                gap = abs(y[inside, c].mean() - p[inside, c].mean())
                total += inside.sum() / len(p) * gap
        expected.append(total)
    np.testing.assert_allclose(expected_calibration_error(y, p, bins), expected, atol=1e-12)
    perfect = np.array([[0.0], [1.0], [1.0], [0.0]])
    assert expected_calibration_error(perfect, perfect)[0] == 0.0


def test_temperature_minimises_the_cross_entropy_and_keeps_the_ranking(data):
    y, p = data
    t = fit_temperature(y, p)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))

    def bce(temperature):
        q = np.clip(apply_temperature(p, temperature), 1e-12, 1 - 1e-12)
        return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))

    best = grid[np.argmin([bce(g) for g in grid])]
    assert t == pytest.approx(best, rel=2e-3)
    assert t < 1  # the labels are sharper than the scores: T < 1 sharpens them
    scaled = apply_temperature(p, t)
    assert (np.argsort(scaled, axis=0) == np.argsort(p, axis=0)).all()
    assert expected_calibration_error(y, scaled).mean() < expected_calibration_error(y, p).mean()


def test_reliability_curve_counts_every_pair(data):
    y, p = data
    mean_p, share, count = reliability_curve(y, p, 15)
    assert count.sum() == y.size and (np.diff(mean_p) > 0).all()
    assert ((share >= 0) & (share <= 1)).all()


def test_unknown_labels_are_left_out(data):
    y, p = data
    values = y.astype(float)
    unknown = np.random.default_rng(1).random(y.shape) < 0.3
    values[unknown] = np.nan
    ece = expected_calibration_error(values, p, 10)
    for c in range(p.shape[1]):
        keep = ~unknown[:, c]
        alone = expected_calibration_error(y[keep, c : c + 1], p[keep, c : c + 1], 10)
        assert ece[c] == pytest.approx(alone[0], abs=1e-12)
    _, _, count = reliability_curve(values, p, 15)
    assert count.sum() == (~unknown).sum()
    flat = fit_temperature(y[~unknown][:, None], p[~unknown][:, None])
    assert fit_temperature(values, p) == pytest.approx(flat, rel=1e-6)
    none = np.full_like(values, np.nan)
    assert np.isnan(expected_calibration_error(none, p)).all()
