"""The VinDr-CXR reader: the real radiologist annotations (torchxrayvision's
``vinbigdata-train.csv.gz``) combined per image by each aggregation, and boxes in fractions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from tests.conftest import wheel_csv
from trcgl.data.readers import VINDR_CSV_NAME, read_vindr, read_vindr_boxes
from trcgl.data.vocab import VINDR_CLASSES
from trcgl.errors import DataError

COLUMNS = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]


@pytest.fixture(scope="module")
def vindr_csv():
    return wheel_csv(VINDR_CSV_NAME)


@pytest.fixture(scope="module")
def raw(vindr_csv) -> pd.DataFrame:
    return pd.read_csv(vindr_csv)


def _votes(raw: pd.DataFrame, name: str) -> pd.Series:
    """Distinct readers who marked ``name``, per image (0 where none), counted with pandas."""
    marked = raw[raw["class_name"] == name].groupby("image_id")["rad_id"].nunique()
    return marked.reindex(raw["image_id"].unique(), fill_value=0)


@pytest.mark.parametrize("aggregation", ["any", "majority"])
def test_real_annotations_one_row_per_image(vindr_csv, raw, aggregation):
    result = read_vindr(vindr_csv, aggregation=aggregation)
    m = result.manifest
    assert len(m) == raw["image_id"].nunique() == 15_000
    assert (m.frame["patient_id"] == m.frame["image_id"]).all()
    assert m.frame["image"].iloc[0] == f"train/{raw['image_id'].iloc[0]}.dicom"
    readers = raw.groupby("image_id")["rad_id"].nunique()
    assert (readers == 3).all()  # three radiologists read every training image
    labels = pd.DataFrame(m.labels(), index=m.frame["image_id"], columns=list(m.classes))
    for c in VINDR_CLASSES[:-1]:
        votes = _votes(raw, c)
        expected = votes >= 1 if aggregation == "any" else votes >= 2
        assert labels[c].sum() == expected.sum(), c
        assert (labels.loc[expected.index, c] == expected.astype(int)).all(), c
    findings = labels[list(VINDR_CLASSES[:-1])].any(axis=1)
    assert (labels["No finding"] == (~findings).astype(int)).all()
    # each manifest row points at its image's first annotation row
    first = raw.reset_index().groupby("image_id")["index"].min()
    assert (result.rows == first.loc[m.frame["image_id"]].to_numpy() + 1).all()


def test_hand_worked_aggregations(tmp_path):
    rows = [
        ["a", "Cardiomegaly", "3", "R1", "10", "10", "50", "40"],
        ["a", "Cardiomegaly", "3", "R2", "12", "11", "52", "42"],
        ["a", "Pneumothorax", "12", "R2", "60", "5", "90", "30"],
        ["a", "No finding", "14", "R3", "", "", "", ""],
        ["b", "No finding", "14", "R1", "", "", "", ""],
        ["b", "No finding", "14", "R2", "", "", "", ""],
    ]
    path = tmp_path / "train.csv"
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    names = ("Cardiomegaly", "Pneumothorax", "No finding")
    any_ = read_vindr(path, names, "any").manifest.labels().tolist()
    majority = read_vindr(path, names, "majority").manifest.labels().tolist()
    assert any_ == [[1, 1, 0], [0, 0, 1]]  # a: two and one of three readers
    assert majority == [[1, 0, 0], [0, 0, 1]]  # a: Pneumothorax by one reader of three
    with pytest.raises(DataError, match="readers disagree on 'Cardiomegaly'") as e:
        read_vindr(path, names, "strict")
    assert (e.value.path, e.value.row, e.value.column) == (str(path), 1, "class_name")
    assert "R1, R2 marked it, 1 of 3 did not" in str(e.value)


def test_boxes_in_fractions_of_each_images_size(tmp_path):
    rows = [
        ["a", "Cardiomegaly", "3", "R1", "100", "200", "300", "400"],
        ["a", "Cardiomegaly", "3", "R2", "110", "210", "310", "410"],
        ["a", "Pneumothorax", "12", "R3", "50", "60", "70", "80"],  # minority: dropped
        ["b", "Cardiomegaly", "3", "R1", "0", "0", "500", "250"],
        ["b", "Cardiomegaly", "3", "R2", "0", "0", "500", "250"],
    ]
    path = tmp_path / "train.csv"
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    sizes = tmp_path / "sizes.csv"
    pd.DataFrame({"image_id": ["a", "b"], "width": [1000, 500], "height": [800, 500]}).to_csv(
        sizes, index=False
    )
    m = read_vindr(path, ("Cardiomegaly", "Pneumothorax", "No finding")).manifest
    boxes = read_vindr_boxes(path, m, image_sizes=sizes)
    assert boxes[["image_id", "class"]].values.tolist() == [
        ["a", "Cardiomegaly"],
        ["a", "Cardiomegaly"],
        ["b", "Cardiomegaly"],
        ["b", "Cardiomegaly"],
    ]
    np.testing.assert_allclose(
        boxes.iloc[0][["x0", "y0", "x1", "y1"]].astype(float), [0.1, 0.25, 0.3, 0.5]
    )
    np.testing.assert_allclose(
        boxes.iloc[2][["x0", "y0", "x1", "y1"]].astype(float), [0, 0, 1, 0.5]
    )
    # without sizes there is no frame to place them in
    with pytest.warns(UserWarning, match="no boxes kept"):
        assert read_vindr_boxes(path, m) is None


def test_image_sizes_from_the_dicom_headers(tmp_path):
    rows = [["a", "Cardiomegaly", "3", r, "100", "200", "300", "400"] for r in ("R1", "R2")]
    path = tmp_path / "train.csv"
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    (tmp_path / "train").mkdir()
    header = Dataset()
    header.Rows, header.Columns = 800, 1000
    header.file_meta = FileMetaDataset()
    header.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pydicom.dcmwrite(tmp_path / "train" / "a.dicom", header, enforce_file_format=False)
    m = read_vindr(path, ("Cardiomegaly", "No finding")).manifest
    boxes = read_vindr_boxes(path, m, image_root=tmp_path)
    np.testing.assert_allclose(
        boxes.iloc[0][["x0", "y0", "x1", "y1"]].astype(float), [0.1, 0.25, 0.3, 0.5]
    )


def test_real_boxes_with_sizes(vindr_csv, raw, tmp_path):
    # No image sizes ship with the labels: give each image a frame just holding its boxes.
    boxed = raw.dropna(subset=["x_min"])
    sizes = boxed.groupby("image_id").agg(width=("x_max", "max"), height=("y_max", "max"))
    (sizes + 1).reset_index().to_csv(tmp_path / "sizes.csv", index=False)
    m = read_vindr(vindr_csv).manifest
    boxes = read_vindr_boxes(vindr_csv, m, image_sizes=tmp_path / "sizes.csv")
    positive = {
        (i, c) for j, c in enumerate(m.classes) for i in m.frame["image_id"][m.labels()[:, j] == 1]
    }
    kept = boxed[
        [(i, c) in positive for i, c in zip(boxed["image_id"], boxed["class_name"], strict=True)]
    ]
    assert len(boxes) == len(kept) > 10_000
    assert ((boxes[["x0", "y0", "x1", "y1"]] >= 0) & (boxes[["x0", "y0", "x1", "y1"]] <= 1)).all(
        axis=None
    )


def test_an_unknown_class_name_is_an_error(tmp_path, raw):
    rows = raw.head(4).astype(str).copy()
    rows.loc[2, "class_name"] = "Martian lung"
    path = tmp_path / "train.csv"
    rows.to_csv(path, index=False)
    with pytest.raises(DataError, match="unknown VinDr-CXR class 'Martian lung'") as e:
        read_vindr(path)
    assert (e.value.row, e.value.column) == (3, "class_name")
