from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trcgl.data.readers import (
    apply_filters,
    read_cxrlt,
    read_exclusion_list,
    read_nih,
    read_padchest,
    read_plain,
)
from trcgl.data.vocab import CXRLT_CLASSES, NIH_CLASSES
from trcgl.errors import DataError

PADCHEST_COLUMNS = ["ImageID", "ImageDir", "PatientID", "Projection", "Labels"]


def _padchest(tmp_path: Path, rows: list[list[str]]) -> Path:
    path = tmp_path / "padchest.csv"
    pd.DataFrame(rows, columns=PADCHEST_COLUMNS).to_csv(path, index=False)
    return path


# ---- real PadChest CSV ---------------------------------------------------------------------


def test_real_padchest_reads_every_row_with_labels(padchest):
    m = padchest.manifest
    # 160,861 rows; 103 have no Labels value, 1,312 are flagged "exclude" by radiologists
    assert padchest.dropped == {"no Labels value": 103, "flagged 'exclude'": 1312}
    assert len(m) == 160_861 - 103 - 1312
    assert m.classes == CXRLT_CLASSES
    assert m.frame["image_id"].is_unique
    assert m.frame["image"].str.match(r"^\d+/.+\.png$").all()
    y = m.labels()
    assert y.shape == (len(m), 30) and set(np.unique(y)) <= {0, 1}
    counts = dict(zip(m.classes, y.sum(axis=0), strict=True))
    # raw "normal" rows not flagged exclude
    assert counts["Normal"] == 50_390 + 226  # + the 226 lateral/other views removed later
    assert counts["Hydropneumothorax"] == 48
    assert counts["pneumoperitoneo"] == 68
    assert all(v > 0 for v in counts.values())
    assert padchest.rows.shape == (len(m),) and padchest.rows[0] == 1
    assert "COPD signs" in padchest.unmapped_findings
    assert (m.frame["localizations"] != "").mean() > 0.99


def test_real_padchest_view_and_exclusion_filters(padchest):
    bad = read_exclusion_list("padchest_known_bad.txt")
    assert len(bad) == 21
    kept = apply_filters(padchest, ["PA", "AP", "AP_horizontal", "L"], bad)
    assert len(kept.manifest) == 158_787
    assert kept.dropped["on an exclusion list"] == 21
    assert kept.dropped["projection not in PA/AP/AP_horizontal/L"] == 638
    assert set(kept.manifest.frame["view"]) == {"PA", "AP", "AP_horizontal", "L"}
    frontal = apply_filters(padchest, ["PA"])
    assert set(frontal.manifest.frame["view"]) == {"PA"}
    # the row numbers follow the kept rows
    assert len(kept.rows) == len(kept.manifest)


# ---- bad PadChest input ----------------------------------------------------------------------


def test_padchest_unknown_finding_names_row_and_column(tmp_path):
    path = _padchest(
        tmp_path,
        [
            ["a.png", "0", "p1", "PA", "['normal']"],
            ["b.png", "0", "p2", "PA", "['cardiomegaly', ' martian lung']"],
        ],
    )
    with pytest.raises(DataError, match="martian lung") as err:
        read_padchest(path)
    assert (err.value.path, err.value.row, err.value.column) == (str(path), 2, "Labels")


def test_padchest_unparseable_label_list(tmp_path):
    path = _padchest(tmp_path, [["a.png", "0", "p1", "PA", "['normal'"]])
    with pytest.raises(DataError, match="cannot parse label list") as err:
        read_padchest(path)
    assert (err.value.row, err.value.column) == (1, "Labels")


def test_padchest_missing_column(tmp_path):
    path = tmp_path / "x.csv"
    pd.DataFrame({"ImageID": ["a.png"], "PatientID": ["p"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="missing column") as err:
        read_padchest(path)
    assert err.value.column == "ImageDir"


def test_duplicate_image_id_and_empty_patient(tmp_path):
    path = _padchest(
        tmp_path,
        [
            ["a.png", "0", "p1", "PA", "['normal']"],
            ["b.png", "0", "p2", "PA", "['normal']"],
            ["a.png", "1", "p3", "PA", "['normal']"],
        ],
    )
    with pytest.raises(DataError, match=r"duplicate image id 'a.png' \(also on row\(s\) \[3\]\)"):
        read_padchest(path)
    path = _padchest(
        tmp_path,
        [["a.png", "0", "p1", "PA", "['normal']"], ["b.png", "0", " ", "PA", "['normal']"]],
    )
    with pytest.raises(DataError, match="empty patient id") as err:
        read_padchest(path)
    assert (err.value.row, err.value.column) == (2, "PatientID")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_padchest(tmp_path / "nope.csv")


# ---- CXR-LT 2026 CSV ------------------------------------------------------------------------


def _cxrlt_frame(n: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "ImageID": [f"img{i}.png" for i in range(n)],
            "StudyDate_DICOM": ["20140101"] * n,
            "PatientID": [f"p{i // 2}" for i in range(n)],
        }
    )
    for c in CXRLT_CLASSES:
        frame[c] = rng.integers(0, 2, n)
    return frame


def test_cxrlt_csv_round_trip(tmp_path):
    frame = _cxrlt_frame()
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False)
    result = read_cxrlt(path)
    np.testing.assert_array_equal(result.manifest.labels(), frame[list(CXRLT_CLASSES)].to_numpy())
    assert list(result.manifest.frame["patient_id"]) == ["p0", "p0", "p1", "p1"]


def test_cxrlt_non_binary_value_names_cell(tmp_path):
    frame = _cxrlt_frame().astype(str)
    frame.loc[2, "Mass"] = "yes"
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="expected 0 or 1, found 'yes'") as err:
        read_cxrlt(path)
    assert (err.value.row, err.value.column) == (3, "Mass")


def test_cxrlt_missing_class_column(tmp_path):
    path = tmp_path / "train.csv"
    _cxrlt_frame().drop(columns=["Hernia"]).to_csv(path, index=False)
    with pytest.raises(DataError, match="Hernia"):
        read_cxrlt(path)


# ---- NIH ------------------------------------------------------------------------------------


def test_vendored_nih_sample_matches_its_provenance(nih_sample):
    result = read_nih(nih_sample / "Data_Entry_sample.csv")
    m = result.manifest
    assert len(m) == 2279 and m.frame["patient_id"].nunique() == 1908
    counts = dict(zip(NIH_CLASSES, m.labels().sum(axis=0), strict=True))
    assert counts["No Finding"] == 635 and counts["Hernia"] == 32 and counts["Infiltration"] == 534
    assert all((nih_sample / "images" / p).is_file() for p in m.frame["image"])


def test_nih_bad_label_lists(tmp_path):
    path = tmp_path / "Data_Entry.csv"
    base = {
        "Image Index": ["a.png", "b.png"],
        "Patient ID": ["1", "2"],
        "View Position": ["PA", "AP"],
    }
    pd.DataFrame({**base, "Finding Labels": ["Mass", "Effusion||Mass"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="cannot parse label list") as err:
        read_nih(path)
    assert (err.value.row, err.value.column) == (2, "Finding Labels")
    pd.DataFrame({**base, "Finding Labels": ["Mass", "Effusion|COVID"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="unknown class 'COVID'") as err:
        read_nih(path)
    assert err.value.row == 2


# ---- plain CSV ------------------------------------------------------------------------------


def test_plain_csv(tmp_path):
    path = tmp_path / "plain.csv"
    pd.DataFrame(
        {
            "image": ["x/a.png", "x/b.png", "c.jpg"],
            "patient_id": ["1", "1", "2"],
            "labels": ["A|B", "", "C"],
        }
    ).to_csv(path, index=False)
    result = read_plain(path, ("A", "B", "C"))
    np.testing.assert_array_equal(result.manifest.labels(), [[1, 1, 0], [0, 0, 0], [0, 0, 1]])
    assert list(result.manifest.frame["image_id"]) == ["a.png", "b.png", "c.jpg"]
    with pytest.raises(DataError, match="unknown class 'C'") as err:
        read_plain(path, ("A", "B"))
    assert (err.value.row, err.value.column) == (3, "labels")


# ---- image paths that leave the image root --------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("../../etc/hostname", "leaves the image root"),
        ("x/../../secret.png", "leaves the image root"),
        ("/etc/hostname", "is an absolute path"),
        ("C:\\scans\\a.png", "is an absolute path"),
    ],
)
def test_every_reader_refuses_paths_outside_the_image_root(tmp_path, bad, why):
    plain = tmp_path / "plain.csv"
    pd.DataFrame({"image": ["a.png", bad], "patient_id": ["1", "2"], "labels": ["A", "A"]}).to_csv(
        plain, index=False
    )
    nih = tmp_path / "nih.csv"
    pd.DataFrame(
        {
            "Image Index": ["a.png", bad],
            "Finding Labels": ["No Finding"] * 2,
            "Patient ID": ["1", "2"],
        }
    ).to_csv(nih, index=False)
    cxrlt = tmp_path / "cxrlt.csv"
    frame = _cxrlt_frame().head(2).copy()
    frame["ImageID"] = ["a.png", bad]
    frame.to_csv(cxrlt, index=False)
    pad_id = _padchest(
        tmp_path, [["a.png", "0", "p1", "PA", "['normal']"], [bad, "0", "p2", "PA", "['normal']"]]
    )
    cases = [
        (lambda: read_plain(plain, ("A",)), plain, "image"),
        (lambda: read_nih(nih), nih, "Image Index"),
        (lambda: read_cxrlt(cxrlt), cxrlt, "ImageID"),
        (lambda: read_padchest(pad_id), pad_id, "ImageID"),
    ]
    for read, path, column in cases:
        with pytest.raises(DataError, match=why) as err:
            read()
        assert (err.value.path, err.value.row, err.value.column) == (str(path), 2, column)
    pad_dir = _padchest(
        tmp_path,
        [["a.png", "0", "p1", "PA", "['normal']"], ["b.png", bad, "p2", "PA", "['normal']"]],
    )
    with pytest.raises(DataError, match=why) as err:
        read_padchest(pad_dir)
    assert (err.value.row, err.value.column) == (2, "ImageDir")
