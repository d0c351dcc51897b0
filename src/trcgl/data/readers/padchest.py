"""``padchest``: the raw PadChest CSV (``Labels`` is a Python-list string of raw findings, some
with leading spaces), relabelled to the 30 CXR-LT classes by a mapping table (``data.mapping``);
the copy inside the installed ``torchxrayvision`` wheel is read when ``data.labels_csv`` is not
set. Its prompts carry the report's localisations."""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from trcgl.config import DataConfig, resolve_path
from trcgl.data.manifest import build_manifest
from trcgl.data.readers.csv_checks import (
    ReadResult,
    check_ids,
    check_paths,
    data_row,
    read_csv,
    require_columns,
    row_numbers,
)
from trcgl.data.readers.format import DataFormat
from trcgl.data.vocab import CXRLT_CLASSES, DEFAULT_PADCHEST_MAPPING, FindingMapping, load_mapping
from trcgl.errors import DataError
from trcgl.registry import DATA_FORMATS

PADCHEST_CSV_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"


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
        mapping = load_mapping(mapping or DEFAULT_PADCHEST_MAPPING, tuple(classes))
    df = read_csv(path)
    require_columns(df, ["ImageID", "ImageDir", "PatientID", "Projection", "Labels"], path)
    check_ids(df, "ImageID", "PatientID", path)
    check_paths(df, ["ImageDir", "ImageID"], path)
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
                    row=data_row(i),
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
                    row=data_row(i),
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
    return ReadResult(manifest, path, row_numbers(len(keep))[keep], dropped, unmapped)


def _read(path: Path, classes: tuple[str, ...], data: DataConfig) -> ReadResult:
    return read_padchest(path, resolve_path(data.mapping or DEFAULT_PADCHEST_MAPPING), classes)


DATA_FORMATS.add(
    "padchest",
    DataFormat(
        read=_read,
        description="raw PadChest CSV, findings relabelled by data.mapping "
        f"({DEFAULT_PADCHEST_MAPPING})",
        vocabulary="cxrlt30",
        installed_csv=PADCHEST_CSV_NAME,
        mapping=DEFAULT_PADCHEST_MAPPING,
        prompt_style="padchest",
    ),
)
