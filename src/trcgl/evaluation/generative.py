"""Are the synthetic images any good? Distances between real and synthetic feature sets.

All four take feature arrays (N×D real, M×D synthetic) in one feature space; trcgl uses the
filter classifier's pooled, L2-normalised features (:func:`trcgl.diffusion.filter.features`),
a chest X-ray classifier, where the usual Inception features of natural images would judge
radiographs by what ImageNet finds salient. They are written here (a few lines of NumPy each on
features trcgl already has) rather than taken from torchmetrics, whose metrics own their
Inception network and take images.

* **KID** (Bińkowski et al., ICLR 2018): the unbiased estimate of the squared MMD with the
  kernel k(x, y) = (xᵀy / D + 1)³, averaged over random subsets of equal size (mean and sd);
  unbiased, so usable with the few dozen images of a tail class.
* **FID** (Heusel et al., NeurIPS 2017): ‖μ_r − μ_s‖² + Tr(Σ_r + Σ_s − 2 (Σ_r Σ_s)^½), the
  Fréchet distance of Gaussians fitted to each set; biased upwards for small sets (with fewer
  images than dimensions the covariances are singular), so compare FIDs of equal-sized sets only.
* **Precision / recall** (Kynkäänniemi et al., NeurIPS 2019): the real manifold is the union of
  balls around each real feature with the radius of its k-th nearest real neighbour; precision
  is the share of synthetic features inside it (are they realistic?), recall the share of real
  features inside the synthetic manifold built the same way (do they cover the real variety?).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from trcgl.errors import DataError

__all__ = ["fid", "kid", "precision_recall", "quality"]


def _pair(real: ArrayLike, fake: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(real, dtype=np.float64)
    f = np.asarray(fake, dtype=np.float64)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise DataError(f"feature sets must be N×D and M×D, got {r.shape} and {f.shape}")
    return r, f


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * kxy.mean()
    )


def kid(
    real: ArrayLike, fake: ArrayLike, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """(mean, sd) of the unbiased MMD² over ``subsets`` random subsets of
    ``min(subset_size, N, M)`` images of each set (seeded); one exact estimate when the subset
    is each whole set."""
    r, f = _pair(real, fake)
    size = min(subset_size, len(r), len(f))
    if size < 2:
        raise DataError("KID needs at least 2 images in each set")
    if size == len(r) == len(f):
        return _mmd2_unbiased(r, f), 0.0
    rng = np.random.default_rng(seed)
    values = [
        _mmd2_unbiased(
            r[rng.choice(len(r), size, replace=False)], f[rng.choice(len(f), size, replace=False)]
        )
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values, ddof=1)) if subsets > 1 else 0.0


def fid(real: ArrayLike, fake: ArrayLike) -> float:
    """The Fréchet distance of Gaussians fitted to the two sets (covariances with n − 1)."""
    from scipy import linalg

    r, f = _pair(real, fake)
    if len(r) < 2 or len(f) < 2:
        raise DataError("FID needs at least 2 images in each set")
    mu_r, mu_f = r.mean(axis=0), f.mean(axis=0)
    cov_r = np.atleast_2d(np.cov(r, rowvar=False))
    cov_f = np.atleast_2d(np.cov(f, rowvar=False))
    root = linalg.sqrtm(cov_r @ cov_f)
    root = np.real(root)
    value = float(((mu_r - mu_f) ** 2).sum() + np.trace(cov_r + cov_f - 2 * root))
    return max(value, 0.0)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances ``len(a) × len(b)`` (from Gram matrices: no N×M×D array)."""
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def _radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point of ``x`` to its k-th nearest other point of ``x``."""
    dist = _distances(x, x)
    np.fill_diagonal(dist, 0.0)
    return np.sort(dist, axis=1)[:, k]  # column 0 is the point itself


def _inside(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return (_distances(points, centres) <= radii[None, :]).any(axis=1)


def precision_recall(real: ArrayLike, fake: ArrayLike, k: int = 3) -> tuple[float, float]:
    """Kynkäänniemi et al.'s improved precision and recall with k-th-neighbour radii."""
    r, f = _pair(real, fake)
    if len(r) <= k or len(f) <= k:
        raise DataError(f"precision / recall with k = {k} need more than {k} images in each set")
    precision = float(_inside(f, r, _radii(r, k)).mean())
    recall = float(_inside(r, f, _radii(f, k)).mean())
    return precision, recall


def quality(real: ArrayLike, fake: ArrayLike, k: int = 3, seed: int = 0) -> dict[str, Any]:
    """All four for one pair of sets, JSON-ready; a measure the set sizes do not allow is
    ``None`` (KID and FID need 2 images a set, precision / recall more than ``k``)."""
    r, f = _pair(real, fake)
    out: dict[str, Any] = {"real": len(r), "synthetic": len(f)}
    enough = min(len(r), len(f))
    out["kid"], out["kid_sd"] = kid(r, f, seed=seed) if enough >= 2 else (None, None)
    out["fid"] = fid(r, f) if enough >= 2 else None
    out["precision"], out["recall"] = precision_recall(r, f, k) if enough > k else (None, None)
    return out
