"""Synthetic rows in the manifest (w_syn, docs/method.md §1) and the Fig. 3 sample grid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from trcgl.data.dataset import ManifestDataset
from trcgl.data.manifest import Manifest
from trcgl.data.transforms import build_transform
from trcgl.diffusion.planner import plan_synthesis
from trcgl.diffusion.synthetic import append_synthetic
from trcgl.errors import ConfigError, DataError
from trcgl.evaluation.figures import plot_class_grid, plot_grid

CLASSES = ("Normal", "Pneumothorax", "Hernia")


def _manifest(with_localizations: bool = False) -> Manifest:
    frame = pd.DataFrame(
        {
            "image": ["a.png", "b.png", "c.png", "d.png"],
            "image_id": ["a", "b", "c", "d"],
            "patient_id": ["1", "2", "3", "3"],
            "view": ["PA", "AP", "PA", "PA"],
            "split": ["train", "train", "train", "val"],
            "source": "real",
            "weight": 1.0,
            "Normal": np.array([1, 0, 0, 0], np.uint8),
            "Pneumothorax": np.array([0, 1, 1, 1], np.uint8),
            "Hernia": np.array([0, 1, 0, 0], np.uint8),
        }
    )
    if with_localizations:
        frame.insert(7, "localizations", ["[]", "[['pneumothorax', 'loc left']]", "", ""])
        frame.insert(8, "report", ["Normal.", "Left pneumothorax. Hernia.", "", "Pneumothorax."])
    return Manifest(frame, CLASSES)


def _write_pngs(folder, n: int) -> list[str]:
    paths = []
    for i in range(n):
        path = folder / f"syn_{i}.png"
        Image.fromarray(np.full((16, 16), 30 * i, np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("with_localizations", [False, True])
def test_rows_appended(tmp_path, with_localizations):
    manifest = _manifest(with_localizations)
    plan = plan_synthesis(manifest, ["Hernia", "Pneumothorax"], target=4, dataset="plain")
    kept = plan.iloc[[0, 2, 4]]
    paths = _write_pngs(tmp_path, 3)
    out = append_synthetic(manifest, kept, paths, w_syn=0.5)

    assert len(out) == 4 + 3
    assert out.classes == CLASSES
    real = out.frame.iloc[:4]
    before = manifest.frame
    pd.testing.assert_frame_equal(real[before.columns], before)
    assert real["prompt"].isna().all()

    syn = out.frame.iloc[4:].reset_index(drop=True)
    assert (syn["source"] == "synthetic").all() and (syn["split"] == "train").all()
    assert (syn["weight"] == 0.5).all()
    assert syn["patient_id"].tolist() == ["synthetic0", "synthetic1", "synthetic2"]
    assert not set(syn["patient_id"]) & set(before["patient_id"])
    assert syn["image"].tolist() == paths
    assert syn["image_id"].tolist() == ["syn_0.png", "syn_1.png", "syn_2.png"]
    assert syn["prompt"].tolist() == kept["prompt"].tolist()
    assert syn["view"].tolist() == kept["view"].tolist()
    np.testing.assert_array_equal(syn[list(CLASSES)].to_numpy(), kept[list(CLASSES)].to_numpy())
    assert (out.frame[list(CLASSES)].dtypes == np.float32).all()  # 1 / 0 / NaN (unknown)
    if with_localizations:
        assert syn["localizations"].isna().all() and syn["report"].isna().all()

    # the file round-trips, and a second append continues the patient numbering
    out.save(tmp_path / "m.parquet")
    again = Manifest.load(tmp_path / "m.parquet")
    more = append_synthetic(again, plan.iloc[[1]], [str(tmp_path / "x.png")], w_syn=0.25)
    assert more.frame["patient_id"].iloc[-1] == "synthetic3"
    assert more.frame["weight"].iloc[-1] == 0.25
    assert more.frame["prompt"].iloc[4:7].tolist() == kept["prompt"].tolist()


def test_dataset_reads_synthetic_weights(tmp_path):
    manifest = _manifest()
    for name in ("a", "b", "c", "d"):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / f"{name}.png")
    plan = plan_synthesis(manifest, ["Hernia"], target=3, dataset="plain")
    out = append_synthetic(manifest, plan, _write_pngs(tmp_path, len(plan)), w_syn=0.5)
    data = ManifestDataset(out, CLASSES, tmp_path, build_transform(8, False), split="train")
    weights = data.weights()
    assert weights.tolist() == [1.0, 1.0, 1.0, 0.5, 0.5]
    item = data[4]
    assert float(item["weight"]) == 0.5
    assert item["labels"].tolist() == [0.0, 1.0, 1.0]  # the source's whole label set
    assert tuple(item["image"].shape) == (3, 8, 8)


def test_append_nothing_and_errors(tmp_path):
    manifest = _manifest()
    plan = plan_synthesis(manifest, ["Hernia"], target=3, dataset="plain")
    empty = append_synthetic(manifest, plan.iloc[:0], [])
    assert len(empty) == len(manifest)
    with pytest.raises(DataError):
        append_synthetic(manifest, plan, ["one.png"])
    with pytest.raises(ConfigError):
        append_synthetic(manifest, plan, ["x.png", "y.png"], w_syn=-1.0)
    with pytest.raises(DataError, match="clash"):
        append_synthetic(manifest, plan, ["x.png", "y.png"], image_ids=["z", "z"])
    with pytest.raises(DataError, match="clash"):
        append_synthetic(manifest, plan, ["x.png", "y.png"], image_ids=["a", "z"])
    with pytest.raises(DataError, match="lack"):
        append_synthetic(manifest, plan.drop(columns="prompt"), ["x.png", "y.png"])


def test_plot_grid(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(5)]
    path = tmp_path / "figures" / "grid.png"
    plot_grid(images, [f"class {i}" for i in range(5)], path, columns=3, title="samples")
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temporary left
    grid = tmp_path / "fig3.png"
    plot_class_grid(images, ["Hernia", "Edema", "Hernia", "Hernia", "Edema"], grid, per_class=2)
    assert grid.is_file()
    with pytest.raises(DataError):
        plot_grid(images, ["one"], tmp_path / "bad.png")


def test_an_unknown_label_of_the_source_stays_unknown(tmp_path):
    manifest = _manifest()
    manifest.frame.loc[1, "Normal"] = np.nan  # b: Normal unknown (b carries Hernia)
    plan = plan_synthesis(manifest, ["Hernia"], target=3, dataset="plain")
    assert len(plan) == 2 and plan["Normal"].isna().all()
    out = append_synthetic(manifest, plan, _write_pngs(tmp_path, 2), w_syn=0.5)
    assert not out.known()[4:, 0].any() and out.known()[4:, 1:].all()
