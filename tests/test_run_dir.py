"""Run directories work from any working directory, with a relative ``--run-dir``, and after
being moved: every path a run records is stored relative to it (``trcgl.run_dir``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import TINY_DIFFUSION, invoke
from trcgl.run_dir import RunDir


def test_store_is_relative_inside_and_absolute_outside(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = RunDir("runs/a")
    assert run.root == tmp_path / "runs" / "a"
    assert run.store("runs/a/cache/128") == "cache/128"
    assert run.store(tmp_path / "runs" / "a" / "model") == "model"
    assert run.store("/data/images") == "/data/images"
    assert run.store("elsewhere/cache") == str(tmp_path / "elsewhere" / "cache")


def test_resolve_reads_records_of_runs_given_relative_or_moved(tmp_path):
    (tmp_path / "moved" / "cache" / "128").mkdir(parents=True)
    run = RunDir(tmp_path / "moved")
    assert run.resolve("cache/128") == tmp_path / "moved" / "cache" / "128"
    # older records stored the cache as the run directory was given ("runs/demo/cache/128")
    assert run.resolve("runs/moved/cache/128") == tmp_path / "moved" / "cache" / "128"
    # an absolute cache that is gone: the run's own cache of that size, when it has one
    info = {"cache": {"root": "/nowhere/runs/demo/cache/128", "size": 128}}
    assert run.cache_root(info) == tmp_path / "moved" / "cache" / "128"
    assert run.cache_root({"cache": None}) is None


def test_a_stage_is_complete_while_the_records_it_names_are_unchanged(tmp_path):
    run = RunDir(tmp_path)
    assert not run.is_complete("prepare") and run.record("prepare") is None
    prepared = run.write_record("prepare", {"config_digest": "abc"}, started=0.0)
    assert json.loads((tmp_path / "prepare.json").read_text()) == prepared
    assert prepared["stage"] == "prepare" and prepared["inputs"] == {}
    generator = run.write_record("diffusion train", {"images": 3})
    assert generator["inputs"] == {"prepare": prepared["id"]}  # STAGE_INPUTS by default
    samples = run.write_record("diffusion sample", {"made": 5})
    assert (tmp_path / "synthetic" / "sample.json").is_file()
    assert run.is_complete("diffusion train") and run.is_complete("diffusion sample")
    run.write_record("diffusion train", {"images": 3})  # the generator made again
    assert run.is_complete("diffusion train") and not run.is_complete("diffusion sample")
    assert run.record("diffusion sample") == samples  # stale, not removed
    # An evaluation names the training record it evaluated, in its own metrics.json.
    trained = run.write_record("train", {"best_epoch": 1}, inputs=())
    run.write_record("evaluate val", {"summary": {}}, inputs=("train",))
    assert run.record("evaluate val")["inputs"] == {"train": trained["id"]}
    assert (tmp_path / "evaluation" / "val" / "metrics.json").is_file()
    assert run.is_complete("evaluate val")
    run.write_record("train", {"best_epoch": 2}, inputs=())
    assert not run.is_complete("evaluate val")
    with pytest.raises(KeyError, match="no stage 'sampling'"):
        run.record("sampling")


def test_records_of_older_versions_are_read(tmp_path):
    """Before ``inputs``: diffusion records named their one input under ``upstream``; prepare,
    train and evaluate wrote no ids."""
    run = RunDir(tmp_path)
    (tmp_path / "prepare.json").write_text(json.dumps({"stage": "prepare"}))
    (tmp_path / "diffusion").mkdir()
    (tmp_path / "diffusion" / "stage.json").write_text(json.dumps({"id": "g1", "upstream": None}))
    (tmp_path / "synthetic").mkdir()
    sample = {"id": "s1", "upstream": "g1"}
    (tmp_path / "synthetic" / "sample.json").write_text(json.dumps(sample))
    (tmp_path / "train.json").write_text(json.dumps({"best_epoch": 1}))
    (tmp_path / "evaluation" / "val").mkdir(parents=True)
    (tmp_path / "evaluation" / "val" / "metrics.json").write_text(json.dumps({"summary": {}}))
    assert all(
        run.is_complete(s) for s in ("prepare", "diffusion train", "diffusion sample", "train")
    )
    assert run.is_complete("evaluate val")
    (tmp_path / "synthetic" / "sample.json").write_text(json.dumps({**sample, "upstream": "g0"}))
    assert not run.is_complete("diffusion sample")
    run.write_record("prepare", {})  # prepared again by this version: the generator is stale
    assert not run.is_complete("diffusion train")


@pytest.fixture(scope="module")
def relative_run(prepared, tmp_path_factory):
    """``trcgl run`` with a relative ``--run-dir`` from a working directory of its own."""
    _, overrides = prepared
    cwd = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        result = invoke(
            "run", "-c", "nih-demo", "--run-dir", "runs/rel", *overrides, *TINY_DIFFUSION
        )
    assert result.exit_code == 0, result.output
    return cwd, cwd / "runs" / "rel", [*overrides, *TINY_DIFFUSION], result.output


def test_relative_run_dir_trains_on_kept_synthetic_images(relative_run):
    _, run, _, output = relative_run
    info = json.loads((run / "label_stats.json").read_text())
    assert info["cache"]["root"] == "cache/32"  # relative to the run directory
    summary = json.loads((run / "synthetic" / "summary.json").read_text())
    trained = json.loads((run / "train.json").read_text())
    assert summary["kept"] >= 1
    assert trained["synthetic_images"] == summary["kept"]
    stage = json.loads((run / "diffusion" / "stage.json").read_text())
    assert stage["generator"] == "diffusion/generator"
    assert "report:" in output


def test_moved_run_evaluates_reports_and_resumes_from_another_cwd(
    relative_run, tmp_path, monkeypatch
):
    cwd, run, args, _ = relative_run
    copy = cwd / "copy-src"
    shutil.copytree(run, copy)
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(str(copy), str(moved))  # as `mv`: the original path no longer exists
    assert not copy.exists()
    other = tmp_path / "other-cwd"
    other.mkdir()
    monkeypatch.chdir(other)

    data = RunDir(moved).training_data(synthetic=True)
    assert data.cache_root == moved / "cache" / "32"
    syn = data.dataset("train", train=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    first_synthetic = int(data.is_synthetic("train").argmax())
    assert data.is_synthetic("train").any()
    assert syn[first_synthetic]["image"].shape == (3, 32, 32)  # read from the moved run

    result = invoke("evaluate", "--run-dir", "../elsewhere/renamed")
    assert result.exit_code == 0, result.output
    metrics = json.loads((moved / "evaluation" / "val" / "metrics.json").read_text())
    assert metrics["model"] == "model"
    result = invoke("report", "--run-dir", str(moved))
    assert result.exit_code == 0, result.output
    html = (moved / "report.html").read_text()
    assert "No image cache" not in html and "data:image/png" in html

    # killed after its last checkpoint: the same command finishes it in the moved folder
    (moved / "train.json").unlink()
    lines = len((moved / "metrics.jsonl").read_text().splitlines())
    result = invoke("run", "-c", "nih-demo", "--run-dir", str(moved), *args)
    assert result.exit_code == 0, result.output
    assert "train: done" in result.output and "diffusion train: done" not in result.output
    assert len((moved / "metrics.jsonl").read_text().splitlines()) == lines  # nothing redone
    trained = json.loads((moved / "train.json").read_text())
    assert trained["synthetic_images"] >= 1


def test_progress_is_plain_lines_when_output_is_not_a_terminal(relative_run):
    *_, output = relative_run
    lines = output.splitlines()
    assert any(line.startswith("classifier: device cpu, precision no, 1 process") for line in lines)
    assert any(line.startswith("generator training: device cpu") for line in lines)
    assert any(line.startswith("generator (Eq. 3): 4/4 steps (100 %), loss ") for line in lines)
    assert any(line.startswith("sampling (Eq. 4–6): chunk 1/1, ") for line in lines)
    epochs = [line for line in lines if line.startswith("epoch ") and "val mAP" in line]
    # the filter's classifier (1 + 1 epochs) and the classifier (1 + 2 epochs)
    assert [e.split(":")[0] for e in epochs] == [
        "epoch 1/2 (stage 1)",
        "epoch 2/2 (stage 2)",
        "epoch 1/3 (stage 1)",
        "epoch 2/3 (stage 2)",
        "epoch 3/3 (stage 2)",
    ]


def test_synthetic_paths_never_join_the_cache_root(relative_run, monkeypatch):
    cwd, _, _, _ = relative_run
    monkeypatch.chdir(cwd)
    data = RunDir("runs/rel").training_data(synthetic=True)
    rows = data.dataset("train", train=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    is_syn = data.is_synthetic("train")
    paths = [p for p, s in zip(rows._paths, is_syn, strict=True) if s]
    assert paths and all(Path(p).is_absolute() and Path(p).is_file() for p in paths)
