"""``cxrlt``: the CXR-LT 2026 challenge CSV (``ImageID``, ``PatientID``, one 0/1 column per
class), with the 30 CXR-LT classes as its vocabulary."""

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
    require_columns,
    row_numbers,
)
from trcgl.data.readers.format import DataFormat
from trcgl.data.vocab import CXRLT_CLASSES
from trcgl.registry import DATA_FORMATS


def read_cxrlt(path: str | Path, classes: Sequence[str] = CXRLT_CLASSES) -> ReadResult:
    """Read the CXR-LT 2026 CSV: ``ImageID``, ``PatientID`` and a 0/1 column per class."""
    path = Path(path)
    df = read_csv(path)
    require_columns(df, ["ImageID", "PatientID", *classes], path)
    check_ids(df, "ImageID", "PatientID", path)
    check_paths(df, ["ImageID"], path)
    labels = binary_matrix(df, classes, path)
    records = pd.DataFrame(
        {"image": df["ImageID"], "image_id": df["ImageID"], "patient_id": df["PatientID"]}
    )
    return ReadResult(build_manifest(records, labels, tuple(classes)), path, row_numbers(len(df)))


DATA_FORMATS.add(
    "cxrlt",
    DataFormat(
        read=lambda path, classes, data: read_cxrlt(path, classes),
        description="CXR-LT 2026 CSV: ImageID, PatientID, a 0/1 column per class",
        vocabulary="cxrlt30",
        prompt_style="cxrlt",
    ),
)
