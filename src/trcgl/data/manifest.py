"""The manifest: one table, one row per image, that every reader returns.

Columns, in order: ``image`` (path relative to the image root, never outside it),
``image_id`` (the name used in submissions, e.g. CXR-LT's ``ImageID``), ``patient_id``,
``view``, ``split`` (``train`` / ``val`` / ``test``), ``source`` (``real`` / ``synthetic``),
``weight`` (per-sample loss weight), ``dataset`` (the data set a row comes from: the format or
the ``data.sources`` name; empty for synthetic rows and for manifests written before the column
existed), optional text columns (``localizations``: PadChest's English
``LabelsLocalizationsBySentence``; ``report``: a report's findings text, e.g. OpenI's;
``prompt``), then one column per class, named by the class,
in vocabulary order. The class order is stored with the table (parquet metadata), so a manifest
is self-describing.

A label cell is 1 (positive), 0 (negative) or unknown, as torchxrayvision's datasets have it: the
class columns are float32 and NaN means unknown (CheXpert's uncertain labels under U-Ignore, a
blank read as unknown, a class that a data set does not label). Manifests written with uint8
label columns (before unknown cells existed) load as float32 with every cell known. Code that
needs only positives reads :meth:`Manifest.labels` (unknown counts as not positive); code that
must skip unknown cells reads :meth:`Manifest.known` beside it, or :meth:`Manifest.label_values`
(1 / 0 / NaN).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from trcgl.errors import DataError
from trcgl.files import atomic_path

META_COLUMNS: tuple[str, ...] = (
    "image",
    "image_id",
    "patient_id",
    "view",
    "split",
    "source",
    "weight",
    "dataset",
)
TEXT_COLUMNS: tuple[str, ...] = ("localizations", "report", "prompt")
SPLITS: tuple[str, ...] = ("train", "val", "test")
_METADATA_KEY = b"trcgl.classes"


_DRIVE = re.compile(r"^[A-Za-z]:")


def path_problem(value: str) -> str | None:
    """Why ``value`` cannot be an image path relative to an image root, or ``None``: it is
    absolute (``/x``, ``\\x``, ``C:x``) or climbs out with a ``..`` part."""
    text = str(value).strip()
    if text.startswith(("/", "\\")) or _DRIVE.match(text):
        return "is an absolute path; image paths must be relative to the image root"
    if ".." in re.split(r"[/\\]", text):
        return "leaves the image root (a '..' part)"
    return None


def checked_relative(value: str, source: str | Path, row: int, column: str) -> str:
    """``value`` if it is a path inside its root, else a :class:`DataError` naming the file,
    (1-based) row and column."""
    problem = path_problem(value)
    if problem:
        raise DataError(f"{value!r} {problem}", path=source, row=row, column=column)
    return value


@dataclass
class Manifest:
    """A manifest table and its class order."""

    frame: pd.DataFrame
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        clash = set(self.classes) & set(META_COLUMNS + TEXT_COLUMNS)
        if clash:
            raise DataError(f"class names clash with manifest columns: {sorted(clash)}")
        if "dataset" not in self.frame.columns:  # written before the column existed
            self.frame = self.frame.assign(dataset="")
        missing = [c for c in (*META_COLUMNS, *self.classes) if c not in self.frame.columns]
        if missing:
            raise DataError(f"manifest lacks column(s) {missing}")
        text = [c for c in TEXT_COLUMNS if c in self.frame.columns]
        frame = self.frame[[*META_COLUMNS, *text, *self.classes]].reset_index(drop=True)
        frame["dataset"] = frame["dataset"].fillna("").astype(str)
        stale = [c for c in self.classes if frame[c].dtype != np.float32]
        if stale:  # uint8 columns of older manifests, ints or floats from a caller
            frame[stale] = frame[stale].astype(np.float32)
        self.frame = frame

    def __len__(self) -> int:
        return len(self.frame)

    def label_values(self) -> np.ndarray:
        """The N×C label matrix (float32) in class order: 1, 0, or NaN where unknown."""
        return self.frame[list(self.classes)].to_numpy(dtype=np.float32, copy=True)

    def labels(self) -> np.ndarray:
        """The N×C 0/1 matrix of positives (uint8) in class order; an unknown cell is 0."""
        return (self.label_values() == 1).astype(np.uint8)

    def known(self) -> np.ndarray:
        """The N×C boolean matrix of known cells (False where a label is unknown)."""
        return ~np.isnan(self.label_values())

    def digest(self) -> str:
        """SHA-256 of what a model learns from: every row's ``image_id``, ``patient_id``,
        ``split``, ``source``, ``weight`` and labels (``1``, ``0``, empty where unknown), in row
        order, with the class names; the image root, file paths and ``dataset`` are left out,
        so a moved data set keeps its digest (and a manifest whose cells are all known keeps
        the digest it had before unknown cells and the ``dataset`` column existed)."""
        columns = ["image_id", "patient_id", "split", "source", "weight", *self.classes]
        text = self.frame[columns].to_csv(index=False, float_format="%.9g", lineterminator="\n")
        return hashlib.sha256(text.encode()).hexdigest()

    def subset(self, split: str | None = None, source: str | None = None) -> Manifest:
        """Rows of one split and/or one source."""
        mask = pd.Series(True, index=self.frame.index)
        if split is not None:
            mask &= self.frame["split"] == split
        if source is not None:
            mask &= self.frame["source"] == source
        return Manifest(self.frame[mask], self.classes)

    def extended(self, rows: pd.DataFrame) -> Manifest:
        """This manifest followed by ``rows`` (its columns), keeping this manifest's column
        types (string, uint8, float) where the concatenation would change them."""
        if len(rows) == 0:
            return self
        if "dataset" not in rows.columns:
            rows = rows.assign(dataset="")
        merged = pd.concat([self.frame, rows[list(self.frame.columns)]], ignore_index=True)
        for name in self.frame.columns:
            if merged[name].dtype != self.frame[name].dtype:
                merged[name] = merged[name].astype(self.frame[name].dtype)
        return Manifest(merged, self.classes)

    def save(self, path: str | Path) -> None:
        """Write the manifest as parquet (atomically), class order in the file's metadata."""
        table = pa.Table.from_pandas(self.frame, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[_METADATA_KEY] = json.dumps(list(self.classes)).encode()
        table = table.replace_schema_metadata(meta)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read a manifest written by :meth:`save`."""
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        if _METADATA_KEY not in meta:
            raise DataError("not a trcgl manifest (no class list in its metadata)", path=path)
        classes = tuple(json.loads(meta[_METADATA_KEY]))
        return cls(table.to_pandas(), classes)


def build_manifest(
    records: pd.DataFrame,
    labels: np.ndarray,
    classes: tuple[str, ...],
) -> Manifest:
    """Assemble a manifest from per-row metadata and an N×C label matrix of 1, 0 and NaN
    (unknown); any other value is a :class:`DataError`.

    ``records`` needs ``image``, ``image_id``, ``patient_id``; ``view``, ``dataset`` and the
    text columns are optional. ``split`` starts empty, ``source`` is ``real`` and ``weight``
    1.0.
    """
    values = np.asarray(labels, dtype=np.float32)
    bad = ~(np.isnan(values) | (values == 0) | (values == 1))
    if bad.any():
        i, j = (int(k[0]) for k in np.nonzero(bad))
        raise DataError(
            f"label of row {i + 1} must be 1, 0 or NaN (unknown), got {values[i, j]!r}",
            column=classes[j],
        )
    frame = pd.DataFrame(
        {
            "image": records["image"].astype(str).to_numpy(),
            "image_id": records["image_id"].astype(str).to_numpy(),
            "patient_id": records["patient_id"].astype(str).to_numpy(),
            "view": records["view"].astype(str).to_numpy() if "view" in records else "",
            "split": "",
            "source": "real",
            "weight": np.ones(len(records), dtype=np.float32),
            "dataset": (records["dataset"].astype(str).to_numpy() if "dataset" in records else ""),
        }
    )
    for col in TEXT_COLUMNS:
        if col in records:
            frame[col] = records[col].fillna("").astype(str).to_numpy()
    label_frame = pd.DataFrame(values, columns=list(classes))
    return Manifest(pd.concat([frame, label_frame], axis=1), classes)
