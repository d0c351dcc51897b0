"""The CheXpert reader on the real ``chexpert_train.csv`` (torchxrayvision's copy) and on rows
whose uncertain and blank cells are worked by hand under each policy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import wheel_csv
from trcgl.data.readers import CHEXPERT_CSV_NAME, read_chexpert
from trcgl.data.vocab import CHEXPERT_CLASSES
from trcgl.errors import DataError


@pytest.fixture(scope="module")
def chexpert_csv():
    return wheel_csv(CHEXPERT_CSV_NAME)


@pytest.fixture(scope="module")
def raw(chexpert_csv) -> pd.DataFrame:
    """The real CSV as pandas reads it (numbers and NaN for blanks), for independent counts."""
    return pd.read_csv(chexpert_csv)


def test_real_file_every_row_with_uncertain_ignored_and_blank_negative(chexpert_csv, raw):
    result = read_chexpert(chexpert_csv)  # the defaults: U-Ignore, blank = 0
    m = result.manifest
    assert len(m) == len(raw) == 223_414
    assert m.classes == CHEXPERT_CLASSES
    values = m.label_values()
    for j, c in enumerate(CHEXPERT_CLASSES):
        assert (values[:, j] == 1).sum() == (raw[c] == 1).sum(), c
        assert np.isnan(values[:, j]).sum() == (raw[c] == -1).sum(), c
        assert (values[:, j] == 0).sum() == ((raw[c] == 0) | raw[c].isna()).sum(), c
    frame = m.frame
    assert frame["patient_id"].nunique() == raw["Path"].str.extract(r"(patient\d+)")[0].nunique()
    assert frame["patient_id"].iloc[0] == "patient00001"
    assert frame["image_id"].is_unique and (frame["image"] == raw["Path"]).all()
    lateral = (raw["Frontal/Lateral"] == "Lateral").to_numpy()
    assert (frame["view"][lateral] == "L").all()
    assert (frame["view"][~lateral] == raw["AP/PA"][~lateral]).all()
    assert result.rows[0] == 1 and result.rows[-1] == len(raw)


@pytest.mark.parametrize(
    ("uncertain", "blank", "minus_one", "empty"),
    [
        ("ones", "zero", 1.0, 0.0),  # U-Ones
        ("zeros", "zero", 0.0, 0.0),  # U-Zeros
        ("ignore", "zero", np.nan, 0.0),  # U-Ignore
        ("ignore", "unknown", np.nan, np.nan),
        ("ones", "unknown", 1.0, np.nan),
    ],
)
def test_policies_on_real_rows(tmp_path, raw, uncertain, blank, minus_one, empty):
    rows = raw.head(500)
    path = tmp_path / "train.csv"
    rows.to_csv(path, index=False)
    values = read_chexpert(path, uncertain=uncertain, blank=blank).manifest.label_values()
    for j, c in enumerate(CHEXPERT_CLASSES):
        cells = rows[c].to_numpy()
        expected = np.where(np.isnan(cells), empty, np.where(cells == -1, minus_one, cells))
        np.testing.assert_array_equal(values[:, j], expected.astype(np.float32), err_msg=c)


def test_hand_worked_row(tmp_path):
    # patient00002/study2 of the real file: Cardiomegaly -1, Lung Opacity 1, Edema -1, ...
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_CLASSES]
    cells = ["", "", "-1.0", "1.0", "", "-1.0", "-1.0", "", "-1.0", "", "-1.0", "", "1.0", ""]
    row = ["CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg", "Female", "87"]
    path = tmp_path / "train.csv"
    pd.DataFrame([[*row, "Frontal", "AP", *cells]], columns=header).to_csv(path, index=False)
    m = read_chexpert(path, uncertain="ones", blank="unknown").manifest
    got = dict(zip(CHEXPERT_CLASSES, m.label_values()[0], strict=True))
    assert got["Cardiomegaly"] == 1 and got["Lung Opacity"] == 1 and got["Fracture"] == 1
    assert np.isnan(got["No Finding"]) and np.isnan(got["Support Devices"])
    assert m.frame["patient_id"].iloc[0] == "patient00002" and m.frame["view"].iloc[0] == "AP"


def test_a_value_outside_the_four_names_file_row_column_and_value(tmp_path, raw):
    rows = raw.head(5).copy()
    rows["Edema"] = rows["Edema"].astype(object)
    rows.loc[3, "Edema"] = "2"
    path = tmp_path / "train.csv"
    rows.to_csv(path, index=False)
    with pytest.raises(
        DataError, match=r"expected 1, 0, -1 \(uncertain\) or blank, found '2'"
    ) as e:
        read_chexpert(path)
    assert (e.value.path, e.value.row, e.value.column) == (str(path), 4, "Edema")


def test_a_path_without_a_patient_folder_is_an_error(tmp_path, raw):
    rows = raw.head(3).copy()
    rows.loc[1, "Path"] = "CheXpert-v1.0-small/train/study1/view1_frontal.jpg"
    path = tmp_path / "train.csv"
    rows.to_csv(path, index=False)
    with pytest.raises(DataError, match="no patientNNNNN folder") as e:
        read_chexpert(path)
    assert (e.value.row, e.value.column) == (2, "Path")
