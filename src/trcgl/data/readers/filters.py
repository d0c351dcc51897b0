"""Filters applied after any reader: the views to keep and exclusion lists of image ids."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from trcgl.data.readers.csv_checks import ReadResult
from trcgl.errors import DataError


def apply_filters(
    result: ReadResult,
    projections: Sequence[str] | None = None,
    exclude_ids: Iterable[str] = (),
) -> ReadResult:
    """Keep the listed projections (``view``) and drop excluded image ids, counting both.

    A manifest without view information (e.g. the CXR-LT CSV) is not filtered by projection.
    """
    frame = result.manifest.frame
    keep = np.ones(len(frame), dtype=bool)
    dropped = dict(result.dropped)
    if projections is not None and (frame["view"] != "").any():
        in_views = frame["view"].isin(list(projections)).to_numpy()
        if (~in_views).any():
            dropped["projection not in " + "/".join(projections)] = int((~in_views).sum())
        keep &= in_views
    exclude = set(exclude_ids)
    if exclude:
        hit = frame["image_id"].isin(exclude).to_numpy() & keep
        if hit.any():
            dropped["on an exclusion list"] = int(hit.sum())
        keep &= ~hit
    kept = result.keep(keep)
    kept.dropped = dropped
    return kept


def read_exclusion_list(name_or_path: str | Path) -> set[str]:
    """Image ids from a text file (one per line, ``#`` comments); shipped lists by name."""
    p = Path(name_or_path)
    if not p.is_file():
        shipped = resources.files("trcgl.resources").joinpath(str(name_or_path))
        if not shipped.is_file():
            raise DataError("exclusion list not found", path=name_or_path)
        p = Path(str(shipped))
    ids = set()
    for raw in p.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            ids.add(line)
    return ids
