"""``trcgl evaluate``: metrics of a model folder on a run split, in the paper's table layouts.

Writes ``<run>/evaluation/<split>/``: ``metrics.json`` (everything; with several data sets in
the run, each data set's metrics under ``datasets``), ``per_class.csv``,
``predictions.csv`` (CXR-LT layout plus the true labels), ``tables.md`` (Table 1 and
Table 2 layouts, :mod:`trcgl.evaluation.tables`) and, where the run has radiologist boxes
(``boxes.parquet``) on the split, ``localisation.csv``: the pointing game and the maps' mass
inside the boxes per class (:mod:`trcgl.evaluation.localisation`).

Per-class thresholds are tuned on the validation split (Eq. 26–35 metrics, F1 at the tuned
thresholds); evaluated on the validation split itself, that F1 is optimistic and says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from trcgl.data.boxes import load_boxes
from trcgl.data.manifest import Manifest
from trcgl.errors import DataError
from trcgl.evaluation.bootstrap import bootstrap, intervals
from trcgl.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
)
from trcgl.evaluation.inference import predict_dataset
from trcgl.evaluation.localisation import localisation_scores, localise, map_method
from trcgl.evaluation.metrics import MetricsReport, dataset_masks, evaluate, tune_thresholds
from trcgl.evaluation.tables import interval_rows, markdown, table1_row, table2_row
from trcgl.files import atomic_write_text
from trcgl.models.base import load_model, save_decisions, save_evaluation
from trcgl.run_dir import BOXES, LOCALISATION, MANIFEST, PER_CLASS, RunDir

#: Patient-level bootstrap resamples of ``trcgl evaluate`` and the intervals' level.
BOOTSTRAP_RESAMPLES = 1000
LEVEL = 0.95
#: Equal-width probability bins of the expected calibration error.
CALIBRATION_BINS = 15


@dataclass
class Evaluation:
    report: MetricsReport
    name: str
    split: str
    out_dir: Path
    intervals: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    localisation: dict[str, Any] | None = None
    #: With several data sets in the run: each data set's metrics on the split.
    datasets: dict[str, MetricsReport] = field(default_factory=dict)


def evaluate_run(
    run_dir: str | Path,
    model_dir: str | Path | None = None,
    split: str = "val",
    batch_size: int = 32,
    num_workers: int = 0,
    out_dir: str | Path | None = None,
    *,
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    f1_thresholds: list[float] | None = None,
    empty_classes: str | None = None,
) -> Evaluation:
    """Evaluate ``model_dir`` (default ``<run_dir>/model``) on ``split`` of the prepared run
    ``run_dir``; write into ``<out_dir>/evaluation/<split>/`` (``out_dir`` default: the model
    folder's parent). ``bootstrap_resamples`` patient-level resamples (seeded by ``seed``; 0:
    none) give the 95 % intervals of every macro metric (:mod:`trcgl.evaluation.bootstrap`).
    ``f1_thresholds`` and ``empty_classes`` (the ``evaluate`` config section's keys; ``None``:
    as the model's training configuration says, kept in its folder) add F1 at fixed
    thresholds and choose how classes without positives enter the means."""
    started = time.time()
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
    data = run.training_data()
    pre = model.preprocessing or {}
    mean, std = pre.get("mean"), pre.get("std")
    if mean is None:
        mean, std = model.normalization
    size = pre.get("image_size", data.image_size)

    def inputs(which: str):
        return data.dataset(which, train=False, mean=tuple(mean), std=tuple(std), size=size)

    def probabilities(which: str) -> tuple[np.ndarray, np.ndarray]:
        return predict_dataset(model, inputs(which), batch_size, num_workers, device)

    evaluated = inputs(split)  # also the localisation's inputs below
    probs, labels = predict_dataset(model, evaluated, batch_size, num_workers, device)
    val_probs, val_labels = (probs, labels) if split == "val" else probabilities("val")
    thresholds = tune_thresholds(val_labels, val_probs)
    temperature = fit_temperature(val_labels, val_probs)
    val_rows = data.manifest.frame[data.manifest.frame["split"] == "val"]
    # The model folder keeps the thresholds, so that `predict --binary` applies them.
    save_decisions(
        model_dir,
        model.classes,
        thresholds,
        {
            "split": "val",
            "run": run.root.name,
            "images": len(val_rows),
            "patients": int(val_rows["patient_id"].nunique()),
            "rule": "per class, the F1-optimal threshold on the validation split",
        },
        data.groups,
        temperature=temperature,
    )
    trained_with = ((model.provenance or {}).get("config") or {}).get("evaluate") or {}
    if f1_thresholds is None:
        f1_thresholds = list(trained_with.get("f1_thresholds", [0.5]))
    if empty_classes is None:
        empty_classes = str(trained_with.get("empty_classes", "exclude"))
    report = evaluate(
        labels,
        probs,
        model.classes,
        data.groups,
        thresholds=thresholds,
        f1_at=f1_thresholds,
        empty_classes=empty_classes,
    )
    frame = data.manifest.frame
    rows = frame[frame["split"] == split]
    by_dataset = per_dataset(
        rows, labels, probs, model.classes, data.groups, thresholds, f1_thresholds, empty_classes
    )
    ci: dict[str, Any] | None = None
    if bootstrap_resamples > 0:
        sample = bootstrap(
            labels,
            probs,
            rows["patient_id"].tolist(),
            model.classes,
            data.groups,
            thresholds,
            n_resamples=bootstrap_resamples,
            seed=seed,
        )
        ci = intervals(sample, LEVEL)
    located = None
    if (run / BOXES).is_file():
        pairs = localise(
            model,
            evaluated,
            rows["image_id"].astype(str).tolist(),
            load_boxes(run / BOXES),
            batch_size=batch_size,
            device=device,
        )
        if len(pairs):
            located = (map_method(model), *localisation_scores(pairs, model.classes))
    name = model.display_name()
    record_dir = RunDir(out_dir if out_dir is not None else model_dir.parent)
    out = record_dir.evaluation(split)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "method": name,
        "split": split,
        "model": run.store(model_dir),
        "thresholds_tuned_on": "val",
        "f1_thresholds": sorted({0.5, *map(float, f1_thresholds)}),
        "empty_classes": empty_classes,
        "optimistic_tuned_f1": split == "val",
        **report.to_dict(),
    }
    if by_dataset:
        payload["datasets"] = {
            d: {"images": n, "patients": p, **r.to_dict()} for d, (n, p, r) in by_dataset.items()
        }
    ece = expected_calibration_error(labels, probs, CALIBRATION_BINS)
    scaled = expected_calibration_error(
        labels, apply_temperature(probs, temperature), CALIBRATION_BINS
    )
    payload["calibration"] = {
        "bins": CALIBRATION_BINS,
        "ece": dict(zip(model.classes, map(_number, ece), strict=True)),
        "macro_ece": _number(np.nanmean(ece) if np.isfinite(ece).any() else np.nan),
        "temperature": temperature,
        "temperature_fitted_on": "val",
        "macro_ece_after_temperature": _number(
            np.nanmean(scaled) if np.isfinite(scaled).any() else np.nan
        ),
    }
    if ci is not None:
        payload["intervals"] = ci
        payload["bootstrap"] = {
            "unit": "patient",
            "resamples": bootstrap_resamples,
            "seed": seed,
            "level": LEVEL,
            "patients": int(rows["patient_id"].nunique()),
            # A class without positives in a resample is left out of that resample's means,
            # whatever evaluate.empty_classes says for the point estimates.
            "empty_classes": "exclude",
        }
    if located is not None:
        method, table, overall = located
        payload["localisation"] = {
            "method": method,
            "boxes": "boxes.parquet",
            "overall": overall,
            "per_class": table.to_dict("records"),
        }
        atomic_write_text(out / LOCALISATION, table.to_csv(index=False))
    # The model folder keeps its scores beside its decisions (its hub card lists them).
    save_evaluation(
        model_dir,
        split,
        {
            "run": run.root.name,
            "images": len(rows),
            "patients": int(rows["patient_id"].nunique()),
            "summary": payload["summary"],
            "intervals": payload.get("intervals"),
            "bootstrap": payload.get("bootstrap"),
            "localisation": (payload.get("localisation") or {}).get("overall"),
            "optimistic_tuned_f1": split == "val",
        },
    )
    atomic_write_text(out / PER_CLASS, report.per_class.to_csv(index=False))
    ids = rows["image_id"].tolist()
    preds = pd.DataFrame(probs, columns=list(model.classes))
    preds.insert(0, "ImageID", ids)
    # True labels: 1, 0, empty where unknown.
    truth = pd.DataFrame(labels, columns=[f"label:{c}" for c in model.classes]).astype("Int8")
    atomic_write_text(
        out / "predictions.csv", pd.concat([preds, truth], axis=1).to_csv(index=False)
    )
    if empty_classes == "count" and report.excluded:
        tables_note = (
            f"\n\nClasses without positives here count as AP 0, AUC 0.5 and F1 0 in the means "
            f"(as the authors' code): {', '.join(report.excluded)}."
        )
    else:
        tables_note = ""
    note = tables_note + (
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
    if by_dataset:
        tables += (
            "\n## Per data set (Table 1 layout)\n\nOne model, trained on every data set of the "
            "run, evaluated on each data set's images of this split; a class a data set does not "
            "label (or has no positive for) is left out of that data set's means.\n\n"
            + markdown(
                [
                    {"data set": d, "images": n, **table1_row(name, r)}
                    for d, (n, _, r) in by_dataset.items()
                ]
            )
            + "\n"
        )
    cal = payload["calibration"]
    tables += (
        f"\n## Calibration\n\nMacro expected calibration error ({CALIBRATION_BINS} bins): "
        f"{_fixed(cal['macro_ece'])}; after temperature scaling (T = {temperature:.3f}, fitted "
        f"on the validation split): {_fixed(cal['macro_ece_after_temperature'])}.\n"
    )
    if ci is not None:
        tables += (
            f"\n## 95 % intervals (patient-level bootstrap, {bootstrap_resamples:,} resamples, "
            f"{payload['bootstrap']['patients']:,} patients)\n\n"
            + markdown(interval_rows(report.summary, ci))
            + "\n"
        )
    if located is not None:
        tables += "\n" + localisation_section(located[0], located[1], located[2])
    atomic_write_text(out / "tables.md", tables)
    # Last: the stage record, naming the training record (train.json) the model came from.
    record_dir.write_record(f"evaluate {split}", payload, started, inputs=("train",))
    return Evaluation(
        report,
        name,
        split,
        out,
        ci,
        payload["calibration"],
        payload.get("localisation"),
        {d: r for d, (_, _, r) in by_dataset.items()},
    )


def per_dataset(
    rows: pd.DataFrame,
    labels: np.ndarray,
    probs: np.ndarray,
    classes: tuple[str, ...],
    groups: dict[str, list[str]],
    thresholds: np.ndarray,
    f1_thresholds: list[float],
    empty_classes: str,
) -> dict[str, tuple[int, int, MetricsReport]]:
    """Where the split holds images of several data sets (``data.sources``): each data set's
    images, patients and metrics (the thresholds tuned on the whole validation split);
    empty for one data set."""
    out = {}
    for name, mine in dataset_masks(rows["dataset"]).items():
        report = evaluate(
            labels[mine],
            probs[mine],
            classes,
            groups,
            thresholds=thresholds,
            f1_at=f1_thresholds,
            empty_classes=empty_classes,
        )
        out[name] = (int(mine.sum()), int(rows.loc[mine, "patient_id"].nunique()), report)
    return out


def _number(value: float) -> float | None:
    """A float for JSON; ``None`` where undefined (a class with no known label)."""
    return float(value) if np.isfinite(value) else None


def _fixed(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


METHOD_NAMES = {
    "attention": "the model's class attention maps (a_c, Eq. 12)",
    "gradcam": "Grad-CAM of each class logit",
}


def localisation_section(method: str, table: pd.DataFrame, overall: dict[str, Any]) -> str:
    """The ``tables.md`` section of the localisation scores."""
    rows = [
        {
            "class": r["class"],
            "images": r["images"],
            "pointing": r["pointing"],
            "mass inside": r["mass_inside"],
            "chance": r["chance"],
        }
        for r in table.to_dict("records")
    ]
    rows.append(
        {
            "class": "macro",
            "images": overall["pairs"],
            "pointing": overall["macro_pointing"],
            "mass inside": overall["macro_mass_inside"],
            "chance": overall["macro_chance"],
        }
    )
    return (
        "## Localisation (radiologist boxes)\n\n"
        f"Maps: {METHOD_NAMES[method]}. Pointing: the share of images whose map's maximum lies "
        "in a box of the class; mass inside: the map's share inside the boxes; chance: the "
        "boxes' share of the image (both scores for a uniform map).\n\n" + markdown(rows) + "\n"
    )


def explain_context(run_dir: Path, classes: tuple[str, ...]):
    """Tuned thresholds (from ``trcgl evaluate``) and true labels by image file name."""
    run = RunDir(run_dir)
    tuned = run.tuned_thresholds("val")
    thresholds = None
    if tuned is not None and all(c in tuned for c in classes):
        thresholds = np.array([tuned[c] for c in classes])
    manifest = Manifest.load(run / MANIFEST)
    y = manifest.frame[list(classes)].to_numpy(dtype=float) == 1  # known positives
    names = [Path(p).name for p in manifest.frame["image"]]
    labels = {n: np.asarray(row) for n, row in zip(names, y, strict=True)}
    return thresholds, labels
