"""Two-stage training on real NIH images (tiny model, 32 px): stages, logs, exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import trcgl.training.trainer as trainer_module
from tests.conftest import killed_after_checkpoint, two_processes
from trcgl.config import load_config
from trcgl.models.base import load_model
from trcgl.stages.prepare import prepare
from trcgl.stages.train import train, trainer_for_run
from trcgl.training.trainer import TrainingError

# These runs have no synthetic images on purpose (the diffusion stages are tested elsewhere).
pytestmark = pytest.mark.filterwarnings("ignore:.*holds no synthetic images")


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def test_two_stages_logs_checkpoint_and_model_folder(trained_run):
    run, overrides = trained_run
    cfg = load_config("nih-demo", overrides)
    result = json.loads((run / "train.json").read_text())
    assert result["epochs_run"] == 3 and result["steps"] == 9
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == [1, 2, 2]
    assert records[0]["lr_head"] == pytest.approx(1e-3)  # stage 1: warmup_lr
    assert all(np.isfinite(r["train_loss"]) and 0 <= r["val_mAP"] <= 1 for r in records)
    assert {"val_head_mAP", "val_medium_mAP", "val_tail_mAP"} <= set(records[0])
    assert list((run / "tensorboard").iterdir())
    ckpts = run / "checkpoints"
    assert json.loads((ckpts / "latest.json").read_text())["checkpoint"] == "epoch-0002"
    assert sorted(p.name for p in (ckpts / "epoch-0002").iterdir()) == [
        "ema.safetensors",
        "model.safetensors",
        "optimizer.safetensors",
        "rng.safetensors",
        "trainer.json",
    ]
    model = load_model(run / "model")
    assert model.classes == ("Atelectasis", "Effusion", "Infiltration", "Nodule", "No Finding")
    # the record agrees with the epoch log: best epoch = arg-max of validation mAP
    maps = [r["val_mAP"] for r in records]
    assert result["best_epoch"] == int(np.argmax(maps))
    assert result["best_val_mAP"] == pytest.approx(max(maps), abs=0)
    # a finished run is not trained again: nothing in the run directory changes
    watched = [run / "metrics.jsonl", run / "model" / "model.safetensors", ckpts / "latest.json"]
    before = [(p.read_bytes(), p.stat().st_mtime_ns) for p in watched]
    assert train(cfg, run, progress=False)["steps"] == 9
    assert [(p.read_bytes(), p.stat().st_mtime_ns) for p in watched] == before
    assert not (ckpts / "epoch-0003").exists()


def test_stage1_trains_only_the_head(prepared, tmp_path):
    run, overrides = prepared
    run = _copy(run, tmp_path / "run")
    cfg = load_config("nih-demo", [*overrides, "train.epochs=0", "train.ema_decay=0"])
    trainer = trainer_for_run(cfg, run, progress=False)
    before = {k: v.clone() for k, v in trainer.model.features.state_dict().items()}
    head_before = trainer.model.classifier.weight.clone()
    trainer.fit()
    after = trainer.model.features.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(head_before, trainer.model.classifier.weight)


@pytest.mark.parametrize("workers", [0, 2])
def test_killed_and_resumed_run_ends_exactly_like_an_uninterrupted_one(
    prepared, tmp_path, monkeypatch, workers
):
    run, overrides = prepared
    overrides = [*overrides, f"train.num_workers={workers}", "train.sampler=repeat_factor"]
    cfg = load_config("nih-demo", overrides)
    full = _copy(run, tmp_path / "full")
    train(cfg, full, progress=False)

    killed = _copy(run, tmp_path / "killed")
    with killed_after_checkpoint(monkeypatch, trainer_module, "save_checkpoint", at=1):
        train(cfg, killed, progress=False)  # killed right after the first stage-2 epoch
    assert not (killed / "train.json").exists()
    train(cfg, killed, progress=False)

    def final(run_dir: Path) -> dict:
        return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])

    a, b = final(full), final(killed)
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(
        load_model(full / "model")(x)["logits"], load_model(killed / "model")(x)["logits"]
    )


def test_nan_loss_stops_with_advice(prepared, tmp_path, monkeypatch):
    run, overrides = prepared
    run = _copy(run, tmp_path / "run")
    trainer = trainer_for_run(load_config("nih-demo", overrides), run, progress=False)
    monkeypatch.setattr(trainer, "loss_fn", _NaNLoss())
    with pytest.raises(TrainingError, match="lower the learning rate"):
        trainer.fit()


class _NaNLoss(torch.nn.Module):
    def forward(self, logits, targets, weights=None, mask=None):
        return logits.sum() * float("nan")

    def set_epoch(self, epoch):
        pass


def test_unknown_labels_are_masked_in_training_and_left_out_of_evaluation(
    prepared, tmp_path, monkeypatch
):
    from sklearn.metrics import average_precision_score

    from trcgl.data.manifest import Manifest
    from trcgl.stages.evaluate import evaluate_run

    run, overrides = prepared
    run = _copy(run, tmp_path / "run")
    m = Manifest.load(run / "manifest.parquet")
    unknown = np.random.default_rng(0).random((len(m), len(m.classes))) < 0.3
    values = m.label_values()
    values[unknown] = np.nan
    m.frame[list(m.classes)] = values
    m.save(run / "manifest.parquet")
    cfg = load_config("nih-demo", [*overrides, "train.warmup_epochs=0", "train.epochs=1"])
    trainer = trainer_for_run(cfg, run, progress=False)
    seen = []
    original = trainer.loss_fn.forward

    def spy(logits, targets, weights=None, mask=None):
        seen.append((targets.clone(), mask.clone()))
        return original(logits, targets, weights, mask)

    monkeypatch.setattr(trainer.loss_fn, "forward", spy)
    trainer.fit()
    assert len(seen) == 3
    for targets, mask in seen:
        assert (mask == 0).any() and (targets[mask == 0] == 0).all()
    train = m.subset(split="train")
    expected = (train.labels()[train.frame["source"] == "real"]).sum(axis=0)
    np.testing.assert_allclose(trainer.loss_fn.freq_inv, 1 / np.maximum(expected, 1), rtol=1e-6)
    # DB's prior: the positive share among the real training images whose label is known
    real = train.frame["source"].to_numpy() == "real"
    n_known = train.known()[real].sum(axis=0)
    p = np.clip(expected, 1, n_known - 1) / n_known
    np.testing.assert_allclose(trainer.loss_fn.ntr_bias, 0.05 * np.log(1 / p - 1), rtol=1e-5)
    evaluation = evaluate_run(run, split="val", bootstrap_resamples=10)
    per_class = evaluation.report.per_class.set_index("class")
    preds = pd.read_csv(evaluation.out_dir / "predictions.csv")
    val = m.subset(split="val")
    for j, c in enumerate(m.classes):
        known = val.known()[:, j]
        assert per_class.loc[c, "n_unknown"] == (~known).sum()
        truth = preds[f"label:{c}"]
        assert truth.isna().to_numpy().tolist() == (~known).tolist()
        y = truth[known].astype(int)
        if y.any():
            assert per_class.loc[c, "ap"] == pytest.approx(
                average_precision_score(y, preds.loc[known, c]), abs=1e-9
            )


def test_labels_only_run_cannot_train(tmp_path):
    from trcgl.errors import DataError

    cfg = load_config("nih-demo", ["data.image_root=null", "images.size=32"])
    prepare(cfg, tmp_path / "r", progress=False)
    with pytest.raises(DataError, match="labels only"):
        trainer_for_run(cfg, tmp_path / "r")


def test_empty_validation_class_warns(prepared, tmp_path):
    run, overrides = prepared
    run = _copy(run, tmp_path / "run")
    frame = pd.read_parquet(run / "manifest.parquet")
    assert (frame.loc[frame["split"] == "val", "Nodule"] == 1).any()
    from trcgl.data.manifest import Manifest

    m = Manifest.load(run / "manifest.parquet")
    m.frame.loc[m.frame["split"] == "val", "Nodule"] = 0
    m.save(run / "manifest.parquet")
    with pytest.warns(UserWarning, match="no positives for \\['Nodule'\\]"):
        trainer_for_run(load_config("nih-demo", overrides), run, progress=False)


def test_two_process_data_parallel_training_with_gloo(prepared, tmp_path):
    """`torchrun --nproc_per_node 2` (CPU, gloo): what `accelerate launch` does on GPUs."""
    run, overrides = prepared
    run = _copy(run, tmp_path / "run")
    result = two_processes("train", "-c", "nih-demo", "--run-dir", str(run), *overrides)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]  # one log line per epoch, not per rank
    assert result.stdout.count("best validation mAP") == 1
    # each rank took 3 steps per epoch on its own shard
    assert json.loads((run / "train.json").read_text())["steps"] == 9
    assert load_model(run / "model").classes[0] == "Atelectasis"


def test_the_authors_schedule_and_ema_resume_exactly(prepared, tmp_path, monkeypatch):
    """lr per epoch with a floor, AdamW eps, stage-1 weight decay, and an EMA that starts with
    stage 2: a run killed after its warm-up epoch (no EMA in that checkpoint yet) resumes into
    exactly the uninterrupted run."""
    from trcgl.training.schedule import cosine_with_warmup

    run, overrides = prepared
    authors = [
        "train.lr_schedule=epoch",
        "train.min_lr_ratio=0.01",
        "train.lr_warmup_epochs=0",
        "train.adam_eps=1e-5",
        "train.warmup_weight_decay=0.01",
        "train.ema_start=finetune",
        "train.ema_warmup=false",
        "diffusion.enabled=false",
    ]
    cfg = load_config("nih-demo", [*overrides, *authors])
    full = _copy(run, tmp_path / "full")
    train(cfg, full, progress=False)
    assert (full / "checkpoints" / "epoch-0002" / "ema.safetensors").is_file()
    records = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    head_lr = cfg.train.head_lr
    for r in records[1:]:  # one rate per stage-2 epoch: 1 % floor + cosine over 2 epochs
        e = r["epoch"] - cfg.train.warmup_epochs
        assert r["lr_head"] == pytest.approx(head_lr * cosine_with_warmup(e, 0, 2, 0.01))
    assert cosine_with_warmup(2, 0, 2, 0.01) == pytest.approx(0.01)

    killed = _copy(run, tmp_path / "killed")
    with killed_after_checkpoint(monkeypatch, trainer_module, "save_checkpoint", at=0):
        train(cfg, killed, progress=False)
    stage1 = killed / "checkpoints" / "epoch-0000"
    assert stage1.is_dir() and not (stage1 / "ema.safetensors").exists()  # no EMA in warm-up
    train(cfg, killed, progress=False)
    a = json.loads((full / "metrics.jsonl").read_text().splitlines()[-1])
    b = json.loads((killed / "metrics.jsonl").read_text().splitlines()[-1])
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    trainer = trainer_for_run(cfg, _copy(run, tmp_path / "opt"), progress=False)
    stage1 = trainer._optimizer(1)
    assert stage1.defaults["eps"] == 1e-5 and stage1.param_groups[0]["weight_decay"] == 0.01


def test_gradient_checkpointing_reaches_the_backbone(prepared, tmp_path):
    run, overrides = prepared
    cfg = load_config("nih-demo", [*overrides, "train.gradient_checkpointing=true"])
    trainer = trainer_for_run(cfg, _copy(run, tmp_path / "run"), progress=False)
    stages = trainer.model.features.body.stages
    assert all(stage.grad_checkpointing for stage in stages)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoints" / "epoch-0002" / "model.safetensors"))


def test_gradient_accumulation_takes_the_same_steps_as_the_whole_batch(prepared, tmp_path):
    """batch 4 × 2 accumulated micro-batches = one batch of 8: the same optimiser steps, the
    same weights (up to float summation order). Stochastic depth off: its per-sample masks are
    drawn per micro-batch, so with it the two are equal in distribution only."""
    run, overrides = prepared
    common = [*overrides, "diffusion.enabled=false", "train.ema_decay=0", "model.drop_path_rate=0"]
    whole = _copy(run, tmp_path / "whole")
    train(load_config("nih-demo", [*common, "train.batch_size=8"]), whole, progress=False)
    micro = _copy(run, tmp_path / "micro")
    cfg = load_config("nih-demo", [*common, "train.batch_size=4", "train.grad_accumulation=2"])
    train(cfg, micro, progress=False)
    a, b = (json.loads((r / "train.json").read_text()) for r in (whole, micro))
    assert a["steps"] == b["steps"] > 0
    wa, wb = _weights(whole), _weights(micro)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    assert worst < 1e-4  # measured 1.4e-5 after 9 Adam steps; 8e-3 with stochastic depth on
    logs = [
        [json.loads(line)["train_loss"] for line in (r / "metrics.jsonl").read_text().splitlines()]
        for r in (whole, micro)
    ]
    assert logs[0] == pytest.approx(logs[1], abs=1e-5) and len(set(logs[0])) == 3


def test_channels_last_gives_the_plain_result(prepared, tmp_path):
    run, overrides = prepared
    common = [*overrides, "diffusion.enabled=false", "train.ema_decay=0", "train.num_workers=0"]
    plain = _copy(run, tmp_path / "plain")
    train(load_config("nih-demo", [*common, "train.channels_last=false"]), plain, progress=False)
    last = _copy(run, tmp_path / "last")
    cfg = load_config("nih-demo", [*common, "train.channels_last=true"])
    trainer = trainer_for_run(cfg, last, progress=False)
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    trainer.fit()
    wa, wb = _weights(plain), _weights(last)
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4
    assert load_model(last / "model").classes == load_model(plain / "model").classes


def test_8bit_adamw_needs_bitsandbytes_and_is_used_when_there(prepared, tmp_path, monkeypatch):
    import importlib.util
    import sys
    import types

    from trcgl.errors import ConfigError

    run, overrides = prepared
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(ConfigError, match=r"train.optimizer=adamw8bit needs bitsandbytes.*bnb"):
            load_config("nih-demo", [*overrides, "train.optimizer=adamw8bit"])
        with pytest.raises(ConfigError, match=r"diffusion.optimizer=adamw8bit needs bitsandbytes"):
            load_config(
                "nih-demo", [*overrides, "diffusion.optimizer=adamw8bit"]
            ).diffusion.validate()

    class AdamW8bit(torch.optim.AdamW):  # stands in for bitsandbytes.optim.AdamW8bit
        pass

    package = types.ModuleType("bitsandbytes")
    optim = types.ModuleType("bitsandbytes.optim")
    optim.AdamW8bit = AdamW8bit
    package.optim = optim
    package.__spec__ = importlib.machinery.ModuleSpec("bitsandbytes", None)
    monkeypatch.setitem(sys.modules, "bitsandbytes", package)
    monkeypatch.setitem(sys.modules, "bitsandbytes.optim", optim)
    cfg = load_config("nih-demo", [*overrides, "train.optimizer=adamw8bit", "train.adam_eps=1e-6"])
    trainer = trainer_for_run(cfg, _copy(run, tmp_path / "run"), progress=False)
    optimizer = trainer._optimizer(2)
    assert type(optimizer) is AdamW8bit and optimizer.defaults["eps"] == 1e-6
    assert [g["lr"] for g in optimizer.param_groups] == [cfg.train.backbone_lr, cfg.train.head_lr]
