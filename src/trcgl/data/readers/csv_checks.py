"""What every reader shares: the result type, CSV reading, and the checks whose errors name the
file, the data row (1-based, header not counted) and the column at fault."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from trcgl.data.manifest import Manifest, checked_relative, path_problem
from trcgl.errors import DataError


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


def data_row(index: int) -> int:
    """1-based data-row number of the 0-based row ``index`` (as :class:`DataError` reports)."""
    return int(index) + 1


def refuse(
    bad: np.ndarray | pd.Series,
    path: Path,
    column: str | None,
    message: Callable[[int], str],
    rows: Sequence[int] | None = None,
) -> None:
    """A :class:`DataError` at the first row where ``bad`` holds, naming the file, its data row
    and ``column``, with ``message(i)`` (``i``: the row's 0-based position in ``bad``); nothing
    when no row is bad. ``rows``: each position's 0-based row in the file, where ``bad`` covers
    a subset of it."""
    bad = np.asarray(bad, dtype=bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = data_row(i if rows is None else rows[i])
        raise DataError(message(i), path=path, row=row, column=column)


def row_numbers(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.int64)


def read_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataError(f"cannot parse as CSV: {exc}", path=path) from exc


def require_columns(df: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"missing column(s) {missing}; found {list(df.columns)}", path=path, column=missing[0]
        )


def check_paths(df: pd.DataFrame, columns: Sequence[str], path: Path) -> None:
    """Every image path stays inside the image root (no absolute path, no ``..``)."""
    for column in columns:
        for i, value in enumerate(df[column]):
            if path_problem(value):
                checked_relative(value, path, data_row(i), column)


def check_ids(df: pd.DataFrame, image_col: str, patient_col: str, path: Path) -> None:
    """Image ids unique and patient ids non-empty, or an error naming the rows."""
    empty = df[patient_col].str.strip() == ""
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataError("empty patient id", path=path, row=data_row(i), column=patient_col)
    empty = df[image_col].str.strip() == ""
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataError("empty image id", path=path, row=data_row(i), column=image_col)
    dup = df[image_col].duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        first = df[image_col].iloc[rows[0]]
        same = [data_row(i) for i in rows if df[image_col].iloc[i] == first]
        raise DataError(
            f"duplicate image id {first!r} (also on row(s) {same[1:]})",
            path=path,
            row=same[0],
            column=image_col,
        )


def binary_matrix(df: pd.DataFrame, columns: Sequence[str], path: Path) -> np.ndarray:
    """Parse 0/1 columns; anything else is an error naming the cell."""
    out = np.zeros((len(df), len(columns)), dtype=np.uint8)
    for j, col in enumerate(columns):
        values = pd.to_numeric(df[col].str.strip(), errors="coerce").to_numpy(dtype=float)
        bad = ~np.isin(values, (0.0, 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"expected 0 or 1, found {df[col].iloc[i]!r}",
                path=path,
                row=data_row(i),
                column=col,
            )
        out[:, j] = values.astype(np.uint8)
    return out


#: ``data.uncertain``: what an uncertain label (``-1``) becomes, the policies of the CheXpert
#: paper (Irvin et al., AAAI 2019): U-Ones (positive), U-Zeros (negative), U-Ignore (unknown).
UNCERTAIN_POLICIES: dict[str, float] = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}
#: ``data.blank``: what a blank cell (not mentioned in the report) becomes.
BLANK_POLICIES: dict[str, float] = {"zero": 0.0, "unknown": np.nan}


def uncertain_matrix(
    df: pd.DataFrame,
    columns: Sequence[str],
    path: Path,
    uncertain: str = "ignore",
    blank: str = "zero",
) -> np.ndarray:
    """Parse CheXpert-style label columns: ``1`` (positive), ``0`` (negative), ``-1``
    (uncertain) or blank (``1.0`` / ``0.0`` / ``-1.0`` too), into 1 / 0 / NaN (unknown) by the
    ``uncertain`` and ``blank`` policies (:data:`UNCERTAIN_POLICIES`, :data:`BLANK_POLICIES`).
    Any other value is an error naming the file, data row, column and value."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain policy must be one of {list(UNCERTAIN_POLICIES)}")
    if blank not in BLANK_POLICIES:
        raise ValueError(f"blank policy must be one of {list(BLANK_POLICIES)}")
    out = np.empty((len(df), len(columns)), dtype=np.float32)
    for j, col in enumerate(columns):
        text = df[col].str.strip()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float, copy=True)
        empty = (text == "").to_numpy()
        refuse(
            ~np.isin(values, (1.0, 0.0, -1.0)) & ~empty,
            path,
            col,
            lambda i, col=col: f"expected 1, 0, -1 (uncertain) or blank, found {df[col].iloc[i]!r}",
        )
        values[values == -1.0] = UNCERTAIN_POLICIES[uncertain]
        values[empty] = BLANK_POLICIES[blank]
        out[:, j] = values
    return out


def multi_hot(
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
                    row=data_row(i),
                    column=column,
                )
            out[i, j] = 1
    return out


def pipe_lists(column: pd.Series, path: Path, name: str, allow_empty: bool) -> list[list[str]]:
    """Split pipe-separated label lists; an empty element (``a||b``) is an error, and so is
    an empty cell unless ``allow_empty``."""
    lists = []
    for i, text in enumerate(column):
        parts = [p.strip() for p in text.split("|")] if text.strip() or not allow_empty else []
        if any(not p for p in parts):
            raise DataError(
                f"cannot parse label list {text!r} (pipe-separated names expected)",
                path=path,
                row=data_row(i),
                column=name,
            )
        lists.append(parts)
    return lists


def installed_label_csv(name: str) -> Path | None:
    """A label CSV shipped inside the installed ``torchxrayvision`` wheel, if present."""
    try:
        candidate = resources.files("torchxrayvision").joinpath("data", name)
    except ModuleNotFoundError:
        return None
    return Path(str(candidate)) if candidate.is_file() else None
