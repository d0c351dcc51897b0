"""``plain``: a CSV with ``image``, ``patient_id`` and ``labels`` (pipe-separated class names);
its classes come from ``data.classes`` or ``data.vocabulary``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trcgl.data.manifest import build_manifest
from trcgl.data.readers.csv_checks import (
    ReadResult,
    check_ids,
    check_paths,
    multi_hot,
    pipe_lists,
    read_csv,
    require_columns,
    row_numbers,
)
from trcgl.data.readers.format import DataFormat
from trcgl.registry import DATA_FORMATS


def read_plain(path: str | Path, classes: Sequence[str]) -> ReadResult:
    """Read a plain CSV: ``image``, ``patient_id``, ``labels`` (pipe-separated class names,
    empty for an image with none of the classes); optional ``image_id`` and ``view``."""
    path = Path(path)
    df = read_csv(path)
    require_columns(df, ["image", "patient_id", "labels"], path)
    if "image_id" not in df:
        df["image_id"] = [Path(p).name for p in df["image"]]
    check_ids(df, "image_id", "patient_id", path)
    check_paths(df, ["image"], path)
    lists = pipe_lists(df["labels"], path, "labels", allow_empty=True)
    labels = multi_hot(lists, classes, path, "labels")
    records = df[["image", "image_id", "patient_id"]].copy()
    if "view" in df:
        records["view"] = df["view"]
    return ReadResult(build_manifest(records, labels, tuple(classes)), path, row_numbers(len(df)))


DATA_FORMATS.add(
    "plain",
    DataFormat(
        read=lambda path, classes, data: read_plain(path, classes),
        description="CSV with image, patient_id and pipe-separated labels",
        prompt_style="plain",
    ),
)
