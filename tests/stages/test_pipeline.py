"""`trcgl run` and `trcgl demo`: every stage in one run directory, skipped when complete."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.conftest import TINY_DIFFUSION, invoke, two_processes
from trcgl.config import load_config
from trcgl.stages import diffusion as stage
from trcgl.stages.pipeline import run_pipeline


@pytest.fixture(scope="module")
def piped(prepared, tmp_path_factory):
    run, overrides = prepared
    copy = tmp_path_factory.mktemp("pipeline") / "run"
    shutil.copytree(run, copy)
    # two accumulated micro-batches of 2: the step that 2 processes with 2 each take
    args = [*overrides, *TINY_DIFFUSION, "diffusion.batch_size=2", "diffusion.grad_accumulation=2"]
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


def test_two_processes_run_every_stage_as_one_process_would(piped, tmp_path):
    """`torchrun --nproc_per_node 2 -m trcgl.cli run` (CPU, gloo) from an empty run directory,
    diffusion.batch_size=2 per process against the one-process run's 2 × 2 accumulated: the
    main process prepares the same manifest; the generator takes the same steps (DDP); the
    seeded sampling chunks, shared out, make the same images; the filter's classifier and the
    classifier train data-parallel; each record, log and model folder is written once."""
    from safetensors.torch import load_file

    from trcgl.data.manifest import Manifest
    from trcgl.run_dir import RunDir

    one, args, _ = piped
    two = tmp_path / "two"
    two_args = [*args, "diffusion.grad_accumulation=1"]
    result = two_processes("run", "-c", "nih-demo", "--run-dir", str(two), *two_args)
    out = result.stdout
    assert out.count("stages run: prepare, diffusion train") == 1  # one summary
    stages = ("prepare", "diffusion train", "diffusion sample", "diffusion filter", "train")
    lines = out.splitlines()
    for name in stages:
        assert sum(line.startswith(f"{name}: done in") for line in lines) == 1, name
    # prepare, on the main process: the one-process run's manifest, split and label graph
    pd.testing.assert_frame_equal(
        Manifest.load(two / "manifest.parquet").frame, Manifest.load(one / "manifest.parquet").frame
    )
    graphs = [load_file(str(r / "label_graph.safetensors")) for r in (one, two)]
    assert graphs[0].keys() == graphs[1].keys()
    assert all(torch.equal(graphs[0][k], graphs[1][k]) for k in graphs[0])
    assert RunDir(two).label_stats() == RunDir(one).label_stats()
    # the generator: the same steps as one process with the whole batch
    assert RunDir(two).record("diffusion train")["processes"] == 2

    def log(run):
        rows = (run / "diffusion" / "loss.jsonl").read_text().splitlines()
        return [(json.loads(r)["loss"], json.loads(r)["dropped"]) for r in rows]

    assert [d for _, d in log(two)] == [d for _, d in log(one)]
    assert [v for v, _ in log(two)] == pytest.approx([v for v, _ in log(one)], abs=1e-5)
    a, b = (load_file(str(r / "diffusion/generator/context.safetensors")) for r in (one, two))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    # sampling: the same plan and images (up to the generators' rounding)
    assert RunDir(two).record("diffusion sample")["processes"] == 2
    assert (two / "synthetic/plan.csv").read_bytes() == (one / "synthetic/plan.csv").read_bytes()
    names = sorted(p.name for p in (one / "synthetic/images").glob("*.png"))
    assert names == sorted(p.name for p in (two / "synthetic/images").glob("*.png"))
    for name in names:
        x, y = (np.asarray(Image.open(r / "synthetic/images" / name), int) for r in (one, two))
        assert np.abs(x - y).max() <= 1, name
    # the filter: its classifier trained once (one log line per epoch), every image decided,
    # the kept ones in the synthetic manifest, which the classifier then trained on
    cfg = load_config("nih-demo", two_args)
    epochs = cfg.train.warmup_epochs + cfg.diffusion.filter_epochs
    assert len((two / "filter_classifier/metrics.jsonl").read_text().splitlines()) == epochs
    summary = RunDir(two).record("diffusion filter")
    assert summary["made"] == len(names) == len(pd.read_csv(two / "synthetic/filter_report.csv"))
    kept = Manifest.load(two / "synthetic/manifest.parquet")
    assert (
        len(kept)
        == summary["kept"]
        == json.loads((two / "train.json").read_text())["synthetic_images"]
    )
    logged = (two / "metrics.jsonl").read_text().splitlines()
    assert len(logged) == cfg.train.warmup_epochs + cfg.train.epochs  # one line per epoch
    for name in stages:
        assert RunDir(two).is_complete(name), name
    assert RunDir(two).is_complete("evaluate val") and (two / "report.html").is_file()
    # a second run, again on two processes, finds everything complete
    again = two_processes("run", "-c", "nih-demo", "--run-dir", str(two), *two_args)
    assert again.stdout.count("stages run: report; skipped as complete: prepare") == 1


def test_a_misspelt_sampler_stops_the_run_before_any_work(prepared, tmp_path):
    from trcgl.errors import ConfigError

    _, overrides = prepared
    cfg = load_config("nih-demo", [*overrides, "diffusion.scheduler=DDIMSchedular"])
    with pytest.raises(ConfigError, match=r"did you mean 'DDIMScheduler'\?"):
        run_pipeline(cfg, tmp_path / "run", log=lambda line: None)
    assert not (tmp_path / "run").exists()
