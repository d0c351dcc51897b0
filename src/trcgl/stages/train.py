"""``trcgl train``: the two-stage trainer (:mod:`trcgl.training.trainer`) on a prepared run.

The run directory gives the training data (:meth:`~trcgl.run_dir.RunDir.training_data`) and,
when the diffusion stages have kept synthetic images, those too; the trainer writes its logs,
checkpoints, ``model/`` and ``train.json`` (last) into ``out_dir`` (default: the run
directory), and resumes from the checkpoints there.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from trcgl.config import Config
from trcgl.labels.graph import LabelGraph
from trcgl.run_dir import RunDir
from trcgl.training.trainer import Trainer


def trainer_for_run(
    config: Config,
    run_dir: str | Path,
    progress: bool = True,
    out_dir: str | Path | None = None,
    synthetic: bool | None = None,
) -> Trainer:
    """A :class:`Trainer` over the prepared run ``run_dir``. ``synthetic``: train on the run's
    kept synthetic images too (default: when ``diffusion.enabled`` and they exist)."""
    run = RunDir(run_dir)
    if synthetic is None:
        synthetic = config.diffusion.enabled and run.has_synthetic()
        if config.diffusion.enabled and not synthetic:
            warnings.warn(
                f"{run_dir} holds no synthetic images: training on real images only "
                "(make them with `trcgl diffusion train|sample|filter` or `trcgl run`; set "
                "diffusion.enabled=false to say so)",
                stacklevel=2,
            )
    data = run.training_data(synthetic=synthetic)
    if synthetic and config.graph.include_synthetic:
        train_rows = data.manifest.subset(split="train")
        data.graph = LabelGraph.from_labels(
            train_rows.labels(), data.manifest.classes, config.graph.tau, config.graph.formula
        )
    return Trainer(config, data, out_dir if out_dir is not None else run.root, progress)


def train(
    config: Config,
    run_dir: str | Path,
    progress: bool = True,
    out_dir: str | Path | None = None,
    synthetic: bool | None = None,
) -> dict[str, Any]:
    """Train on the prepared run ``run_dir``, writing into ``out_dir`` (default ``run_dir``);
    resume if it holds a checkpoint. Returns the stage record ``train.json``: the trainer's
    summary, with the id that evaluations name (:meth:`~trcgl.run_dir.RunDir.write_record`)."""
    trainer = trainer_for_run(config, run_dir, progress, out_dir, synthetic)
    result = trainer.fit()
    if "id" not in result and trainer.accelerator.is_main_process:
        result = RunDir(trainer.out_dir).write_record("train", result, inputs=())
    trainer.accelerator.wait_for_everyone()
    return result
