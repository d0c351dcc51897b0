"""``trcgl prepare`` (labels only) on the real CheXpert, VinDr-CXR and full NIH label files
shipped in the torchxrayvision wheel, and the bad input of the new readers through it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import invoke
from trcgl.data.manifest import Manifest
from trcgl.data.readers import (
    CHEXPERT_CSV_NAME,
    NIH_CSV_NAME,
    VINDR_CSV_NAME,
    installed_label_csv,
)


def _prepare(*args: str):
    return invoke("prepare", *args)


def test_chexpert_preset_prepares_the_real_file(tmp_path):
    run = tmp_path / "chexpert"
    result = _prepare("--config", "chexpert", "--run-dir", str(run))
    assert result.exit_code == 0, result.output
    raw = pd.read_csv(installed_label_csv(CHEXPERT_CSV_NAME))
    frontal = raw[raw["AP/PA"].isin(["PA", "AP"]) & (raw["Frontal/Lateral"] == "Frontal")]
    m = Manifest.load(run / "manifest.parquet")
    assert len(m) == len(frontal) and (m.frame["dataset"] == "chexpert").all()
    stats = pd.read_csv(run / "label_stats.csv").set_index("class")
    for c in m.classes:  # U-Ignore: -1 unknown; blank: negative
        assert stats.loc[c, "images_all"] == (frontal[c] == 1).sum(), c
        assert stats.loc[c, "unknown_all"] == (frontal[c] == -1).sum(), c
    info = json.loads((run / "label_stats.json").read_text())
    assert info["unknown_labels"] == int((frontal[list(m.classes)] == -1).sum().sum())
    assert m.frame.groupby("patient_id")["split"].nunique().max() == 1


def test_vindr_preset_prepares_the_real_file_with_the_majority_of_readers(tmp_path):
    run = tmp_path / "vindr"
    with pytest.warns(UserWarning, match="no boxes kept"):  # labels only: no image sizes
        result = _prepare("--config", "vindr", "--run-dir", str(run))
    assert result.exit_code == 0, result.output
    raw = pd.read_csv(installed_label_csv(VINDR_CSV_NAME))
    m = Manifest.load(run / "manifest.parquet")
    assert len(m) == 15_000 and m.known().all()
    votes = raw[raw["class_name"] == "Cardiomegaly"].groupby("image_id")["rad_id"].nunique()
    assert m.labels()[:, m.classes.index("Cardiomegaly")].sum() == (votes >= 2).sum()
    assert not (run / "boxes.parquet").exists()


def test_vindr_boxes_are_kept_with_image_sizes(tmp_path):
    raw = pd.read_csv(installed_label_csv(VINDR_CSV_NAME))
    boxed = raw.dropna(subset=["x_min"])
    sizes = boxed.groupby("image_id").agg(width=("x_max", "max"), height=("y_max", "max")) + 1
    sizes.reset_index().to_csv(tmp_path / "sizes.csv", index=False)
    run = tmp_path / "vindr"
    result = _prepare(
        "--config", "vindr", "--run-dir", str(run), f"data.image_sizes={tmp_path / 'sizes.csv'}"
    )
    assert result.exit_code == 0, result.output
    boxes = pd.read_parquet(run / "boxes.parquet")
    info = json.loads((run / "label_stats.json").read_text())
    assert info["boxes"] == {"boxes": len(boxes), "images": boxes["image_id"].nunique()}
    assert len(boxes) > 10_000


def test_vindr_strict_readers_that_disagree_stop_prepare(tmp_path):
    run = tmp_path / "strict"
    result = _prepare("--config", "vindr", "--run-dir", str(run), "data.aggregation=strict")
    assert result.exit_code == 2
    text = result.output.replace("\n", "")
    assert VINDR_CSV_NAME in text and "column 'class_name'" in text and "readers disagree" in text
    assert not run.exists()


def test_full_nih_preset_prepares_every_image(tmp_path):
    run = tmp_path / "nih"
    result = _prepare("--config", "nih", "--run-dir", str(run))
    assert result.exit_code == 0, result.output
    raw = pd.read_csv(installed_label_csv(NIH_CSV_NAME))
    assert len(raw) == 112_120
    m = Manifest.load(run / "manifest.parquet")
    assert len(m) == raw["View Position"].isin(["PA", "AP"]).sum() == 112_120
    info = json.loads((run / "label_stats.json").read_text())
    assert info["boxes"]["boxes"] == 984


def test_a_chexpert_value_outside_the_four_stops_prepare(tmp_path):
    rows = pd.read_csv(installed_label_csv(CHEXPERT_CSV_NAME), nrows=20, dtype=str)
    rows.loc[11, "Pneumonia"] = "0.5"
    rows.to_csv(tmp_path / "train.csv", index=False)
    run = tmp_path / "run"
    result = _prepare(
        "--config", "chexpert", "--run-dir", str(run), f"data.labels_csv={tmp_path / 'train.csv'}"
    )
    assert result.exit_code == 2
    text = result.output.replace("\n", "")
    assert f"{tmp_path / 'train.csv'}, row 12, column 'Pneumonia'" in text and "'0.5'" in text
    assert not run.exists()


def test_a_published_split_is_kept_with_split_given(tmp_path):
    rows = pd.read_csv(installed_label_csv(CHEXPERT_CSV_NAME), nrows=6, dtype=str)
    frame = pd.DataFrame(
        {
            "dicom_id": [f"d{i}" for i in range(6)],
            "subject_id": ["10000032", "10000032", "10000764", "10000898", "10001122", "1000"],
            "study_id": [f"5000000{i}" for i in range(6)],
            "fpath": [f"files/p10/p1/s5/d{i}.jpg" for i in range(6)],
            "split": ["train", "train", "validate", "test", "train", "development"],
        }
    )
    classes = ["Edema", "Pneumonia"]
    for c in classes:
        frame[c] = (rows[c] == "1.0").astype(int).to_numpy()
    frame.to_csv(tmp_path / "labels.csv", index=False)
    args = [
        "--config",
        "nih",
        "data.format=cxrlt_mimic",
        f"data.labels_csv={tmp_path / 'labels.csv'}",
        "data.vocabulary=null",
        f"data.classes=[{', '.join(classes)}]",
        "data.projections=null",
        "split.given=true",
    ]
    result = _prepare("--run-dir", str(tmp_path / "run"), *args)
    assert result.exit_code == 0, result.output
    m = Manifest.load(tmp_path / "run" / "manifest.parquet")
    assert m.frame["split"].tolist() == ["train", "train", "val", "test", "train", "val"]
    frame.assign(split=["train", "test", "train", "test", "train", "train"]).to_csv(
        tmp_path / "labels.csv", index=False
    )
    result = _prepare("--run-dir", str(tmp_path / "bad"), *args)
    assert result.exit_code == 2 and "patient '10000032' is in two published splits" in (
        result.output.replace("\n", " ")
    )
    result = _prepare("--config", "chexpert", "--run-dir", str(tmp_path / "x"), "split.given=true")
    assert result.exit_code == 2 and "reads no published split" in result.output.replace("\n", " ")
    assert np.isin(m.frame["split"], ["train", "val", "test"]).all()
