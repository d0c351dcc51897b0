"""``trcgl evaluate``: metrics of a model folder on a run split, in the paper's table layouts.

Writes ``<run>/evaluation/<split>/``: ``metrics.json`` (everything), ``per_class.csv``,
``predictions.csv`` (CXR-LT layout plus the true labels) and ``tables.md`` with

* Table 1 layout: method | mAP | mAUC | F1 (at 0.5) | F1 (per-class thresholds);
* Table 2 layout: method | head / medium / tail mAP, mAUC and F1.

Per-class thresholds are tuned on the validation split (Eq. 26–35 metrics, F1 at the tuned
thresholds); evaluated on the validation split itself, that F1 is optimistic and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from trcgl.errors import DataError
from trcgl.evaluation.inference import predict_dataset
from trcgl.evaluation.metrics import MetricsReport, evaluate, tune_thresholds
from trcgl.files import atomic_write_text
from trcgl.models.base import Classifier, load_model
from trcgl.run_dir import RunDir
from trcgl.training.run_data import RunData

GROUPS = ("head", "medium", "tail")


def method_name(model: Classifier) -> str:
    kw = model.init_kwargs
    names = {"trcgl_net": "TRCGL-Net", "timm": "", "csra": " + CSRA", "clip_linear": "CLIP"}
    if model.architecture == "trcgl_net":
        off = [k for k in ("channel_attention", "spatial_attention", "label_gcn") if not kw[k]]
        suffix = f" w/o {', '.join(off)}" if off else ""
        return f"TRCGL-Net ({kw['backbone']}){suffix}"
    if model.architecture == "clip_linear":
        return f"CLIP ({kw.get('arch')})"
    return f"{kw['backbone']}{names[model.architecture]}"


def table1_row(name: str, report: MetricsReport) -> dict[str, Any]:
    s = report.summary["overall"]
    row = {"method": name, "mAP": s["mAP"], "mAUC": s["mAUC"], "F1": s["macro_F1"]}
    if report.has_tuned:
        row["F1 (tuned thr.)"] = s["macro_F1_tuned"]
    return row


def table2_row(name: str, report: MetricsReport) -> dict[str, Any]:
    row: dict[str, Any] = {"method": name}
    for metric, key in (("mAP", "mAP"), ("mAUC", "mAUC"), ("F1", "macro_F1")):
        for g in GROUPS:
            row[f"{g} {metric}"] = report.summary.get(g, {}).get(key, float("nan"))
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    frame = pd.DataFrame(rows)
    head = "| " + " | ".join(frame.columns) + " |"
    sep = (
        "|"
        + "|".join(
            "---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---" for c in frame.columns
        )
        + "|"
    )

    def cell(v: Any) -> str:
        if isinstance(v, str):
            return v
        if isinstance(v, int | np.integer):
            return str(v)
        return f"{v:.4f}"

    body = ["| " + " | ".join(cell(v) for v in r) + " |" for r in frame.itertuples(index=False)]
    return "\n".join([head, sep, *body])


@dataclass
class Evaluation:
    report: MetricsReport
    name: str
    split: str
    out_dir: Path


def evaluate_run(
    run_dir: str | Path,
    model_dir: str | Path | None = None,
    split: str = "val",
    batch_size: int = 32,
    num_workers: int = 0,
    out_dir: str | Path | None = None,
) -> Evaluation:
    """Evaluate ``model_dir`` (default ``<run_dir>/model``) on ``split`` of the prepared run
    ``run_dir``; write into ``<out_dir>/evaluation/<split>/`` (``out_dir`` default: the model
    folder's parent)."""
    run = RunDir(run_dir)
    run_dir = run.root
    if model_dir is None:
        model_dir = run_dir / "model"
        if not (model_dir / "config.json").is_file():
            raise DataError(
                f"{run_dir} has no trained model (no model/config.json): train it first with "
                f"`trcgl train -c CONFIG --run-dir {run_dir}` (or `trcgl run`), or pass --model"
            )
    model_dir = Path(model_dir)
    model = load_model(model_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = RunData.load(run_dir)
    pre = model.preprocessing or {}
    mean, std = pre.get("mean"), pre.get("std")
    if mean is None:
        mean, std = model.normalization
    size = pre.get("image_size", data.image_size)

    def probabilities(which: str) -> tuple[np.ndarray, np.ndarray]:
        ds = data.dataset(which, train=False, mean=tuple(mean), std=tuple(std), size=size)
        return predict_dataset(model, ds, batch_size, num_workers, device)

    probs, labels = probabilities(split)
    val_probs, val_labels = (probs, labels) if split == "val" else probabilities("val")
    thresholds = tune_thresholds(val_labels, val_probs)
    report = evaluate(labels, probs, model.classes, data.groups, thresholds=thresholds)
    name = method_name(model)
    out = (Path(out_dir) if out_dir is not None else model_dir.parent) / "evaluation" / split
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "method": name,
        "split": split,
        "model": run.store(model_dir),
        "thresholds_tuned_on": "val",
        "optimistic_tuned_f1": split == "val",
        **report.to_dict(),
    }
    atomic_write_text(out / "metrics.json", json.dumps(payload, indent=2) + "\n")
    atomic_write_text(out / "per_class.csv", report.per_class.to_csv(index=False))
    frame = data.manifest.frame
    ids = frame.loc[frame["split"] == split, "image_id"].tolist()
    preds = pd.DataFrame(probs, columns=list(model.classes))
    preds.insert(0, "ImageID", ids)
    truth = pd.DataFrame(labels.astype(int), columns=[f"label:{c}" for c in model.classes])
    atomic_write_text(
        out / "predictions.csv", pd.concat([preds, truth], axis=1).to_csv(index=False)
    )
    note = (
        "\n\nF1 (tuned thr.) uses per-class thresholds tuned on this same validation split: "
        "it is optimistic.\n"
        if split == "val"
        else "\n"
    )
    tables = (
        f"# {name} on {split} ({len(ids)} images)\n\n## Overall (Table 1 layout)\n\n"
        + markdown([table1_row(name, report)])
        + "\n\n## Frequency groups (Table 2 layout)\n\n"
        + markdown([table2_row(name, report)])
        + note
    )
    atomic_write_text(out / "tables.md", tables)
    return Evaluation(report, name, split, out)
