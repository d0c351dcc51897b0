"""MIMIC-CXR-JPG and the CXR-LT 2023 / 2024 label CSVs. The real files are credentialed
(PhysioNet), so these tests write small files in exactly their published column layout; the
label cells are real CheXpert rows (the same labeler, the same 14 observations)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trcgl.data.readers import (
    CHEXPERT_CSV_NAME,
    installed_label_csv,
    read_cxrlt_mimic,
    read_mimic,
)
from trcgl.data.vocab import (
    CHEXPERT_CLASSES,
    CXRLT2023_CLASSES,
    CXRLT2024_ALL_CLASSES,
    CXRLT2024_CLASSES,
    VOCABULARIES,
)
from trcgl.errors import DataError

#: mimic-cxr-2.0.0-chexpert.csv / -negbio.csv: the observations sorted by name.
LABEL_COLUMNS = ["subject_id", "study_id", *sorted(CHEXPERT_CLASSES)]
METADATA_COLUMNS = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
SPLIT_COLUMNS = ["dicom_id", "study_id", "subject_id", "split"]
DICOMS = [
    "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014",
    "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962",
    "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab",
    "68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714",
    "fffabebf-74fd3a1f-673b6b41-96ec0ac9-2ab69818",
]


def _write_mimic(folder, labeler: str = "chexpert", gz: str = "") -> dict[str, pd.DataFrame]:
    real = pd.read_csv(installed_label_csv(CHEXPERT_CSV_NAME), nrows=3, dtype=str)
    labels = pd.DataFrame(
        {
            "subject_id": ["10000032", "10000032", "10000764"],
            "study_id": ["50414267", "53189527", "57375967"],
        }
    )
    for c in sorted(CHEXPERT_CLASSES):
        labels[c] = real[c].fillna("").to_numpy()
    meta = pd.DataFrame(
        {
            "dicom_id": DICOMS,
            "subject_id": ["10000032", "10000032", "10000032", "10000764", "10000898"],
            "study_id": ["50414267", "50414267", "53189527", "57375967", "50771383"],
            "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
            "ViewPosition": ["PA", "LATERAL", "AP", "AP", "PA"],
            "Rows": "3056",
            "Columns": "2544",
            "StudyDate": "21800506",
            "StudyTime": "213014.531",
            "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
            "ViewCodeSequence_CodeMeaning": "postero-anterior",
            "PatientOrientationCodeSequence_CodeMeaning": "Erect",
        }
    )[METADATA_COLUMNS]
    split = meta[["dicom_id", "study_id", "subject_id"]].assign(
        split=["train", "train", "validate", "test", "train"]
    )
    files = {labeler: labels, "metadata": meta, "split": split}
    for kind, frame in files.items():
        frame.to_csv(folder / f"mimic-cxr-2.0.0-{kind}.csv{gz}", index=False)
    return files


@pytest.mark.parametrize(("labeler", "gz"), [("chexpert", ""), ("negbio", ".gz")])
def test_mimic_images_get_their_studys_labels_path_and_split(tmp_path, labeler, gz):
    files = _write_mimic(tmp_path, labeler, gz)
    result = read_mimic(tmp_path / f"mimic-cxr-2.0.0-{labeler}.csv{gz}", uncertain="ones")
    m = result.manifest
    # the fifth image's study (50771383) has no label row: dropped and counted
    assert result.dropped == {"study without a label row": 1}
    assert result.source.name == f"mimic-cxr-2.0.0-metadata.csv{gz}"
    assert result.rows.tolist() == [1, 2, 3, 4]
    assert m.frame["image"].tolist()[0] == (
        "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"
    )
    assert m.frame["image_id"].tolist() == DICOMS[:4]
    assert m.frame["patient_id"].tolist() == ["10000032"] * 3 + ["10000764"]
    assert m.frame["view"].tolist() == ["PA", "LATERAL", "AP", "AP"]
    assert m.frame["split"].tolist() == ["train", "train", "val", "test"]
    labels = files[labeler]
    study_row = [0, 0, 1, 2]  # both images of study 50414267 take its one label row
    for j, c in enumerate(CHEXPERT_CLASSES):
        cells = pd.to_numeric(labels[c].replace("", np.nan)).to_numpy()[study_row]
        expected = np.where(np.isnan(cells), 0.0, np.where(cells == -1, 1.0, cells))
        np.testing.assert_array_equal(m.label_values()[:, j], expected, err_msg=c)


def test_an_image_whose_study_has_no_split_names_the_metadata_row(tmp_path):
    files = _write_mimic(tmp_path)
    files["split"].drop(index=2).to_csv(tmp_path / "mimic-cxr-2.0.0-split.csv", index=False)
    with pytest.raises(DataError, match="of study '53189527' has no split") as e:
        read_mimic(tmp_path / "mimic-cxr-2.0.0-chexpert.csv")
    assert e.value.path == str(tmp_path / "mimic-cxr-2.0.0-metadata.csv")
    assert (e.value.row, e.value.column) == (3, "dicom_id")


def test_mimic_bad_label_value_and_missing_companion(tmp_path):
    files = _write_mimic(tmp_path)
    labels = files["chexpert"].copy()
    labels.loc[1, "Edema"] = "2.0"
    labels.to_csv(tmp_path / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    with pytest.raises(DataError, match=r"found '2\.0'") as e:
        read_mimic(tmp_path / "mimic-cxr-2.0.0-chexpert.csv")
    assert (e.value.row, e.value.column) == (2, "Edema")
    files["chexpert"].to_csv(tmp_path / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    (tmp_path / "mimic-cxr-2.0.0-split.csv").unlink()
    with pytest.raises(DataError, match="split file not found"):
        read_mimic(tmp_path / "mimic-cxr-2.0.0-chexpert.csv")


# ---- CXR-LT 2023 / 2024 -------------------------------------------------------------------


def test_cxrlt_vocabularies_are_the_published_class_lists():
    assert len(CXRLT2023_CLASSES) == 26 and "No Finding" in CXRLT2023_CLASSES
    assert len(CXRLT2024_CLASSES) == 40 and "Normal" in CXRLT2024_CLASSES
    assert len(CXRLT2024_ALL_CLASSES) == 45
    assert set(CXRLT2024_ALL_CLASSES) - set(CXRLT2024_CLASSES) == {
        "Bulla",
        "Cardiomyopathy",
        "Hilum",
        "Osteopenia",
        "Scoliosis",
    }
    assert VOCABULARIES["cxrlt2023"] == CXRLT2023_CLASSES


def _cxrlt_file(path, classes, path_column: str, split: list[str] | None) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "dicom_id": DICOMS[:4],
            "subject_id": ["10000032", "10000032", "10000764", "10000898"],
            "study_id": ["50414267", "53189527", "57375967", "50771383"],
            "ViewPosition": ["PA", "AP", "AP", "PA"],
        }
    )
    frame[path_column] = [
        f"files/p{s[:2]}/p{s}/s{t}/{d}.jpg"
        for s, t, d in zip(frame["subject_id"], frame["study_id"], frame["dicom_id"], strict=True)
    ]
    if split is not None:
        frame["split"] = split
    for c in classes:
        frame[c] = rng.integers(0, 2, len(frame))
    frame.to_csv(path, index=False)
    return frame


@pytest.mark.parametrize(
    ("classes", "path_column", "split"),
    [
        (CXRLT2023_CLASSES, "path", None),  # 2023: train.csv, development.csv
        (CXRLT2024_CLASSES, "fpath", None),  # 2024 task 1: train_labeled.csv
        (CXRLT2024_ALL_CLASSES, "fpath", ["train", "train", "validate", "test"]),  # labels.csv
    ],
)
def test_cxrlt_2023_and_2024_layouts(tmp_path, classes, path_column, split):
    frame = _cxrlt_file(tmp_path / "labels.csv", classes, path_column, split)
    m = read_cxrlt_mimic(tmp_path / "labels.csv", classes).manifest
    np.testing.assert_array_equal(m.labels(), frame[list(classes)].to_numpy())
    assert m.frame["image"].tolist() == frame[path_column].tolist()
    assert m.frame["patient_id"].tolist() == frame["subject_id"].tolist()
    expected = ["train", "train", "val", "test"] if split else [""] * 4
    assert m.frame["split"].tolist() == expected


def test_cxrlt_bad_split_and_label(tmp_path):
    frame = _cxrlt_file(
        tmp_path / "l.csv", CXRLT2023_CLASSES, "path", ["train", "x", "test", "test"]
    )
    with pytest.raises(DataError, match="found 'x'") as e:
        read_cxrlt_mimic(tmp_path / "l.csv", CXRLT2023_CLASSES)
    assert (e.value.row, e.value.column) == (2, "split")
    frame.assign(split="train", Hernia=["0", "1", "-1", "0"]).to_csv(
        tmp_path / "l.csv", index=False
    )
    with pytest.raises(DataError, match="expected 0 or 1, found '-1'") as e:
        read_cxrlt_mimic(tmp_path / "l.csv", CXRLT2023_CLASSES)
    assert (e.value.row, e.value.column) == (3, "Hernia")
