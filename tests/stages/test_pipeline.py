"""`trcgl run` and `trcgl demo`: every stage in one run directory, skipped when complete."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import TINY_DIFFUSION, invoke
from trcgl.config import load_config
from trcgl.stages import diffusion as stage
from trcgl.stages.pipeline import run_pipeline


@pytest.fixture(scope="module")
def piped(prepared, tmp_path_factory):
    run, overrides = prepared
    copy = tmp_path_factory.mktemp("pipeline") / "run"
    shutil.copytree(run, copy)
    args = [*overrides, *TINY_DIFFUSION]
    result = invoke("run", "-c", "nih-demo", "--run-dir", str(copy), *args)
    assert result.exit_code == 0, result.output
    return copy, args, result.output


def test_run_makes_every_output(piped):
    run, _, output = piped
    for path in (
        "diffusion/generator/context.safetensors",
        "synthetic/manifest.parquet",
        "synthetic/samples.png",
        "model/config.json",
        "evaluation/val/metrics.json",
        "report.html",
    ):
        assert (run / path).is_file(), path
    summary = json.loads((run / "synthetic" / "summary.json").read_text())
    trained = json.loads((run / "train.json").read_text())
    assert trained["synthetic_images"] == summary["kept"] >= 1
    assert "overall" in output and "report:" in output and "synthetic images:" in output
    assert "diffusion filter: done" in output


def test_second_run_skips_every_complete_stage(piped, tmp_path):
    run, args, _ = piped
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = run_pipeline(load_config("nih-demo", args), copy, log=lambda line: None)
    assert result.ran == ["report"]
    assert result.skipped == [
        "prepare",
        "diffusion train",
        "diffusion sample",
        "diffusion filter",
        "train",
        "evaluate",
    ]


def test_killed_training_resumes_and_new_synthetic_images_retrain(piped, tmp_path):
    run, args, _ = piped
    cfg = load_config("nih-demo", args)
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "train.json").unlink()  # as if killed after its last checkpoint
    result = run_pipeline(cfg, copy, log=lambda line: None)
    assert result.ran == ["train", "evaluate", "report"]
    assert (copy / "checkpoints").is_dir()
    # The filter is run again: the classifier trained on the old rows is replaced.
    stage.filter_stage(cfg, copy, force=True, progress=False)
    result = run_pipeline(cfg, copy, log=lambda line: None)
    assert result.ran == ["train", "evaluate", "report"]
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == cfg.train.warmup_epochs + cfg.train.epochs  # trained afresh


def test_run_without_diffusion_trains_on_real_images(prepared, tmp_path):
    run, overrides = prepared
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = load_config("nih-demo", [*overrides, "diffusion.enabled=false"])
    result = run_pipeline(cfg, copy, log=lambda line: None)
    assert not (copy / "synthetic").exists() and not (copy / "diffusion").exists()
    assert json.loads((copy / "train.json").read_text())["synthetic_images"] == 0
    assert result.report is not None and result.report.is_file()


def test_training_without_synthetic_images_says_so(prepared):
    from trcgl.stages.train import trainer_for_run

    run, overrides = prepared
    with pytest.warns(UserWarning, match="holds no synthetic images"):
        trainer = trainer_for_run(load_config("nih-demo", overrides), run, progress=False)
    assert not trainer.synthetic and not trainer.is_synthetic.any()


def test_run_refuses_several_processes(prepared, monkeypatch):
    from trcgl.errors import ConfigError

    run, overrides = prepared
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="accelerate launch"):
        run_pipeline(load_config("nih-demo", overrides), run, log=lambda line: None)


def test_a_misspelt_sampler_stops_the_run_before_any_work(prepared, tmp_path):
    from trcgl.errors import ConfigError

    _, overrides = prepared
    cfg = load_config("nih-demo", [*overrides, "diffusion.scheduler=DDIMSchedular"])
    with pytest.raises(ConfigError, match=r"did you mean 'DDIMScheduler'\?"):
        run_pipeline(cfg, tmp_path / "run", log=lambda line: None)
    assert not (tmp_path / "run").exists()
