from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest

from trcgl.labels.graph import LabelGraph, cooccurrence, normalized_adjacency

# Four images, four classes; class 3 has no positives.
Y = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0]])


def _hand_adjacency(tau: F) -> tuple[list[list[F]], list[F]]:
    """Eq. 15–19 worked by hand with exact fractions: Q̃ and its row sums D."""
    q = [[3, 2, 1, 0], [2, 3, 2, 0], [1, 2, 2, 0], [0, 0, 0, 0]]  # Eq. 15, by counting
    rows = [sum(r) for r in q]  # 6, 7, 5, 0
    qt = [[F(v, rows[i]) if rows[i] else F(0) for v in q[i]] for i in range(4)]  # Eq. 16
    qt = [[(qt[i][j] + qt[j][i]) / 2 for j in range(4)] for i in range(4)]  # Eq. 17
    qt = [[v if v >= tau else F(0) for v in r] for r in qt]  # Eq. 18
    qt = [[qt[i][j] + (i == j) for j in range(4)] for i in range(4)]  # Eq. 19
    d = [sum(r) for r in qt]
    return qt, d


def test_cooccurrence_is_eq15():
    np.testing.assert_array_equal(
        cooccurrence(Y), [[3, 2, 1, 0], [2, 3, 2, 0], [1, 2, 2, 0], [0, 0, 0, 0]]
    )


def test_unknown_cells_add_to_no_count():
    # Y with three cells unknown: (0, 1), (2, 2) and (3, 0). Counting the known positives by
    # hand: class 0 in images 0, 1, 2; class 1 in 2, 3; class 2 in 3; joint (0,1): image 2;
    # (1,2): image 3.
    y = Y.astype(float)
    y[0, 1] = y[2, 2] = y[3, 0] = np.nan
    expected = [[3, 1, 0, 0], [1, 2, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    np.testing.assert_array_equal(cooccurrence(y), expected)
    graph = LabelGraph.from_labels(y, ["a", "b", "c", "d"], tau=0.0)
    assert np.isfinite(graph.adjacency).all()
    np.testing.assert_allclose(graph.adjacency, normalized_adjacency(np.array(expected), 0.0))


@pytest.mark.parametrize("tau", [F(0), F(1, 5), F(3, 10)])
def test_adjacency_matches_hand_computation(tau):
    qt, d = _hand_adjacency(tau)  # Eq. 20 below: A_ij = Q̃_ij / sqrt(D_i D_j)
    expected = np.array(
        [[float(qt[i][j]) / np.sqrt(float(d[i]) * float(d[j])) for j in range(4)] for i in range(4)]
    )
    got = normalized_adjacency(cooccurrence(Y), float(tau))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_worked_values_with_tau_one_fifth():
    # Q̃ after Eq. 16–17: (0,1) = (2/6 + 2/7)/2 = 13/42; (0,2) = (1/6 + 1/5)/2 = 11/60 < 1/5 → 0;
    # (1,2) = (2/7 + 2/5)/2 = 12/35. Diagonal after Eq. 19: 3/2, 10/7, 7/5, 1.
    a = normalized_adjacency(cooccurrence(Y), 0.2)
    d = np.array([3 / 2 + 13 / 42, 13 / 42 + 10 / 7 + 12 / 35, 12 / 35 + 7 / 5, 1.0])
    assert a[0, 2] == 0 and a[2, 0] == 0
    assert a[0, 1] == pytest.approx((13 / 42) / np.sqrt(d[0] * d[1]), abs=1e-15)
    assert a[1, 2] == pytest.approx((12 / 35) / np.sqrt(d[1] * d[2]), abs=1e-15)
    assert a[0, 0] == pytest.approx(1.5 / d[0], abs=1e-15)
    # a class with no positives: only its self-loop, no NaN
    np.testing.assert_array_equal(a[3], [0, 0, 0, 1])
    assert np.isfinite(a).all()


def test_all_zero_labels_give_identity():
    a = normalized_adjacency(cooccurrence(np.zeros((5, 3))), 0.02)
    np.testing.assert_array_equal(a, np.eye(3))


def test_save_and_load_round_trip(tmp_path):
    g = LabelGraph.from_labels(Y, ("a", "b", "c", "d"), tau=0.2)
    g.save(tmp_path / "g.safetensors")
    h = LabelGraph.load(tmp_path / "g.safetensors")
    assert h.classes == g.classes and h.tau == 0.2
    np.testing.assert_allclose(h.adjacency, g.adjacency, atol=1e-7)
    np.testing.assert_array_equal(h.cooccurrence, g.cooccurrence)
    assert list(tmp_path.iterdir()) == [tmp_path / "g.safetensors"]


def test_real_padchest_graph(padchest):
    y = padchest.manifest.labels()
    g = LabelGraph.from_labels(y, padchest.manifest.classes, tau=0.02)
    a = g.adjacency
    assert a.shape == (30, 30) and np.isfinite(a).all()
    np.testing.assert_allclose(a, a.T, atol=1e-12)
    assert (np.diag(a) > 0).all() and (a >= 0).all()
    # Eq. 20 normalisation: the spectral radius of D^-1/2 Q̃ D^-1/2 is 1 for a non-negative Q̃
    assert np.max(np.abs(np.linalg.eigvalsh(a))) == pytest.approx(1.0, abs=1e-9)
    # τ prunes: fewer edges at a larger threshold
    assert (normalized_adjacency(g.cooccurrence, 0.1) > 0).sum() < (a > 0).sum()


def _hand_authors(tau: F) -> tuple[list[list[F]], list[F]]:
    """The authors' code's graph (docs/method.md §6) worked by hand with exact fractions."""
    q = [[3, 2, 1, 0], [2, 3, 2, 0], [1, 2, 2, 0], [0, 0, 0, 0]]
    n = [q[i][i] for i in range(4)]  # 3, 3, 2, 0
    p = [[F(q[i][j], n[i] + 1) for j in range(4)] for i in range(4)]  # Q_ij / (n_i + 1)
    p = [[(p[i][j] + p[j][i]) / 2 for j in range(4)] for i in range(4)]
    p = [[F(1) if i == j else p[i][j] for j in range(4)] for i in range(4)]
    p = [[v if v >= tau else F(0) for v in r] for r in p]
    p = [[F(1) if i == j else p[i][j] for j in range(4)] for i in range(4)]
    p = [[p[i][j] + (i == j) for j in range(4)] for i in range(4)]  # diagonal 2
    return p, [sum(r) for r in p]


@pytest.mark.parametrize("tau", [F(0), F(1, 5), F(2, 5)])
def test_the_authors_graph_matches_hand_computation(tau):
    p, d = _hand_authors(tau)
    want = np.array(
        [[float(p[i][j]) / np.sqrt(float(d[i] * d[j])) for j in range(4)] for i in range(4)]
    )
    graph = LabelGraph.from_labels(Y, list("abcd"), float(tau), formula="authors")
    np.testing.assert_allclose(graph.adjacency, want, atol=1e-15)
    # the class without positives keeps its self-loop of 2: a row of its own, A_33 = 1
    assert graph.adjacency[3, 3] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown graph formula"):
        LabelGraph.from_labels(Y, list("abcd"), formula="other")


def test_the_authors_graph_on_the_real_padchest_labels(padchest):
    """On the real PadChest training labels the two formulas differ (the issue measured
    max |ΔA| 0.21); the authors' is symmetric with diagonal 2 before normalisation."""
    y = padchest.manifest.labels()
    paper = LabelGraph.from_labels(y, padchest.manifest.classes, tau=0.02)
    authors = LabelGraph.from_labels(y, padchest.manifest.classes, tau=0.02, formula="authors")
    a = authors.adjacency
    np.testing.assert_allclose(a, a.T, atol=1e-12)
    assert np.abs(a - paper.adjacency).max() > 0.05
    assert (a > 0).sum() != (paper.adjacency > 0).sum()
