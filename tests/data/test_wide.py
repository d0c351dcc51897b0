"""The ``wide`` reader (a 1 / 0 / -1 / blank column per class) on real NIH rows made wide."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trcgl.data.readers import read_nih, read_wide
from trcgl.data.vocab import NIH_CLASSES
from trcgl.errors import DataError


@pytest.fixture
def wide_nih(nih_sample, tmp_path):
    """The vendored NIH sample, its ``Finding Labels`` spread into one 0/1 column per class,
    under private-data-set column names."""
    raw = pd.read_csv(nih_sample / "Data_Entry_sample.csv", dtype=str)
    frame = pd.DataFrame(
        {"file": raw["Image Index"], "subject": raw["Patient ID"], "pos": raw["View Position"]}
    )
    for c in NIH_CLASSES:
        frame[c] = raw["Finding Labels"].str.split("|").map(lambda names, c=c: int(c in names))
    path = tmp_path / "wide.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_real_rows_equal_the_nih_reader(wide_nih, nih_sample):
    path, _ = wide_nih
    columns = {"image": "file", "patient_id": "subject", "view": "pos"}
    m = read_wide(path, NIH_CLASSES, columns).manifest
    nih = read_nih(nih_sample / "Data_Entry_sample.csv").manifest
    np.testing.assert_array_equal(m.labels(), nih.labels())
    for field in ("image", "image_id", "patient_id", "view"):
        assert (m.frame[field] == nih.frame[field]).all(), field


def test_a_class_read_from_a_column_of_another_name(wide_nih):
    path, frame = wide_nih
    frame.rename(columns={"Effusion": "pleural_effusion"}).to_csv(path, index=False)
    columns = {"image": "file", "patient_id": "subject", "Effusion": "pleural_effusion"}
    m = read_wide(path, ("Effusion", "Mass"), columns).manifest
    assert m.labels()[:, 0].sum() == frame["Effusion"].sum()


@pytest.mark.parametrize(
    ("uncertain", "blank", "expected"),
    [("ones", "zero", [1, 0, 1, 0]), ("ignore", "unknown", [1, 0, np.nan, np.nan])],
)
def test_uncertain_and_blank_policies(tmp_path, uncertain, blank, expected):
    path = tmp_path / "wide.csv"
    pd.DataFrame(
        {
            "image": ["a.png", "b.png", "c.png", "d.png"],
            "patient_id": list("pqrs"),
            "x": ["1", "0", "-1", ""],
        }
    ).to_csv(path, index=False)
    values = read_wide(path, ("x",), uncertain=uncertain, blank=blank).manifest.label_values()
    np.testing.assert_array_equal(values[:, 0], np.array(expected, dtype=np.float32))


def test_bad_cells_and_repeated_images_name_the_column(tmp_path):
    path = tmp_path / "wide.csv"
    frame = pd.DataFrame({"f": ["a.png", "dir/b.png"], "pid": ["p", "q"], "x": ["1", "yes"]})
    frame.to_csv(path, index=False)
    columns = {"image": "f", "patient_id": "pid"}
    with pytest.raises(DataError, match="found 'yes'") as e:
        read_wide(path, ("x",), columns)
    assert (e.value.row, e.value.column) == (2, "x")
    frame.assign(f=["a.png", "dir/a.png"], x=["1", "0"]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"duplicate image id 'a\.png'") as e:
        read_wide(path, ("x",), columns)
    assert e.value.column == "f"
    with pytest.raises(DataError, match="missing column"):
        read_wide(path, ("x",))  # the default columns image / patient_id are not there
