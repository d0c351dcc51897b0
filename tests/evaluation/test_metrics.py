"""trcgl.evaluation.metrics against scikit-learn, one class at a time."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from trcgl.evaluation.metrics import (
    MetricsReport,
    average_precision,
    evaluate,
    f1_scores,
    roc_auc,
    tune_thresholds,
)

TOL = 1e-9


def _data(seed: int, n: int = 400, c: int = 6, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    prevalence = np.geomspace(0.4, 0.02, c)
    y = (rng.random((n, c)) < prevalence).astype(np.int64)
    y[rng.integers(0, n), :] = 1  # at least one positive per class
    # scores loosely correlated with the labels
    s = 1.0 / (1.0 + np.exp(-(rng.normal(size=(n, c)) + 1.2 * y - 0.8)))
    if decimals is not None:
        s = np.round(s, decimals)
    return y, s


def _sk(fn, y: np.ndarray, s: np.ndarray, **kw) -> np.ndarray:
    out = []
    for c in range(y.shape[1]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out.append(fn(y[:, c], s[:, c], **kw))
            except ValueError:  # roc_auc_score with one class only
                out.append(math.nan)
    return np.asarray(out, dtype=np.float64)


def _sk_f1(y: np.ndarray, s: np.ndarray, thr) -> np.ndarray:
    thr = np.broadcast_to(np.asarray(thr, dtype=np.float64), (y.shape[1],))
    return np.array(
        [
            f1_score(y[:, c], (s[:, c] >= thr[c]).astype(int), zero_division=0)
            for c in range(y.shape[1])
        ]
    )


def _brute_best_f1(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Best F1 over every candidate threshold (each observed score), by direct counting."""
    best = []
    for c in range(y.shape[1]):
        cand = np.unique(s[:, c])
        pred = s[:, c][:, None] >= cand[None, :]  # (N, K): one column per threshold
        tp = (pred & (y[:, c][:, None] == 1)).sum(axis=0)
        fp = pred.sum(axis=0) - tp
        fn = y[:, c].sum() - tp
        best.append((2 * tp / (2 * tp + fp + fn)).max())
    return np.asarray(best)


# --------------------------------------------------------------------------------------------
# AP and AUC
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("decimals", [None, 2, 1])
def test_ap_auc_match_sklearn(seed: int, decimals: int | None) -> None:
    y, s = _data(seed, decimals=decimals)
    np.testing.assert_allclose(
        average_precision(y, s), _sk(average_precision_score, y, s), atol=TOL
    )
    np.testing.assert_allclose(roc_auc(y, s), _sk(roc_auc_score, y, s), atol=TOL)


def test_pure_random_scores() -> None:
    rng = np.random.default_rng(10)
    y = (rng.random((1000, 5)) < 0.2).astype(int)
    s = rng.random((1000, 5))
    np.testing.assert_allclose(
        average_precision(y, s), _sk(average_precision_score, y, s), atol=TOL
    )
    np.testing.assert_allclose(roc_auc(y, s), _sk(roc_auc_score, y, s), atol=TOL)


def test_all_equal_scores() -> None:
    y, _ = _data(3)
    s = np.full(y.shape, 0.37)
    ap = average_precision(y, s)
    np.testing.assert_allclose(ap, _sk(average_precision_score, y, s), atol=TOL)
    np.testing.assert_allclose(ap, y.mean(axis=0), atol=TOL)  # AP = prevalence
    np.testing.assert_allclose(roc_auc(y, s), 0.5, atol=TOL)
    np.testing.assert_allclose(roc_auc(y, s), _sk(roc_auc_score, y, s), atol=TOL)


def test_single_positive() -> None:
    rng = np.random.default_rng(4)
    s = rng.random((50, 3))
    y = np.zeros((50, 3), dtype=int)
    y[7, 0] = 1
    y[np.argmax(s[:, 1]), 1] = 1  # ranked first: AP = AUC = 1
    y[np.argmin(s[:, 2]), 2] = 1  # ranked last: AUC = 0
    ap, auc = average_precision(y, s), roc_auc(y, s)
    np.testing.assert_allclose(ap, _sk(average_precision_score, y, s), atol=TOL)
    np.testing.assert_allclose(auc, _sk(roc_auc_score, y, s), atol=TOL)
    assert ap[1] == pytest.approx(1.0) and auc[1] == pytest.approx(1.0)
    assert auc[2] == pytest.approx(0.0)


def test_no_positives_is_nan() -> None:
    y, s = _data(5)
    y[:, 2] = 0
    ap, auc, f1 = average_precision(y, s), roc_auc(y, s), f1_scores(y, s)
    assert np.isnan(ap[2]) and np.isnan(auc[2]) and np.isnan(f1[2])
    keep = [0, 1, 3, 4, 5]
    assert not np.isnan(ap[keep]).any() and not np.isnan(f1[keep]).any()
    assert tune_thresholds(y, s)[2] == 0.5


def test_no_negatives() -> None:
    y, s = _data(6)
    y[:, 1] = 1
    auc = roc_auc(y, s)
    assert np.isnan(auc[1])
    np.testing.assert_allclose(auc, _sk(roc_auc_score, y, s), atol=TOL)  # NaN == NaN here
    ap = average_precision(y, s)
    np.testing.assert_allclose(ap, _sk(average_precision_score, y, s), atol=TOL)
    assert ap[1] == pytest.approx(1.0)


def test_row_order_does_not_matter() -> None:
    # The sort need not be stable: tie groups are merged, so any row order gives the same bits.
    y, s = _data(22, decimals=1)
    perm = np.random.default_rng(23).permutation(len(y))
    for fn in (average_precision, roc_auc, f1_scores, tune_thresholds):
        np.testing.assert_array_equal(fn(y, s), fn(y[perm], s[perm]))


def test_input_types_and_1d() -> None:
    y, s = _data(7, c=1)
    ref = average_precision_score(y[:, 0], s[:, 0])
    assert average_precision(y[:, 0].astype(bool), s[:, 0]).shape == (1,)
    assert average_precision(y[:, 0].astype(bool), s[:, 0])[0] == pytest.approx(ref, abs=TOL)
    s32 = s.astype(np.float32)
    np.testing.assert_allclose(
        roc_auc(y.astype(np.float32), s32), _sk(roc_auc_score, y, s32), atol=TOL
    )
    assert roc_auc(y.tolist(), s.tolist())[0] == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))


# --------------------------------------------------------------------------------------------
# F1 and threshold tuning
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decimals", [None, 1])
def test_f1_at_half_matches_sklearn(decimals: int | None) -> None:
    y, s = _data(8, decimals=decimals)
    np.testing.assert_allclose(f1_scores(y, s), _sk_f1(y, s, 0.5), atol=TOL)


def test_f1_custom_thresholds_match_sklearn() -> None:
    y, s = _data(9, decimals=2)
    thr = np.array([0.1, 0.3, 0.5, 0.7, 0.9, 0.95])
    np.testing.assert_allclose(f1_scores(y, s, thr), _sk_f1(y, s, thr), atol=TOL)
    np.testing.assert_allclose(f1_scores(y, s, 0.25), _sk_f1(y, s, 0.25), atol=TOL)
    # thresholds equal to an observed score: that score is predicted positive (>=)
    thr = s[0].copy()
    np.testing.assert_allclose(f1_scores(y, s, thr), _sk_f1(y, s, thr), atol=TOL)
    # nothing predicted positive: F1 = 0, not NaN
    np.testing.assert_array_equal(f1_scores(y, s, 2.0), 0.0)


@pytest.mark.parametrize("decimals", [None, 2, 1])
def test_tuned_thresholds_reach_best_f1(decimals: int | None) -> None:
    y, s = _data(11, n=300, decimals=decimals)
    thr = tune_thresholds(y, s)
    for c in range(y.shape[1]):
        assert thr[c] in s[:, c]  # an observed score
    best = _brute_best_f1(y, s)
    np.testing.assert_allclose(f1_scores(y, s, thr), best, atol=TOL)
    np.testing.assert_allclose(_sk_f1(y, s, thr), best, atol=TOL)
    # and no candidate does better according to scikit-learn (spot check on one class)
    cand = np.unique(s[:, 0])[:: max(1, len(np.unique(s[:, 0])) // 40)]
    sk_best = max(f1_score(y[:, 0], (s[:, 0] >= t).astype(int)) for t in cand)
    assert sk_best <= best[0] + TOL


def test_tuned_thresholds_all_tied() -> None:
    y, _ = _data(12, c=3)
    s = np.full(y.shape, 0.2)
    np.testing.assert_array_equal(tune_thresholds(y, s), 0.2)


# --------------------------------------------------------------------------------------------
# evaluate / MetricsReport
# --------------------------------------------------------------------------------------------

NAMES = ["Atelectasis", "Effusion", "Hernia", "Pneumonia", "Fibrosis", "Mass"]
GROUPS = {
    "head": ["Atelectasis", "Effusion"],
    "medium": ["Pneumonia", "Mass"],
    "tail": ["Hernia", "Fibrosis"],
}


def test_evaluate_matches_sklearn_means() -> None:
    y_val, s_val = _data(13)
    y, s = _data(14, decimals=2)
    y[:, 2] = 0  # Hernia: no positives -> excluded everywhere
    y[:, 3] = 1  # Pneumonia: no negatives -> excluded from mAUC
    thr = tune_thresholds(y_val, s_val)
    rep = evaluate(y, s, NAMES, groups=GROUPS, thresholds=thr)
    assert isinstance(rep, MetricsReport)
    assert rep.excluded == ["Hernia"]
    assert rep.excluded_auc == ["Pneumonia"]

    ap = _sk(average_precision_score, y, s)
    auc = _sk(roc_auc_score, y, s)
    f1 = _sk_f1(y, s, 0.5)
    f1t = _sk_f1(y, s, thr)
    pc = rep.per_class
    assert list(pc.columns) == [
        "class",
        "group",
        "n_pos",
        "n_neg",
        "ap",
        "auc",
        "f1",
        "f1_tuned",
        "threshold",
    ]
    assert pc["class"].tolist() == NAMES
    assert pc["group"].tolist() == ["head", "head", "tail", "medium", "tail", "medium"]
    np.testing.assert_array_equal(pc["n_pos"], y.sum(0))
    np.testing.assert_array_equal(pc["n_neg"], len(y) - y.sum(0))
    valid = [0, 1, 3, 4, 5]
    np.testing.assert_allclose(pc["ap"].to_numpy()[valid], ap[valid], atol=TOL)
    np.testing.assert_allclose(pc["auc"].to_numpy(), auc, atol=TOL)
    np.testing.assert_allclose(pc["f1"].to_numpy()[valid], f1[valid], atol=TOL)
    np.testing.assert_allclose(pc["f1_tuned"].to_numpy()[valid], f1t[valid], atol=TOL)
    assert pc[["ap", "auc", "f1", "f1_tuned"]].iloc[2].isna().all()
    np.testing.assert_array_equal(pc["threshold"], thr)

    subsets = {"overall": list(range(6))} | {
        g: [NAMES.index(c) for c in m] for g, m in GROUPS.items()
    }
    for name, idx in subsets.items():
        with_pos = [i for i in idx if i != 2]
        with_both = [i for i in with_pos if i != 3]
        got = rep.summary[name]
        assert got["n_classes"] == len(with_pos)
        assert got["n_classes_auc"] == len(with_both)
        assert got["mAP"] == pytest.approx(ap[with_pos].mean(), abs=TOL)
        assert got["macro_F1"] == pytest.approx(f1[with_pos].mean(), abs=TOL)
        assert got["macro_F1_tuned"] == pytest.approx(f1t[with_pos].mean(), abs=TOL)
        if with_both:
            assert got["mAUC"] == pytest.approx(auc[with_both].mean(), abs=TOL)
        else:
            assert math.isnan(got["mAUC"])

    table = rep.summary_table()
    assert table.index.tolist() == ["overall", "head", "medium", "tail"]
    assert table.columns.tolist() == ["mAP", "mAUC", "F1", "F1_tuned"]
    assert table.loc["tail", "mAP"] == pytest.approx(ap[4], abs=TOL)  # Hernia excluded
    assert table.loc["medium", "mAUC"] == pytest.approx(auc[5], abs=TOL)  # Pneumonia excluded


def test_evaluate_without_groups_or_thresholds() -> None:
    y, s = _data(15)
    rep = evaluate(y, s, NAMES)
    assert list(rep.per_class.columns) == ["class", "n_pos", "n_neg", "ap", "auc", "f1"]
    assert list(rep.summary) == ["overall"]
    assert "macro_F1_tuned" not in rep.summary["overall"]
    assert rep.summary_table().columns.tolist() == ["mAP", "mAUC", "F1"]
    assert rep.excluded == [] and rep.excluded_auc == []
    assert rep.summary["overall"]["mAP"] == pytest.approx(
        _sk(average_precision_score, y, s).mean(), abs=TOL
    )


def test_evaluate_thresholds_mapping() -> None:
    y, s = _data(16)
    thr = tune_thresholds(y, s)
    a = evaluate(y, s, NAMES, thresholds=thr)
    b = evaluate(y, s, NAMES, thresholds=dict(zip(NAMES, thr.tolist(), strict=True)))
    pd.testing.assert_frame_equal(a.per_class, b.per_class)


def test_group_with_only_excluded_classes() -> None:
    y, s = _data(17)
    y[:, [2, 4]] = 0
    rep = evaluate(y, s, NAMES, groups=GROUPS)
    assert rep.summary["tail"]["n_classes"] == 0
    assert math.isnan(rep.summary["tail"]["mAP"])
    assert rep.excluded == ["Hernia", "Fibrosis"]
    d = rep.to_dict()
    assert d["summary"]["tail"]["mAP"] is None
    # an empty group (e.g. from FrequencyGroups.as_dict()) gives NaN means, not an error
    rep = evaluate(y, s, NAMES, groups={"head": NAMES[:2], "medium": [], "tail": NAMES[2:]})
    assert rep.summary["medium"]["n_classes"] == 0
    assert rep.summary_table().loc["medium"].isna().all()


def test_to_dict_is_json() -> None:
    y, s = _data(18)
    y[:, 2] = 0
    rep = evaluate(y, s, NAMES, groups={"head": NAMES[:2]}, thresholds=np.full(6, 0.4))
    d = rep.to_dict()
    text = json.dumps(d, allow_nan=False)  # no NaN left
    back = json.loads(text)
    assert back["excluded"] == ["Hernia"]
    assert back["per_class"][2]["ap"] is None
    assert back["per_class"][2]["group"] is None
    assert back["per_class"][0]["group"] == "head"
    assert isinstance(back["per_class"][0]["n_pos"], int)
    assert set(back["summary"]) == {"overall", "head"}


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [average_precision, roc_auc, f1_scores, tune_thresholds])
def test_validation(fn) -> None:
    y, s = _data(19, n=20, c=3)
    with pytest.raises(ValueError, match="same shape"):
        fn(y, s[:, :2])
    bad = s.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fn(y, bad)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="finite"):
        fn(y, bad)
    for value in (2, -1, 0.5):
        yb = y.astype(float)
        yb[0, 0] = value
        with pytest.raises(ValueError, match="binary"):
            fn(yb, s)
    yb = y.astype(float)
    yb[0, 0] = np.nan  # an unknown label: accepted (left out of its class)
    assert np.asarray(fn(yb, s)).shape == (3,)
    with pytest.raises(ValueError, match="empty"):
        fn(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="2-D"):
        fn(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="real numbers"):
        fn(y, s.astype(str))


def test_threshold_validation() -> None:
    y, s = _data(20, n=20, c=3)
    with pytest.raises(ValueError, match="shape"):
        f1_scores(y, s, np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="NaN"):
        f1_scores(y, s, np.array([0.5, np.nan, 0.5]))
    with pytest.raises(ValueError, match="numbers"):
        f1_scores(y, s, "high")


def test_evaluate_validation() -> None:
    y, s = _data(21, n=30)
    with pytest.raises(ValueError, match="6 classes"):
        evaluate(y, s, NAMES[:5])
    with pytest.raises(ValueError, match="unique"):
        evaluate(y, s, [*NAMES[:5], NAMES[0]])
    with pytest.raises(ValueError, match="unknown classes"):
        evaluate(y, s, NAMES, groups={"head": ["Nodule"]})
    with pytest.raises(ValueError, match="disjoint"):
        evaluate(y, s, NAMES, groups={"head": NAMES[:2], "tail": NAMES[1:3]})
    with pytest.raises(ValueError, match="reserved"):
        evaluate(y, s, NAMES, groups={"overall": NAMES})
    with pytest.raises(ValueError, match="no value"):
        evaluate(y, s, NAMES, thresholds={"Atelectasis": 0.3})
    with pytest.raises(ValueError, match="shape"):
        evaluate(y, s, NAMES, thresholds=np.full(5, 0.5))


def test_f1_at_further_fixed_thresholds_matches_sklearn() -> None:
    """The authors' F1@0.2 beside F1@0.5: per class and macro, equal to scikit-learn."""
    y, s = _data(21, decimals=2)
    rep = evaluate(y, s, NAMES, groups=GROUPS, f1_at=[0.5, 0.2])
    want = _sk_f1(y, s, 0.2)
    np.testing.assert_allclose(rep.per_class["f1@0.2"], want, atol=1e-12)
    assert rep.summary["overall"]["macro_F1@0.2"] == pytest.approx(want.mean())
    tail = [NAMES.index(c) for c in GROUPS["tail"]]
    assert rep.summary["tail"]["macro_F1@0.2"] == pytest.approx(want[tail].mean())
    assert "macro_F1@0.5" not in rep.summary["overall"]  # 0.5 is macro_F1 itself
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        evaluate(y, s, NAMES, f1_at=[1.5])


def test_empty_classes_counted_as_the_authors_code_does() -> None:
    """count: a class without positives is AP 0, AUC 0.5, F1 0 in the means; one without
    negatives AUC 0.5 — the means written out by hand from scikit-learn's per-class values."""
    y, s = _data(22, decimals=2)
    y[:, 2] = 0  # Hernia: no positives
    y[:, 3] = 1  # Pneumonia: no negatives
    default = evaluate(y, s, NAMES, f1_at=[0.2])
    counted = evaluate(y, s, NAMES, f1_at=[0.2], empty_classes="count")
    ap = _sk(average_precision_score, y, s)
    auc = _sk(roc_auc_score, y, s)
    ap[2] = np.nan  # whatever scikit-learn says for a class without positives
    ap_counted = np.where(np.isnan(ap), 0.0, ap)
    auc_counted = np.where(np.isnan(auc), 0.5, auc)
    overall = counted.summary["overall"]
    assert overall["mAP"] == pytest.approx(ap_counted.mean())
    assert overall["mAUC"] == pytest.approx(auc_counted.mean())
    f1 = _sk_f1(y, s, 0.5)
    f1[2] = 0.0
    assert overall["macro_F1"] == pytest.approx(f1.mean())
    assert overall["n_classes"] == overall["n_classes_auc"] == len(NAMES)
    assert default.summary["overall"]["mAP"] == pytest.approx(np.nanmean(ap))
    assert counted.excluded == ["Hernia"]  # still named
    assert np.isnan(counted.per_class["ap"].iloc[2])  # per-class cells stay empty
    with pytest.raises(ValueError, match="empty_classes"):
        evaluate(y, s, NAMES, empty_classes="zero")


# ---- unknown labels (NaN): left out of their class ---------------------------------------


def _with_unknown(seed: int, decimals: int | None = 2):
    y, s = _data(seed, decimals=decimals)
    rng = np.random.default_rng(seed + 100)
    values = y.astype(np.float64)
    values[rng.random(y.shape) < 0.25] = np.nan
    return values, s


def _sk_known(fn, values: np.ndarray, s: np.ndarray, **kw) -> np.ndarray:
    """scikit-learn on each class's known rows only."""
    out = []
    for c in range(values.shape[1]):
        keep = ~np.isnan(values[:, c])
        out.append(_sk(fn, values[keep, c : c + 1].astype(int), s[keep, c : c + 1], **kw)[0])
    return np.asarray(out)


@pytest.mark.parametrize("decimals", [None, 2, 1])
def test_unknown_labels_are_left_out_of_their_class_as_scikit_learn_on_known_rows(decimals):
    values, s = _with_unknown(3, decimals)
    np.testing.assert_allclose(
        average_precision(values, s), _sk_known(average_precision_score, values, s), atol=TOL
    )
    np.testing.assert_allclose(roc_auc(values, s), _sk_known(roc_auc_score, values, s), atol=TOL)
    thr = np.linspace(0.2, 0.7, values.shape[1])
    expected_f1 = []
    for c, t in enumerate(thr):
        keep = ~np.isnan(values[:, c])
        expected_f1.append(_sk_f1(values[keep, c : c + 1].astype(int), s[keep, c : c + 1], t)[0])
    np.testing.assert_allclose(f1_scores(values, s, thr), expected_f1, atol=TOL)
    tuned = tune_thresholds(values, s)
    for c in range(values.shape[1]):
        keep = ~np.isnan(values[:, c])
        y_c, s_c = values[keep, c : c + 1].astype(int), s[keep, c : c + 1]
        assert tuned[c] in s_c  # a known row's score, never the unknown rows' −∞
        np.testing.assert_allclose(_sk_f1(y_c, s_c, tuned[c]), _brute_best_f1(y_c, s_c))


def test_unknown_labels_hand_worked():
    # One class, five images; image 2 is unknown and scores highest of all.
    y = np.array([1.0, np.nan, 0.0, 1.0, 0.0])
    s = np.array([0.8, 0.95, 0.6, 0.4, 0.2])
    # Known rows by score: 0.8 (+), 0.6 (−), 0.4 (+), 0.2 (−).
    # AP = ½·(1/1) + ½·(2/3) = 5/6; AUC: positive 0.8 beats both negatives, 0.4 beats one: 3/4.
    assert average_precision(y, s)[0] == pytest.approx(5 / 6)
    assert roc_auc(y, s)[0] == pytest.approx(3 / 4)
    # At 0.5: TP 1 (0.8), FP 1 (0.6), FN 1 (0.4); the unknown 0.95 is no false positive.
    assert f1_scores(y, s, 0.5)[0] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    report = evaluate(y[:, None], s[:, None], ["a"])
    row = report.per_class.iloc[0]
    assert (row["n_pos"], row["n_neg"], row["n_unknown"]) == (2, 2, 1)


def test_a_class_whose_labels_are_all_unknown_is_excluded():
    y = np.array([[1.0, np.nan], [0.0, np.nan], [1.0, np.nan]])
    s = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    report = evaluate(y, s, ["a", "b"])
    assert report.excluded == ["b"]
    assert report.summary["overall"]["mAP"] == pytest.approx(1.0)
    assert tune_thresholds(y, s)[1] == 0.5


def test_labels_other_than_0_1_nan_are_still_rejected():
    with pytest.raises(ValueError, match="binary"):
        average_precision(np.array([1.0, -1.0, 0.0]), np.array([0.2, 0.3, 0.4]))
