"""Readers: every supported label file becomes one :class:`~trcgl.data.manifest.Manifest`.

Supported inputs (docs/method.md §0):

* ``cxrlt``: the CXR-LT 2026 CSV (``ImageID``, ``PatientID``, one 0/1 column per class);
* ``padchest``: the raw PadChest CSV (``Labels`` is a Python-list string of raw findings, some
  with leading spaces), relabelled to the 30 CXR-LT classes by a mapping table;
* ``nih``: NIH ChestX-ray14 ``Data_Entry_2017*.csv`` (``Finding Labels`` pipe-separated);
* ``plain``: a CSV with ``image``, ``patient_id`` and ``labels`` (pipe-separated class names).

Errors name the file, the data row (1-based, header not counted) and the column at fault.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from trcgl.data.manifest import Manifest, build_manifest, checked_relative, path_problem
from trcgl.data.vocab import CXRLT_CLASSES, NIH_CLASSES, FindingMapping, load_mapping
from trcgl.errors import DataError

FORMATS: tuple[str, ...] = ("cxrlt", "padchest", "nih", "plain")
PADCHEST_CSV_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
NIH_CSV_NAME = "Data_Entry_2017_v2020.csv.gz"


@dataclass
class ReadResult:
    """A manifest and what the reader dropped or could not map, for the summary."""

    manifest: Manifest
    source: Path
    #: For each manifest row, its 1-based data-row number in ``source`` (for error messages).
    rows: np.ndarray
    dropped: dict[str, int] = field(default_factory=dict)
    unmapped_findings: Counter[str] = field(default_factory=Counter)

    def keep(self, mask: np.ndarray) -> ReadResult:
        """The same result restricted to the rows where ``mask`` is true."""
        mask = np.asarray(mask, dtype=bool)
        manifest = Manifest(self.manifest.frame[mask], self.manifest.classes)
        return ReadResult(
            manifest, self.source, self.rows[mask], dict(self.dropped), self.unmapped_findings
        )


def _line(index: int) -> int:
    """1-based data-row number of the 0-based row ``index`` (as :class:`DataError` reports)."""
    return int(index) + 1


def _rows(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.int64)


def _read_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataError(f"cannot parse as CSV: {exc}", path=path) from exc


def _require(df: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"missing column(s) {missing}; found {list(df.columns)}", path=path, column=missing[0]
        )


def _check_paths(df: pd.DataFrame, columns: Sequence[str], path: Path) -> None:
    """Every image path stays inside the image root (no absolute path, no ``..``)."""
    for column in columns:
        for i, value in enumerate(df[column]):
            if path_problem(value):
                checked_relative(value, path, _line(i), column)


def _check_ids(df: pd.DataFrame, image_col: str, patient_col: str, path: Path) -> None:
    """Image ids unique and patient ids non-empty, or an error naming the rows."""
    empty = df[patient_col].str.strip() == ""
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataError("empty patient id", path=path, row=_line(i), column=patient_col)
    empty = df[image_col].str.strip() == ""
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataError("empty image id", path=path, row=_line(i), column=image_col)
    dup = df[image_col].duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        first = df[image_col].iloc[rows[0]]
        same = [_line(i) for i in rows if df[image_col].iloc[i] == first]
        raise DataError(
            f"duplicate image id {first!r} (also on row(s) {same[1:]})",
            path=path,
            row=same[0],
            column=image_col,
        )


def _binary_matrix(df: pd.DataFrame, columns: Sequence[str], path: Path) -> np.ndarray:
    """Parse 0/1 columns; anything else is an error naming the cell."""
    out = np.zeros((len(df), len(columns)), dtype=np.uint8)
    for j, col in enumerate(columns):
        values = pd.to_numeric(df[col].str.strip(), errors="coerce").to_numpy(dtype=float)
        bad = ~np.isin(values, (0.0, 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"expected 0 or 1, found {df[col].iloc[i]!r}", path=path, row=_line(i), column=col
            )
        out[:, j] = values.astype(np.uint8)
    return out


def _multi_hot(
    label_lists: Sequence[Sequence[str]],
    classes: Sequence[str],
    path: Path,
    column: str,
) -> np.ndarray:
    index = {c: j for j, c in enumerate(classes)}
    out = np.zeros((len(label_lists), len(classes)), dtype=np.uint8)
    for i, labels in enumerate(label_lists):
        for name in labels:
            j = index.get(name)
            if j is None:
                raise DataError(
                    f"unknown class {name!r}; expected one of {list(classes)}",
                    path=path,
                    row=_line(i),
                    column=column,
                )
            out[i, j] = 1
    return out


def _pipe_lists(column: pd.Series, path: Path, name: str, allow_empty: bool) -> list[list[str]]:
    """Split pipe-separated label lists; an empty element (``a||b``) is an error, and so is
    an empty cell unless ``allow_empty``."""
    lists = []
    for i, text in enumerate(column):
        parts = [p.strip() for p in text.split("|")] if text.strip() or not allow_empty else []
        if any(not p for p in parts):
            raise DataError(
                f"cannot parse label list {text!r} (pipe-separated names expected)",
                path=path,
                row=_line(i),
                column=name,
            )
        lists.append(parts)
    return lists


def read_cxrlt(path: str | Path, classes: Sequence[str] = CXRLT_CLASSES) -> ReadResult:
    """Read the CXR-LT 2026 CSV: ``ImageID``, ``PatientID`` and a 0/1 column per class."""
    path = Path(path)
    df = _read_csv(path)
    _require(df, ["ImageID", "PatientID", *classes], path)
    _check_ids(df, "ImageID", "PatientID", path)
    _check_paths(df, ["ImageID"], path)
    labels = _binary_matrix(df, classes, path)
    records = pd.DataFrame(
        {"image": df["ImageID"], "image_id": df["ImageID"], "patient_id": df["PatientID"]}
    )
    return ReadResult(build_manifest(records, labels, tuple(classes)), path, _rows(len(df)))


def read_nih(path: str | Path, classes: Sequence[str] = NIH_CLASSES) -> ReadResult:
    """Read NIH ChestX-ray14 ``Data_Entry_2017*.csv`` (``Finding Labels`` pipe-separated)."""
    path = Path(path)
    df = _read_csv(path)
    _require(df, ["Image Index", "Finding Labels", "Patient ID"], path)
    _check_ids(df, "Image Index", "Patient ID", path)
    _check_paths(df, ["Image Index"], path)
    lists = _pipe_lists(df["Finding Labels"], path, "Finding Labels", allow_empty=False)
    labels = _multi_hot(lists, classes, path, "Finding Labels")
    records = pd.DataFrame(
        {
            "image": df["Image Index"],
            "image_id": df["Image Index"],
            "patient_id": df["Patient ID"],
            "view": df.get("View Position", ""),
        }
    )
    return ReadResult(build_manifest(records, labels, tuple(classes)), path, _rows(len(df)))


def read_plain(path: str | Path, classes: Sequence[str]) -> ReadResult:
    """Read a plain CSV: ``image``, ``patient_id``, ``labels`` (pipe-separated class names,
    empty for an image with none of the classes); optional ``image_id`` and ``view``."""
    path = Path(path)
    df = _read_csv(path)
    _require(df, ["image", "patient_id", "labels"], path)
    if "image_id" not in df:
        df["image_id"] = [Path(p).name for p in df["image"]]
    _check_ids(df, "image_id", "patient_id", path)
    _check_paths(df, ["image"], path)
    lists = _pipe_lists(df["labels"], path, "labels", allow_empty=True)
    labels = _multi_hot(lists, classes, path, "labels")
    records = df[["image", "image_id", "patient_id"]].copy()
    if "view" in df:
        records["view"] = df["view"]
    return ReadResult(build_manifest(records, labels, tuple(classes)), path, _rows(len(df)))


def _parse_padchest_labels(text: str) -> list[str]:
    value = ast.literal_eval(text)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("not a list of strings")
    return [v.strip() for v in value if v.strip()]


#: Raw PadChest finding with which radiologists flagged an image as unusable.
PADCHEST_EXCLUDE_FINDING = "exclude"


def read_padchest(
    path: str | Path,
    mapping: FindingMapping | str | Path | None = None,
    classes: Sequence[str] = CXRLT_CLASSES,
) -> ReadResult:
    """Read the raw PadChest CSV and relabel its findings with ``mapping``.

    Rows without a ``Labels`` value (103 in the real file) and rows flagged ``exclude`` by the
    radiologists are dropped and counted. A raw finding absent from the mapping table is an
    error (the table lists every finding of the released CSV, mapped or not); known but
    unmapped findings are counted in ``unmapped_findings``. The image path is
    ``ImageDir/ImageID`` as in the distributed folders ``0``…``54``.
    """
    path = Path(path)
    if not isinstance(mapping, FindingMapping):
        mapping = load_mapping(mapping or "padchest_to_cxrlt30_v1.csv", tuple(classes))
    df = _read_csv(path)
    _require(df, ["ImageID", "ImageDir", "PatientID", "Projection", "Labels"], path)
    _check_ids(df, "ImageID", "PatientID", path)
    _check_paths(df, ["ImageDir", "ImageID"], path)
    index = {c: j for j, c in enumerate(classes)}
    parsed: dict[str, list[str]] = {}
    keep = np.ones(len(df), dtype=bool)
    labels = np.zeros((len(df), len(classes)), dtype=np.uint8)
    unmapped: Counter[str] = Counter()
    dropped = {"no Labels value": 0, "flagged 'exclude'": 0}
    for i, text in enumerate(df["Labels"]):
        if text.strip() in ("", "nan"):
            keep[i] = False
            dropped["no Labels value"] += 1
            continue
        findings = parsed.get(text)
        if findings is None:
            try:
                findings = _parse_padchest_labels(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
                raise DataError(
                    f"cannot parse label list {text[:80]!r}: {exc}",
                    path=path,
                    row=_line(i),
                    column="Labels",
                ) from None
            parsed[text] = findings
        if PADCHEST_EXCLUDE_FINDING in findings:
            keep[i] = False
            dropped["flagged 'exclude'"] += 1
            continue
        for finding in set(findings):
            targets = mapping.classes_of(finding)
            if targets is None:
                raise DataError(
                    f"unknown finding {finding!r}: not in mapping table {mapping.name!r}; add it "
                    "to a copy of the table (with an empty class to leave it unmapped)",
                    path=path,
                    row=_line(i),
                    column="Labels",
                )
            if not targets:
                unmapped[finding] += 1
            for cls in targets:
                labels[i, index[cls]] = 1
    df = df[keep]
    records = pd.DataFrame(
        {
            "image": df["ImageDir"].str.strip() + "/" + df["ImageID"],
            "image_id": df["ImageID"],
            "patient_id": df["PatientID"],
            "view": df["Projection"],
        }
    )
    if "LabelsLocalizationsBySentence" in df:
        records["localizations"] = df["LabelsLocalizationsBySentence"]
    manifest = build_manifest(records.reset_index(drop=True), labels[keep], tuple(classes))
    dropped = {k: v for k, v in dropped.items() if v}
    return ReadResult(manifest, path, _rows(len(keep))[keep], dropped, unmapped)


def installed_label_csv(name: str) -> Path | None:
    """A label CSV shipped inside the installed ``torchxrayvision`` wheel, if present."""
    try:
        candidate = resources.files("torchxrayvision").joinpath("data", name)
    except ModuleNotFoundError:
        return None
    return Path(str(candidate)) if candidate.is_file() else None


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
