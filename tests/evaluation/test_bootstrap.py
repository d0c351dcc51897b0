"""Patient-level bootstrap (``trcgl.evaluation.bootstrap``) against scikit-learn on the data
set each resample stands for: every image repeated as often as its patient was drawn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from trcgl.evaluation.bootstrap import bootstrap, intervals, paired_differences, patient_weights

CLASSES = ["a", "b", "c", "d", "e"]
GROUPS = {"head": ["a", "b"], "tail": ["c", "d", "e"]}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 240
    y = rng.random((n, len(CLASSES))) < [0.4, 0.3, 0.1, 0.05, 0.02]
    scores = np.round(rng.random(y.shape) * 0.6 + 0.3 * y, 2)  # two decimals: many ties
    patients = [f"p{i}" for i in rng.integers(0, 90, n)]
    return y, scores, patients


def _reference(y, scores, repeat, classes, thresholds):
    """Macro metrics with scikit-learn on the rows repeated ``repeat`` times (per class, the
    rows whose label is known: not NaN)."""
    idx = np.repeat(np.arange(len(y)), repeat.astype(int))
    yy, ss = np.asarray(y, dtype=float)[idx], scores[idx]
    ap, auc, f1, tuned = [], [], [], []
    for j in classes:
        keep = ~np.isnan(yy[:, j])
        yj, sj = yy[keep, j].astype(int), ss[keep, j]
        if not yj.any():
            continue
        ap.append(average_precision_score(yj, sj))
        f1.append(f1_score(yj, sj >= 0.5, zero_division=0))
        tuned.append(f1_score(yj, sj >= thresholds[j], zero_division=0))
        if not yj.all():
            auc.append(roc_auc_score(yj, sj))
    mean = lambda v: np.mean(v) if v else np.nan  # noqa: E731
    return {"mAP": mean(ap), "mAUC": mean(auc), "macro_F1": mean(f1), "macro_F1_tuned": mean(tuned)}


def test_every_resample_equals_scikit_learn_on_the_repeated_rows(data):
    y, scores, patients = data
    thresholds = np.array([0.5, 0.45, 0.4, 0.35, 0.3])
    weights = patient_weights(patients, 25, seed=3)
    sample = bootstrap(y, scores, patients, CLASSES, GROUPS, thresholds, weights=weights)
    subsets = {"overall": range(5), "head": [0, 1], "tail": [2, 3, 4]}
    for r in range(len(weights)):
        for subset, classes in subsets.items():
            expected = _reference(y, scores, weights[r], classes, thresholds)
            for metric, value in expected.items():
                got = sample.values[subset][metric][r]
                assert got == pytest.approx(value, abs=1e-12, nan_ok=True), (r, subset, metric)


def test_unknown_labels_are_left_out_of_their_class_in_every_resample(data):
    y, scores, patients = data
    values = y.astype(float)
    values[np.random.default_rng(5).random(y.shape) < 0.3] = np.nan
    values[:, 4] = np.nan  # a class no image is known for
    thresholds = np.array([0.5, 0.45, 0.4, 0.35, 0.3])
    weights = patient_weights(patients, 10, seed=4)
    sample = bootstrap(values, scores, patients, CLASSES, GROUPS, thresholds, weights=weights)
    for r in range(len(weights)):
        expected = _reference(values, scores, weights[r], range(5), thresholds)
        for metric, value in expected.items():
            got = sample.values["overall"][metric][r]
            assert got == pytest.approx(value, abs=1e-12, nan_ok=True), (r, metric)


def test_weights_resample_whole_patients_reproducibly(data):
    _, _, patients = data
    w = patient_weights(patients, 50, seed=1)
    assert np.array_equal(w, patient_weights(patients, 50, seed=1))
    assert not np.array_equal(w, patient_weights(patients, 50, seed=2))
    ids = np.asarray(patients)
    for name in set(patients):  # the images of one patient are drawn together
        rows = w[:, ids == name]
        assert (rows == rows[:, :1]).all()
    per_patient = {name: w[:, ids == name][:, 0] for name in set(patients)}
    assert (sum(per_patient.values()) == len(per_patient)).all()  # P draws of P patients


def test_intervals_hold_the_estimate_and_a_model_equals_itself(data):
    y, scores, patients = data
    sample = bootstrap(y, scores, patients, CLASSES, GROUPS, n_resamples=400, seed=0)
    point = bootstrap(y, scores, patients, CLASSES, GROUPS, weights=np.ones((1, len(y))))
    ci = intervals(sample)
    for subset in ("overall", "head", "tail"):
        low, high = ci[subset]["mAP"]
        assert low < point.values[subset]["mAP"][0] < high
    same = paired_differences(sample, sample)
    assert same["overall"]["mAP"] == {"low": 0.0, "high": 0.0, "p": 1.0}
    # A model with perfect scores beats this one on every resample: p at its floor, 1 / B.
    weights = patient_weights(patients, 400, seed=0)
    perfect = bootstrap(y, y.astype(float), patients, CLASSES, GROUPS, weights=weights)
    better = paired_differences(sample, perfect)["overall"]["mAP"]
    assert better["low"] > 0 and better["p"] == pytest.approx(1 / 400)


def test_bad_input_is_refused(data):
    y, scores, patients = data
    with pytest.raises(ValueError, match="patient ids for"):
        bootstrap(y, scores, patients[:-1], CLASSES)
    with pytest.raises(ValueError, match="n_resamples"):
        patient_weights(patients, 0)
    a = bootstrap(y, scores, patients, CLASSES, n_resamples=10)
    b = bootstrap(y, scores, patients, CLASSES, n_resamples=20)
    with pytest.raises(ValueError, match="same resamples"):
        paired_differences(a, b)
