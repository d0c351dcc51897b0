"""``chexpert``: CheXpert's ``train.csv`` / ``valid.csv`` (``Path``, ``Sex``, ``Age``,
``Frontal/Lateral``, ``AP/PA`` and its 14 observations, each 1, 0, -1 for uncertain or blank),
with the 14 observations as its vocabulary; the copy of the training CSV inside the installed
``torchxrayvision`` wheel (``chexpert_train.csv.gz``, 223,414 rows) is read when
``data.labels_csv`` is not set.

The uncertain labels become positive, negative or unknown by ``data.uncertain`` (the CheXpert
paper's U-Ones, U-Zeros, U-Ignore) and blanks (not mentioned in the report) negative or
unknown by ``data.blank`` (:func:`~trcgl.data.readers.csv_checks.uncertain_matrix`). The
patient id is the ``patientNNNNN`` folder of ``Path``
(``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``), the image id the whole
``Path`` (file names repeat across patients), the view ``AP`` / ``PA`` for a frontal image and
``L`` for a lateral one; the image root is the folder that holds ``CheXpert-v1.0*/``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from trcgl.data.manifest import build_manifest
from trcgl.data.readers.csv_checks import (
    ReadResult,
    check_ids,
    check_paths,
    read_csv,
    refuse,
    require_columns,
    row_numbers,
    uncertain_matrix,
)
from trcgl.data.readers.format import DataFormat
from trcgl.data.vocab import CHEXPERT_CLASSES
from trcgl.registry import DATA_FORMATS

CHEXPERT_CSV_NAME = "chexpert_train.csv.gz"
_PATIENT = re.compile(r"(?:^|/)(patient\d+)/")


def read_chexpert(
    path: str | Path,
    classes: Sequence[str] = CHEXPERT_CLASSES,
    uncertain: str = "ignore",
    blank: str = "zero",
) -> ReadResult:
    """Read a CheXpert label CSV; ``uncertain`` / ``blank``: the policies of
    :func:`~trcgl.data.readers.csv_checks.uncertain_matrix`."""
    path = Path(path)
    df = read_csv(path)
    require_columns(df, ["Path", "Frontal/Lateral", "AP/PA", *classes], path)
    patients = df["Path"].str.extract(_PATIENT, expand=False)
    refuse(
        patients.isna(), path, "Path", lambda i: f"no patientNNNNN folder in {df['Path'].iloc[i]!r}"
    )
    df["patient_id"] = patients
    check_ids(df, "Path", "patient_id", path)
    check_paths(df, ["Path"], path)
    side = df["Frontal/Lateral"].str.strip()
    refuse(
        ~side.isin(["Frontal", "Lateral"]),
        path,
        "Frontal/Lateral",
        lambda i: f"expected Frontal or Lateral, found {df['Frontal/Lateral'].iloc[i]!r}",
    )
    labels = uncertain_matrix(df, classes, path, uncertain, blank)
    records = pd.DataFrame(
        {
            "image": df["Path"],
            "image_id": df["Path"],
            "patient_id": df["patient_id"],
            "view": np.where(side == "Frontal", df["AP/PA"].str.strip(), "L"),
        }
    )
    return ReadResult(build_manifest(records, labels, tuple(classes)), path, row_numbers(len(df)))


DATA_FORMATS.add(
    "chexpert",
    DataFormat(
        read=lambda path, classes, data: read_chexpert(path, classes, data.uncertain, data.blank),
        description="CheXpert train.csv / valid.csv (uncertain -1 by data.uncertain)",
        vocabulary="chexpert14",
        installed_csv=CHEXPERT_CSV_NAME,
        prompt_style="plain",
    ),
)
