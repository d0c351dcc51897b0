"""``wide``: a CSV with one column per class (``1``, ``0``, ``-1`` for uncertain, or blank), the
layout of most private data sets; its classes come from ``data.classes`` or ``data.vocabulary``.

Which column holds what is ``data.columns``: the manifest fields ``image`` (default column
``image``), ``patient_id`` (default ``patient_id``), and optionally ``image_id`` (default: the
image's file name) and ``view``; a class reads the column named like it unless
``data.columns`` names another. Uncertain and blank cells follow ``data.uncertain`` and
``data.blank``, as for CheXpert (:func:`~trcgl.data.readers.csv_checks.uncertain_matrix`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from trcgl.data.manifest import build_manifest
from trcgl.data.readers.csv_checks import (
    ReadResult,
    check_ids,
    check_paths,
    read_csv,
    require_columns,
    row_numbers,
    uncertain_matrix,
)
from trcgl.data.readers.format import DataFormat
from trcgl.registry import DATA_FORMATS

#: The manifest fields a ``wide`` CSV may name a column for (``data.columns``).
FIELDS = ("image", "patient_id", "image_id", "view")


def read_wide(
    path: str | Path,
    classes: Sequence[str],
    columns: Mapping[str, str] | None = None,
    uncertain: str = "ignore",
    blank: str = "zero",
) -> ReadResult:
    """Read a wide CSV: ``columns`` maps manifest fields and classes to CSV columns (the rest
    read the column of their own name); ``uncertain`` / ``blank``: the label policies."""
    path = Path(path)
    columns = dict(columns or {})
    df = read_csv(path)
    field = {name: columns.get(name, name) for name in FIELDS}
    class_columns = [columns.get(c, c) for c in classes]
    require_columns(df, [field["image"], field["patient_id"], *class_columns], path)
    for optional in ("image_id", "view"):
        if optional in columns:
            require_columns(df, [field[optional]], path)
    check_paths(df, [field["image"]], path)
    image = df[field["image"]]
    if "image_id" in columns:
        id_column, image_id = field["image_id"], df[field["image_id"]]
    else:  # the file name, checked for repeats in the image column
        id_column, image_id = field["image"], image.map(lambda p: Path(p).name)
    check_ids(df.assign(**{id_column: image_id}), id_column, field["patient_id"], path)
    labels = uncertain_matrix(df, class_columns, path, uncertain, blank)
    records = pd.DataFrame(
        {"image": image, "image_id": image_id, "patient_id": df[field["patient_id"]]}
    )
    if "view" in columns:
        records["view"] = df[field["view"]]
    return ReadResult(build_manifest(records, labels, tuple(classes)), path, row_numbers(len(df)))


DATA_FORMATS.add(
    "wide",
    DataFormat(
        read=lambda path, classes, data: read_wide(
            path, classes, data.columns, data.uncertain, data.blank
        ),
        description="CSV with a 1/0/-1/blank column per class (columns chosen by data.columns)",
        prompt_style="plain",
    ),
)
