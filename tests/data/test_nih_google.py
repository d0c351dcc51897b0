"""Google's expert labels of NIH images (``google2019_nih-chest-xray-labels.csv.gz``)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import wheel_csv
from trcgl.data.readers import NIH_GOOGLE_CSV_NAME, read_nih_google
from trcgl.data.vocab import NIH_GOOGLE_CLASSES
from trcgl.errors import DataError


@pytest.fixture(scope="module")
def google_csv():
    return wheel_csv(NIH_GOOGLE_CSV_NAME)


def test_real_file(google_csv):
    raw = pd.read_csv(google_csv)
    m = read_nih_google(google_csv).manifest
    assert len(m) == len(raw) == 4376 and m.classes == NIH_GOOGLE_CLASSES
    for j, c in enumerate(NIH_GOOGLE_CLASSES):
        assert m.labels()[:, j].sum() == (raw[c] == "YES").sum()
    assert m.known().all()
    assert (m.frame["image"] == raw["Image Index"]).all()  # NIH's file names: NIH's image root
    assert (m.frame["patient_id"] == raw["Patient ID"].astype(str)).all()
    assert (m.frame["view"] == raw["View Position"]).all()


def test_a_value_other_than_yes_or_no(tmp_path, google_csv):
    rows = pd.read_csv(google_csv, dtype=str).head(3)
    rows.loc[1, "Pneumothorax"] = "MAYBE"
    path = tmp_path / "google.csv"
    rows.to_csv(path, index=False)
    with pytest.raises(DataError, match="expected YES or NO, found 'MAYBE'") as e:
        read_nih_google(path)
    assert (e.value.row, e.value.column) == (2, "Pneumothorax")
