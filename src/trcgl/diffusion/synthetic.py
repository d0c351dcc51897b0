"""Accepted synthetic images as manifest rows, and the Fig. 3 sample grid (docs/method.md §1).

Synthetic images enter training with loss weight w_syn (default 0.5, Table 4: 0.25/0.5/0.75):
:func:`append_synthetic` turns the kept rows of a plan (:func:`~trcgl.diffusion.planner.
plan_synthesis`) and the files written for them into manifest rows with ``source="synthetic"``,
``split="train"``, ``weight=w_syn``, the plan's prompt and the planned label set (the whole label
set of the real source image). Each synthetic row gets its own patient id,
``"synthetic<k>"``, numbered after the synthetic rows already in the manifest, and never equal to
a real patient's id — so a patient-level split or count never merges them with real patients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from trcgl.data.manifest import TEXT_COLUMNS, Manifest
from trcgl.errors import ConfigError, DataError

__all__ = ["SYNTHETIC_PATIENT_PREFIX", "append_synthetic"]

SYNTHETIC_PATIENT_PREFIX = "synthetic"


def append_synthetic(
    manifest: Manifest,
    plan_rows_kept: pd.DataFrame,
    image_paths: Sequence[str | Path],
    w_syn: float = 0.5,
    *,
    image_ids: Sequence[str] | None = None,
) -> Manifest:
    """A new manifest: ``manifest``'s rows unchanged, then one synthetic row per kept plan row.

    Args:
        manifest: the run's manifest (not modified).
        plan_rows_kept: the plan rows whose images were kept (needs ``prompt`` and every class
            column; ``view`` is used when present).
        image_paths: the file of each kept image, in the same order. Store absolute paths, or
            paths relative to the image root the classifier reads from.
        w_syn: the synthetic samples' loss weight (docs/method.md §1), ≥ 0.
        image_ids: ids for the new rows (default: the file names); must not repeat ids already
            in the manifest.

    When the manifest has no ``prompt`` column it gets one (``None`` for the existing rows);
    ``localizations`` and ``report`` columns are ``None`` for synthetic rows.
    """
    if not (math.isfinite(w_syn) and w_syn >= 0):
        raise ConfigError(f"w_syn must be a finite number >= 0, got {w_syn!r}")
    plan = plan_rows_kept.reset_index(drop=True)
    if len(plan) != len(image_paths):
        raise DataError(f"{len(plan)} kept plan rows but {len(image_paths)} image paths")
    classes = list(manifest.classes)
    missing = [c for c in ("prompt", *classes) if c not in plan.columns]
    if missing:
        raise DataError(f"plan rows lack column(s) {missing}")
    labels = plan[classes].to_numpy(dtype=np.float32)
    if not (np.isin(labels, (0, 1)) | np.isnan(labels)).all():
        raise DataError("plan label columns must be 1, 0 or NaN (unknown)")

    frame = manifest.frame
    ids = [Path(p).name for p in image_paths] if image_ids is None else list(image_ids)
    if len(ids) != len(plan):
        raise DataError(f"{len(plan)} kept plan rows but {len(ids)} image ids")
    clash = sorted((set(ids) & set(frame["image_id"].astype(str))) | _repeats(ids))
    if clash:
        raise DataError(f"synthetic image ids repeat or clash with the manifest: {clash[:5]}")

    existing = int((frame["source"] == "synthetic").sum())
    patients = [f"{SYNTHETIC_PATIENT_PREFIX}{existing + i}" for i in range(len(plan))]
    taken = sorted(set(patients) & set(frame["patient_id"].astype(str)))
    if taken:
        raise DataError(f"synthetic patient ids clash with the manifest's: {taken[:5]}")

    views = plan["view"].fillna("").astype(str) if "view" in plan else [""] * len(plan)
    new = pd.DataFrame(
        {
            "image": [str(p) for p in image_paths],
            "image_id": ids,
            "patient_id": patients,
            "view": list(views),
            "split": "train",
            "source": "synthetic",
            "weight": float(w_syn),
        }
    )
    for column in TEXT_COLUMNS:  # the prompt holds what the image was made from
        if column != "prompt" and column in frame:
            new[column] = pd.Series([None] * len(plan), dtype=object)
    new["prompt"] = plan["prompt"].astype(str).to_numpy()
    for j, name in enumerate(classes):
        new[name] = labels[:, j].astype(frame[name].dtype)

    old = frame.copy()
    if "prompt" not in old:
        old["prompt"] = pd.Series([None] * len(old), dtype=object)
    return Manifest(old, manifest.classes).extended(new)


def _repeats(values: Sequence[str]) -> set[str]:
    seen: set[str] = set()
    out: set[str] = set()
    for v in values:
        (out if v in seen else seen).add(v)
    return out
