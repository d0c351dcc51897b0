"""Experiment trackers through accelerate: MLflow on a local file store (with a killed and
resumed run logging into the same MLflow run), TensorBoard by default, clear errors."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

import trcgl.training.trainer as trainer_module
from tests.conftest import killed_after_checkpoint
from trcgl.config import load_config
from trcgl.errors import ConfigError
from trcgl.stages.train import train
from trcgl.training.trackers import flat_config


def test_flat_config_dots_the_sections_and_writes_lists_as_text():
    tree = {"train": {"head_lr": 1e-3, "log_with": ["tensorboard"], "x": None}, "name": "n"}
    assert flat_config(tree) == {
        "train.head_lr": 1e-3,
        "train.log_with": '["tensorboard"]',
        "train.x": "null",
        "name": "n",
    }


def test_unknown_or_missing_trackers_are_config_errors():
    with pytest.raises(ConfigError, match="unknown tracker 'comet'"):
        load_config("nih-demo", ["train.log_with=[comet]"])
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ConfigError, match=r"pip install 'trcgl\[wandb\]'"):
            load_config("nih-demo", ["train.log_with=[tensorboard, wandb]"])


def test_mlflow_file_store_gets_every_epoch_and_a_resumed_run_continues_it(
    prepared, tmp_path, monkeypatch
):
    mlflow = pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it
    mlflow.set_tracking_uri(store.as_uri())
    source, overrides = prepared
    run = tmp_path / "run"
    shutil.copytree(source, run)
    cfg = load_config(
        "nih-demo", [*overrides, "diffusion.enabled=false", "train.log_with=[tensorboard, mlflow]"]
    )
    with killed_after_checkpoint(monkeypatch, trainer_module, "save_checkpoint", at=1):
        train(cfg, run, progress=False)
    train(cfg, run, progress=False)

    client = mlflow.tracking.MlflowClient(store.as_uri())
    experiment = client.get_experiment_by_name(cfg.name)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # the resumed training logged into the same MLflow run
    logged = runs[0]
    assert logged.info.run_name == run.name
    assert json.loads((run / "trackers.json").read_text())["mlflow"] == logged.info.run_id
    assert logged.data.params["train.head_lr"] == str(cfg.train.head_lr)
    assert logged.data.params["model.backbone"] == cfg.model.backbone
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(logged.info.run_id, "val_mAP")
    by_epoch = {m.step: m.value for m in history}
    assert by_epoch == pytest.approx({r["epoch"]: r["val_mAP"] for r in records})
    assert list((run / "tensorboard").iterdir())  # TensorBoard beside it
