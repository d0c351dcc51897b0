"""``nih``: NIH ChestX-ray14 ``Data_Entry_2017*.csv`` (``Finding Labels`` pipe-separated), with
the 15 NIH labels as its vocabulary; the full ``Data_Entry_2017_v2020.csv.gz`` inside the
installed ``torchxrayvision`` wheel is read when ``data.labels_csv`` is not set. Its radiologist
boxes, ``BBox_List_2017.csv`` (the wheel's copy unless ``data.boxes_csv`` is set), become the
run's box table (:mod:`trcgl.data.boxes`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from trcgl.data.boxes import check_boxes
from trcgl.data.manifest import build_manifest
from trcgl.data.readers.csv_checks import (
    ReadResult,
    check_ids,
    check_paths,
    data_row,
    multi_hot,
    pipe_lists,
    read_csv,
    require_columns,
    row_numbers,
)
from trcgl.data.readers.format import DataFormat
from trcgl.data.vocab import NIH_CLASSES
from trcgl.errors import DataError
from trcgl.registry import DATA_FORMATS

NIH_CSV_NAME = "Data_Entry_2017_v2020.csv.gz"
NIH_BOXES_NAME = "BBox_List_2017.csv.gz"
#: NIH's PNGs (the frame ``BBox_List_2017`` is drawn in) are 1024 × 1024 pixels.
NIH_IMAGE_SIZE = 1024.0
#: ``BBox_List_2017`` finding names that differ from the NIH vocabulary's.
NIH_BOX_NAMES = {"Infiltrate": "Infiltration"}


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


def read_nih_boxes(path: str | Path, classes: Sequence[str]) -> pd.DataFrame:
    """NIH ``BBox_List_2017.csv`` → a box table. The file holds 984 boxes of 8 findings on 880
    images, drawn by a board-certified radiologist on the released 1024 px PNGs: columns
    ``Image Index``, ``Finding Label``, ``Bbox [x``, ``y``, ``w``, ``h]`` (pixels). Findings of
    NIH classes outside ``classes`` (a vocabulary that leaves them out) are dropped."""
    path = Path(path)
    df = read_csv(path)
    columns = ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]
    require_columns(df, columns, path)
    values = {}
    for column in columns[2:]:
        number = pd.to_numeric(df[column], errors="coerce")
        if number.isna().any():
            i = int(np.flatnonzero(number.isna().to_numpy())[0])
            raise DataError(
                f"expected a number of pixels, got {df[column].iloc[i]!r}",
                path=path,
                row=data_row(i),
                column=column,
            )
        values[column] = number.to_numpy(dtype=float) / NIH_IMAGE_SIZE
    names = df["Finding Label"].map(lambda n: NIH_BOX_NAMES.get(n, n))
    x0, y0 = values["Bbox [x"], values["y"]
    frame = pd.DataFrame(
        {
            "image_id": df["Image Index"],
            "class": names,
            "x0": x0,
            "y0": y0,
            "x1": x0 + values["w"],
            "y1": y0 + values["h]"],
        }
    )
    # Clip the sub-pixel overshoot of boxes drawn to the edge; a box that really leaves the
    # image is still an error in check_boxes.
    for column in ("x1", "y1"):
        over = (frame[column] > 1) & (frame[column] <= 1 + 0.5 / NIH_IMAGE_SIZE)
        frame.loc[over, column] = 1.0
    # An NIH finding the vocabulary leaves out is dropped; any other name is an error.
    keep = (frame["class"].isin(set(classes)) | ~frame["class"].isin(set(NIH_CLASSES))).to_numpy()
    return check_boxes(frame[keep], classes, path, row_numbers(len(df))[keep], "Finding Label")


DATA_FORMATS.add(
    "nih",
    DataFormat(
        read=lambda path, classes, data: read_nih(path, classes),
        description="NIH ChestX-ray14 Data_Entry_2017*.csv",
        vocabulary="nih15",
        installed_csv=NIH_CSV_NAME,
        prompt_style="nih",
        read_boxes=lambda path, manifest, data: read_nih_boxes(path, manifest.classes),
        installed_boxes=NIH_BOXES_NAME,
    ),
)
