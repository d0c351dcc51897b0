"""Several data sets in one run (``data.sources``): each source's manifest relabelled to the
shared vocabulary, then joined into one manifest.

**Relabelling** (a mapping table, ``relabel``, in the layout of the PadChest table: one row per
source class with the shared class it counts toward, ``finding`` and ``class``; a source class
may count toward several shared classes, or none with an empty ``class``). For each shared
class S and each image, over the source classes mapped to S: 1 if any of them is 1, else
unknown if any is unknown, else 0 (a logical OR in which unknown is "maybe"). A shared class
that no source class maps to is **unknown** for every image of that source: the data set does
not label it, so its loss weight is 0 and it is left out of that class's metrics. Without a
table a source class maps to the shared class of the same name. A source class that maps
nowhere it could (absent from the table, or, without one, not in the shared vocabulary) is an
error naming the file, the column or row and the value: a class is never dropped silently.

**Joining**: every row's ``dataset`` is its source's ``name``; image ids and patient ids are
prefixed ``<name>:`` (so two data sets' patients never merge and no id repeats) and image paths
``<name>/`` (each source's images live under its own image root; the image cache keeps them
under ``<name>/`` too). Each source is split on its own (:mod:`trcgl.data.split`) before the
join, so every data set has its own train / validation / test patients.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from trcgl.data.manifest import TEXT_COLUMNS, Manifest
from trcgl.data.vocab import FindingMapping
from trcgl.errors import DataError

__all__ = ["class_targets", "join_sources", "relabel", "relabel_boxes"]


def class_targets(
    source_classes: Sequence[str],
    shared: Sequence[str],
    mapping: FindingMapping | None,
    labels_csv: Path,
) -> dict[str, tuple[str, ...]]:
    """Source class → the shared classes it counts toward (checked as the module says)."""
    if mapping is None:
        outside = [c for c in source_classes if c not in shared]
        if outside:
            raise DataError(
                f"class {outside[0]!r} is not in the shared vocabulary {list(shared)}; give the "
                "source a relabel table (data.sources[].relabel) that maps it, or leaves it "
                "out with an empty class",
                path=labels_csv,
                column=outside[0],
            )
        return {c: (c,) for c in source_classes}
    targets = {}
    for c in source_classes:
        found = mapping.classes_of(c)
        if found is None:
            raise DataError(
                f"class {c!r} of the data set is not in relabel table {mapping.name!r}; add a row "
                f"'{c},<shared class>' (an empty class leaves it out)",
                path=mapping.path,
                column="finding",
            )
        targets[c] = found
    known = set(source_classes)
    stray = [f for f in mapping.targets if f not in known]
    if stray:
        raise DataError(
            f"relabel table names {stray[0]!r}, which is not a class of the data set "
            f"{list(source_classes)}",
            path=mapping.path,
            row=mapping.rows.get(stray[0]),
            column="finding",
        )
    return targets


def relabel(
    manifest: Manifest,
    shared: Sequence[str],
    mapping: FindingMapping | None,
    labels_csv: Path,
) -> tuple[Manifest, list[str]]:
    """``manifest`` with its class columns replaced by the ``shared`` ones (module docstring),
    and the source classes that count toward no shared class."""
    targets = class_targets(manifest.classes, shared, mapping, labels_csv)
    values = manifest.label_values()
    out = np.full((len(manifest), len(shared)), np.nan, dtype=np.float32)
    for j, name in enumerate(shared):
        columns = [i for i, c in enumerate(manifest.classes) if name in targets[c]]
        if not columns:
            continue  # the data set does not label this class: unknown
        block = values[:, columns]
        positive = (block == 1).any(axis=1)
        unknown = np.isnan(block).any(axis=1)
        out[:, j] = np.where(positive, 1.0, np.where(unknown, np.nan, 0.0))
    meta = manifest.frame.drop(columns=list(manifest.classes))
    frame = pd.concat([meta, pd.DataFrame(out, columns=list(shared))], axis=1)
    unmapped = [c for c in manifest.classes if not targets[c]]
    return Manifest(frame, tuple(shared)), unmapped


def relabel_boxes(
    boxes: pd.DataFrame, targets_of: dict[str, tuple[str, ...]], name: str
) -> pd.DataFrame:
    """A source's box table in the shared vocabulary and the joined manifest's image ids: a box
    of a source class counts for each shared class it maps to (``targets_of``:
    :func:`class_targets`; none: dropped)."""
    rows = [
        {**box, "class": target, "image_id": f"{name}:{box['image_id']}"}
        for box in boxes.to_dict("records")
        for target in targets_of.get(box["class"], ())
    ]
    return pd.DataFrame(rows, columns=list(boxes.columns))


def join_sources(parts: Sequence[tuple[str, Manifest]]) -> Manifest:
    """One manifest from each source's (relabelled, split) manifest: ``dataset`` set, ids
    prefixed ``<name>:`` and image paths ``<name>/`` (module docstring)."""
    frames = []
    classes = parts[0][1].classes
    for name, manifest in parts:
        if manifest.classes != classes:
            raise DataError(f"data set {name!r} is not relabelled to the shared vocabulary")
        frame = manifest.frame.copy()
        frame["dataset"] = name
        frame["image"] = name + "/" + frame["image"].astype(str)
        for column in ("image_id", "patient_id"):
            frame[column] = name + ":" + frame[column].astype(str)
        frames.append(frame)
    text = [c for c in TEXT_COLUMNS if any(c in f.columns for f in frames)]
    for frame in frames:
        for column in text:
            if column not in frame.columns:
                frame[column] = ""
    return Manifest(pd.concat(frames, ignore_index=True), classes)
