"""Radiologist boxes beside the manifest: one row per box, in image fractions.

A box table has the columns :data:`BOX_COLUMNS`: ``image_id`` (as in the manifest), ``class``
(a class of the run's vocabulary) and ``x0, y0, x1, y1``, the box's corners as fractions of the
image's width and height (0 = left / top edge, 1 = right / bottom edge). Fractions survive the
image cache's square resize, so a box drawn on a 1024 px original lands on the same anatomy of
the 128 px copy the model reads. ``trcgl prepare`` keeps the boxes of the manifest's images as
``boxes.parquet``; ``trcgl evaluate`` scores the class maps against them
(:mod:`trcgl.evaluation.localisation`).

A box file is read by its format's reader module (``DataFormat.read_boxes``), e.g.
:func:`trcgl.data.readers.nih.read_nih_boxes` for NIH's ``BBox_List_2017.csv``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from trcgl.errors import DataError
from trcgl.files import atomic_write_with

BOX_COLUMNS = ("image_id", "class", "x0", "y0", "x1", "y1")


def check_boxes(
    frame: pd.DataFrame,
    classes: Sequence[str],
    path: Path,
    rows: Sequence[int] | None = None,
    class_column: str = "class",
) -> pd.DataFrame:
    """``frame`` (columns :data:`BOX_COLUMNS`) with every box inside the image and of positive
    size, every class in ``classes``; else an error naming the file, its data row (``rows``:
    each frame row's 1-based row in ``path``; default: the frame's position) and the file's
    column (``class_column`` for the class)."""
    known = set(classes)
    rows = list(range(1, len(frame) + 1)) if rows is None else list(rows)
    for i, name in enumerate(frame["class"]):
        if name not in known:
            raise DataError(
                f"box class {name!r} is not in the run's vocabulary {list(classes)}",
                path=path,
                row=int(rows[i]),
                column=class_column,
            )
    coords = frame[["x0", "y0", "x1", "y1"]].to_numpy(dtype=float)
    bad = ~np.isfinite(coords).all(axis=1)
    bad |= (coords < 0).any(axis=1) | (coords > 1).any(axis=1)
    bad |= (coords[:, 2] <= coords[:, 0]) | (coords[:, 3] <= coords[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"box {coords[i].round(4).tolist()} is empty or leaves the image",
            path=path,
            row=int(rows[i]),
        )
    return frame.reset_index(drop=True)


def save_boxes(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a box table as Parquet (atomically)."""
    table = frame[list(BOX_COLUMNS)]
    atomic_write_with(Path(path), lambda tmp: table.to_parquet(tmp, index=False))


def load_boxes(path: str | Path) -> pd.DataFrame:
    """A box table written by :func:`save_boxes`."""
    frame = pd.read_parquet(path)
    missing = [c for c in BOX_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"not a box table: missing column(s) {missing}", path=path)
    return frame
