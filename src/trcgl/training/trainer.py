"""Two-stage training of a trcgl classifier on accelerate (docs/method.md §4).

Read top to bottom:

1. take the training data (manifest, label graph, groups, image cache) and build the model;
2. stage 1 (``warmup_epochs``): backbone frozen, head and label branch trained with AdamW at
   ``warmup_lr``; synthetic images weigh ``w_syn_warmup``;
3. stage 2 (``epochs``): everything trained, backbone and head at their own learning rates and
   weight decays, linear warm-up then cosine decay; synthetic images weigh ``w_syn``;
4. every epoch: validation mAP / mAUC / F1 overall and per frequency group (and mAP per data
   set with ``data.sources``; on the EMA weights when EMA is on), a line in ``metrics.jsonl``
   and TensorBoard, a checkpoint written atomically, the best model saved as a model folder
   (``model/``), early stopping on mAP.

Resuming: an output folder with a checkpoint continues after its last finished epoch with the
same weights, optimiser state, RNG states and data order, so a killed and resumed run ends
exactly as an uninterrupted one. Data order and augmentations depend only on (seed, epoch).

Multi-GPU / multi-node: run the same command under ``accelerate launch``; each process takes
its shard of every epoch's sample list, gradients are all-reduced by DDP.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from trcgl.config import Config
from trcgl.data.sampling import RepeatFactorSampler, authors_repeat_factors, repeat_factors
from trcgl.data.transforms import reseed_transforms, worker_init_fn
from trcgl.errors import TrcglError
from trcgl.evaluation.metrics import MetricsReport, dataset_masks, evaluate
from trcgl.files import atomic_write_text
from trcgl.models.build import build_model
from trcgl.models.losses import build_loss
from trcgl.progress import progress_bar, runtime_line, say
from trcgl.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from trcgl.training.data import TrainingData
from trcgl.training.optimizers import build_optimizer
from trcgl.training.precision import make_accelerator
from trcgl.training.schedule import cosine_with_warmup
from trcgl.training.trackers import build_trackers, finish_trackers, start_trackers

STAGE_FILE = "train.json"
MODEL_DIR = "model"


class TrainingError(TrcglError):
    """Training cannot go on (e.g. a NaN loss)."""


@dataclass
class TrainState:
    """Everything about progress that a checkpoint must carry besides tensors."""

    epoch: int = -1  # last finished epoch (global, over both stages)
    step: int = 0  # optimiser steps so far (both stages)
    best_map: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def stage_of(epoch: int, cfg: Config) -> int:
    return 1 if epoch < cfg.train.warmup_epochs else 2


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**31)


@torch.no_grad()
def predict_probabilities(
    model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid probabilities and labels (1, 0, NaN where unknown) over a loader (gathered
    across processes)."""
    model.eval()
    probs, labels = [], []
    for batch in loader:
        with accelerator.autocast():
            logits = model(batch["image"])["logits"]
        y = torch.where(batch["mask"] != 0, batch["labels"], torch.nan)
        p, y = accelerator.gather_for_metrics((torch.sigmoid(logits.float()), y))
        probs.append(p.cpu())
        labels.append(y.cpu())
    return torch.cat(probs).numpy().astype(np.float64), torch.cat(labels).numpy()


class Trainer:
    """Train the configured model on ``data``, writing logs, checkpoints and the model folder
    into ``out_dir`` (resuming from the checkpoints found there)."""

    def __init__(
        self,
        config: Config,
        data: TrainingData,
        out_dir: str | Path,
        progress: bool = True,
    ) -> None:
        self.cfg = config
        self.data = data
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.synthetic = bool(data.is_synthetic("train").any())
        t = config.train
        self.accelerator = make_accelerator(
            t.mixed_precision,
            cpu=not torch.cuda.is_available(),
            log_with=build_trackers(t.log_with, self.out_dir, config.name, self.out_dir.name),
        )
        set_seed(t.seed)
        self.model = build_model(
            config.model, self.data.manifest.classes, self.data.graph, self.data.image_size
        )
        if t.gradient_checkpointing:
            self.model.set_grad_checkpointing(True)
        use_cuda = self.accelerator.device.type == "cuda"
        self.memory_format = (
            torch.channels_last
            if (t.channels_last if t.channels_last is not None else use_cuda)
            else torch.contiguous_format
        )
        self.model.to(memory_format=self.memory_format)
        mean, std = self.model.normalization
        self.model.preprocessing = {
            "image_size": self.data.image_size,
            "mean": list(mean),
            "std": list(std),
        }
        frame = self.data.manifest.frame
        used = self.data.manifest.subset(split="train").extended(
            self.data.manifest.subset(split="val").frame
        )
        self.model.provenance = {
            "config": config.to_dict(),
            "config_digest": hashlib.sha256(config.to_yaml().encode()).hexdigest(),
            "data_digest": used.digest(),
            "images": {
                "train_real": int(
                    ((frame["split"] == "train") & (frame["source"] == "real")).sum()
                ),
                "train_synthetic": int(
                    ((frame["split"] == "train") & (frame["source"] != "real")).sum()
                ),
                "val": int((frame["split"] == "val").sum()),
                "patients": int(used.frame["patient_id"].nunique()),
            },
        }
        self.train_set = self.data.dataset("train", train=True, mean=mean, std=std, seed=t.seed)
        self.val_set = self.data.dataset("val", train=False, mean=mean, std=std)
        self.is_synthetic = torch.from_numpy(self.data.is_synthetic("train").copy())
        values = self.train_set.label_values()  # 1 / 0 / NaN (unknown)
        real = ~self.is_synthetic.numpy()
        counts = (values[real] == 1).sum(axis=0)  # known positives per class
        # DRW switches on for the last 20 % of stage 2, as at epoch 160 of 200 in Cao et al.
        options = {"drw_start_epoch": round(0.8 * t.epochs)} if t.loss == "ldam_drw" else {}
        options.update(t.loss_options)
        # N per class: the real training images whose label of the class is known (DB's prior)
        known = np.maximum((~np.isnan(values[real])).sum(axis=0), 1)
        num_samples = int(real.sum()) if (known == real.sum()).all() else known
        self.loss_fn = build_loss(t.loss, counts, num_samples, **options)
        if t.sampler == "repeat_factor":
            self.factors = repeat_factors(values, t.repeat_threshold)
        elif t.sampler == "authors":
            self.factors = authors_repeat_factors(values)
        else:
            self.factors = np.ones(len(values))
        empty = [
            c
            for c, n in zip(
                self.data.manifest.classes, self.val_set.labels_matrix().sum(0), strict=True
            )
            if n == 0
        ]
        if empty:
            warnings.warn(
                f"validation split has no positives for {empty}: these classes are left out "
                "of the validation means (use a larger split.val_fraction to include them)",
                stacklevel=2,
            )
        self.val_loader = self.accelerator.prepare(
            DataLoader(
                self.val_set,
                batch_size=t.batch_size,
                num_workers=t.num_workers,
                worker_init_fn=worker_init_fn,
            )
        )
        self.ema = None
        self.state = TrainState()

    # -- pieces ---------------------------------------------------------------------------

    def _train_loader(self, epoch: int) -> DataLoader:
        t, acc = self.cfg.train, self.accelerator
        sampler = RepeatFactorSampler(
            self.factors,
            seed=t.seed,
            shuffle=True,
            num_replicas=acc.num_processes,
            rank=acc.process_index,
        )
        sampler.set_epoch(epoch)
        seed = _epoch_seed(t.seed, epoch)
        reseed_transforms(self.train_set, seed)  # for num_workers=0; workers reseed themselves
        return DataLoader(
            self.train_set,
            batch_size=t.batch_size,
            sampler=sampler,
            num_workers=t.num_workers,
            worker_init_fn=worker_init_fn,
            generator=torch.Generator().manual_seed(seed),
            drop_last=len(sampler) > t.batch_size,
        )

    def _new_ema(self, model: torch.nn.Module) -> torch.nn.Module:
        from timm.utils import ModelEmaV3

        t = self.cfg.train
        return ModelEmaV3(model, decay=t.ema_decay, use_warmup=t.ema_warmup)

    def _optimizer(self, stage: int) -> torch.optim.Optimizer:
        t, model = self.cfg.train, self.model
        if stage == 1:
            model.freeze_backbone(True)
            head = [p for p in model.head_parameters() if p.requires_grad]
            decay = t.head_weight_decay if t.warmup_weight_decay is None else t.warmup_weight_decay
            groups = [{"params": head, "lr": t.warmup_lr, "weight_decay": decay}]
        else:
            model.freeze_backbone(False)
            groups = [
                {
                    "params": list(model.backbone_parameters()),
                    "lr": t.backbone_lr,
                    "weight_decay": t.backbone_weight_decay,
                },
                {
                    "params": list(model.head_parameters()),
                    "lr": t.head_lr,
                    "weight_decay": t.head_weight_decay,
                },
            ]
        for g in groups:
            g["base_lr"] = g["lr"]
        return build_optimizer(groups, t.optimizer, eps=t.adam_eps, key="train.optimizer")

    def _steps_per_epoch(self) -> int:
        """Optimiser steps an epoch: the loader's batches grouped by ``grad_accumulation``."""
        n = len(self._train_loader(0)) // self.cfg.train.grad_accumulation
        cap = self.cfg.train.max_steps_per_epoch
        return min(n, cap) if cap else n

    def _log(self, record: dict[str, Any]) -> None:
        if not self.accelerator.is_main_process:
            return
        with (self.out_dir / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        scalars = {
            key: value
            for key, value in record.items()
            if isinstance(value, int | float) and key not in ("epoch", "stage")
        }
        self.accelerator.log(scalars, step=record["epoch"])
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.writer.flush()

    def validate(self, model: torch.nn.Module) -> tuple[MetricsReport, dict[str, float]]:
        """Validation metrics, and the mAP of each data set where the run has several."""
        probs, labels = predict_probabilities(model, self.val_loader, self.accelerator)
        classes = self.data.manifest.classes
        report = evaluate(labels, probs, classes, self.data.groups)
        by_dataset = {
            name: evaluate(labels[mine], probs[mine], classes).summary["overall"]["mAP"]
            for name, mine in dataset_masks(self.val_set.manifest["dataset"]).items()
        }
        return report, by_dataset

    # -- the loop -------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train (resuming from the latest checkpoint) and return the ``train.json`` record;
        a finished run returns its record untouched."""
        if (self.out_dir / STAGE_FILE).is_file():
            return json.loads((self.out_dir / STAGE_FILE).read_text())
        self.out_dir.mkdir(parents=True, exist_ok=True)
        start_trackers(self.accelerator, self.out_dir, self.cfg.to_dict())
        try:
            result = self._fit()
        except BaseException as exc:
            finish_trackers(self.accelerator, exc)
            raise
        finish_trackers(self.accelerator)
        return result

    def _fit(self) -> dict[str, Any]:
        cfg, t, acc = self.cfg, self.cfg.train, self.accelerator
        total_epochs = t.warmup_epochs + t.epochs
        ckpt_dir = self.out_dir / "checkpoints"
        resume = latest_checkpoint(ckpt_dir)
        resume_state: dict[str, Any] | None = None
        if resume is not None:
            resume_state = json.loads((resume / "trainer.json").read_text())
            self.state = TrainState(**resume_state["state"])
        steps_per_epoch = self._steps_per_epoch()
        if self.progress and acc.is_main_process:
            say(runtime_line("classifier", acc.device, acc.mixed_precision, acc.num_processes))
            say(
                f"classifier: {len(self.train_set):,} training images "
                f"({int(self.is_synthetic.sum()):,} synthetic), {steps_per_epoch} steps an epoch, "
                f"epoch {self.state.epoch + 2} of {total_epochs} next, into {self.out_dir}"
            )
        stage2_steps = steps_per_epoch * t.epochs
        warmup_steps = round(t.lr_warmup_epochs * steps_per_epoch)
        stage = None
        optimizer = None
        model = self.model
        for epoch in range(self.state.epoch + 1, total_epochs):
            if self.state.stopped_early:
                break
            if stage_of(epoch, cfg) != stage:  # (re)build optimiser, EMA and DDP wrapper
                stage = stage_of(epoch, cfg)
                model = acc.unwrap_model(model)
                optimizer = self._optimizer(stage)
                if resume is not None:
                    same_stage = resume_state["stage"] == stage
                    saved_ema = (resume / "ema.safetensors").is_file()
                    if saved_ema and self.ema is None:
                        self.ema = self._new_ema(model)  # its state comes from the checkpoint
                    ema = self.ema if saved_ema else None
                    load_checkpoint(resume, model, optimizer if same_stage else None, ema)
                    resume = None
                if self.ema is None and t.ema_decay > 0 and (t.ema_start == "warmup" or stage == 2):
                    self.ema = self._new_ema(model)  # from the weights trained so far
                model, optimizer = acc.prepare(model, optimizer)
            loader = self._train_loader(epoch)
            w_syn = t.w_syn_warmup if stage == 1 else t.w_syn
            self.loss_fn.set_epoch(epoch - t.warmup_epochs if stage == 2 else 0)
            model.train()
            started, losses = time.time(), []
            accumulate = t.grad_accumulation
            for i, batch in enumerate(self._progress(loader, epoch, steps_per_epoch * accumulate)):
                if i >= steps_per_epoch * accumulate:
                    break
                micro = i % accumulate
                images = batch["image"].to(acc.device, memory_format=self.memory_format)
                labels = batch["labels"].to(acc.device)
                known = batch["mask"].to(acc.device)
                weights = batch["weight"].to(acc.device).clone()
                syn = self.is_synthetic[batch["index"]].to(acc.device)
                weights[syn] = w_syn
                if stage == 2 and t.lr_schedule == "epoch":
                    factor = cosine_with_warmup(
                        epoch - t.warmup_epochs,
                        round(t.lr_warmup_epochs),
                        t.epochs,
                        t.min_lr_ratio,
                    )
                elif stage == 2:
                    factor = cosine_with_warmup(
                        self.state.step - self._stage1_steps(steps_per_epoch),
                        warmup_steps,
                        stage2_steps,
                        t.min_lr_ratio,
                    )
                else:
                    factor = 1.0
                for g in optimizer.param_groups:
                    g["lr"] = g["base_lr"] * factor
                with acc.autocast():
                    logits = model(images)["logits"]
                loss = self.loss_fn(logits.float(), labels, weights, known)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"the loss became {loss.item()} at epoch {epoch}, step {i}: lower the "
                        "learning rate, check the inputs, or train with "
                        "train.mixed_precision=no"
                    )
                if micro == 0:
                    optimizer.zero_grad(set_to_none=True)
                last = micro == accumulate - 1
                # Micro-batches before the last skip DDP's all-reduce; the sum of loss / k over
                # k equal micro-batches is the mean loss of their union (the same step).
                with contextlib.nullcontext() if last else acc.no_sync(model):
                    acc.backward(loss / accumulate)
                losses.append(loss.item())
                if not last:
                    continue
                if t.grad_clip > 0:
                    acc.clip_grad_norm_(model.parameters(), t.grad_clip)
                optimizer.step()
                self.state.step += 1
                if self.ema is not None:
                    self.ema.update(acc.unwrap_model(model), step=self.state.step)
            eval_model = self.ema.module if self.ema is not None else model
            report, by_dataset = self.validate(eval_model)
            overall = report.summary["overall"]
            record = {
                "epoch": epoch,
                "stage": stage,
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                "lr_head": optimizer.param_groups[-1]["lr"],
                "seconds": round(time.time() - started, 2),
                "val_mAP": overall["mAP"],
                "val_mAUC": overall["mAUC"],
                "val_F1": overall["macro_F1"],
                **{
                    f"val_{g}_mAP": report.summary[g]["mAP"]
                    for g in ("head", "medium", "tail")
                    if g in report.summary
                },
                **{f"val_mAP_{name}": value for name, value in by_dataset.items()},
            }
            self.state.history.append(record)
            improved = overall["mAP"] > self.state.best_map
            if improved:
                self.state.best_map, self.state.best_epoch, self.state.bad_epochs = (
                    overall["mAP"],
                    epoch,
                    0,
                )
                if acc.is_main_process:
                    acc.unwrap_model(eval_model).save_pretrained(self.out_dir / MODEL_DIR)
            else:
                self.state.bad_epochs += 1
            patience = t.early_stopping_patience
            if stage == 2 and patience and self.state.bad_epochs >= patience:
                self.state.stopped_early = True
            self.state.epoch = epoch
            self._log(record)
            if self.progress and acc.is_main_process:
                say(
                    f"epoch {epoch + 1}/{total_epochs} (stage {stage}): loss "
                    f"{record['train_loss']:.4f}, val mAP {record['val_mAP']:.4f}, mAUC "
                    f"{record['val_mAUC']:.4f}, {record['seconds']:.1f} s"
                    + (" (best so far)" if improved else "")
                )
            if acc.is_main_process:
                save_checkpoint(
                    ckpt_dir,
                    epoch,
                    acc.unwrap_model(model),
                    optimizer,
                    self.ema,
                    {"stage": stage, "state": self.state.__dict__},
                )
            acc.wait_for_everyone()
        result = {
            "best_epoch": self.state.best_epoch,
            "best_val_mAP": self.state.best_map,
            "epochs_run": self.state.epoch + 1,
            "stopped_early": self.state.stopped_early,
            "steps": self.state.step,
            "synthetic_images": int(self.is_synthetic.sum()),
        }
        if acc.is_main_process:
            atomic_write_text(self.out_dir / STAGE_FILE, json.dumps(result, indent=2) + "\n")
        return result

    def _stage1_steps(self, steps_per_epoch: int) -> int:
        return steps_per_epoch * self.cfg.train.warmup_epochs

    def _progress(self, loader: DataLoader, epoch: int, total: int):
        bar = progress_bar(f"epoch {epoch}", transient=True)
        if not (self.progress and self.accelerator.is_main_process) or bar is None:
            yield from loader  # no bar in logs and pipes (it would leave blank lines there)
            return
        with bar:
            task = bar.add_task("train", total=total)
            for batch in loader:
                yield batch
                bar.advance(task)
