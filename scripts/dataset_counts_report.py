"""Write docs/datasets.md: the per-class counts each reader gives on the real label files
shipped in the torchxrayvision wheel.

Usage: python scripts/dataset_counts_report.py

CheXpert under each uncertainty policy, VinDr-CXR under each way of combining its readers, the
full NIH ChestX-ray14 table and its radiologist boxes, Google's expert labels of NIH images, and
the OpenI reports (beside torchxrayvision's own reading of them, and the lengths of their report
prompts); every number is read through trcgl's own readers (``trcgl.data.readers``), on every
row of each file (no view filter, no split).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trcgl.data.readers import (
    CHEXPERT_CSV_NAME,
    NIH_CSV_NAME,
    NIH_GOOGLE_CSV_NAME,
    OPENI_REPORTS_NAME,
    VINDR_CSV_NAME,
    installed_label_csv,
    read_chexpert,
    read_nih,
    read_nih_google,
    read_openi,
    read_vindr,
)
from trcgl.data.readers.nih import NIH_BOXES_NAME, read_nih_boxes
from trcgl.data.readers.openi import OPENI_METADATA_NAME, iter_reports
from trcgl.data.report_text import split_sentences
from trcgl.diffusion.prompts import prompts_for_manifest, token_lengths
from trcgl.diffusion.text import load_tokenizer

DOC = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"

#: CheXpert policies: (data.uncertain, data.blank, heading).
POLICIES = (
    ("ones", "zero", "U-Ones"),
    ("zeros", "zero", "U-Zeros"),
    ("ignore", "zero", "U-Ignore"),
    ("ignore", "unknown", "U-Ignore, blank unknown"),
)


def _n(value: int) -> str:
    return f"{int(value):,}"


def _table(header: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _shipped(name: str) -> tuple[Path, pd.DataFrame]:
    """A label file of the torchxrayvision wheel and its rows as pandas reads them."""
    path = installed_label_csv(name)
    return path, pd.read_csv(path)


def _section(title: str, intro: str, header: list[str], rows: list[list[str]]) -> list[str]:
    return [f"## {title}", "", intro, "", *_table(header, rows), ""]


def chexpert_section() -> list[str]:
    path, raw = _shipped(CHEXPERT_CSV_NAME)
    results = [read_chexpert(path, uncertain=u, blank=b).manifest for u, b, _ in POLICIES]
    classes = results[0].classes
    rows = []
    for j, c in enumerate(classes):
        cells = raw[c]
        row = [c, _n((cells == 1).sum()), _n((cells == 0).sum()), _n((cells == -1).sum())]
        row.append(_n(cells.isna().sum()))
        for m in results:
            values = m.label_values()[:, j]
            row.append(f"{_n((values == 1).sum())} / {_n(np.isnan(values).sum())}")
        rows.append(row)
    header = ["class", "1", "0", "−1", "blank", *(f"{h}: pos. / unknown" for *_, h in POLICIES)]
    patients = results[0].frame["patient_id"].nunique()
    return _section(
        "CheXpert (`chexpert`)",
        f"`{CHEXPERT_CSV_NAME}`: {_n(len(raw))} images of {_n(patients)} patients "
        f"({_n((raw['Frontal/Lateral'] == 'Frontal').sum())} frontal, "
        f"{_n((raw['Frontal/Lateral'] == 'Lateral').sum())} lateral). The first four columns are "
        "the file's own cells; then, per policy (`data.uncertain`, `data.blank`), the positives "
        "and the unknown cells the reader gives (every other cell is a known negative). U-Ones "
        "turns −1 into 1, U-Zeros into 0, U-Ignore into unknown (weight 0 in the loss, left out "
        "of the metrics); a blank (not mentioned in the report) is 0 unless `data.blank: "
        "unknown`. The `chexpert` preset keeps the frontal images (`PA`, `AP`) with U-Ignore and "
        "blank = 0.",
        header,
        rows,
    )


def vindr_section() -> list[str]:
    path, raw = _shipped(VINDR_CSV_NAME)
    any_ = read_vindr(path, aggregation="any").manifest
    majority = read_vindr(path, aggregation="majority").manifest
    readers = raw.groupby("image_id")["rad_id"].nunique()
    low, high = readers.min(), readers.max()
    read_by = f"{low}" if low == high else f"{low}–{high}"
    rows = []
    for j, c in enumerate(any_.classes):
        marked = raw[raw["class_name"] == c].groupby("image_id")["rad_id"].nunique()
        unanimous = int((marked == readers.loc[marked.index]).sum())
        split = int(((marked > 0) & (marked < readers.loc[marked.index])).sum())
        rows.append(
            [
                c,
                _n((raw["class_name"] == c).sum()),
                _n(any_.labels()[:, j].sum()),
                _n(majority.labels()[:, j].sum()),
                _n(unanimous) if c != "No finding" else "–",
                _n(split) if c != "No finding" else "–",
            ]
        )
    header = ["class", "annotation rows", "any", "majority", "all readers", "readers disagree"]
    return _section(
        "VinDr-CXR (`vindr`)",
        f"`{VINDR_CSV_NAME}` (the VinBigData challenge's `train.csv`): {_n(len(raw))} rows, one "
        f"per finding a radiologist marked, for {_n(raw['image_id'].nunique())} images, each read "
        f"by {read_by} of {raw['rad_id'].nunique()} radiologists. Images per "
        "class under `data.aggregation`: `any` (one reader is enough), `majority` (two of "
        "three); `all readers` is what `strict` would give where they agree, and `readers "
        "disagree` the images on which `strict` stops with an error. `No finding` is 1 exactly "
        "when no other class is positive after aggregation. The boxes are in DICOM pixels; "
        "`prepare` keeps them in image fractions when `data.image_sizes` or `data.image_root` "
        "gives the image sizes.",
        header,
        rows,
    )


def nih_section() -> list[str]:
    path = installed_label_csv(NIH_CSV_NAME)
    m = read_nih(path).manifest
    boxes = read_nih_boxes(installed_label_csv(NIH_BOXES_NAME), m.classes)
    per_box = boxes["class"].value_counts()
    frame = m.frame
    rows = []
    for j, c in enumerate(m.classes):
        has = m.labels()[:, j] == 1
        rows.append(
            [c, _n(has.sum()), _n(frame.loc[has, "patient_id"].nunique()), _n(per_box.get(c, 0))]
        )
    return _section(
        "NIH ChestX-ray14, full (`nih`)",
        f"`{NIH_CSV_NAME}`: {_n(len(m))} images of {_n(frame['patient_id'].nunique())} "
        f"patients ({_n((frame['view'] == 'PA').sum())} PA, {_n((frame['view'] == 'AP').sum())} "
        f"AP); every label known. `{NIH_BOXES_NAME}`: {_n(len(boxes))} radiologist boxes on "
        f"{_n(boxes['image_id'].nunique())} images.",
        ["class", "images", "patients", "boxes"],
        rows,
    )


def google_section() -> list[str]:
    path, raw = _shipped(NIH_GOOGLE_CSV_NAME)
    m = read_nih_google(path).manifest
    rows = []
    for j, c in enumerate(m.classes):
        has = m.labels()[:, j] == 1
        per_set = [_n((has & (raw["Set Id"] == s).to_numpy()).sum()) for s in ("val", "test")]
        rows.append([c, _n(has.sum()), *per_set])
    return _section(
        "Google's expert labels of NIH images (`nih_google`)",
        f"`{NIH_GOOGLE_CSV_NAME}`: {_n(len(m))} NIH images of "
        f"{_n(m.frame['patient_id'].nunique())} patients, each finding the adjudicated call of "
        "three radiologists; Google's two sets: "
        f"{_n((raw['Set Id'] == 'val').sum())} `val`, {_n((raw['Set Id'] == 'test').sum())} "
        "`test`. Same file names as `Data_Entry_2017`, so NIH's image root serves.",
        ["class", "images", "val set", "test set"],
        rows,
    )


def openi_section() -> list[str]:
    import torchxrayvision as xrv

    path = installed_label_csv(OPENI_REPORTS_NAME)
    result = read_openi(path)
    m = result.manifest
    frame = m.frame
    theirs = xrv.datasets.Openi_Dataset(imgpath="unused", views="*", unique_patients=False)
    txrv = dict(zip(map(str, theirs.pathologies), theirs.labels.sum(axis=0), strict=True))
    frontal = frame["view"].isin(["PA", "AP"]).to_numpy()
    rows = []
    for j, c in enumerate(m.classes):
        has = m.labels()[:, j] == 1
        rows.append(
            [
                c,
                _n(has.sum()),
                _n(frame.loc[has, "patient_id"].nunique()),
                _n((has & frontal).sum()),
                _n(txrv[c]),
            ]
        )
    views = frame["view"].value_counts()
    reports = sum(1 for _ in iter_reports(path))
    table = _section(
        "OpenI / Indiana University (`openi`)",
        f"`{OPENI_REPORTS_NAME}`: {_n(reports)} reports, {_n(len(m))} images of "
        f"{_n(frame['patient_id'].nunique())} patients (one report each; "
        f"{_n(result.dropped.get('report without images', 0))} reports have no image). Views "
        f"from `{OPENI_METADATA_NAME}`: {_n(views.get('PA', 0))} PA, {_n(views.get('AP', 0))} "
        f"AP, {_n(views.get('L', 0))} lateral, {_n(views.get('', 0))} with no view (the `openi` "
        "preset keeps PA and AP). Labels from the reports' MeSH terms (indexers' `major` and "
        "`automatic`) by `openi_to_openi18_v1.csv`; "
        f"{_n((m.labels().sum(axis=1) == 0).sum())} images have none of the 18 classes. The "
        "last column is torchxrayvision's own reading (`Openi_Dataset`, all views, every image), "
        "which uses the automatic terms alone: trcgl's adds the indexers' terms and departs from "
        "its substring rule where it names the wrong anatomy (subcutaneous emphysema, "
        "pericardial effusion, bone lesions).",
        ["class", "images", "patients", "PA / AP images", "torchxrayvision"],
        rows,
    )
    tokenizer = load_tokenizer()
    has_text = np.array([bool(split_sentences(r)) for r in frame["report"]])
    full = np.array(token_lengths(prompts_for_manifest(m, "plain", source="report"), tokenizer))
    fitted = prompts_for_manifest(m, "plain", source="report", tokenizer=tokenizer)
    kept = np.array(token_lengths(fitted, tokenizer))
    long = full[has_text] > 77
    prompts = [
        "### Report prompts",
        "",
        f"{_n(has_text.sum())} of the {_n(len(m))} images have report text. Their report prompts "
        "(`diffusion.prompt_source: report`: the label words, then the report's sentences) "
        f"take {int(np.median(full[has_text]))} CLIP tokens at the median untruncated "
        f"(90th percentile {int(np.percentile(full[has_text], 90))}, longest "
        f"{int(full.max())}); {_n(long.sum())} ({100 * long.mean():.1f} %) exceed 77 and lose "
        "sentences from the end. Fitted, the median is "
        f"{int(np.median(kept[has_text]))} tokens and the longest {int(kept.max())}.",
        "",
    ]
    return [*table, *prompts]


def main() -> None:
    lines = [
        "# What each reader gives on the real label files",
        "",
        "Produced by `python scripts/dataset_counts_report.py` from the label files shipped in "
        "the `torchxrayvision` wheel (a trcgl dependency), read by trcgl's own readers, every "
        "row (no view filter, no split). PadChest has its own page: "
        "[padchest-mapping.md](padchest-mapping.md).",
        "",
        "MIMIC-CXR-JPG (`mimic`) and the CXR-LT 2023 / 2024 label CSVs (`cxrlt_mimic`) are "
        "credentialed downloads (PhysioNet) and are not shipped anywhere trcgl can read them, so "
        "there are no counts here; their readers are tested on small files written in exactly "
        "the published column layouts (`tests/data/test_mimic.py`), with real CheXpert label "
        "rows as the MIMIC label cells.",
        "",
        *chexpert_section(),
        *vindr_section(),
        *nih_section(),
        *google_section(),
        *openi_section(),
    ]
    DOC.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
