"""``openi``: the Indiana University chest X-ray collection (OpenI; Demner-Fushman et al., JAMIA
2016): 3,955 English radiology reports with 7,470 images, as released in ``NLMCXR_reports.tgz``
(one XML file per report; the copy inside the installed ``torchxrayvision`` wheel is read when
``data.labels_csv`` is not set) and the view position of each image from
``nlmcxr_dicom_metadata.csv.gz`` (torchxrayvision's table of the DICOM headers: ``imageid``,
``View Position``; read from beside the archive, else from the installed wheel).

One manifest row per image (``parentImage id``): the image ``<id>.png`` under the image root
(the layout of ``NLMCXR_png.tgz``), the patient the report's ``uId`` (OpenI has one report per
patient), the view ``PA`` / ``AP``, ``L`` for ``LL``, ``RL``, ``LATERAL`` and ``LARGE LATERAL``,
empty where the metadata has none (2,589 of the images); a report without images is dropped and
counted.

``report``: the report's ``FINDINGS`` then ``IMPRESSION`` text. OpenI's de-identification
replaced every word it took for a name or date by ``XXXX``, many of them ordinary words
(``"chest x-XXXX"``, ``"the XXXX are intact"``): ``x-XXXX`` is ``x-ray`` again (the only word
it can be), every other masked word is removed (the word is lost; a placeholder would only cost
text-encoder tokens), the punctuation it leaves dangling is tidied and the sentence starts
with a capital; a sentence with no word left (``"XXXX."``, the ``"1."`` of a numbered
impression) is dropped.

Labels: every MeSH term of a report (``MeSH/major``, the indexers' terms such as
``"Pulmonary Atelectasis/base/left"``, and ``MeSH/automatic``, such as ``"atelectases"``) is
looked up, lower-cased, in a mapping table (``data.mapping``; the shipped
``openi_to_openi18_v1.csv`` when it is left at its default): the longest ``/``-prefix of the
term that the table lists decides (``"thickening/pleura/right"`` → the row
``thickening/pleura``), and the image's classes are the union over its report's terms. The
table lists every heading and automatic term of the released reports, mapped or not; a term it
does not know is an error naming the report. The shipped table applies torchxrayvision's rule
(``Openi_Dataset``: a term counts toward a class when it contains the class's name or a
synonym: ``atelectases``, ``infiltrate``, ``lesion``, ``opacity``, ``pleural thickening``) to
both kinds of term, with these departures: ``subcutaneous emphysema`` and ``mediastinal
emphysema`` are not Emphysema, ``pericardial effusion`` is not Effusion, ``expansile bone
lesions`` is not Lung Lesion, ``fibroses`` is Fibrosis (as ``atelectases`` is Atelectasis), and
``thickening/pleura`` is Pleural_Thickening. docs/datasets.md has the counts.

The archive is read in memory, never extracted: only regular ``.xml`` members are read (links,
devices and other files are skipped), each at most :data:`MAX_REPORT_BYTES`, and an XML
document with a DTD or entity declaration is refused. Errors name the archive and member, the
report's ``uId``, the field and the value; ``rows`` of the result are each image's report's
position in the archive (1-based).
"""

from __future__ import annotations

import re
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from trcgl.config import resolve_path
from trcgl.data.manifest import build_manifest, checked_relative
from trcgl.data.readers.csv_checks import (
    ReadResult,
    installed_label_csv,
    read_csv,
    refuse,
    require_columns,
)
from trcgl.data.readers.format import DataFormat
from trcgl.data.report_text import split_sentences
from trcgl.data.vocab import (
    DEFAULT_OPENI_MAPPING,
    OPENI_CLASSES,
    FindingMapping,
    load_mapping,
)
from trcgl.errors import DataError
from trcgl.registry import DATA_FORMATS

if TYPE_CHECKING:
    from trcgl.config import DataConfig

OPENI_REPORTS_NAME = "NLMCXR_reports.tgz"
OPENI_METADATA_NAME = "nlmcxr_dicom_metadata.csv.gz"
#: A report larger than this is refused (the released ones are 3–8 kB).
MAX_REPORT_BYTES = 1 << 20
#: ``View Position`` of the DICOM metadata → the manifest's view.
OPENI_VIEWS: dict[str, str] = {
    "PA": "PA",
    "AP": "AP",
    "LL": "L",
    "RL": "L",
    "LATERAL": "L",
    "LARGE LATERAL": "L",
}
MAJOR, AUTOMATIC = "MeSH/major", "MeSH/automatic"

_XRAY = re.compile(r"\b([xX])-XXXX\b")
_MASKED = re.compile(r"[\w'-]*XXXX[\w'-]*")
_LOOSE_SLASH = re.compile(r"(?<!\S)/+|/+(?!\S)")
_SPACE_BEFORE = re.compile(r"\s+([.,;:!?)])")
_REPEATED = re.compile(r"([,;:])(?:\s*[,;:])+")
_COMMA_END = re.compile(r"[,;:]+\s*([.!?])")


@dataclass(frozen=True)
class Report:
    """One report of the archive."""

    #: 1-based position among the archive's reports, and the member it was read from.
    number: int
    member: str
    uid: str
    findings: str
    impression: str
    major: tuple[str, ...]
    automatic: tuple[str, ...]
    images: tuple[str, ...]


def clean_sentence(sentence: str) -> str:
    """One sentence with OpenI's ``XXXX`` masks handled (module docstring), ending in a full
    stop if it had no end mark; ``""`` when no word is left."""
    text = _XRAY.sub(lambda m: f"{m.group(1)}-ray", sentence)
    text = _LOOSE_SLASH.sub(" ", _MASKED.sub(" ", text))
    text = _REPEATED.sub(r"\1", _SPACE_BEFORE.sub(r"\1", " ".join(text.split())))
    text = _COMMA_END.sub(r"\1", text).strip(" ,;:")
    text = text.lstrip(".").lstrip()
    if not split_sentences(text):
        return ""
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def report_text(findings: str, impression: str) -> str:
    """``FINDINGS`` then ``IMPRESSION``, masks handled, one space between sentences (a section
    that does not end its last sentence does not run into the next)."""
    sentences = (
        clean_sentence(s) for s in [*split_sentences(findings), *split_sentences(impression)]
    )
    return " ".join(s for s in sentences if s)


def _text(root: ET.Element, label: str) -> str:
    node = root.find(f".//AbstractText[@Label='{label}']")
    return "" if node is None or node.text is None else node.text


def _parse(data: bytes, where: str) -> ET.Element:
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise DataError("refused: XML with a DTD or entity declaration", path=where)
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise DataError(f"cannot parse as XML: {exc}", path=where) from None


def _report(number: int, member: str, root: ET.Element, where: str) -> Report:
    uid_node = root.find("uId")
    uid = "" if uid_node is None else uid_node.get("id", "").strip()
    if not uid:
        raise DataError("report has no uId id", path=where, column="uId")
    images = []
    for node in root.iter("parentImage"):
        image = node.get("id", "").strip()
        if not image:
            raise DataError(
                f"report {uid}: parentImage without an id", path=where, column="parentImage"
            )
        images.append(image)
    return Report(
        number,
        member,
        uid,
        _text(root, "FINDINGS"),
        _text(root, "IMPRESSION"),
        tuple(n.text or "" for n in root.iterfind(".//MeSH/major")),
        tuple(n.text or "" for n in root.iterfind(".//MeSH/automatic")),
        tuple(images),
    )


def iter_reports(path: str | Path) -> Iterator[Report]:
    """The reports of an ``NLMCXR_reports.tgz``-style archive, in archive order (read in
    memory; see the module docstring for what is skipped or refused)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    number = 0
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if not member.isfile() or not member.name.lower().endswith(".xml"):
                    continue
                where = f"{path}:{member.name}"
                if member.size > MAX_REPORT_BYTES:
                    raise DataError(
                        f"refused: {member.size:,} bytes (a report is at most "
                        f"{MAX_REPORT_BYTES:,})",
                        path=where,
                    )
                handle = archive.extractfile(member)
                if handle is not None:
                    number += 1
                    yield _report(number, member.name, _parse(handle.read(), where), where)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read as a tar archive: {exc}", path=path) from None
    if number == 0:
        raise DataError("no XML report in the archive", path=path)


def normalise_term(term: str) -> str:
    """A MeSH term as the mapping table lists it: lower case, single spaces, ``/`` parts
    stripped."""
    return "/".join(" ".join(part.split()) for part in term.lower().split("/"))


def term_classes(term: str, mapping: FindingMapping) -> tuple[str, ...] | None:
    """Classes of a MeSH term by the longest ``/``-prefix the table lists; ``()`` when
    unmapped, ``None`` when the table knows no prefix of it."""
    parts = normalise_term(term).split("/")
    for k in range(len(parts), 0, -1):
        classes = mapping.classes_of("/".join(parts[:k]))
        if classes is not None:
            return classes
    return None


def metadata_path(reports: Path) -> Path:
    """The DICOM metadata table beside the archive, else the installed torchxrayvision copy."""
    for name in (OPENI_METADATA_NAME, OPENI_METADATA_NAME.removesuffix(".gz")):
        if (reports.parent / name).is_file():
            return reports.parent / name
    installed = installed_label_csv(OPENI_METADATA_NAME)
    if installed is None:
        raise DataError(
            f"{OPENI_METADATA_NAME} (the images' view positions) is neither beside the reports "
            "nor in an installed torchxrayvision package",
            path=reports.parent / OPENI_METADATA_NAME,
        )
    return installed


def read_views(path: str | Path) -> dict[str, str]:
    """``imageid`` → view (:data:`OPENI_VIEWS`; other values kept as written, blank → ``""``)."""
    path = Path(path)
    df = read_csv(path)
    require_columns(df, ["imageid", "View Position"], path)
    ids = df["imageid"].str.strip()
    refuse(ids.duplicated(), path, "imageid", lambda i: f"image id {ids.iloc[i]!r} is listed twice")
    views = df["View Position"].str.strip().map(lambda v: OPENI_VIEWS.get(v.upper(), v))
    return dict(zip(ids, views, strict=True))


def read_openi(
    path: str | Path,
    classes: Sequence[str] = OPENI_CLASSES,
    mapping: FindingMapping | str | Path | None = None,
    metadata: str | Path | None = None,
) -> ReadResult:
    """Read OpenI's reports archive (module docstring); ``mapping``: the MeSH term table
    (default the shipped one), ``metadata``: the view table (default :func:`metadata_path`)."""
    path = Path(path)
    if not isinstance(mapping, FindingMapping):
        mapping = load_mapping(mapping or DEFAULT_OPENI_MAPPING, tuple(classes))
    views = read_views(metadata if metadata is not None else metadata_path(path))
    index = {c: j for j, c in enumerate(classes)}
    records: list[dict[str, str]] = []
    label_rows: list[np.ndarray] = []
    numbers: list[int] = []
    seen: dict[str, str] = {}
    unmapped: Counter[str] = Counter()
    without_images = 0
    for report in iter_reports(path):
        where = f"{path}:{report.member}"
        if not report.images:
            without_images += 1
            continue
        y = np.zeros(len(classes), dtype=np.float32)
        known_unmapped: set[str] = set()
        for field, terms in ((MAJOR, report.major), (AUTOMATIC, report.automatic)):
            for term in terms:
                targets = term_classes(term, mapping)
                if targets is None:
                    raise DataError(
                        f"report {report.uid}: MeSH term {term!r} is not in mapping table "
                        f"{mapping.name!r}; add it to a copy of the table (with an empty class "
                        "to leave it unmapped)",
                        path=where,
                        column=field,
                    )
                if not targets:
                    known_unmapped.add(normalise_term(term))
                for cls in targets:
                    y[index[cls]] = 1
        text = report_text(report.findings, report.impression)
        for image in report.images:
            if image in seen:
                raise DataError(
                    f"image id {image!r} of report {report.uid} is also in report {seen[image]}",
                    path=where,
                    column="parentImage",
                )
            seen[image] = report.uid
            file = checked_relative(f"{image}.png", where, report.number, "parentImage")
            records.append(
                {
                    "image": file,
                    "image_id": image,
                    "patient_id": report.uid,
                    "view": views.get(image, ""),
                    "report": text,
                }
            )
            label_rows.append(y)
            numbers.append(report.number)
            unmapped.update(known_unmapped)
    labels = np.stack(label_rows) if label_rows else np.zeros((0, len(classes)), np.float32)
    manifest = build_manifest(pd.DataFrame(records), labels, tuple(classes))
    dropped = {"report without images": without_images} if without_images else {}
    return ReadResult(manifest, path, np.asarray(numbers, dtype=np.int64), dropped, unmapped)


def _read(path: Path, classes: tuple[str, ...], data: DataConfig) -> ReadResult:
    return read_openi(path, classes, resolve_path(data.mapping or DEFAULT_OPENI_MAPPING))


DATA_FORMATS.add(
    "openi",
    DataFormat(
        read=_read,
        description="OpenI / Indiana University reports (NLMCXR_reports.tgz), MeSH terms → "
        f"18 classes by data.mapping ({DEFAULT_OPENI_MAPPING})",
        vocabulary="openi18",
        installed_csv=OPENI_REPORTS_NAME,
        mapping=DEFAULT_OPENI_MAPPING,
        prompt_style="plain",
    ),
)
