"""``trcgl compare RUN_A RUN_B [...]``: paired patient-level bootstrap of evaluated models.

Each argument is a folder that ``trcgl evaluate`` wrote into (a run directory, or a variant
folder of ``trcgl experiment``): its ``evaluation/<split>/predictions.csv`` (scores and true
labels) and ``per_class.csv`` (the thresholds tuned on validation). The image ids must be the
same in every folder. The patients and frequency groups come from the run the first folder
belongs to (itself, or the nearest folder above it with a ``label_stats.json``).

Every model is scored on the *same* resamples of patients (:mod:`trcgl.evaluation.bootstrap`),
so the differences are paired: for each later model, per subset (overall, head, medium, tail)
and metric, B − A with its 95 % percentile interval and two-sided bootstrap p-value. The
p-values are not corrected for the number of comparisons. Written to
``<first>/evaluation/<split>/comparison.csv`` and ``.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trcgl.data.manifest import Manifest
from trcgl.errors import DataError
from trcgl.evaluation.bootstrap import (
    bootstrap,
    format_interval,
    intervals,
    paired_differences,
    patient_weights,
)
from trcgl.evaluation.tables import markdown
from trcgl.files import atomic_write_text
from trcgl.run_dir import LABEL_STATS, MANIFEST, RunDir

__all__ = ["Comparison", "compare_runs"]

METRIC_NAMES = {"mAP": "mAP", "mAUC": "mAUC", "macro_F1": "F1", "macro_F1_tuned": "F1 (tuned)"}
SUBSETS = ("overall", "head", "medium", "tail")


@dataclass
class Comparison:
    """The comparison table and where it was written."""

    frame: pd.DataFrame
    split: str
    resamples: int
    patients: int
    csv: Path
    markdown: Path


def _data_root(folder: Path) -> RunDir:
    for candidate in (folder, *folder.parents):
        if (candidate / LABEL_STATS).is_file() and (candidate / MANIFEST).is_file():
            return RunDir(candidate)
    raise DataError(f"{folder} is not inside a prepared run (no {LABEL_STATS} above it)")


def _read(
    folder: Path, split: str
) -> tuple[str, pd.DataFrame, dict[str, float] | None, dict[str, Any]]:
    """Name, predictions, tuned thresholds and the metrics ``evaluate`` recorded."""
    run = RunDir(folder)
    predictions = run.evaluation(split) / "predictions.csv"
    if not predictions.is_file():
        raise DataError(
            f"{folder} has not been evaluated on {split} (no predictions.csv): run "
            f"`trcgl evaluate --run-dir ... --split {split}` first",
            path=predictions,
        )
    record = run.record(f"evaluate {split}") or {}
    name = str(record.get("method") or folder.name)
    frame = pd.read_csv(predictions)
    if "ImageID" not in frame:
        raise DataError("no ImageID column", path=predictions)
    return name, frame, run.tuned_thresholds(split), record.get("summary") or {}


def _number(value: Any) -> float:
    return np.nan if value is None else float(value)


def compare_runs(
    folders: Sequence[str | Path], split: str = "val", n_resamples: int = 1000, seed: int = 0
) -> Comparison:
    """Paired bootstrap of every model in ``folders`` against the first (see the module)."""
    paths = [Path(f) for f in folders]
    if len(paths) < 2:
        raise DataError("compare needs at least two evaluated folders")
    loaded = [_read(p, split) for p in paths]
    first = loaded[0][1]
    ids = first["ImageID"].astype(str).tolist()
    classes = [c for c in first.columns if c != "ImageID" and not c.startswith("label:")]
    for path, (_, frame, _, _) in zip(paths[1:], loaded[1:], strict=True):
        other = frame["ImageID"].astype(str)
        if set(other) != set(ids) or len(other) != len(ids):
            missing = sorted(set(ids) ^ set(other))[:3]
            raise DataError(
                f"{path} was evaluated on other images than {paths[0]} (e.g. {missing}); "
                "compare models on the same split of the same run",
                path=RunDir(path).evaluation(split) / "predictions.csv",
            )
        absent = [c for c in classes if c not in frame]
        if absent:
            raise DataError(f"{path} has no scores for {absent[:3]}", path=path)
    data = _data_root(paths[0])
    manifest = Manifest.load(data / MANIFEST).frame
    patient_of = dict(zip(manifest["image_id"].astype(str), manifest["patient_id"], strict=True))
    unknown = [i for i in ids if i not in patient_of]
    if unknown:
        raise DataError(f"images not in {data / MANIFEST}: {unknown[:3]}", path=data / MANIFEST)
    patients = [patient_of[i] for i in ids]
    groups = {g: list(v) for g, v in data.label_stats().get("groups", {}).items() if g in SUBSETS}
    labels = first[[f"label:{c}" for c in classes]].to_numpy(dtype=float)  # NaN: unknown
    weights = patient_weights(patients, n_resamples, seed)
    samples, points, names = [], [], []
    for name, frame, tuned, summary in loaded:
        scores = frame.set_index(frame["ImageID"].astype(str)).loc[ids, classes].to_numpy(float)
        thresholds = (
            [tuned[c] for c in classes] if tuned and all(c in tuned for c in classes) else None
        )
        full = bootstrap(labels, scores, patients, classes, groups, thresholds, weights=weights)
        samples.append(full)
        # The point estimates are the ones `evaluate` recorded for these predictions.
        points.append(
            {
                sub: {m: _number(summary.get(sub, {}).get(m)) for m in ms}
                for sub, ms in full.values.items()
            }
        )
        names.append(name)
    rows = []
    reference = intervals(samples[0])
    for k in range(1, len(samples)):
        diff = paired_differences(samples[0], samples[k])
        own = intervals(samples[k])
        for subset in (s for s in SUBSETS if s in diff):
            for metric, label in METRIC_NAMES.items():
                if metric not in diff[subset]:
                    continue
                d = diff[subset][metric]
                a, b = points[0][subset][metric], points[k][subset][metric]
                rows.append(
                    {
                        "model": names[k],
                        "folder": str(paths[k]),
                        "reference": names[0],
                        "subset": subset,
                        "metric": label,
                        "reference value": a,
                        "reference 95 % CI": format_interval(*reference[subset][metric]),
                        "value": b,
                        "95 % CI": format_interval(*own[subset][metric]),
                        "difference": b - a,
                        "difference 95 % CI": format_interval(d["low"], d["high"]),
                        "difference low": d["low"],
                        "difference high": d["high"],
                        "p": d["p"],
                    }
                )
    frame = pd.DataFrame(rows)
    out = RunDir(paths[0]).evaluation(split)
    csv, md = out / "comparison.csv", out / "comparison.md"
    atomic_write_text(csv, frame.to_csv(index=False))
    shown = frame.drop(
        columns=["reference", "folder", "difference low", "difference high"], errors="ignore"
    )
    note = (
        f"\n\nPaired patient-level bootstrap on the {split} split: {n_resamples:,} resamples of "
        f"{len(set(map(str, patients))):,} patients (seed {seed}), the same for every model; "
        "difference = model − reference; p: two-sided bootstrap p-value, not corrected for the "
        f"number of comparisons. Reference: {names[0]} ({paths[0]}).\n"
    )
    atomic_write_text(
        md, f"# Paired comparison ({split})\n\n" + markdown(shown.to_dict("records")) + note
    )
    return Comparison(frame, split, n_resamples, len(set(map(str, patients))), csv, md)
