"""``mimic``: MIMIC-CXR-JPG 2.0.0 in its published layout. ``data.labels_csv`` is the
study-level label file, ``mimic-cxr-2.0.0-chexpert.csv`` (CheXpert labeler) or
``mimic-cxr-2.0.0-negbio.csv`` (NegBio), plain or ``.gz``: ``subject_id``, ``study_id`` and the
14 CheXpert observations (1, 0, -1 for uncertain, blank). Beside it, in the same folder and with
the same version prefix, trcgl reads ``mimic-cxr-2.0.0-metadata.csv`` (one row per image:
``dicom_id``, ``subject_id``, ``study_id``, ``ViewPosition``, …) and
``mimic-cxr-2.0.0-split.csv`` (``dicom_id``, ``study_id``, ``subject_id``, ``split``: train /
validate / test).

Every image of the metadata becomes a manifest row with its study's labels (uncertain and blank
cells by ``data.uncertain`` / ``data.blank``, as for CheXpert); an image whose study has no label
row is dropped and counted (the labelers left some studies out). The patient is ``subject_id``,
the image id ``dicom_id``, the view ``ViewPosition``, the image
``files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg`` under the data set's root, and the split the
published one (``validate`` → ``val``), kept with ``split.given: true``. An image with no row in
the split file is an error naming the metadata file, its row and the value.

These files are credentialed downloads (PhysioNet); trcgl's tests use small files written in
exactly this column layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from trcgl.data.manifest import build_manifest
from trcgl.data.readers.csv_checks import (
    ReadResult,
    check_ids,
    read_csv,
    refuse,
    require_columns,
    uncertain_matrix,
)
from trcgl.data.readers.format import DataFormat
from trcgl.data.vocab import CHEXPERT_CLASSES
from trcgl.errors import DataError
from trcgl.registry import DATA_FORMATS

#: The published split names → the manifest's.
MIMIC_SPLITS = {"train": "train", "validate": "val", "test": "test"}
_LABELERS = ("-chexpert", "-negbio")


def companion(labels_csv: Path, kind: str) -> Path:
    """The ``-metadata`` / ``-split`` file beside a ``-chexpert`` / ``-negbio`` label file."""
    name = labels_csv.name
    for labeler in _LABELERS:
        if labeler in name:
            stem = name[: name.index(labeler)]
            break
    else:
        raise DataError(
            "a MIMIC-CXR-JPG label file is named mimic-cxr-<version>-chexpert.csv or "
            "-negbio.csv (so that its -metadata.csv and -split.csv are found beside it)",
            path=labels_csv,
        )
    candidates = [labels_csv.with_name(f"{stem}-{kind}.csv{gz}") for gz in ("", ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataError(f"MIMIC-CXR-JPG {kind} file not found beside the labels", path=candidates[0])


def image_path(subject_id: str, study_id: str, dicom_id: str) -> str:
    """``files/p10/p10000032/s50414267/<dicom_id>.jpg``."""
    return f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg"


def read_mimic(
    path: str | Path,
    classes: Sequence[str] = CHEXPERT_CLASSES,
    uncertain: str = "ignore",
    blank: str = "zero",
) -> ReadResult:
    """Read MIMIC-CXR-JPG's study labels, image metadata and split (module docstring)."""
    path = Path(path)
    labels_df = read_csv(path)
    require_columns(labels_df, ["subject_id", "study_id", *classes], path)
    refuse(
        labels_df["study_id"].duplicated(),
        path,
        "study_id",
        lambda i: f"study {labels_df['study_id'].iloc[i]!r} has two label rows",
    )
    study_labels = uncertain_matrix(labels_df, classes, path, uncertain, blank)
    meta_path, split_path = companion(path, "metadata"), companion(path, "split")
    meta = read_csv(meta_path)
    require_columns(meta, ["dicom_id", "subject_id", "study_id", "ViewPosition"], meta_path)
    check_ids(meta, "dicom_id", "subject_id", meta_path)
    split = read_csv(split_path)
    require_columns(split, ["dicom_id", "study_id", "subject_id", "split"], split_path)
    refuse(
        ~split["split"].isin(list(MIMIC_SPLITS)),
        split_path,
        "split",
        lambda i: f"expected one of {list(MIMIC_SPLITS)}, found {split['split'].iloc[i]!r}",
    )
    split_of = dict(zip(split["dicom_id"], split["split"], strict=True))
    refuse(
        ~meta["dicom_id"].isin(split_of.keys()),
        meta_path,
        "dicom_id",
        lambda i: (
            f"image {meta['dicom_id'].iloc[i]!r} of study {meta['study_id'].iloc[i]!r} "
            f"has no split in {split_path.name}"
        ),
    )
    row_of = pd.Series(np.arange(len(labels_df)), index=labels_df["study_id"].to_numpy())
    labelled = meta["study_id"].isin(row_of.index).to_numpy()
    kept = meta[labelled]
    records = pd.DataFrame(
        {
            "image": [
                image_path(s, t, d)
                for s, t, d in zip(
                    kept["subject_id"], kept["study_id"], kept["dicom_id"], strict=True
                )
            ],
            "image_id": kept["dicom_id"],
            "patient_id": kept["subject_id"],
            "view": kept["ViewPosition"],
        }
    )
    labels = study_labels[row_of.loc[kept["study_id"]].to_numpy()]
    manifest = build_manifest(records.reset_index(drop=True), labels, tuple(classes))
    manifest.frame["split"] = kept["dicom_id"].map(split_of).map(MIMIC_SPLITS).to_numpy()
    dropped = {"study without a label row": int((~labelled).sum())}
    rows = np.flatnonzero(labelled) + 1  # rows of the metadata file: one per image
    return ReadResult(manifest, meta_path, rows, {k: v for k, v in dropped.items() if v})


DATA_FORMATS.add(
    "mimic",
    DataFormat(
        read=lambda path, classes, data: read_mimic(path, classes, data.uncertain, data.blank),
        description="MIMIC-CXR-JPG -chexpert.csv / -negbio.csv with -metadata.csv, -split.csv",
        vocabulary="chexpert14",
        prompt_style="plain",
        split=True,
    ),
)
