"""The manifest: unknown label cells (NaN), the ``dataset`` column, and manifests written
before either existed."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trcgl.data.manifest import META_COLUMNS, Manifest, build_manifest
from trcgl.data.readers import read_nih
from trcgl.data.split import split_patients
from trcgl.errors import DataError

#: ``Manifest.digest()`` of the split NIH sample (val 0.2, test 0.1, seed 0), as the code gave it
#: before label cells could be unknown (uint8 label columns, no ``dataset`` column).
NIH_SAMPLE_DIGEST = "3192fcf0e405a64c64437e26b990ca8125993adfb8f411233bb4484164674eeb"


def _records(n: int) -> pd.DataFrame:
    ids = [f"{i}.png" for i in range(n)]
    return pd.DataFrame({"image": ids, "image_id": ids, "patient_id": [f"p{i}" for i in range(n)]})


def _old_digest(manifest: Manifest) -> str:
    """The digest as the code computed it with uint8 label columns (written out again)."""
    frame = manifest.frame.copy()
    frame[list(manifest.classes)] = frame[list(manifest.classes)].astype(np.uint8)
    columns = ["image_id", "patient_id", "split", "source", "weight", *manifest.classes]
    text = frame[columns].to_csv(index=False, float_format="%.9g", lineterminator="\n")
    return hashlib.sha256(text.encode()).hexdigest()


def test_an_all_known_manifest_keeps_its_digest(nih_sample):
    m = split_patients(read_nih(nih_sample / "Data_Entry_sample.csv").manifest, 0.2, 0.1, 0)
    assert m.known().all()
    assert m.digest() == _old_digest(m) == NIH_SAMPLE_DIGEST


def test_unknown_cells_are_nan_labels_gives_positives_known_says_which():
    y = np.array([[1, 0, np.nan], [np.nan, 1, 0], [0, 0, 1]])
    m = build_manifest(_records(3), y, ("a", "b", "c"))
    assert all(m.frame[c].dtype == np.float32 for c in m.classes)
    assert m.labels().tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert m.labels().dtype == np.uint8
    assert m.known().tolist() == [[True, True, False], [False, True, True], [True, True, True]]
    np.testing.assert_array_equal(m.label_values(), y.astype(np.float32))
    # an unknown cell is not a known 0: the digest tells them apart
    zero = build_manifest(_records(3), np.nan_to_num(y), ("a", "b", "c"))
    assert m.digest() != zero.digest()


def test_build_manifest_refuses_other_values():
    with pytest.raises(DataError, match="1, 0 or NaN") as err:
        build_manifest(_records(2), np.array([[1, 0], [-1, 0]]), ("a", "b"))
    assert err.value.column == "a"


def test_save_and_load_keep_unknown_cells_and_the_dataset(tmp_path):
    records = _records(2).assign(dataset=["chexpert", "nih"])
    m = build_manifest(records, np.array([[1, np.nan], [0, 1]]), ("a", "b"))
    m.save(tmp_path / "m.parquet")
    back = Manifest.load(tmp_path / "m.parquet")
    assert back.frame["dataset"].tolist() == ["chexpert", "nih"]
    np.testing.assert_array_equal(back.known(), m.known())
    assert back.digest() == m.digest()


def test_report_text_is_kept_and_left_out_of_the_digest(tmp_path):
    labels = np.array([[1, 0], [0, 1]])
    records = _records(2).assign(report=["Lungs are clear.", ""], localizations=["", "[]"])
    m = build_manifest(records, labels, ("a", "b"))
    assert list(m.frame.columns) == [*META_COLUMNS, "localizations", "report", "a", "b"]
    m.save(tmp_path / "m.parquet")
    back = Manifest.load(tmp_path / "m.parquet")
    assert back.frame["report"].tolist() == ["Lungs are clear.", ""]
    assert back.digest() == build_manifest(_records(2), labels, ("a", "b")).digest()


def test_a_manifest_written_before_unknown_cells_and_datasets_loads(tmp_path):
    # The layout of older manifests: uint8 label columns and no ``dataset`` column.
    frame = pd.DataFrame(
        {
            "image": ["a.png", "b.png"],
            "image_id": ["a.png", "b.png"],
            "patient_id": ["p1", "p2"],
            "view": ["PA", "AP"],
            "split": ["train", "val"],
            "source": ["real", "real"],
            "weight": np.ones(2, np.float32),
            "x": np.array([1, 0], np.uint8),
            "y": np.array([0, 1], np.uint8),
        }
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({b"trcgl.classes": json.dumps(["x", "y"]).encode()})
    pq.write_table(table, tmp_path / "old.parquet")
    m = Manifest.load(tmp_path / "old.parquet")
    assert m.frame["dataset"].tolist() == ["", ""]
    assert m.known().all() and m.labels().tolist() == [[1, 0], [0, 1]]
    assert m.digest() == _old_digest(m)


def test_subset_and_extended_keep_unknown_cells():
    m = build_manifest(_records(3), np.array([[1, np.nan], [0, 1], [np.nan, 0]]), ("a", "b"))
    more = m.frame.iloc[:1].assign(image_id="z.png").drop(columns="dataset")
    both = m.extended(more)
    assert len(both) == 4 and both.frame["dataset"].tolist() == [""] * 4
    assert both.known()[3].tolist() == [True, False]
    assert m.subset(source="real").known().sum() == 4
