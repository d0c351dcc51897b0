"""Box tables: NIH's BBox_List_2017 read from the torchxrayvision wheel, and bad box files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trcgl.data.boxes import BOX_COLUMNS, load_boxes, save_boxes
from trcgl.data.readers import installed_label_csv
from trcgl.data.readers.nih import NIH_BOXES_NAME, read_nih_boxes
from trcgl.data.vocab import NIH_CLASSES
from trcgl.errors import DataError


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return pd.read_csv(installed_label_csv(NIH_BOXES_NAME))


def test_the_real_nih_boxes(raw, tmp_path):
    boxes = read_nih_boxes(installed_label_csv(NIH_BOXES_NAME), NIH_CLASSES)
    assert len(boxes) == len(raw) == 984
    assert boxes["image_id"].nunique() == 880
    counts = boxes["class"].value_counts()
    assert counts["Atelectasis"] == 180 and counts["Infiltration"] == 123
    assert counts.sum() == 984 and "Infiltrate" not in counts
    # row 1 of the file, by hand: pixels of the 1024 px PNG → fractions
    x, y, w, h = (float(raw.iloc[0][c]) for c in ("Bbox [x", "y", "w", "h]"))
    np.testing.assert_allclose(
        boxes.iloc[0][["x0", "y0", "x1", "y1"]].to_numpy(float),
        [x / 1024, y / 1024, (x + w) / 1024, (y + h) / 1024],
    )
    save_boxes(boxes, tmp_path / "boxes.parquet")
    back = load_boxes(tmp_path / "boxes.parquet")
    assert list(back.columns) == list(BOX_COLUMNS)
    pd.testing.assert_frame_equal(back, boxes[list(BOX_COLUMNS)])


def test_a_vocabulary_without_a_finding_drops_its_boxes():
    classes = [c for c in NIH_CLASSES if c != "Nodule"]
    boxes = read_nih_boxes(installed_label_csv(NIH_BOXES_NAME), classes)
    assert len(boxes) == 984 - 79 and "Nodule" not in set(boxes["class"])


def _write(raw: pd.DataFrame, tmp_path, row: int, column: str, value: str):
    bad = raw.head(5).astype(str).copy()
    bad.iloc[row, bad.columns.get_loc(column)] = value
    path = tmp_path / "BBox_List_2017.csv"
    bad.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("w", "wide", "expected a number of pixels"),
        ("Bbox [x", "1100", "leaves the image"),
        ("h]", "0", "empty"),
        ("Finding Label", "Fracture", "not in the run's vocabulary"),
    ],
)
def test_bad_box_rows_name_the_file_row_and_column(raw, tmp_path, column, value, message):
    path = _write(raw, tmp_path, 3, column, value)
    with pytest.raises(DataError, match=message) as err:
        read_nih_boxes(path, NIH_CLASSES)
    assert err.value.path == str(path) and err.value.row == 4
    if column in ("w", "Finding Label"):
        assert err.value.column == column


def test_row_numbers_count_the_dropped_rows_too(raw, tmp_path):
    """Rows of a finding the vocabulary leaves out are dropped before the checks: an error
    still names the row of the file."""
    bad = raw.head(5).astype(str).copy()
    bad["Finding Label"] = ["Nodule", "Nodule", "Mass", "Mass", "Mass"]
    bad.iloc[3, bad.columns.get_loc("h]")] = "0"
    bad.to_csv(tmp_path / "b.csv", index=False)
    classes = [c for c in NIH_CLASSES if c != "Nodule"]
    with pytest.raises(DataError, match="empty") as err:
        read_nih_boxes(tmp_path / "b.csv", classes)
    assert err.value.row == 4
