"""``vindr``: VinDr-CXR's radiologist annotations (``image_id``, ``class_name``, ``rad_id`` and
the box ``x_min``, ``y_min``, ``x_max``, ``y_max`` in pixels; one row per finding a radiologist
marked, a ``No finding`` row for a reader who marked none), the VinBigData challenge's
``train.csv`` being the copy inside the installed ``torchxrayvision`` wheel
(``vinbigdata-train.csv.gz``: 67,914 rows, 15,000 images, three readers each).

Every image becomes one manifest row. Its readers are the distinct ``rad_id`` of its rows; a
class gets a reader's vote when that reader marked it, and the votes become the label by
``data.aggregation``: ``any`` (at least one reader), ``majority`` (more than half of the
readers: two of three) or ``strict`` (every reader or none; readers who disagree are an error
naming the file, the row, the column and the class). ``No finding`` is not voted on: it is 1
exactly when no other class is positive after aggregation. VinDr gives no patient ids, so each
image is its own patient. The image path is ``train/<image_id>.dicom`` (``test/`` for an
annotation file whose name says ``test``), as the released folders are.

Boxes (:mod:`trcgl.data.boxes`): every box of a class that is positive for its image after
aggregation (a minority reader's box of a class the majority did not see is dropped). The
boxes are in pixels of the original DICOM, which differ from image to image; they become image
fractions with each image's width and height taken from ``data.image_sizes`` (a CSV of
``image_id``, ``width``, ``height``) or, without it, from the DICOM header (``Columns``,
``Rows``) of ``train/<image_id>.dicom`` under ``data.image_root``. A labels-only run with
neither keeps no boxes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from trcgl.config import resolve_path
from trcgl.data.boxes import check_boxes
from trcgl.data.manifest import Manifest, build_manifest
from trcgl.data.readers.csv_checks import (
    ReadResult,
    check_paths,
    data_row,
    read_csv,
    refuse,
    require_columns,
)
from trcgl.data.readers.format import DataFormat
from trcgl.data.vocab import VINDR_CLASSES
from trcgl.errors import DataError
from trcgl.registry import DATA_FORMATS

if TYPE_CHECKING:
    from trcgl.config import DataConfig

VINDR_CSV_NAME = "vinbigdata-train.csv.gz"
NO_FINDING = "No finding"
BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
AGGREGATIONS = ("any", "majority", "strict")


def _folder(path: Path) -> str:
    return "test" if "test" in path.name.lower() else "train"


def _read_rows(path: Path) -> pd.DataFrame:
    df = read_csv(path)
    require_columns(df, ["image_id", "class_name", "rad_id"], path)
    for column in ("image_id", "rad_id"):
        refuse(df[column].str.strip() == "", path, column, lambda i, c=column: f"empty {c}")
    refuse(
        ~df["class_name"].isin(VINDR_CLASSES),
        path,
        "class_name",
        lambda i: (
            f"unknown VinDr-CXR class {df['class_name'].iloc[i]!r}; expected one of "
            f"{list(VINDR_CLASSES)}"
        ),
    )
    return df


def read_vindr(
    path: str | Path, classes: Sequence[str] = VINDR_CLASSES, aggregation: str = "majority"
) -> ReadResult:
    """Read VinDr-CXR annotations into one row per image (see the module docstring)."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    path = Path(path)
    df = _read_rows(path)
    outside = sorted(set(classes) - set(VINDR_CLASSES))
    if outside:
        raise DataError(f"classes {outside} are not VinDr-CXR classes {list(VINDR_CLASSES)}")
    image_codes, images = pd.factorize(df["image_id"])
    first_row = np.full(len(images), len(df), dtype=np.int64)
    np.minimum.at(first_row, image_codes, np.arange(len(df)))
    readers = df.groupby(image_codes)["rad_id"].nunique().to_numpy()
    findings = [c for c in classes if c != NO_FINDING]
    labels = np.zeros((len(images), len(classes)), dtype=np.float32)
    for c in findings:
        marked = (df["class_name"] == c).to_numpy()
        voters = df[marked].groupby(image_codes[marked])["rad_id"].nunique()
        votes = np.zeros(len(images), dtype=np.int64)
        votes[voters.index.to_numpy()] = voters.to_numpy()
        if aggregation == "strict":
            split = (votes > 0) & (votes < readers)
            if split.any():
                k = int(np.flatnonzero(split)[0])
                rows = np.flatnonzero(marked & (image_codes == k))
                said = sorted(set(df["rad_id"].iloc[rows]))
                raise DataError(
                    f"readers disagree on {c!r} for image {images[k]!r}: {', '.join(said)} "
                    f"marked it, {readers[k] - len(said)} of {readers[k]} did not "
                    "(data.aggregation=strict; use any or majority to combine them)",
                    path=path,
                    row=data_row(rows[0]),
                    column="class_name",
                )
        positive = votes >= 1 if aggregation == "any" else 2 * votes > readers
        labels[:, classes.index(c)] = positive
    if NO_FINDING in classes:
        labels[:, list(classes).index(NO_FINDING)] = ~labels[
            :, [classes.index(c) for c in findings]
        ].any(axis=1)
    image_paths = [f"{_folder(path)}/{i}.dicom" for i in images]
    records = pd.DataFrame(
        {"image": image_paths, "image_id": images, "patient_id": images, "view": "PA"}
    )
    check_paths(records, ["image"], path)
    manifest = build_manifest(records, labels, tuple(classes))
    return ReadResult(manifest, path, first_row + 1)


def _image_sizes(
    image_ids: Sequence[str], sizes_csv: Path | None, image_root: Path | None, folder: str
) -> pd.DataFrame | None:
    """Width and height in pixels of each image, from ``sizes_csv`` or the DICOM headers."""
    if sizes_csv is not None:
        table = read_csv(sizes_csv)
        require_columns(table, ["image_id", "width", "height"], sizes_csv)
        for column in ("width", "height"):
            number = pd.to_numeric(table[column], errors="coerce")
            refuse(
                ~(number > 0),
                sizes_csv,
                column,
                lambda i, c=column: f"expected a size in pixels, got {table[c].iloc[i]!r}",
            )
            table[column] = number
        return table.set_index("image_id")[["width", "height"]]
    if image_root is None:
        return None
    import pydicom

    rows = []
    for image_id in image_ids:
        file = image_root / folder / f"{image_id}.dicom"
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True, force=True)
            rows.append((image_id, float(header.Columns), float(header.Rows)))
        except (OSError, AttributeError, ValueError) as exc:
            raise DataError(
                f"cannot read the image size from its DICOM header: {exc}", path=file
            ) from exc
    return pd.DataFrame(rows, columns=["image_id", "width", "height"]).set_index("image_id")


def read_vindr_boxes(
    path: str | Path,
    manifest: Manifest,
    image_sizes: str | Path | None = None,
    image_root: str | Path | None = None,
) -> pd.DataFrame | None:
    """The boxes of ``path`` as a box table in image fractions, for the classes that are
    positive for their image in ``manifest`` (see the module docstring); ``None`` when no
    image size is available (no ``image_sizes`` and no ``image_root``)."""
    path = Path(path)
    df = _read_rows(path)
    require_columns(df, list(BOX_COLUMNS), path)
    has_box = (df[list(BOX_COLUMNS)].apply(lambda c: c.str.strip()) != "").all(axis=1).to_numpy()
    frame = manifest.frame
    positive = {
        (image_id, c)
        for j, c in enumerate(manifest.classes)
        for image_id in frame["image_id"].to_numpy()[manifest.labels()[:, j] == 1]
    }
    keep = has_box & np.array(
        [(i, c) in positive for i, c in zip(df["image_id"], df["class_name"], strict=True)]
    )
    rows = np.flatnonzero(keep)
    boxes = df.iloc[rows]
    sizes = _image_sizes(
        sorted(set(boxes["image_id"])),
        None if image_sizes is None else Path(image_sizes),
        None if image_root is None else Path(image_root),
        _folder(path),
    )
    if sizes is None:
        warnings.warn(
            "VinDr-CXR boxes are in pixels: set data.image_sizes or data.image_root to keep "
            "them; no boxes kept",
            stacklevel=2,
        )
        return None
    refuse(
        ~boxes["image_id"].isin(sizes.index),
        path,
        "image_id",
        lambda i: f"no image size for {boxes['image_id'].iloc[i]!r} in {image_sizes}",
        rows,
    )
    coords = {}
    for column in BOX_COLUMNS:
        number = pd.to_numeric(boxes[column], errors="coerce").to_numpy(dtype=float)
        refuse(
            np.isnan(number),
            path,
            column,
            lambda i, c=column: f"expected a number of pixels, got {boxes[c].iloc[i]!r}",
            rows,
        )
        coords[column] = number
    width = sizes.loc[boxes["image_id"], "width"].to_numpy(dtype=float)
    height = sizes.loc[boxes["image_id"], "height"].to_numpy(dtype=float)
    table = pd.DataFrame(
        {
            "image_id": boxes["image_id"].to_numpy(),
            "class": boxes["class_name"].to_numpy(),
            "x0": coords["x_min"] / width,
            "y0": coords["y_min"] / height,
            "x1": coords["x_max"] / width,
            "y1": coords["y_max"] / height,
        }
    )
    return check_boxes(table, manifest.classes, path, rows + 1, "class_name")


def _boxes(path: Path, manifest: Manifest, data: DataConfig) -> pd.DataFrame | None:
    return read_vindr_boxes(
        path, manifest, resolve_path(data.image_sizes), resolve_path(data.image_root)
    )


DATA_FORMATS.add(
    "vindr",
    DataFormat(
        read=lambda path, classes, data: read_vindr(path, classes, data.aggregation),
        description="VinDr-CXR annotations, readers combined by data.aggregation; boxes kept",
        vocabulary="vindr15",
        installed_csv=VINDR_CSV_NAME,
        prompt_style="plain",
        read_boxes=_boxes,
        boxes_from_labels=True,
    ),
)
