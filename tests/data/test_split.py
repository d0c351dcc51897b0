from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trcgl.data.manifest import Manifest, build_manifest
from trcgl.data.split import patient_labels, split_patients
from trcgl.errors import ConfigError


@pytest.fixture(scope="module")
def padchest_split(padchest):
    return split_patients(padchest.manifest, 0.2, 0.0, seed=0)


def _assert_patient_level(manifest: Manifest) -> None:
    per_patient = manifest.frame.groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all(), "a patient is in two splits"


def test_real_padchest_split_is_patient_level_and_covers_every_class(padchest_split):
    m = padchest_split
    _assert_patient_level(m)
    frame = m.frame
    assert set(frame["split"]) == {"train", "val"}
    patients, y = patient_labels(m)
    split_of = frame.groupby("patient_id")["split"].first().reindex(patients).to_numpy()
    val_share = (split_of == "val").mean()
    assert abs(val_share - 0.2) < 0.002
    for j, cls in enumerate(m.classes):
        carriers = split_of[y[:, j] == 1]
        if len(carriers) >= 2:
            assert {"train", "val"} <= set(carriers), cls
    # stratification: each class's validation share of patients stays near 20 %
    shares = [(split_of[y[:, j] == 1] == "val").mean() for j in range(y.shape[1])]
    assert max(abs(s - 0.2) for s in shares) < 0.05


def test_split_is_deterministic_and_seeded(padchest, padchest_split):
    again = split_patients(padchest.manifest, 0.2, 0.0, seed=0)
    assert (again.frame["split"] == padchest_split.frame["split"]).all()
    other = split_patients(padchest.manifest, 0.2, 0.0, seed=1)
    assert (other.frame["split"] != padchest_split.frame["split"]).any()


def test_three_way_split_and_rare_class_repair():
    # 40 patients; class "rare" has exactly 3 patients, class "two" exactly 2
    rng = np.random.default_rng(3)
    n = 120
    records = pd.DataFrame(
        {
            "image": [f"{i}.png" for i in range(n)],
            "image_id": [f"{i}.png" for i in range(n)],
            "patient_id": [f"p{i % 40}" for i in range(n)],
        }
    )
    y = (rng.random((n, 3)) < [0.5, 0, 0]).astype(np.uint8)
    y[[0, 1, 2], 1] = 1  # patients p0, p1, p2 carry "rare"
    y[[3, 44], 2] = 1  # patients p3, p4 carry "two"
    m = build_manifest(records, y, ("common", "rare", "two"))
    for seed in range(5):
        out = split_patients(m, 0.2, 0.2, seed=seed)
        _assert_patient_level(out)
        frame = out.frame
        assert set(frame["split"]) == {"train", "val", "test"}
        assert set(frame.loc[frame["rare"] == 1, "split"]) == {"train", "val", "test"}
        assert len(set(frame.loc[frame["two"] == 1, "split"])) == 2


def test_synthetic_rows_always_train(nih_sample):
    from trcgl.data.readers import read_nih

    m = read_nih(nih_sample / "Data_Entry_sample.csv").manifest
    frame = m.frame.copy()
    frame.loc[:9, "source"] = "synthetic"
    out = split_patients(Manifest(frame, m.classes), 0.25)
    assert (out.frame.loc[:9, "split"] == "train").all()
    _assert_patient_level(out.subset(source="real"))


def test_bad_fractions():
    m = build_manifest(
        pd.DataFrame({"image": ["a"], "image_id": ["a"], "patient_id": ["p"]}),
        np.zeros((1, 1)),
        ("x",),
    )
    with pytest.raises(ConfigError):
        split_patients(m, 0.0)
    with pytest.raises(ConfigError):
        split_patients(m, 0.6, 0.5)


def test_patients_are_stratified_on_their_known_positives():
    records = pd.DataFrame(
        {
            "image": [f"{i}.png" for i in range(4)],
            "image_id": [f"{i}.png" for i in range(4)],
            "patient_id": ["p1", "p1", "p2", "p3"],
        }
    )
    y = np.array([[np.nan, 0], [0, 1], [np.nan, np.nan], [1, np.nan]])
    patients, union = patient_labels(build_manifest(records, y, ("a", "b")))
    assert patients.tolist() == ["p1", "p2", "p3"]
    # an unknown cell is no positive: p1 carries only b, p2 nothing, p3 only a
    assert union.tolist() == [[0, 1], [0, 0], [1, 0]]


def test_the_repair_counts_known_carriers_only():
    # "rare" is known positive for 2 patients and unknown for 10 more: with two carriers the
    # repair puts one in train and one in val; the unknown ones do not count as carriers.
    n = 40
    records = pd.DataFrame(
        {
            "image": [f"{i}.png" for i in range(n)],
            "image_id": [f"{i}.png" for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
        }
    )
    y = np.zeros((n, 2))
    y[::2, 0] = 1
    y[[5, 6], 1] = 1
    y[10:20, 1] = np.nan
    for seed in range(4):
        out = split_patients(build_manifest(records, y, ("common", "rare")), 0.2, seed=seed)
        frame = out.frame
        assert sorted(frame.loc[frame["rare"] == 1, "split"]) == ["train", "val"]
