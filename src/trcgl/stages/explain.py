"""Fig. 4 and Fig. 5 of a run's model on a few validation images, for the report.

:func:`explain_for_report` picks the validation images with the most positive tail labels
(ties by image id; deterministic), draws Fig. 4 (class attention maps, where the architecture
has them) and Fig. 5 (every class's probability against its tuned threshold) with
:func:`trcgl.evaluation.explain.explain_images` into ``<run>/figures/explain/``, and writes
the stage record ``figures/explain/explain.json`` last: the images, their true labels, the
figure files, where the thresholds came from, and the records it was made from (the model's
``train.json`` and the evaluation whose thresholds it used). The report only reads that record
and the figures; it never runs a model. A record that is still current is reused.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trcgl.run_dir import MANIFEST, STAGE_RECORDS, RunDir

__all__ = ["EXPLAIN_DIR", "explain_for_report", "pick_images"]

#: Where the report's Fig. 4 / Fig. 5 files go, beside their record.
EXPLAIN_DIR = str(Path(STAGE_RECORDS["explain"]).parent)


def pick_images(frame: pd.DataFrame, tail: list[str], n: int) -> pd.DataFrame:
    """The real validation rows with the most positive ``tail`` labels, ties by image id."""
    rows = frame[(frame["split"] == "val") & (frame["source"] == "real")]
    tail = [c for c in tail if c in rows.columns]
    score = rows[tail].sum(axis=1) if tail else pd.Series(0, index=rows.index)
    rows = rows.assign(_tail=score.to_numpy(), _id=rows["image_id"].astype(str))
    return rows.sort_values(["_tail", "_id"], ascending=[False, True], kind="stable").head(n)


def _nothing(asked: int, split: str | None, why: str) -> dict[str, Any]:
    return {"asked": asked, "split": split, "images": [], "note": why}


def explain_for_report(run_dir: str | Path, split: str | None, n_images: int) -> dict[str, Any]:
    """The explain record for ``n_images`` images (made now unless a current one exists), or,
    when nothing can be drawn, a record with a ``note`` that says why (not written)."""
    run = RunDir(run_dir)
    if n_images <= 0:
        return _nothing(n_images, split, "No images asked for (explain_images=0).")
    model_dir = run / "model"
    if not (model_dir / "config.json").is_file():
        return _nothing(
            n_images, split, "No model folder (model/config.json): the run has not been trained."
        )
    if not (run / MANIFEST).is_file():
        return _nothing(n_images, split, "No manifest.parquet.")
    info = run.label_stats() if (run / "label_stats.json").is_file() else {}
    cache = run.cache_root(info) if info else None
    if cache is None or not cache.is_dir():
        return _nothing(
            n_images,
            split,
            "No image cache: the run was prepared from labels only (or the cache moved).",
        )
    done = run.record("explain")
    if (
        done is not None
        and run.is_complete("explain")
        and done.get("asked") == n_images
        and done.get("split") == split
        and all(
            run.resolve(p).is_file()
            for image in done["images"]
            for p in (image["confidence"], image["regions"])
            if p
        )
    ):
        return done
    return _explain(run, cache, info, split, n_images)


def _explain(
    run: RunDir, cache: Path, info: dict[str, Any], split: str | None, n_images: int
) -> dict[str, Any]:
    from trcgl.data.cache import cached_path
    from trcgl.data.manifest import Manifest
    from trcgl.evaluation.explain import explain_images
    from trcgl.models.base import load_model

    frame = Manifest.load(run / MANIFEST).frame
    tail = list(info.get("groups", {}).get("tail", []))
    picked = []
    for _, row in pick_images(frame, tail, len(frame)).iterrows():
        path = cached_path(cache, row["image"])
        if path.is_file():
            picked.append((row, path))
        if len(picked) == n_images:
            break
    if not picked:
        return _nothing(n_images, split, "No cached validation image found to explain.")
    model = load_model(run / "model")
    classes = list(model.classes)
    thresholds, source = None, "0.5 (the run was not evaluated)"
    tuned = run.tuned_thresholds(split) if split else None
    if tuned is not None and all(c in tuned for c in classes):
        thresholds = np.array([tuned[c] for c in classes], dtype=float)
        source = f"tuned on the validation split (evaluation/{split}/per_class.csv)"
    known = all(c in frame.columns for c in classes)
    # True labels (★ in Fig. 5): the known positives; an unknown label is no star.
    labels = (
        {p.name: (row[classes].to_numpy(dtype=float) == 1) for row, p in picked} if known else None
    )
    out = run / EXPLAIN_DIR
    shutil.rmtree(out, ignore_errors=True)
    with warnings.catch_warnings():
        # A model without class attention maps: the record says so once, not once per image.
        warnings.filterwarnings("ignore", message=".*no class attention maps.*")
        explain_images(model, [p for _, p in picked], out, min(3, len(classes)), thresholds, labels)
    images = []
    for row, path in picked:
        regions, confidence = (
            out / f"{path.stem}_{kind}.png" for kind in ("regions", "confidence")
        )
        images.append(
            {
                "image_id": str(row["image_id"]),
                "labels": [c for c in classes if known and row[c] == 1],
                "regions": run.store(regions) if regions.is_file() else None,
                "confidence": run.store(confidence),
            }
        )
    inputs = ["train"] + (
        [f"evaluate {split}"] if split and run.record(f"evaluate {split}") else []
    )
    payload = {
        "asked": n_images,
        "split": split,
        "architecture": model.architecture,
        "thresholds": source,
        "attention_maps": any(image["regions"] for image in images),
        "images": images,
    }
    return run.write_record("explain", payload, inputs=inputs)
