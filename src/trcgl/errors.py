"""Errors raised at the edge of trcgl: they say which file, row and column is at fault."""

from __future__ import annotations

from pathlib import Path


class TrcglError(Exception):
    """Base class of every error trcgl raises on purpose."""


class ConfigError(TrcglError):
    """A configuration value is unknown, of the wrong type, or impossible."""


class DataError(TrcglError):
    """Bad input data. The message names the file and, where known, the row and column.

    ``row`` is the 1-based number of the data record in a CSV (the header is not counted; a
    quoted field may span several physical lines, so this is not always the line number), or
    ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.row = row
        self.column = column
        self.reason = message
        where = []
        if self.path is not None:
            where.append(self.path)
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ImageReadError(DataError):
    """An image file is missing, unreadable or corrupt."""
