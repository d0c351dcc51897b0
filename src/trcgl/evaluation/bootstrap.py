"""Patient-level bootstrap of the macro metrics: intervals for one model, paired differences
for two.

Images of one patient are not independent, so the unit of resampling is the patient: a
resample draws as many patients as there are, with replacement, and every image of a drawn
patient counts once per draw. A resample is therefore a vector of integer image weights w
(B × N for B resamples), and each metric is computed *with those weights* — which equals the
metric on the data set with each image repeated w times (scikit-learn's ``sample_weight``):

* AP_c = Σ_k ΔTP_k · TP_k / (TP_k + FP_k) / n_pos over the tie groups k of class c's scores in
  descending order, TP and FP the weighted cumulative counts (Eq. 26–35, as
  :func:`~trcgl.evaluation.metrics.average_precision`);
* AUC_c = 1 − Σ_k ΔTP_k (FP_k − ΔFP_k / 2) / (n_pos n_neg) (the Mann–Whitney statistic, ties
  one half, as :func:`~trcgl.evaluation.metrics.roc_auc`);
* F1_c = 2 TP / (TP + n_pred + n_pos) at fixed thresholds (as
  :func:`~trcgl.evaluation.metrics.f1_scores`).

The sort of each class's scores is done once; a resample costs two cumulative sums per class (B at a
time, in chunks), so 1,000 resamples of 32,000 images × 30 classes take seconds
(``benchmarks/bench_bootstrap.py``), written here rather than as a loop of scikit-learn calls
because it is measurably faster with the same numbers. A class without positives in a resample has
no AP / AUC / F1 there and is left out of that resample's means, as in
:func:`~trcgl.evaluation.metrics.evaluate`. An unknown label (NaN) leaves its image out of that
class in every resample, as in :func:`~trcgl.evaluation.metrics.evaluate`. Intervals are percentile
intervals; the p-value of a paired difference is the two-sided bootstrap p-value 2 · min(P(Δ ≤ 0),
P(Δ ≥ 0)), at least 1 / B.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "METRICS",
    "BootstrapSample",
    "bootstrap",
    "intervals",
    "paired_differences",
    "patient_weights",
]

#: The bootstrapped metrics, as :class:`~trcgl.evaluation.metrics.MetricsReport` names them.
METRICS = ("mAP", "mAUC", "macro_F1", "macro_F1_tuned")
#: Resample weights held at once (N × B float32: 128 MB).
_CHUNK_ELEMENTS = 32_000_000


def patient_weights(patients: Sequence[Any], n_resamples: int, seed: int = 0) -> np.ndarray:
    """(B, N) integer weights: how often each image is drawn in each of ``n_resamples``
    patient-level resamples (seeded: the same patients and seed give the same weights)."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    codes, inverse = np.unique(np.asarray([str(p) for p in patients]), return_inverse=True)
    n_patients = len(codes)
    if n_patients == 0:
        raise ValueError("no patients to resample")
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_patients, (n_resamples, n_patients))
    drawn += (np.arange(n_resamples) * n_patients)[:, None]
    counts = np.bincount(drawn.ravel(), minlength=n_resamples * n_patients)
    return counts.reshape(n_resamples, n_patients)[:, inverse.ravel()].astype(np.float64)


def _weighted_ap_auc(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, known: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(B, C) AP and AUC under each row of ``weights`` (see the module docstring), over each
    class's ``known`` images.

    Only the tie groups that hold a positive add to AP and to the AUC's loss, so per class the
    weights are summed between the starts and ends of those groups: one sparse (segments × N)
    indicator times the (N, B) weights, with no sort or cumulative sum over every image per
    resample (10× faster than gathering and summing the weights in score order)."""
    from scipy import sparse

    n_all, c = scores.shape
    b = weights.shape[0]
    ap = np.full((b, c), np.nan)
    auc = np.full((b, c), np.nan)
    step = max(1, _CHUNK_ELEMENTS // max(n_all, 1))
    # Image-major float32 weights: integer counts, summed exactly (far below 2**24).
    chunks = [
        (lo, np.ascontiguousarray(weights[lo : lo + step].T, dtype=np.float32))
        for lo in range(0, b, step)
    ]
    for j in range(c):
        members = np.flatnonzero(known[:, j])  # the class's images: its label is known
        n = len(members)
        if n == 0:
            continue
        order = members[np.argsort(-scores[members, j], kind="stable")]
        s = scores[order, j]
        new_group = np.ones(n, dtype=bool)
        np.not_equal(s[1:], s[:-1], out=new_group[1:])
        group = np.cumsum(new_group) - 1
        starts = np.flatnonzero(new_group)
        ends = np.append(starts[1:], n)  # one past each group's last image
        pos = np.flatnonzero(labels[order, j])
        if pos.size == 0:
            continue
        pos_group = group[pos]
        held = np.unique(pos_group)  # the groups with a positive, in score order
        first = np.searchsorted(pos_group, held, "left")  # their first / last positive
        last = np.searchsorted(pos_group, held, "right") - 1
        marks = np.unique(np.concatenate([[0], starts[held], ends[held]]))
        segments = marks[marks < n]
        rows = np.append(segments, n)  # ``before``'s rows: the weight before each mark
        at_start = np.searchsorted(rows, starts[held])
        at_end = np.searchsorted(rows, ends[held])
        segment_of = np.searchsorted(segments, np.arange(n), side="right") - 1
        indicator = sparse.csr_matrix(
            (np.ones(n, dtype=np.float32), (segment_of, order)), shape=(len(segments), n_all)
        )
        positives = order[pos]  # the positives' images, in score order
        for lo, w in chunks:
            before = np.zeros((len(segments) + 1, w.shape[1]), dtype=np.float64)
            np.cumsum(indicator @ w, axis=0, out=before[1:])
            tp = np.zeros((pos.size + 1, w.shape[1]), dtype=np.float64)
            np.cumsum(w[positives], axis=0, out=tp[1:])  # positives' weight up to each one
            tps_end, tps_before = tp[last + 1], tp[first]
            rank_end, rank_before = before[at_end], before[at_start]
            n_pos = tp[-1]
            n_neg = before[-1] - n_pos  # the last row: every image of the class
            dtp = tps_end - tps_before
            dfp = (rank_end - rank_before) - dtp
            with np.errstate(invalid="ignore", divide="ignore"):
                precision = np.where(rank_end > 0, tps_end / np.maximum(rank_end, 1), 0.0)
                ap_rows = (dtp * precision).sum(axis=0) / n_pos
                loss = (dtp * ((rank_before - tps_before) + 0.5 * dfp)).sum(axis=0)
                auc_rows = 1.0 - loss / (n_pos * n_neg)
            ap_rows[n_pos == 0] = np.nan
            auc_rows[(n_pos == 0) | (n_neg == 0)] = np.nan
            ap[lo : lo + w.shape[1], j] = ap_rows
            auc[lo : lo + w.shape[1], j] = auc_rows
    return ap, auc


def _weighted_f1(
    labels: np.ndarray,
    scores: np.ndarray,
    thresholds: np.ndarray,
    weights: np.ndarray,
    known: np.ndarray,
) -> np.ndarray:
    """(B, C) F1 at ``thresholds`` under each row of ``weights``, over each class's ``known``
    images."""
    pred = ((scores >= thresholds) & known).astype(np.float64)
    y = (labels & known).astype(np.float64)
    tp = weights @ (pred * y)
    n_pred = weights @ pred
    n_pos = weights @ y
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2.0 * tp / (n_pred + n_pos)
    f1[n_pos == 0] = np.nan
    return f1


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Mean over the non-NaN entries of each row; NaN for a row without any."""
    kept = ~np.isnan(values)
    count = kept.sum(axis=1)
    total = np.where(kept, values, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass
class BootstrapSample:
    """Every resample's macro metrics: ``values[subset][metric]`` is a (B,) array (NaN where a
    resample has no class to average), for ``overall`` and each group."""

    values: dict[str, dict[str, np.ndarray]]
    n_resamples: int
    seed: int


def bootstrap(
    y_true: ArrayLike,
    y_score: ArrayLike,
    patients: Sequence[Any],
    class_names: Sequence[str],
    groups: Mapping[str, Sequence[str]] | None = None,
    thresholds: ArrayLike | Mapping[str, float] | None = None,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    weights: np.ndarray | None = None,
) -> BootstrapSample:
    """The macro metrics of :func:`~trcgl.evaluation.metrics.evaluate` (mAP, mAUC, macro-F1
    at 0.5 and, given ``thresholds``, at those) on ``n_resamples`` patient-level resamples.

    Args:
        y_true, y_score: (N, C) labels in {0, 1} (NaN where unknown) and scores.
        patients: the N images' patient ids (the resampling unit).
        class_names: the C class names; ``groups``: group → class names (e.g. head / medium /
            tail).
        thresholds: per-class thresholds for ``macro_F1_tuned``.
        n_resamples, seed: how many resamples, drawn from which seed.
        weights: (B, N) resample weights to use instead (:func:`patient_weights`): the same
            weights for two models make the comparison paired.
    """
    values = np.asarray(y_true, dtype=np.float64)
    known = ~np.isnan(values)
    labels = known & (values == 1)
    scores = np.asarray(y_score, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 2:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be equal N × C")
    if len(patients) != labels.shape[0]:
        raise ValueError(f"{len(patients)} patient ids for {labels.shape[0]} images")
    names = [str(c) for c in class_names]
    if weights is None:
        weights = patient_weights(patients, n_resamples, seed)
    elif weights.shape[1] != labels.shape[0]:
        raise ValueError(f"weights are for {weights.shape[1]} images, not {labels.shape[0]}")
    ap, auc = _weighted_ap_auc(labels, scores, weights, known)
    per_metric = {
        "mAP": ap,
        "mAUC": auc,
        "macro_F1": _weighted_f1(labels, scores, np.full(len(names), 0.5), weights, known),
    }
    if thresholds is not None:
        if isinstance(thresholds, Mapping):
            thresholds = [float(thresholds[c]) for c in names]
        thr = np.asarray(thresholds, dtype=np.float64)
        per_metric["macro_F1_tuned"] = _weighted_f1(labels, scores, thr, weights, known)
    index = {c: i for i, c in enumerate(names)}
    subsets = {"overall": list(range(len(names)))}
    for group, members in (groups or {}).items():
        subsets[str(group)] = [index[c] for c in members]
    values = {
        subset: {
            metric: _nanmean_rows(matrix[:, idx]) if idx else np.full(len(weights), np.nan)
            for metric, matrix in per_metric.items()
        }
        for subset, idx in subsets.items()
    }
    return BootstrapSample(values, len(weights), seed)


def _percentile_interval(values: np.ndarray, level: float) -> list[float | None]:
    kept = values[~np.isnan(values)]
    if kept.size == 0:
        return [None, None]
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(kept, [alpha, 1.0 - alpha])
    return [float(low), float(high)]


def intervals(sample: BootstrapSample, level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Percentile intervals: ``{subset: {metric: [low, high]}}`` (``None`` where no resample
    had a class to average)."""
    return {
        subset: {m: _percentile_interval(v, level) for m, v in metrics.items()}
        for subset, metrics in sample.values.items()
    }


def paired_differences(
    a: BootstrapSample, b: BootstrapSample, level: float = 0.95
) -> dict[str, dict[str, dict[str, float | None]]]:
    """B − A on the same resamples: ``{subset: {metric: {"low", "high", "p"}}}``: the
    percentile interval of the difference and the two-sided bootstrap p-value."""
    if a.n_resamples != b.n_resamples:
        raise ValueError("a paired comparison needs the same resamples for both models")
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for subset, metrics in a.values.items():
        for metric, va in metrics.items():
            vb = b.values.get(subset, {}).get(metric)
            if vb is None:
                continue
            diff = vb - va
            kept = diff[~np.isnan(diff)]
            low, high = _percentile_interval(diff, level)
            p = None
            if kept.size:
                tail = min(np.mean(kept <= 0), np.mean(kept >= 0))
                p = float(min(1.0, max(2.0 * tail, 1.0 / kept.size)))
            out.setdefault(subset, {})[metric] = {"low": low, "high": high, "p": p}
    return out


def format_interval(low: float | None, high: float | None, digits: int = 4) -> str:
    """``[low, high]`` with ``digits`` decimals; ``–`` when undefined."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "–"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"
