"""Filtering synthetic images before they enter training (docs/method.md §1, decision on filtering).

The paper does not say how synthetic images are filtered; this project keeps an image only if

(a) a classifier trained on real data gives its *target* (tail) class a probability
    ``p ≥ prob_threshold`` (sigmoid of the logit, computed in float64) — one threshold for all
    classes, or one per class (e.g. the classifier's F1-optimal thresholds tuned on the
    validation split, which follow its own calibration: a classifier trained on a long tail
    rarely gives a tail class 0.5), and
(b) it is not a near-copy of a training image: its nearest-neighbour cosine similarity to the
    real training images, in the classifier's feature space, is ``< max_similarity`` — a fixed
    bound, or one calibrated on the real images (:func:`similarity_bound`: the 99th
    percentile of real images' nearest-neighbour similarity to other patients' images).

Features (:func:`features`) are the classifier's pooled backbone features, L2-normalised:
``GAP(φ(I))`` of the feature map for TRCGL-Net and CSRA (``model.features``), timm's
pre-logits (``forward_head(..., pre_logits=True)``) for the timm baselines, the image embedding
for the CLIP baseline. Images are prepared with the model folder's evaluation transform
(:func:`~trcgl.evaluation.inference.model_transform`).

Every image gets one reason: ``"near-copy of <image_id>"`` when (b) fails (memorisation is the
more telling failure, so it is reported first), else ``"low target probability"`` when (a)
fails, else ``"kept"``; the ``near_copy`` and ``low_probability`` columns hold both checks.
:class:`FilterReport` counts how many were made, kept and rejected, and why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from trcgl.errors import ConfigError, DataError
from trcgl.evaluation.inference import model_transform
from trcgl.files import atomic_write_text

__all__ = [
    "KEPT",
    "LOW_PROBABILITY",
    "NEAR_COPY",
    "FilterReport",
    "ReferenceFeatures",
    "features",
    "filter_synthetic",
    "reference_features",
    "similarity_bound",
]

KEPT = "kept"
LOW_PROBABILITY = "low target probability"
NEAR_COPY = "near-copy"


@dataclass(frozen=True)
class ReferenceFeatures:
    """L2-normalised features (N×D, float32) of the real training images, and their ids."""

    vectors: np.ndarray
    image_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.image_ids):
            raise DataError(
                f"reference features must be N×D with N ids; got {self.vectors.shape} and "
                f"{len(self.image_ids)} ids"
            )


@dataclass
class FilterReport:
    """The filter's decision per image and its counts.

    ``rows`` has one row per synthetic image, in input order: ``index``, ``target_class``,
    ``probability`` (of the target class), ``threshold`` (the one applied), ``similarity`` (to
    the nearest training image), ``nearest_image_id``, ``low_probability``, ``near_copy``,
    ``kept`` and ``reason``.
    """

    rows: pd.DataFrame
    prob_threshold: float | dict[str, float]
    max_similarity: float

    @property
    def made(self) -> int:
        return len(self.rows)

    @property
    def kept(self) -> int:
        return int(self.rows["kept"].sum())

    @property
    def kept_indices(self) -> list[int]:
        """Positions (in the input order) of the images kept."""
        return [int(i) for i in self.rows.loc[self.rows["kept"], "index"]]

    @property
    def rejected(self) -> dict[str, int]:
        """Rejections by reason: ``{"near-copy": n, "low target probability": m}``."""
        reasons = self.rows["reason"]
        return {
            NEAR_COPY: int(reasons.str.startswith(NEAR_COPY).sum()),
            LOW_PROBABILITY: int((reasons == LOW_PROBABILITY).sum()),
        }

    def summary(self) -> dict[str, Any]:
        """Counts overall and per target class (JSON-ready)."""
        per_class: dict[str, dict[str, int]] = {}
        for name, group in self.rows.groupby("target_class", sort=False):
            per_class[str(name)] = {
                "made": len(group),
                "kept": int(group["kept"].sum()),
                "near_copy": int(group["reason"].str.startswith(NEAR_COPY).sum()),
                "low_probability": int((group["reason"] == LOW_PROBABILITY).sum()),
            }
        return {
            "made": self.made,
            "kept": self.kept,
            "rejected": self.rejected,
            "prob_threshold": self.prob_threshold,
            "max_similarity": self.max_similarity,
            "per_class": per_class,
        }

    def save(self, folder: str | Path) -> None:
        """Write ``filter_report.csv`` (the rows) and ``filter_summary.json`` atomically."""
        folder = Path(folder)
        atomic_write_text(folder / "filter_report.csv", self.rows.to_csv(index=False))
        atomic_write_text(
            folder / "filter_summary.json", json.dumps(self.summary(), indent=2) + "\n"
        )


def _embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled backbone features of a prepared batch (B×D), before normalisation."""
    feature_map = getattr(model, "features", None)
    if isinstance(feature_map, nn.Module):  # TRCGL-Net, CSRA: GAP of φ(I)
        out = feature_map(x)
        return out.mean((2, 3)) if out.ndim == 4 else out.flatten(1)
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "forward_features"):  # timm baselines
        out = inner.forward_features(x)
        if hasattr(inner, "forward_head"):
            return inner.forward_head(out, pre_logits=True).flatten(1)
        return out.mean((2, 3)) if out.ndim == 4 else out.flatten(1)
    visual = getattr(model, "visual", None)
    if isinstance(visual, nn.Module):  # CLIP baseline: the image embedding
        return visual(x).flatten(1)
    raise ConfigError(f"cannot take backbone features of a {type(model).__name__}")


def _batches(model: nn.Module, images: Sequence[np.ndarray], batch_size: int, size: int | None):
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    transform = model_transform(model, size)  # type: ignore[arg-type]
    for start in range(0, len(images), batch_size):
        yield torch.stack([transform(np.asarray(im)) for im in images[start : start + batch_size]])


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norm, 1e-12)


@torch.no_grad()
def features(
    model: nn.Module, images: Sequence[np.ndarray], batch_size: int = 32, size: int | None = None
) -> np.ndarray:
    """Pooled backbone features of ``images`` (uint8 H×W arrays), L2-normalised: N×D float32.

    ``size`` overrides the input size the model folder records.
    """
    if len(images) == 0:
        raise DataError("no images to take features of")
    model.eval()
    device = _device(model)
    out = [
        _embed(model, x.to(device)).float().cpu().numpy()
        for x in _batches(model, images, batch_size, size)
    ]
    return _normalise(np.concatenate(out))


def reference_features(
    model: nn.Module,
    images: Sequence[np.ndarray],
    image_ids: Sequence[str] | None = None,
    batch_size: int = 32,
    size: int | None = None,
) -> ReferenceFeatures:
    """Features of the real training images, computed once and reusable across filter calls."""
    ids = tuple(str(i) for i in (image_ids if image_ids is not None else range(len(images))))
    if len(ids) != len(images):
        raise DataError(f"{len(images)} training images but {len(ids)} image ids")
    return ReferenceFeatures(features(model, images, batch_size, size), ids)


@torch.no_grad()
def _probabilities(
    model: nn.Module, images: Sequence[np.ndarray], columns: np.ndarray, batch_size: int, size
) -> tuple[np.ndarray, np.ndarray]:
    """Target-class probabilities (float64) and normalised features, in one pass."""
    model.eval()
    device = _device(model)
    probs: list[np.ndarray] = []
    feats: list[np.ndarray] = []
    start = 0
    for x in _batches(model, images, batch_size, size):
        x = x.to(device)
        logits = model(x)["logits"].double().cpu().numpy()
        rows = np.arange(len(x))
        probs.append(1.0 / (1.0 + np.exp(-logits[rows, columns[start : start + len(x)]])))
        feats.append(_embed(model, x).float().cpu().numpy())
        start += len(x)
    return np.concatenate(probs), _normalise(np.concatenate(feats))


def similarity_bound(
    reference: ReferenceFeatures,
    patient_ids: Sequence[str],
    quantile: float = 0.99,
    max_queries: int = 5000,
    seed: int = 0,
) -> float:
    """A near-copy bound calibrated on the real images themselves.

    For each real image (up to ``max_queries`` of them, drawn with ``seed``) its
    nearest-neighbour cosine similarity to the images of *other* patients; the bound is the
    ``quantile`` of these. A synthetic image at or above it is closer to a training image than
    99 % of real radiographs are to any other patient's: a copy, not a new sample. A fixed bound
    means little across feature spaces: a weak classifier puts all radiographs at cosine ≈ 0.95.
    """
    vectors = _normalise(reference.vectors)
    patients = np.asarray([str(p) for p in patient_ids])
    if len(patients) != len(vectors):
        raise DataError(f"{len(vectors)} reference images but {len(patients)} patient ids")
    if len(np.unique(patients)) < 2:
        raise DataError("a calibrated near-copy bound needs images of two patients or more")
    if not 0 < quantile <= 1:
        raise ConfigError(f"quantile must lie in (0, 1], got {quantile}")
    rng = np.random.default_rng(seed)
    queries = np.arange(len(vectors))
    if len(queries) > max_queries:
        queries = np.sort(rng.choice(queries, max_queries, replace=False))
    nearest = np.empty(len(queries))
    for start in range(0, len(queries), 256):
        rows = queries[start : start + 256]
        block = vectors[rows] @ vectors.T
        block[patients[rows][:, None] == patients[None, :]] = -np.inf  # same patient: not a copy
        nearest[start : start + 256] = block.max(axis=1)
    return float(np.quantile(nearest, quantile))


def filter_synthetic(
    model: nn.Module,
    images: Sequence[np.ndarray],
    target_classes: Sequence[str],
    train_images: Sequence[np.ndarray] | np.ndarray | ReferenceFeatures,
    prob_threshold: float | Mapping[str, float] = 0.5,
    max_similarity: float = 0.95,
    batch_size: int = 32,
    *,
    train_ids: Sequence[str] | None = None,
    size: int | None = None,
) -> FilterReport:
    """Decide which synthetic images to keep (docs/method.md §1; the rule: module docstring).

    Args:
        model: a classifier trained on real data (:func:`~trcgl.models.base.load_model`).
        images: the synthetic images, uint8 H×W arrays.
        target_classes: the tail class each image was made for (one per image).
        train_images: the real training images (a list of uint8 arrays), their features as an
            N×D float array, or :class:`ReferenceFeatures` (from :func:`reference_features`).
        prob_threshold: keep only if p(target class) ≥ this; a mapping gives one threshold
            per class (every target class must be in it).
        max_similarity: reject as a near-copy if the nearest cosine similarity is ≥ this.
        train_ids: ids of the training images (default: their positions), for the report.
        size: input size override (default: the model folder's).
    """
    if len(images) != len(target_classes):
        raise DataError(f"{len(images)} images but {len(target_classes)} target classes")
    classes = list(getattr(model, "classes", ()))
    unknown = sorted({c for c in target_classes if c not in classes})
    if unknown:
        raise ConfigError(f"target class(es) {unknown} are not classes of the model")
    if isinstance(train_images, ReferenceFeatures):
        reference = train_images
    elif (
        isinstance(train_images, np.ndarray)
        and train_images.ndim == 2
        and (train_images.dtype.kind == "f")
    ):
        ids = train_ids if train_ids is not None else range(len(train_images))
        reference = ReferenceFeatures(_normalise(train_images), tuple(str(i) for i in ids))
    else:
        if len(train_images) == 0:
            raise DataError("no training images to compare with")
        reference = reference_features(model, list(train_images), train_ids, batch_size, size)
    if len(reference.image_ids) == 0:
        raise DataError("no training images to compare with")

    columns = np.asarray([classes.index(c) for c in target_classes], dtype=np.int64)
    if isinstance(prob_threshold, Mapping):
        missing = sorted({c for c in target_classes if c not in prob_threshold})
        if missing:
            raise ConfigError(f"no probability threshold for target class(es) {missing}")
        thresholds = np.asarray([prob_threshold[c] for c in target_classes], dtype=np.float64)
        recorded: float | dict[str, float] = {
            str(c): float(prob_threshold[c]) for c in dict.fromkeys(target_classes)
        }
    else:
        thresholds = np.full(len(target_classes), float(prob_threshold))
        recorded = float(prob_threshold)
    if len(images) == 0:
        probs, sims, nearest = np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
    else:
        probs, feats = _probabilities(model, images, columns, batch_size, size)
        if feats.shape[1] != reference.vectors.shape[1]:
            raise DataError(
                f"feature size {feats.shape[1]} differs from the reference features' "
                f"{reference.vectors.shape[1]} (made with another model?)"
            )
        ref = _normalise(reference.vectors)
        sims = np.empty(len(feats), dtype=np.float64)
        nearest = np.empty(len(feats), dtype=np.int64)
        for start in range(0, len(feats), 256):
            block = feats[start : start + 256] @ ref.T
            nearest[start : start + 256] = block.argmax(axis=1)
            sims[start : start + 256] = block.max(axis=1)
    nearest_ids = [reference.image_ids[i] for i in nearest]
    low = probs < thresholds
    copy = sims >= max_similarity
    reasons = [
        f"{NEAR_COPY} of {nid}" if c else LOW_PROBABILITY if lo else KEPT
        for nid, c, lo in zip(nearest_ids, copy, low, strict=True)
    ]
    rows = pd.DataFrame(
        {
            "index": np.arange(len(images), dtype=np.int64),
            "target_class": list(target_classes),
            "probability": probs.astype(np.float64),
            "threshold": thresholds,
            "similarity": sims.astype(np.float64),
            "nearest_image_id": nearest_ids,
            "low_probability": low.astype(bool),
            "near_copy": copy.astype(bool),
            "kept": ~(low | copy),
            "reason": reasons,
        }
    )
    return FilterReport(rows, recorded, float(max_similarity))
