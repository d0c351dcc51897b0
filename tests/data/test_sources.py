"""Relabelling a data set to a shared vocabulary and joining several (``trcgl.data.sources``),
on hand-worked rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trcgl.data.manifest import build_manifest
from trcgl.data.sources import join_sources, relabel, relabel_boxes
from trcgl.data.vocab import NIH_CLASSES, load_mapping
from trcgl.errors import DataError


def _manifest(classes, y, ids=("a.png", "b.png", "c.png")):
    records = pd.DataFrame({"image": list(ids), "image_id": list(ids), "patient_id": list(ids)})
    return build_manifest(records, np.array(y, dtype=float), tuple(classes))


def _table(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    path = tmp_path / "relabel.csv"
    pd.DataFrame(rows, columns=["finding", "class"]).to_csv(path, index=False)
    return path


def test_relabel_is_an_or_in_which_unknown_is_maybe(tmp_path):
    # Source classes x, y, z; shared A <- x, y; B <- z; C <- nothing; y also counts for B.
    m = _manifest("xyz", [[0, np.nan, 1], [0, 0, 0], [1, np.nan, np.nan]])
    table = _table(tmp_path, [("x", "A"), ("y", "A"), ("y", "B"), ("z", "B")])
    out, unmapped = relabel(m, ("A", "B", "C"), load_mapping(table, ("A", "B", "C")), Path("l.csv"))
    values = out.label_values()
    # image a: A = max(0, ?) = unknown, B = max(?, 1) = 1; b: all known 0; c: A = 1, B = unknown
    np.testing.assert_array_equal(values[:, 0], [np.nan, 0, 1])
    np.testing.assert_array_equal(values[:, 1], [1, 0, np.nan])
    assert np.isnan(values[:, 2]).all()  # C: the data set does not label it
    assert unmapped == [] and out.classes == ("A", "B", "C")


def test_classes_left_out_and_the_errors_of_classes_that_do_not_map(tmp_path):
    m = _manifest("xy", [[1, 0], [0, 1], [0, 0]])
    table = _table(tmp_path, [("x", "A"), ("y", "")])
    out, unmapped = relabel(m, ("A",), load_mapping(table, ("A",)), Path("l.csv"))
    assert unmapped == ["y"] and out.labels()[:, 0].tolist() == [1, 0, 0]
    # without a table, a class not in the shared vocabulary names the label file and column
    with pytest.raises(DataError, match="class 'y' is not in the shared vocabulary") as e:
        relabel(m, ("x", "A"), None, Path("labels.csv"))
    assert (e.value.path, e.value.column) == ("labels.csv", "y")
    # a class absent from the table
    table = _table(tmp_path, [("x", "A")])
    with pytest.raises(DataError, match="class 'y' of the data set is not in relabel table"):
        relabel(m, ("A",), load_mapping(table, ("A",)), Path("l.csv"))
    # a table row naming a class the data set does not have: its row and value
    table = _table(tmp_path, [("x", "A"), ("y", "A"), ("w", "A")])
    with pytest.raises(DataError, match="names 'w'") as e:
        relabel(m, ("A",), load_mapping(table, ("A",)), Path("l.csv"))
    assert (e.value.path, e.value.row, e.value.column) == (str(table), 3, "finding")
    # a table row naming a class outside the shared vocabulary: its row, column and value
    table = _table(tmp_path, [("x", "A"), ("y", "Q")])
    with pytest.raises(DataError, match="unknown class 'Q'") as e:
        load_mapping(table, ("A",))
    assert (e.value.row, e.value.column) == (2, "class")


def test_the_shipped_chexpert_table_maps_into_nih15():
    mapping = load_mapping("chexpert_to_nih15_v1.csv", NIH_CLASSES)
    assert mapping.classes_of("Pleural Effusion") == ("Effusion",)
    assert mapping.classes_of("Support Devices") == ()
    assert len(mapping.targets) == 14


def test_join_prefixes_ids_and_paths_and_keeps_each_split():
    a = _manifest("A", [[1], [0], [np.nan]])
    a.frame["split"] = ["train", "val", "train"]
    b = _manifest("A", [[0], [1], [1]])
    b.frame["split"] = ["val", "train", "train"]
    joined = join_sources([("nih", a), ("chexpert", b)])
    frame = joined.frame
    assert frame["dataset"].tolist() == ["nih"] * 3 + ["chexpert"] * 3
    assert frame["image"].tolist()[3] == "chexpert/a.png"
    assert (
        frame["image_id"].tolist()[0] == "nih:a.png"
        and frame["patient_id"].iloc[3] == "chexpert:a.png"
    )
    assert frame["image_id"].is_unique and frame["split"].tolist()[3] == "val"
    assert np.isnan(joined.label_values()[2, 0])
    boxes = pd.DataFrame(
        {"image_id": ["a.png"], "class": ["x"], "x0": [0.1], "y0": [0.1], "x1": [0.5], "y1": [0.5]}
    )
    out = relabel_boxes(boxes, {"x": ("A", "B")}, "nih")
    assert out[["image_id", "class"]].values.tolist() == [["nih:a.png", "A"], ["nih:a.png", "B"]]
