"""``nih_google``: the expert labels that Google's radiologists gave 4,376 NIH ChestX-ray14
images (Majkowska et al., Radiology 2020; ``google2019_nih-chest-xray-labels.csv``, the copy
inside the installed ``torchxrayvision`` wheel read when ``data.labels_csv`` is not set), an
alternative label source for NIH images: the same ``Image Index`` file names, ``Patient ID`` and
``View Position`` as NIH's ``Data_Entry_2017`` (so NIH's image root serves), and the four
findings ``Fracture``, ``Pneumothorax``, ``Airspace opacity`` and ``Nodule or mass`` as ``YES``
/ ``NO`` (each the adjudicated call of three radiologists). ``Set Id`` (``val`` / ``test``)
says which of Google's two sets an image belongs to; trcgl splits by patient as for any data
set.
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
    check_paths,
    read_csv,
    refuse,
    require_columns,
    row_numbers,
)
from trcgl.data.readers.format import DataFormat
from trcgl.data.vocab import NIH_GOOGLE_CLASSES
from trcgl.registry import DATA_FORMATS

NIH_GOOGLE_CSV_NAME = "google2019_nih-chest-xray-labels.csv.gz"


def read_nih_google(path: str | Path, classes: Sequence[str] = NIH_GOOGLE_CLASSES) -> ReadResult:
    """Read Google's NIH expert labels (``YES`` → 1, ``NO`` → 0; anything else is an error)."""
    path = Path(path)
    df = read_csv(path)
    require_columns(df, ["Image Index", "Patient ID", "View Position", *classes], path)
    check_ids(df, "Image Index", "Patient ID", path)
    check_paths(df, ["Image Index"], path)
    labels = np.zeros((len(df), len(classes)), dtype=np.float32)
    for j, column in enumerate(classes):
        text = df[column].str.strip().str.upper()
        refuse(
            ~text.isin(["YES", "NO"]),
            path,
            column,
            lambda i, column=column: f"expected YES or NO, found {df[column].iloc[i]!r}",
        )
        labels[:, j] = (text == "YES").to_numpy()
    records = pd.DataFrame(
        {
            "image": df["Image Index"],
            "image_id": df["Image Index"],
            "patient_id": df["Patient ID"],
            "view": df["View Position"],
        }
    )
    return ReadResult(build_manifest(records, labels, tuple(classes)), path, row_numbers(len(df)))


DATA_FORMATS.add(
    "nih_google",
    DataFormat(
        read=lambda path, classes, data: read_nih_google(path, classes),
        description="Google's expert labels of NIH ChestX-ray14 images (4 findings, YES/NO)",
        vocabulary="nih_google4",
        installed_csv=NIH_GOOGLE_CSV_NAME,
        prompt_style="nih",
    ),
)
