"""``trcgl prepare`` end to end on real data: the vendored NIH sample and the PadChest CSV."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import invoke
from trcgl.data.manifest import Manifest
from trcgl.data.readers import read_nih
from trcgl.labels.graph import LabelGraph


def _prepare(*args: str):
    return invoke("prepare", *args)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "demo"
    result = _prepare("--config", "nih-demo", "--run-dir", str(run), "images.size=64")
    assert result.exit_code == 0, result.output
    return run


def test_demo_prepare_writes_a_complete_run_directory(demo_run, nih_sample):
    for name in [
        "config.yaml",
        "manifest.parquet",
        "label_stats.csv",
        "label_stats.json",
        "label_graph.safetensors",
        "figures/label_statistics.png",
        "prepare.json",
    ]:
        assert (demo_run / name).is_file(), name
    m = Manifest.load(demo_run / "manifest.parquet")
    assert len(m) == 2279 and set(m.frame["split"]) == {"train", "val"}
    assert m.frame.groupby("patient_id")["split"].nunique().max() == 1
    graph = LabelGraph.load(demo_run / "label_graph.safetensors")
    assert graph.classes == m.classes
    # the graph is built from the training split only (Eq. 15)
    train = m.subset(split="train").labels().astype(float)
    np.testing.assert_array_equal(graph.cooccurrence, train.T @ train)
    stats = pd.read_csv(demo_run / "label_stats.csv")
    assert list(stats["class"]) == list(m.classes)
    assert stats["images_train"].sum() + stats["images_val"].sum() == m.labels().sum()
    info = json.loads((demo_run / "label_stats.json").read_text())
    assert sum(len(info["groups"][g]) for g in ("head", "medium", "tail")) == 15
    assert info["cache"]["written"] == 2279
    cached = list((demo_run / "cache" / "64").rglob("*.png"))
    assert len(cached) == 2279
    assert "images.size" not in (demo_run / "config.yaml").read_text()  # nested YAML
    assert "size: 64" in (demo_run / "config.yaml").read_text()
    assert not list(demo_run.rglob("*.tmp*"))


def test_second_run_skips_and_other_config_is_refused(demo_run):
    again = _prepare("--config", "nih-demo", "--run-dir", str(demo_run), "images.size=64")
    assert again.exit_code == 0 and "already prepared" in again.output
    other = _prepare(
        "--config", "nih-demo", "--run-dir", str(demo_run), "images.size=64", "split.seed=5"
    )
    assert other.exit_code == 2 and "another configuration" in other.output


def _plain_dataset(tmp_path: Path, nih_sample: Path, n: int = 24) -> tuple[Path, Path]:
    entries = read_nih(nih_sample / "Data_Entry_sample.csv").manifest.frame.head(n)
    images = tmp_path / "images"
    images.mkdir()
    for name in entries["image"]:
        shutil.copy(nih_sample / "images" / name, images / name)
    csv = tmp_path / "labels.csv"
    pd.DataFrame(
        {
            "image": entries["image"],
            "patient_id": entries["patient_id"],
            "labels": ["A" if i % 3 else "B" for i in range(n)],
        }
    ).to_csv(csv, index=False)
    return csv, images


def _plain_args(csv: Path, images: Path, run: Path, *extra: str) -> list[str]:
    return [
        "--config",
        "nih-demo",
        "--run-dir",
        str(run),
        "data.format=plain",
        f"data.labels_csv={csv}",
        f"data.image_root={images}",
        "data.classes=[A, B]",
        "data.vocabulary=null",
        "images.size=32",
        "images.workers=1",
        *extra,
    ]


def test_bad_csv_leaves_nothing_behind(tmp_path, nih_sample):
    csv, images = _plain_dataset(tmp_path, nih_sample)
    frame = pd.read_csv(csv)
    frame.loc[5, "labels"] = "A|Z"
    frame.to_csv(csv, index=False)
    run = tmp_path / "run"
    result = _prepare(*_plain_args(csv, images, run))
    assert result.exit_code == 2
    assert f"{csv}, row 6, column 'labels'" in result.output.replace("\n", "")
    assert not run.exists()


def test_missing_image_is_named_or_skipped_and_listed(tmp_path, nih_sample):
    csv, images = _plain_dataset(tmp_path, nih_sample)
    victim = sorted(images.iterdir())[3]
    victim.unlink()
    run = tmp_path / "run"
    result = _prepare(*_plain_args(csv, images, run))
    assert result.exit_code == 2
    text = result.output.replace("\n", "")
    assert "row 4" in text and "column 'image'" in text and victim.name in text
    assert not run.exists()
    result = _prepare(*_plain_args(csv, images, run, "data.skip_corrupt=true"))
    assert result.exit_code == 0, result.output
    skipped = pd.read_csv(run / "skipped_images.csv")
    assert list(skipped["image"]) == [victim.name]
    assert victim.name not in set(Manifest.load(run / "manifest.parquet").frame["image"])


def test_corrupt_image_is_named_or_skipped_and_listed(tmp_path, nih_sample):
    csv, images = _plain_dataset(tmp_path, nih_sample)
    victim = sorted(images.iterdir())[7]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated PNG
    run = tmp_path / "run"
    result = _prepare(*_plain_args(csv, images, run))
    assert result.exit_code == 2 and victim.name in result.output.replace("\n", "")
    assert not (run / "manifest.parquet").exists()
    result = _prepare(*_plain_args(csv, images, run, "data.skip_corrupt=true"))
    assert result.exit_code == 0, result.output
    skipped = pd.read_csv(run / "skipped_images.csv")
    assert list(skipped["image"]) == [victim.name]
    assert len(Manifest.load(run / "manifest.parquet")) == 23


def test_padchest_preset_prepares_labels_only_from_the_installed_csv(tmp_path):
    run = tmp_path / "pc"
    result = _prepare("--config", "padchest", "--run-dir", str(run))
    assert result.exit_code == 0, result.output
    info = json.loads((run / "label_stats.json").read_text())
    assert info["labels_csv"].endswith("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")
    assert info["images"]["train"] + info["images"]["val"] == 158_787
    assert info["cache"] is None and not (run / "cache").exists()
    assert len(info["classes"]) == 30
    assert info["dropped"]["on an exclusion list"] == 21
    assert "COPD signs" in info["unmapped_findings"]
    assert "Hydropneumothorax" in result.output


def test_counts_groups_and_graph_skip_unknown_labels():
    from trcgl.config import load_config
    from trcgl.data.manifest import build_manifest
    from trcgl.data.readers import ReadResult
    from trcgl.stages.prepare import compute

    n = 60
    ids = [f"{i}.png" for i in range(n)]
    records = pd.DataFrame({"image": ids, "image_id": ids, "patient_id": ids})
    rng = np.random.default_rng(0)
    y = (rng.random((n, 3)) < [0.5, 0.3, 0.1]).astype(float)
    y[rng.random((n, 3)) < 0.3] = np.nan
    manifest = build_manifest(records, y, ("a", "b", "c"))
    result = ReadResult(manifest, Path("labels.csv"), np.arange(1, n + 1))
    config = load_config(
        None, ["data.format=plain", "data.labels_csv=x.csv", "data.classes=[a, b, c]"]
    )
    prepared = compute(config, result)
    frame = prepared.manifest.frame
    train = (frame["split"] == "train").to_numpy()
    positives = (y == 1)[prepared.manifest.frame.index.to_numpy()]
    np.testing.assert_array_equal(prepared.groups.counts, positives[train].sum(axis=0))
    stats = prepared.stats.set_index("class")
    assert stats["images_all"].tolist() == positives.sum(axis=0).tolist()
    assert stats["unknown_all"].tolist() == np.isnan(y).sum(axis=0).tolist()
    assert stats["unknown_train"].sum() + stats["unknown_val"].sum() == np.isnan(y).sum()
    q = positives[train].astype(float)
    np.testing.assert_array_equal(prepared.graph.cooccurrence, q.T @ q)
    assert prepared.info["unknown_labels"] == int(np.isnan(y).sum())


def test_a_run_prepared_before_keys_were_added_is_still_complete(demo_run, tmp_path):
    """A run prepared by an older trcgl: its config.yaml lacks keys added since (at their
    defaults, what that trcgl did) and its record holds the old digest. It is complete for
    the same configuration; a value that differs is still refused."""
    import yaml

    run = tmp_path / "old"
    shutil.copytree(demo_run, run)
    tree = yaml.safe_load((run / "config.yaml").read_text())
    for section, key in (("data", "aggregation"), ("data", "sources"), ("split", "given")):
        del tree[section][key]
    (run / "config.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    record = json.loads((run / "prepare.json").read_text())
    record["config_digest"] = "0123456789abcdef"
    (run / "prepare.json").write_text(json.dumps(record))
    again = _prepare("--config", "nih-demo", "--run-dir", str(run), "images.size=64")
    assert again.exit_code == 0 and "already prepared" in again.output, again.output
    other = _prepare(
        "--config", "nih-demo", "--run-dir", str(run), "images.size=64", "split.seed=5"
    )
    assert other.exit_code == 2 and "another configuration" in other.output
    # a key added since, set away from its default, is another preparation too
    other = _prepare(
        "--config", "nih-demo", "--run-dir", str(run), "images.size=64", "data.aggregation=any"
    )
    assert other.exit_code == 2 and "another configuration" in other.output
