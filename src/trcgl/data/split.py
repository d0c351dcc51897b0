"""Patient-level, multilabel-stratified, seeded train / val (/ test) split (docs/method.md §0).

Patients, not images, are assigned to splits, so no patient is ever in two splits. Each patient's
label vector is the union of its images' known positives (an unknown cell is not a positive, so
every class is stratified on the images that are known to carry it); the patients are split with
iterative stratification (Sechidis et al., 2011; ``iterative-stratification`` package), which places
the rarest labels first. A repair pass then guarantees that every class with at least two patients
appears in both train and validation (and, with three or more, in the test split too), moving the
patient that carries the fewest other labels. The result depends only on the data and the seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

from trcgl.data.manifest import Manifest
from trcgl.errors import ConfigError


def patient_labels(manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """Unique patient ids (sorted) and the union of their images' known positives (P×C; an
    unknown cell counts as no positive)."""
    codes, patients = pd.factorize(manifest.frame["patient_id"], sort=True)
    y = np.zeros((len(patients), len(manifest.classes)), dtype=np.uint8)
    np.maximum.at(y, codes, manifest.labels())
    return np.asarray(patients), y


def _stratified(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the ``fraction`` of rows split off by iterative stratification."""
    if fraction <= 0:
        return np.zeros(len(y), dtype=bool)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    _, held = next(splitter.split(np.zeros((len(y), 1)), y))
    mask = np.zeros(len(y), dtype=bool)
    mask[held] = True
    return mask


def _repair(y: np.ndarray, assign: np.ndarray, n_splits: int) -> None:
    """Move patients so that a class with k carriers is present in the first min(k, n_splits)
    splits (train, val, test: with two carriers, train and val).

    ``assign`` holds split indices (0 = train) and is modified in place. Rarest classes are
    repaired first; the donor split is the one with the most carriers of the class, and the
    patient moved is, among those whose move leaves no class absent from the donor split,
    the carrier with the fewest positive labels (ties: lowest index).
    """
    n_pos = y.sum(axis=1)
    for c in np.argsort(y.sum(axis=0), kind="stable"):
        carriers = np.flatnonzero(y[:, c])
        for target in range(min(len(carriers), n_splits)):
            per_split = np.bincount(assign[carriers], minlength=n_splits)
            if per_split[target] > 0:
                continue
            donor = int(np.argmax(per_split))
            candidates = carriers[assign[carriers] == donor]
            donor_counts = y[assign == donor].sum(axis=0)
            sole = (y[candidates] & (donor_counts == 1)).any(axis=1)
            pool = candidates[~sole] if (~sole).any() else candidates
            assign[pool[np.argmin(n_pos[pool])]] = target


def split_patients(
    manifest: Manifest,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> Manifest:
    """Return a copy of ``manifest`` with its ``split`` column set (``train``/``val``/``test``).

    ``val_fraction`` and ``test_fraction`` are fractions of all patients. Rows whose ``source``
    is not ``real`` (synthetic images) always go to ``train``.
    """
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1:
        raise ConfigError("split fractions must lie in (0, 1) for val and [0, 1) for test")
    if val_fraction + test_fraction >= 1:
        raise ConfigError("split.val_fraction + split.test_fraction must be < 1")
    real = manifest.subset(source="real")
    patients, y = patient_labels(real)
    assign = np.zeros(len(patients), dtype=np.int64)
    names = ["train", "val"]
    rest = np.arange(len(patients))
    if test_fraction > 0:
        names.append("test")
        is_test = _stratified(y, test_fraction, seed)
        assign[is_test] = 2
        rest = np.flatnonzero(~is_test)
    is_val = _stratified(y[rest], val_fraction / (1 - test_fraction), seed + 1)
    assign[rest[is_val]] = 1
    _repair(y, assign, len(names))
    split_of = dict(zip(patients, np.asarray(names)[assign], strict=True))
    frame = manifest.frame.copy()
    is_real = frame["source"] == "real"
    frame.loc[is_real, "split"] = frame.loc[is_real, "patient_id"].map(split_of)
    frame.loc[~is_real, "split"] = "train"
    return Manifest(frame, manifest.classes)
