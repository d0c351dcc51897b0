"""``nih``: NIH ChestX-ray14 ``Data_Entry_2017*.csv`` (``Finding Labels`` pipe-separated), with
the 15 NIH labels as its vocabulary; the full ``Data_Entry_2017_v2020.csv.gz`` inside the
installed ``torchxrayvision`` wheel is read when ``data.labels_csv`` is not set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from trcgl.data.manifest import build_manifest
from trcgl.data.readers.csv_checks import (
    ReadResult,
    check_ids,
    check_paths,
    multi_hot,
    pipe_lists,
    read_csv,
    require_columns,
    row_numbers,
)
from trcgl.data.readers.format import DataFormat
from trcgl.data.vocab import NIH_CLASSES
from trcgl.registry import DATA_FORMATS

NIH_CSV_NAME = "Data_Entry_2017_v2020.csv.gz"


def read_nih(path: str | Path, classes: Sequence[str] = NIH_CLASSES) -> ReadResult:
    """Read NIH ChestX-ray14 ``Data_Entry_2017*.csv`` (``Finding Labels`` pipe-separated)."""
    path = Path(path)
    df = read_csv(path)
    require_columns(df, ["Image Index", "Finding Labels", "Patient ID"], path)
    check_ids(df, "Image Index", "Patient ID", path)
    check_paths(df, ["Image Index"], path)
    lists = pipe_lists(df["Finding Labels"], path, "Finding Labels", allow_empty=False)
    labels = multi_hot(lists, classes, path, "Finding Labels")
    records = pd.DataFrame(
        {
            "image": df["Image Index"],
            "image_id": df["Image Index"],
            "patient_id": df["Patient ID"],
            "view": df.get("View Position", ""),
        }
    )
    return ReadResult(build_manifest(records, labels, tuple(classes)), path, row_numbers(len(df)))


DATA_FORMATS.add(
    "nih",
    DataFormat(
        read=lambda path, classes, data: read_nih(path, classes),
        description="NIH ChestX-ray14 Data_Entry_2017*.csv",
        vocabulary="nih15",
        installed_csv=NIH_CSV_NAME,
        prompt_style="nih",
    ),
)
