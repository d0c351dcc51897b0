"""``cxrlt_mimic``: the label CSVs of the CXR-LT 2023 and 2024 challenges (MIMIC-CXR-JPG images,
long-tailed labels): ``dicom_id``, ``subject_id``, ``study_id``, the image path (``path`` in
2023, ``fpath`` in 2024, relative to the MIMIC-CXR-JPG root: ``files/p10/p10000032/s…/….jpg``),
optionally ``ViewPosition`` and ``split``, and a 0/1 column per class. The vocabulary chooses the
release: ``cxrlt2024`` (the default: 2024 task 1, 40 classes, ``train_labeled.csv`` /
``development_labeled_task1.csv``), ``cxrlt2024_all`` (2024's ``labels.csv``: the 40 and the 5
zero-shot classes of task 3) or ``cxrlt2023`` (26 classes, ``train.csv`` / ``development.csv``).

The patient is ``subject_id``, the image id ``dicom_id``. A ``split`` column (``train``,
``validate`` or ``development``, ``test``) is kept with ``split.given: true``.

These files are credentialed downloads (PhysioNet); trcgl's tests use small files written in
exactly this column layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from trcgl.data.manifest import build_manifest
from trcgl.data.readers.csv_checks import (
    ReadResult,
    binary_matrix,
    check_ids,
    check_paths,
    read_csv,
    refuse,
    require_columns,
    row_numbers,
)
from trcgl.data.readers.format import DataFormat
from trcgl.data.vocab import CXRLT2024_CLASSES
from trcgl.registry import DATA_FORMATS

#: The split names of the CXR-LT files → the manifest's.
CXRLT_SPLITS = {"train": "train", "validate": "val", "development": "val", "test": "test"}


def read_cxrlt_mimic(path: str | Path, classes: Sequence[str] = CXRLT2024_CLASSES) -> ReadResult:
    """Read a CXR-LT 2023 / 2024 label CSV (module docstring)."""
    path = Path(path)
    df = read_csv(path)
    path_column = "fpath" if "fpath" in df.columns else "path"
    require_columns(df, ["dicom_id", "subject_id", "study_id", path_column, *classes], path)
    check_ids(df, "dicom_id", "subject_id", path)
    check_paths(df, [path_column], path)
    labels = binary_matrix(df, classes, path)
    records = pd.DataFrame(
        {"image": df[path_column], "image_id": df["dicom_id"], "patient_id": df["subject_id"]}
    )
    if "ViewPosition" in df:
        records["view"] = df["ViewPosition"]
    manifest = build_manifest(records, labels, tuple(classes))
    if "split" in df:
        split = df["split"].str.strip().str.lower()
        refuse(
            ~split.isin(list(CXRLT_SPLITS)),
            path,
            "split",
            lambda i: f"expected one of {list(CXRLT_SPLITS)}, found {df['split'].iloc[i]!r}",
        )
        manifest.frame["split"] = split.map(CXRLT_SPLITS).to_numpy()
    return ReadResult(manifest, path, row_numbers(len(df)))


DATA_FORMATS.add(
    "cxrlt_mimic",
    DataFormat(
        read=lambda path, classes, data: read_cxrlt_mimic(path, classes),
        description="CXR-LT 2023 / 2024 label CSVs (MIMIC-CXR-JPG images)",
        vocabulary="cxrlt2024",
        prompt_style="cxrlt",
        split=True,
    ),
)
