"""Several data sets in one run (``data.sources``): the vendored NIH sample and a CheXpert-layout
stand-in (real CheXpert label rows, with NIH sample images saved into CheXpert's folder layout)
prepared, trained on CPU with the unknown labels masked, and evaluated per data set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import average_precision_score

from tests.conftest import TINY_TRAIN, chexpert_standin, invoke
from trcgl.data.manifest import Manifest
from trcgl.data.vocab import NIH_CLASSES

pytestmark = pytest.mark.filterwarnings("ignore:.*holds no synthetic images")


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory, nih_sample) -> tuple[Path, Path]:
    """A config with two sources, and the folder it lives in."""
    root = tmp_path_factory.mktemp("sources")
    entries = pd.read_csv(nih_sample / "Data_Entry_sample.csv", dtype=str)
    entries.head(120).to_csv(root / "nih.csv", index=False)
    chexpert_csv, chexpert_images = chexpert_standin(root, nih_sample, 80)
    config = {
        "name": "two-sources",
        "data": {
            "vocabulary": "nih15",
            "sources": [
                {
                    "name": "nih",
                    "format": "nih",
                    "labels_csv": str(root / "nih.csv"),
                    "image_root": str(nih_sample / "images"),
                    "projections": ["PA", "AP"],
                },
                {
                    "name": "chexpert",
                    "format": "chexpert",
                    "labels_csv": str(chexpert_csv),
                    "image_root": str(chexpert_images),
                    "relabel": "chexpert_to_nih15_v1.csv",
                    "uncertain": "ignore",
                    "blank": "zero",
                    "projections": ["PA", "AP"],
                },
            ],
        },
        "groups": {"mode": "quantile", "head": 0.6, "tail": 0.4},
        "diffusion": {"enabled": False},
    }
    path = root / "two.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, root


@pytest.fixture(scope="module")
def prepared_two(two_sources) -> Path:
    config, root = two_sources
    run = root / "run"
    result = invoke("prepare", "-c", str(config), "--run-dir", str(run), *TINY_TRAIN)
    assert result.exit_code == 0, result.output
    return run


def test_prepare_joins_the_sources_with_unknown_labels(prepared_two, two_sources):
    _, root = two_sources
    m = Manifest.load(prepared_two / "manifest.parquet")
    frame = m.frame
    assert m.classes == NIH_CLASSES
    assert (frame["dataset"] == "nih").sum() == 120 and (frame["dataset"] == "chexpert").sum() == 80
    chex = frame["dataset"] == "chexpert"
    assert frame.loc[chex, "image"].str.startswith("chexpert/CheXpert-v1.0-small/train/").all()
    assert frame.loc[chex, "patient_id"].str.startswith("chexpert:patient").all()
    assert frame["image_id"].is_unique
    # each data set is split on its own: both have train and validation images
    assert set(frame.loc[chex, "split"]) == {"train", "val"}
    assert set(frame.loc[~chex, "split"]) == {"train", "val"}
    known = m.known()
    # NIH labels every class; CheXpert never labels Infiltration, Mass, Nodule, ... (unknown)
    assert known[~chex.to_numpy()].all()
    for c in ("Infiltration", "Mass", "Nodule", "Emphysema", "Fibrosis", "Hernia"):
        assert not known[chex.to_numpy(), m.classes.index(c)].any(), c
    # an uncertain Effusion (Pleural Effusion -1) is unknown too, a positive one positive
    raw = pd.read_csv(root / "chexpert.csv")
    values = m.label_values()[chex.to_numpy(), m.classes.index("Effusion")]
    order = frame.loc[chex, "image_id"].str.removeprefix("chexpert:")
    cells = raw.set_index("Path").loc[order, "Pleural Effusion"].to_numpy()
    np.testing.assert_array_equal(np.isnan(values), cells == -1)
    np.testing.assert_array_equal(values == 1, cells == 1)
    info = json.loads((prepared_two / "label_stats.json").read_text())
    assert set(info["datasets"]) == {"nih", "chexpert"}
    assert "Support Devices" in info["datasets"]["chexpert"]["classes_left_out"]
    assert "Hernia" in info["datasets"]["chexpert"]["classes_not_labelled"]
    assert info["cache"]["written"] == 200
    assert (prepared_two / "cache" / "32" / "chexpert" / "CheXpert-v1.0-small").is_dir()


def test_train_on_both_and_evaluate_each(prepared_two, two_sources, tmp_path):
    config, _ = two_sources
    run = prepared_two
    result = invoke("train", "-c", str(config), "--run-dir", str(run), *TINY_TRAIN)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all({"val_mAP_nih", "val_mAP_chexpert"} <= set(r) for r in records)
    result = invoke("evaluate", "--run-dir", str(run), "--split", "val", "--bootstrap", "20")
    assert result.exit_code == 0, result.output
    assert "chexpert images" in result.output and "nih images" in result.output
    out = run / "evaluation" / "val"
    metrics = json.loads((out / "metrics.json").read_text())
    preds = pd.read_csv(out / "predictions.csv")
    m = Manifest.load(run / "manifest.parquet")
    val = m.frame[m.frame["split"] == "val"].reset_index(drop=True)
    for name in ("nih", "chexpert"):
        mine = (val["dataset"] == name).to_numpy()
        per_class = {r["class"]: r for r in metrics["datasets"][name]["per_class"]}
        assert metrics["datasets"][name]["images"] == mine.sum()
        aps = []
        for c in m.classes:
            truth = preds.loc[mine, f"label:{c}"]
            known = truth.notna().to_numpy()
            y = truth[known].astype(int)
            if y.any():
                ap = average_precision_score(y, preds.loc[mine, c][known])
                assert per_class[c]["ap"] == pytest.approx(ap, abs=1e-9), (name, c)
                aps.append(ap)
        assert metrics["datasets"][name]["summary"]["overall"]["mAP"] == pytest.approx(
            np.mean(aps), abs=1e-9
        )
    chex = per_class  # the last: CheXpert's, whose NIH-only classes are unknown
    assert chex["Hernia"]["n_pos"] == 0 and chex["Hernia"]["n_neg"] == 0
    assert "Per data set" in (out / "tables.md").read_text()


def test_the_generator_cache_reads_each_sources_own_images(prepared_two, two_sources):
    from trcgl.config import load_config
    from trcgl.data.cache import cached_relpath
    from trcgl.run_dir import RunDir
    from trcgl.stages.diffusion import _generator_cache

    config, _ = two_sources
    cfg = load_config(str(config), ["diffusion.image_size=16", "images.workers=1"])
    run = RunDir(prepared_two)
    data = run.training_data()
    rows = data.manifest.subset(split="train", source="real")
    root = _generator_cache(cfg, data, rows, run.label_stats(), False, prepared_two)
    assert root == data.cache_root.parent / "16"
    for image in rows.frame["image"]:
        assert (root / cached_relpath(image)).is_file(), image
    assert cfg.data.prompt_style() == "plain"


def test_a_source_whose_classes_do_not_map_stops_prepare(two_sources, tmp_path):
    config, root = two_sources
    tree = yaml.safe_load(config.read_text())
    del tree["data"]["sources"][1]["relabel"]  # CheXpert's own names, most not in nih15
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tree))
    run = tmp_path / "run"
    result = invoke("prepare", "-c", str(bad), "--run-dir", str(run), *TINY_TRAIN)
    assert result.exit_code == 2
    text = result.output.replace("\n", "")
    assert f"{root / 'chexpert.csv'}, column 'Enlarged Cardiomediastinum'" in text
    assert "not in the shared vocabulary" in text
    assert not run.exists()
