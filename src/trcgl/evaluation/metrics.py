"""Multi-label evaluation metrics of TRCGL-Net (Eq. 26–35 of the paper).

The paper reports, per class and macro-averaged over classes (and over the head / medium /
tail groups of the long-tailed label distribution):

* average precision AP and its mean over classes, mAP;
* the area under the ROC curve AUC and its mean over classes, mAUC;
* precision, recall and F1 at a decision threshold and their macro average, macro-F1.

Everything here is plain, vectorised numpy over a label matrix ``y_true`` (N×C, values in
{0, 1}) and a score matrix ``y_score`` (N×C, real numbers, usually probabilities). The ranking
metrics sort each class's scores once (a single descending ``argsort`` of all classes along
the sample axis per call) and read every operating point from cumulative sums, with tied scores
grouped into one operating point, so the results equal scikit-learn's
``average_precision_score``, ``roc_auc_score`` and ``f1_score`` applied one class at a time,
at a fraction of the cost.

Conventions:

* A label may be unknown (NaN in ``y_true``; :mod:`trcgl.data.manifest`). Per class, the rows
  whose label is unknown are left out of that class's AP, AUC, F1, threshold and counts, as if
  they were not there (scikit-learn on the class's known rows gives the same numbers). In the
  one sort, an unknown cell is ranked below every real score (its score read as −∞) and taken
  out of the class's negatives: it lies in a tie group of its own below every operating point
  that holds a positive, so it adds no true or false positive to any of them.
* A class with no positive sample has an undefined AP, AUC and F1: they are NaN, and
  :func:`evaluate` leaves the class out of the means and names it in ``excluded``.
* A class with no negative sample has an undefined AUC (NaN); :func:`evaluate` leaves it out
  of mAUC only and names it in ``excluded_auc``.
* A sample is predicted positive for a class when its score is ``>=`` the class threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "MetricsReport",
    "average_precision",
    "dataset_masks",
    "evaluate",
    "f1_scores",
    "roc_auc",
    "tune_thresholds",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.intp]

#: Threshold :func:`tune_thresholds` returns for a class without positive samples.
DEFAULT_THRESHOLD = 0.5

_OVERALL = "overall"


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------


def _as_matrix(a: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 1-D or 2-D (N×C) array, got {arr.ndim} dimensions")
    return arr


def _is_real(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)


def _check_inputs(
    y_true: ArrayLike, y_score: ArrayLike
) -> tuple[BoolArray, FloatArray, BoolArray | None]:
    """Validate and convert: labels to a bool (N, C) array (an unknown label reads False),
    scores to a float64 (N, C) array, and the (N, C) known cells (``None``: all known).

    A 1-D pair is read as a single class, i.e. shape (N, 1).
    """
    t = _as_matrix(y_true, "y_true")
    s = _as_matrix(y_score, "y_score")
    if t.shape != s.shape:
        raise ValueError(
            f"y_true and y_score must have the same shape, got {t.shape} and {s.shape}"
        )
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"y_true and y_score must not be empty, got shape {t.shape}")

    known = None
    if t.dtype == np.bool_:
        labels = t
    else:
        if not _is_real(t.dtype):
            raise ValueError(f"y_true must hold the numbers 0 and 1, got dtype {t.dtype}")
        is_one = t == 1
        valid = is_one | (t == 0)
        if np.issubdtype(t.dtype, np.floating):
            unknown = np.isnan(t)
            if unknown.any():
                known = ~unknown
                valid |= unknown
        if not np.all(valid):
            bad = np.unique(t[~valid])[:5]
            raise ValueError(
                "y_true must be binary (only 0 and 1, NaN for unknown), found other values "
                f"such as {bad.tolist()}"
            )
        labels = is_one

    if s.dtype != np.bool_ and not _is_real(s.dtype):
        raise ValueError(f"y_score must hold real numbers, got dtype {s.dtype}")
    scores = s.astype(np.float64, copy=False)
    finite = np.isfinite(scores)
    if not finite.all():
        rows, cols = np.nonzero(~finite)
        raise ValueError(
            f"y_score must be finite: {rows.size} NaN or infinite value(s), "
            f"the first at row {int(rows[0])}, class {int(cols[0])}"
        )
    if known is not None:  # unknown cells rank below every score (module docstring)
        scores = np.where(known, scores, -np.inf)
    return labels, scores, known


def _check_thresholds(thresholds: float | ArrayLike, n_classes: int) -> FloatArray:
    try:
        thr = np.asarray(thresholds, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"thresholds must be numbers, got {thresholds!r}") from exc
    if thr.ndim == 0:
        thr = np.full(n_classes, float(thr))
    if thr.shape != (n_classes,):
        raise ValueError(
            f"thresholds must be a scalar or have shape ({n_classes},), got shape {thr.shape}"
        )
    if np.isnan(thr).any():
        raise ValueError("thresholds must not contain NaN")
    return thr


# --------------------------------------------------------------------------------------------
# One sort, every operating point
# --------------------------------------------------------------------------------------------


class _Ranked(NamedTuple):
    """Every operating point of every class, from one descending sort of the scores.

    Operating point ``k`` of class ``c`` is "predict positive every sample whose score is
    ``>=`` the k-th highest distinct score of class c": the last sample of a group of tied
    scores in the sorted order. The (M,) arrays list the operating points of class 0 in
    descending score order, then those of class 1, and so on; ``starts`` (C,) gives where each
    class begins (every class has at least one operating point: its lowest score).
    """

    sorted_neg: FloatArray  # (C, N) negated scores, ascending (scores descending) per class
    last: BoolArray  # (C, N) true at the last sample of each tie group
    counts: IntArray  # (C,) operating points per class
    starts: IntArray  # (C,) index of each class's first operating point
    rank: FloatArray  # (M,) samples predicted positive, TP + FP
    tps: FloatArray  # (M,) true positives
    dtp: FloatArray  # (M,) positives in the tie group: TP_k − TP_{k−1} (TP_0 = 0)
    n_pos: FloatArray  # (C,)
    n_neg: FloatArray  # (C,)


def _rank(labels: BoolArray, scores: FloatArray, known: BoolArray | None = None) -> _Ranked:
    n, c = scores.shape
    # Class-major layout, (C, N): each class's samples are contiguous for the sort.
    neg = np.negative(scores.T, order="C")  # ascending order of -score = descending score
    # One sort of all classes at once, along the sample axis (axis 0 of the input). A stable
    # sort is not needed: tied scores are merged into one operating point below, so the order
    # inside a tie group cannot change any result, and the default (SIMD) sort is ~4x faster.
    order = np.argsort(neg, axis=1)
    order += (np.arange(c, dtype=order.dtype) * n)[:, None]  # flat indices into (C, N)
    flat = order.ravel()
    s = np.take(neg.ravel(), flat).reshape(c, n)
    t = np.take(np.ascontiguousarray(labels.T).ravel(), flat).reshape(c, n)
    # Integer cumsum then one conversion is ~2x faster than a bool → float64 cumsum.
    count_type = np.int32 if n < 2**31 else np.int64
    tps_all = np.cumsum(t, axis=1, dtype=count_type).astype(np.float64)

    # Ends of tie groups: the last sample of each class, and wherever the next score differs.
    last = np.empty((c, n), dtype=np.bool_)
    np.not_equal(s[:, 1:], s[:, :-1], out=last[:, :-1])
    last[:, -1] = True
    counts = np.count_nonzero(last, axis=1)  # each >= 1
    starts = np.zeros(c, dtype=np.intp)
    np.cumsum(counts[:-1], out=starts[1:])

    if counts.sum() == c * n:  # no ties at all: every sample is an operating point
        tps = tps_all.ravel()
        rank = np.tile(np.arange(1, n + 1, dtype=np.float64), c)
    else:
        tps = tps_all[last]
        rank = np.broadcast_to(np.arange(1, n + 1, dtype=np.float64), (c, n))[last]
    dtp = np.empty_like(tps)
    np.subtract(tps[1:], tps[:-1], out=dtp[1:])
    dtp[starts] = tps[starts]

    n_pos = tps_all[:, -1].copy()
    n_known = n if known is None else known.sum(axis=0, dtype=np.float64)
    n_neg = n_known - n_pos
    return _Ranked(s, last, counts, starts, rank, tps, dtp, n_pos, n_neg)


def _ap(r: _Ranked) -> FloatArray:
    # Σ_k (R_k − R_{k−1}) · P_k with R = TP / n_pos and P = TP / (TP + FP), summed per class as
    # Σ_k (TP_k − TP_{k−1}) · P_k and divided by n_pos.
    gain = r.tps / r.rank
    gain *= r.dtp
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.add.reduceat(gain, r.starts) / r.n_pos
    ap[r.n_pos == 0] = np.nan
    return ap


def _auc(r: _Ranked) -> FloatArray:
    # Trapezoidal rule along the TPR axis: area = Σ_k ΔTPR_k · (1 − (FPR_k + FPR_{k−1}) / 2).
    # In counts, with Σ_k ΔTP_k = n_pos: AUC = 1 − Σ_k ΔTP_k (FP_k − ΔFP_k / 2) / (n_pos n_neg),
    # i.e. each positive loses the negatives ranked above its tie group and half of those
    # tied with it (the Mann–Whitney U statistic).
    fps = r.rank - r.tps
    loss = np.empty_like(fps)  # ΔFP_k, then FP_k − ΔFP_k / 2, then ΔTP_k (FP_k − ΔFP_k / 2)
    np.subtract(fps[1:], fps[:-1], out=loss[1:])
    loss[r.starts] = fps[r.starts]
    loss *= -0.5
    loss += fps
    loss *= r.dtp
    denom = r.n_pos * r.n_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = 1.0 - np.add.reduceat(loss, r.starts) / denom
    auc[denom == 0] = np.nan
    return auc


def _best_thresholds(r: _Ranked) -> FloatArray:
    c = r.counts.size
    cls = np.repeat(np.arange(c, dtype=np.intp), r.counts)
    # At operating point k: TP = tps, FP + FN = (rank − tps) + (n_pos − tps), so
    # F1 = 2·TP / (2·TP + FP + FN) = 2·tps / (rank + n_pos).
    f1 = 2.0 * r.tps / (r.rank + r.n_pos[cls])
    best = np.maximum.reduceat(f1, r.starts)
    # First operating point reaching the maximum = highest threshold among equal F1.
    hits = np.flatnonzero(f1 == best[cls])
    keep = np.empty(hits.size, dtype=np.bool_)
    keep[0] = True
    np.not_equal(cls[hits[1:]], cls[hits[:-1]], out=keep[1:])
    thresholds = -r.sorted_neg[r.last]  # (M,) the score at each operating point
    thr = thresholds[hits[keep]]  # one per class, in class order
    thr[r.n_pos == 0] = DEFAULT_THRESHOLD
    return thr


# --------------------------------------------------------------------------------------------
# Public metric functions
# --------------------------------------------------------------------------------------------


def average_precision(y_true: ArrayLike, y_score: ArrayLike) -> FloatArray:
    """Per-class average precision (AP; the paper's Eq. 26–35, AP and mAP).

    ``AP = Σ_n (R_n − R_{n−1}) · P_n``, summed over the distinct score thresholds in descending
    order (tied scores form one threshold), with ``R_0 = 0``: the step-wise, non-interpolated
    area under the precision–recall curve, identical to scikit-learn's
    ``average_precision_score`` applied to each column. mAP is the mean over classes.

    Args:
        y_true: (N, C) labels in {0, 1}, NaN where unknown (a 1-D array is one class).
        y_score: (N, C) finite scores; higher means more likely positive.

    Returns:
        (C,) float64 array; NaN for a class without positive samples.

    Raises:
        ValueError: if shapes differ, labels are not binary or scores are not finite.
    """
    labels, scores, known = _check_inputs(y_true, y_score)
    return _ap(_rank(labels, scores, known))


def roc_auc(y_true: ArrayLike, y_score: ArrayLike) -> FloatArray:
    """Per-class area under the ROC curve (AUC; the paper's Eq. 26–35, ROC AUC and mAUC).

    The trapezoidal area under the ROC curve, which equals the Mann–Whitney statistic
    ``P(score_pos > score_neg) + ½ P(score_pos = score_neg)``: tied scores count one half.
    Identical to scikit-learn's ``roc_auc_score`` applied to each column. mAUC is the mean
    over classes.

    Args:
        y_true: (N, C) labels in {0, 1}, NaN where unknown (a 1-D array is one class).
        y_score: (N, C) finite scores; higher means more likely positive.

    Returns:
        (C,) float64 array; NaN for a class without positive or without negative samples.

    Raises:
        ValueError: if shapes differ, labels are not binary or scores are not finite.
    """
    labels, scores, known = _check_inputs(y_true, y_score)
    return _auc(_rank(labels, scores, known))


def f1_scores(
    y_true: ArrayLike, y_score: ArrayLike, thresholds: float | ArrayLike = 0.5
) -> FloatArray:
    """Per-class F1 at fixed thresholds (the paper's Eq. 26–35, precision, recall, F1, macro-F1).

    A sample is predicted positive for class c when ``y_score[:, c] >= thresholds[c]``.
    With precision ``P = TP / (TP + FP)`` and recall ``R = TP / (TP + FN)``,
    ``F1 = 2PR / (P + R) = 2TP / (2TP + FP + FN)``, which is 0 (not undefined) when nothing
    is predicted positive. Identical to scikit-learn's ``f1_score`` on each column.
    Macro-F1 is the mean over classes.

    Args:
        y_true: (N, C) labels in {0, 1}, NaN where unknown (a 1-D array is one class).
        y_score: (N, C) finite scores.
        thresholds: one threshold for all classes, or a (C,) array of per-class thresholds.

    Returns:
        (C,) float64 array; NaN for a class without positive samples.

    Raises:
        ValueError: on bad labels, scores or thresholds (wrong shape, NaN).
    """
    labels, scores, known = _check_inputs(y_true, y_score)
    return _f1(labels, scores, _check_thresholds(thresholds, scores.shape[1]), known)


def _f1(
    labels: BoolArray, scores: FloatArray, thr: FloatArray, known: BoolArray | None = None
) -> FloatArray:
    pred = scores >= thr
    if known is not None:
        pred &= known
    n_pos = labels.sum(axis=0, dtype=np.float64)
    tp = np.logical_and(pred, labels).sum(axis=0, dtype=np.float64)
    n_pred = pred.sum(axis=0, dtype=np.float64)
    # 2TP + FP + FN = TP + (TP + FP) + (TP + FN) = TP + n_pred + n_pos
    denom = n_pred + n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2.0 * tp / denom
    f1[n_pos == 0] = np.nan
    return f1


def tune_thresholds(y_true: ArrayLike, y_score: ArrayLike) -> FloatArray:
    """Per-class threshold that maximises F1 on the given (validation) data.

    The candidates are the observed scores of each class: threshold ``t`` predicts positive
    every sample with score ``>= t``, so all samples tied at ``t`` are switched together. The
    returned threshold reaches the highest F1 obtainable with any threshold; among thresholds
    with equal F1 the highest one is returned. Use it with :func:`f1_scores` on test data.

    Args:
        y_true: (N, C) labels in {0, 1}, NaN where unknown (a 1-D array is one class).
        y_score: (N, C) finite scores.

    Returns:
        (C,) float64 array of thresholds, each one of that class's scores; for a class without
        positive samples F1 cannot be tuned and ``DEFAULT_THRESHOLD`` (0.5) is returned.

    Raises:
        ValueError: if shapes differ, labels are not binary or scores are not finite.
    """
    labels, scores, known = _check_inputs(y_true, y_score)
    return _best_thresholds(_rank(labels, scores, known))


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _mean(values: FloatArray) -> float:
    """Mean over the non-NaN values; NaN (without a warning) when there are none."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


@dataclass
class MetricsReport:
    """Per-class metrics and their macro averages (the paper's Eq. 26–35).

    Attributes:
        per_class: one row per class with columns ``class``, ``group`` (when groups were
            given; missing for a class in no group), ``n_pos``, ``n_neg`` (known positives
            and negatives), ``n_unknown`` (only when some label is unknown), ``ap``, ``auc``,
            ``f1`` (at 0.5), and ``f1_tuned`` and ``threshold`` (when thresholds were given).
        summary: for ``"overall"`` and each group, a dict with ``mAP``, ``mAUC``,
            ``macro_F1`` (at 0.5), ``macro_F1_tuned`` (when thresholds were given),
            ``n_classes`` (classes with positives: those averaged for mAP and macro-F1) and
            ``n_classes_auc`` (classes with positives and negatives: those averaged for mAUC).
            A mean over no class is NaN.
        excluded: names of the classes without positive samples, left out of every mean.
        excluded_auc: names of the classes with positives but no negative sample, left out
            of mAUC only.
    """

    per_class: pd.DataFrame
    summary: dict[str, dict[str, float | int]]
    excluded: list[str] = field(default_factory=list)
    excluded_auc: list[str] = field(default_factory=list)

    @property
    def has_tuned(self) -> bool:
        """Whether tuned thresholds were evaluated (``f1_tuned`` is present)."""
        return "f1_tuned" in self.per_class.columns

    def summary_table(self) -> pd.DataFrame:
        """Summary as a table: rows ``overall`` then each group; columns mAP, mAUC, F1 and,
        when thresholds were given, F1_tuned."""
        columns = {"mAP": "mAP", "mAUC": "mAUC", "macro_F1": "F1"}
        if self.has_tuned:
            columns["macro_F1_tuned"] = "F1_tuned"
        rows = {
            name: {new: stats[old] for old, new in columns.items()}
            for name, stats in self.summary.items()
        }
        table = pd.DataFrame.from_dict(rows, orient="index", columns=list(columns.values()))
        table.index.name = "subset"
        return table.astype(np.float64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: plain Python types, NaN and infinities as ``None``."""
        records = self.per_class.astype(object).to_dict(orient="records")
        return _jsonable(
            {
                "per_class": records,
                "summary": self.summary,
                "excluded": list(self.excluded),
                "excluded_auc": list(self.excluded_auc),
            }
        )


def _check_names(class_names: Sequence[str], n_classes: int) -> list[str]:
    if isinstance(class_names, str):
        raise ValueError("class_names must be a sequence of names, not a single string")
    names = [str(c) for c in class_names]
    if len(names) != n_classes:
        raise ValueError(
            f"class_names has {len(names)} names but the scores have {n_classes} classes"
        )
    seen: set[str] = set()
    dupes = sorted({c for c in names if c in seen or seen.add(c)})
    if dupes:
        raise ValueError(f"class_names must be unique, repeated: {dupes}")
    return names


def _check_groups(groups: Mapping[str, Sequence[str]], names: list[str]) -> dict[str, list[int]]:
    index = {c: i for i, c in enumerate(names)}
    owner: dict[str, str] = {}
    out: dict[str, list[int]] = {}
    for group, members in groups.items():
        if group == _OVERALL:
            raise ValueError(f"group name {_OVERALL!r} is reserved for the summary of all classes")
        if isinstance(members, str):
            raise ValueError(f"group {group!r} must list class names, not a single string")
        unknown = [c for c in members if c not in index]
        if unknown:
            raise ValueError(f"group {group!r} names unknown classes: {unknown}")
        for c in members:
            if c in owner and owner[c] != group:
                raise ValueError(
                    f"class {c!r} is in two groups, {owner[c]!r} and {group!r}; groups must be "
                    "disjoint"
                )
            owner[c] = group
        out[str(group)] = sorted({index[c] for c in members})
    return out


def _check_report_thresholds(
    thresholds: ArrayLike | Mapping[str, float], names: list[str]
) -> FloatArray:
    if isinstance(thresholds, Mapping):
        missing = [c for c in names if c not in thresholds]
        if missing:
            raise ValueError(f"thresholds has no value for the classes {missing}")
        thresholds = [float(thresholds[c]) for c in names]
    return _check_thresholds(thresholds, len(names))


def dataset_masks(datasets: ArrayLike) -> dict[str, BoolArray]:
    """Each data set's rows (``data.sources``: the manifest's ``dataset`` column), by name;
    empty where the rows hold fewer than two data sets (nothing to report beside the whole)."""
    names = np.asarray(datasets).astype(str)
    found = sorted(set(names) - {""})
    return {name: names == name for name in found} if len(found) > 1 else {}


def evaluate(
    y_true: ArrayLike,
    y_score: ArrayLike,
    class_names: Sequence[str],
    groups: Mapping[str, Sequence[str]] | None = None,
    thresholds: ArrayLike | Mapping[str, float] | None = None,
    *,
    f1_at: Sequence[float] = (),
    empty_classes: str = "exclude",
) -> MetricsReport:
    """Compute AP, AUC and F1 per class and their macro averages (the paper's Eq. 26–35).

    mAP, mAUC and macro-F1 are means over classes, overall and within each group (e.g. the
    head, medium and tail classes of the long-tailed distribution). Classes without positive
    samples have no AP, AUC or F1: they are left out of every mean and named in
    ``MetricsReport.excluded``; classes without negative samples are left out of mAUC and
    named in ``MetricsReport.excluded_auc``.

    Args:
        y_true: (N, C) labels in {0, 1}, NaN where unknown (left out of that class).
        y_score: (N, C) finite scores (probabilities).
        class_names: the C class names, in column order; unique.
        groups: optional mapping group name → class names; groups must be disjoint, need not
            cover every class, and may not be called ``"overall"``.
        thresholds: optional per-class thresholds (e.g. from :func:`tune_thresholds` on
            validation data) as a (C,) array or a mapping class name → threshold; adds
            ``f1_tuned`` and ``threshold`` columns and ``macro_F1_tuned`` to the summary.
        f1_at: further fixed thresholds t for F1 besides 0.5 (e.g. the authors' 0.2): a
            per-class column ``f1@t`` and ``macro_F1@t`` in the summary.
        empty_classes: ``"exclude"`` (the default, as above) or ``"count"``, the authors'
            code: a class without positives counts as AP 0, AUC 0.5 and F1 0 in every mean
            (still named in ``excluded``; its per-class cells stay empty). A class with
            positives but no negatives counts as AUC 0.5 too.

    Returns:
        A :class:`MetricsReport`.

    Raises:
        ValueError: on bad labels, scores, names, groups or thresholds.
    """
    labels, scores, known = _check_inputs(y_true, y_score)
    n_classes = scores.shape[1]
    names = _check_names(class_names, n_classes)
    group_index = _check_groups(groups, names) if groups is not None else None
    thr = _check_report_thresholds(thresholds, names) if thresholds is not None else None

    ranked = _rank(labels, scores, known)  # one sort serves AP and AUC
    ap = _ap(ranked)
    auc = _auc(ranked)
    if empty_classes not in ("exclude", "count"):
        raise ValueError(f"empty_classes must be 'exclude' or 'count', got {empty_classes!r}")
    fixed = [float(t) for t in f1_at if float(t) != 0.5]
    if any(not 0.0 < t < 1.0 for t in fixed):
        raise ValueError(f"F1 thresholds must lie in (0, 1), got {list(f1_at)}")
    f1 = _f1(labels, scores, np.full(n_classes, 0.5), known)
    f1_tuned = _f1(labels, scores, thr, known) if thr is not None else None
    f1_fixed = {t: _f1(labels, scores, np.full(n_classes, t), known) for t in dict.fromkeys(fixed)}

    columns: dict[str, Any] = {"class": names}
    if group_index is not None:
        group_of: list[str | None] = [None] * n_classes
        for group, idx in group_index.items():
            for i in idx:
                group_of[i] = group
        columns["group"] = group_of
    columns["n_pos"] = ranked.n_pos.astype(np.int64)
    columns["n_neg"] = ranked.n_neg.astype(np.int64)
    if known is not None:
        columns["n_unknown"] = (~known).sum(axis=0).astype(np.int64)
    columns["ap"] = ap
    columns["auc"] = auc
    columns["f1"] = f1
    for t, values in f1_fixed.items():
        columns[f"f1@{t:g}"] = values
    if thr is not None and f1_tuned is not None:
        columns["f1_tuned"] = f1_tuned
        columns["threshold"] = thr
    per_class = pd.DataFrame(columns)
    if empty_classes == "count":  # the authors' means: AP 0, AUC 0.5, F1 0 for such classes
        none = ranked.n_pos == 0
        ap, auc = np.where(none, 0.0, ap), np.where(np.isnan(auc), 0.5, auc)
        f1 = np.where(none, 0.0, f1)
        f1_fixed = {t: np.where(none, 0.0, v) for t, v in f1_fixed.items()}
        if f1_tuned is not None:
            f1_tuned = np.where(none, 0.0, f1_tuned)

    subsets: dict[str, list[int]] = {_OVERALL: list(range(n_classes))}
    if group_index is not None:
        subsets.update(group_index)
    summary: dict[str, dict[str, float | int]] = {}
    for subset, idx_list in subsets.items():
        idx = np.asarray(idx_list, dtype=np.intp)
        stats: dict[str, float | int] = {
            "mAP": _mean(ap[idx]),
            "mAUC": _mean(auc[idx]),
            "macro_F1": _mean(f1[idx]),
        }
        for t, values in f1_fixed.items():
            stats[f"macro_F1@{t:g}"] = _mean(values[idx])
        if f1_tuned is not None:
            stats["macro_F1_tuned"] = _mean(f1_tuned[idx])
        counted = len(idx) if empty_classes == "count" else None
        stats["n_classes"] = counted or int(np.count_nonzero(ranked.n_pos[idx] > 0))
        stats["n_classes_auc"] = counted or int(np.count_nonzero(~np.isnan(auc[idx])))
        summary[subset] = stats

    excluded = [names[i] for i in np.flatnonzero(ranked.n_pos == 0)]
    excluded_auc = [names[i] for i in np.flatnonzero((ranked.n_pos > 0) & (ranked.n_neg == 0))]
    return MetricsReport(
        per_class=per_class, summary=summary, excluded=excluded, excluded_auc=excluded_auc
    )
