"""Experiment trackers, through accelerate's: TensorBoard (the default), MLflow, Weights & Biases.

``train.log_with`` names them. Each epoch's numbers (the lines of ``metrics.jsonl``) go to
every one with ``accelerator.log``; MLflow and W&B also get the training configuration as flat
parameters (``train.head_lr``, …). TensorBoard writes ``<out>/tensorboard/``; MLflow writes
where ``MLFLOW_TRACKING_URI`` points (a local ``file:`` store, a server, Databricks), into the
experiment named after the configuration (``MLFLOW_EXPERIMENT_NAME`` overrides it), one run per
trained classifier named after its folder (``demo``, ``filter_classifier``, an experiment
variant); W&B likewise (project = configuration name) and per its own settings
(``WANDB_MODE=offline``, …).

A killed and resumed run goes on logging into the same tracker run: the MLflow and W&B run ids
are kept in ``<out>/trackers.json``. TensorBoard ships with trcgl; the others are extras
(``pip install 'trcgl[mlflow]'`` / ``'trcgl[wandb]'``), and naming one that is not installed is
an error before any training, not a tracker silently left out (accelerate drops trackers whose
package is missing).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trcgl.config import check_trackers
from trcgl.files import atomic_write_text

__all__ = ["build_trackers", "finish_trackers", "flat_config", "start_trackers"]

IDS_FILE = "trackers.json"


def flat_config(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"head_lr": 1e-3}}`` → ``{"train.head_lr": 1e-3}``; lists and ``None`` as
    text (what every tracker takes as a parameter value)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_config(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = json.dumps(value)
    return out


def build_trackers(
    names: Sequence[str], out_dir: Path, experiment: str, run_name: str
) -> list[Any]:
    """accelerate tracker objects for ``names``: runs named ``run_name`` in the MLflow
    experiment / W&B project ``experiment``, resuming the runs recorded in ``trackers.json``."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    check_trackers(names)
    ids = _ids(out_dir)
    trackers: list[Any] = []
    for name in names:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker("tensorboard", out_dir))
        elif name == "mlflow":
            trackers.append(
                MLflowTracker(
                    experiment_name=experiment, run_id=ids.get("mlflow"), run_name=run_name
                )
            )
        else:
            kwargs = {"id": ids["wandb"], "resume": "allow"} if "wandb" in ids else {}
            trackers.append(WandBTracker(experiment, name=run_name, dir=str(out_dir), **kwargs))
    return trackers


def start_trackers(accelerator: Any, out_dir: Path, config: Mapping) -> None:
    """Start the accelerator's trackers (made by :func:`build_trackers`), give MLflow and W&B
    the flat configuration, and keep their run ids for a resumed run (main process only)."""
    accelerator.init_trackers(out_dir.name)
    if not accelerator.is_main_process:
        return
    params = flat_config(config)
    ids = _ids(out_dir)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            continue  # its hparams table would need a metric; the config is in config.yaml
        if tracker.name == "mlflow":
            import mlflow

            mlflow.log_params(params)
            ids["mlflow"] = tracker.active_run.info.run_id
        elif tracker.name == "wandb":
            tracker.store_init_configuration(params)
            ids["wandb"] = tracker.run.id
    if ids:
        atomic_write_text(out_dir / IDS_FILE, json.dumps(ids, indent=2) + "\n")


def finish_trackers(accelerator: Any, error: BaseException | None = None) -> None:
    """End the tracker runs: finished, or, when training stopped with ``error``, as MLflow's
    ``KILLED`` (interrupted) or ``FAILED``, so that a resumed run in the same process can
    reopen its MLflow run. (Not ``accelerator.end_training()``: it also destroys the process
    group, which evaluation and the next stages of a multi-process run still use.)"""
    for tracker in accelerator.trackers:
        if error is not None and tracker.name == "mlflow" and accelerator.is_main_process:
            import mlflow

            interrupted = isinstance(error, KeyboardInterrupt)
            mlflow.end_run(status="KILLED" if interrupted else "FAILED")
        else:
            tracker.finish()


def _ids(out_dir: Path) -> dict[str, str]:
    path = out_dir / IDS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
