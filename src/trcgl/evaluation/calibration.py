"""Calibration of the per-class probabilities: expected calibration error, reliability curves,
temperature scaling.

* **ECE** of class c (Guo et al., 2017, on each class's binary problem): the scores are put in
  ``bins`` equal-width bins of [0, 1]; ECE_c = Σ_b (n_b / N) |ȳ_b − p̄_b|, with ȳ_b the share of
  positives and p̄_b the mean probability in bin b. Macro ECE is the mean over classes.
* **Reliability curve**: ȳ_b against p̄_b over every (image, class) pair of a set of classes.
* **Temperature scaling**: one T > 0 for all classes, p' = σ(logit(p) / T), fitted on the
  validation split by minimising the binary cross-entropy (a bounded 1-D search on log T,
  ``scipy.optimize.minimize_scalar``). It changes no ranking, so AP and AUC are unchanged, and
  a threshold t maps to σ(logit(t) / T), so the 0/1 decisions are unchanged too.

An unknown label (NaN in ``y_true``) leaves its (image, class) pair out of all three: ECE_c
is over the images whose label of c is known (N_c of them), the curve and the fit over the
known pairs.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "apply_temperature",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_curve",
]

#: Probabilities are clipped to [EPS, 1 − EPS] before taking logits.
EPS = 1e-7


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def _bins(p: np.ndarray, bins: int) -> np.ndarray:
    """Bin index 0 … bins−1 of each probability ([0, 1/bins), …, [1 − 1/bins, 1])."""
    return np.minimum((np.asarray(p) * bins).astype(np.int64), bins - 1)


def expected_calibration_error(y_true: ArrayLike, y_prob: ArrayLike, bins: int = 15) -> np.ndarray:
    """(C,) ECE of each class over its known labels (see the module docstring); NaN for a
    class with no known label."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 2:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} must be equal N × C")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    _, c = p.shape
    known = ~np.isnan(y)
    index = _bins(p, bins) + np.arange(c) * bins  # one bin range per class
    index, y, p = index[known], y[known], p[known]
    pos = np.bincount(index, weights=y, minlength=c * bins).reshape(c, bins)
    conf = np.bincount(index, weights=p, minlength=c * bins).reshape(c, bins)
    n = known.sum(axis=0)
    # (n_b / N) |ȳ_b − p̄_b| = |Σ_b y − Σ_b p| / N: no division by the bin counts.
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.abs(pos - conf).sum(axis=1) / np.maximum(n, 1), np.nan)


def reliability_curve(
    y_true: ArrayLike, y_prob: ArrayLike, bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean probability, share of positives, pairs) per non-empty bin, over all entries
    whose label is known."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    known = ~np.isnan(y)
    y, p = y[known], p[known]
    index = _bins(p, bins)
    count = np.bincount(index, minlength=bins)
    kept = count > 0
    mean_p = np.bincount(index, weights=p, minlength=bins)[kept] / count[kept]
    share = np.bincount(index, weights=y, minlength=bins)[kept] / count[kept]
    return mean_p, share, count[kept]


def apply_temperature(y_prob: ArrayLike, temperature: float) -> np.ndarray:
    """σ(logit(p) / T)."""
    return 1.0 / (1.0 + np.exp(-_logit(np.asarray(y_prob)) / float(temperature)))


def fit_temperature(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """The T in [0.05, 20] that minimises the mean binary cross-entropy of σ(logit(p) / T)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y_true, dtype=np.float64)
    known = ~np.isnan(y)
    y, z = y[known], _logit(np.asarray(y_prob))[known]

    def loss(log_t: float) -> float:
        s = z / np.exp(log_t)
        # BCE with logits: log(1 + e^s) − y s, computed stably.
        return float(np.mean(np.logaddexp(0.0, s) - y * s))

    result = minimize_scalar(
        loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-6}
    )
    return float(np.exp(result.x))
