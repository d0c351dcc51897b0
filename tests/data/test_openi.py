"""The ``openi`` reader on the real OpenI reports and view table shipped in the torchxrayvision
wheel (3,955 reports, 7,470 images), checked against torchxrayvision's own ``Openi_Dataset``, on
hand-read reports, and on small archives written here for bad input."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import wheel_csv
from trcgl.config import load_config
from trcgl.data.readers import OPENI_REPORTS_NAME, installed_label_csv, read_openi
from trcgl.data.readers.openi import (
    MAX_REPORT_BYTES,
    OPENI_METADATA_NAME,
    clean_sentence,
    iter_reports,
    normalise_term,
    report_text,
    term_classes,
)
from trcgl.data.report_text import split_sentences
from trcgl.data.vocab import DEFAULT_OPENI_MAPPING, OPENI_CLASSES, load_mapping, vocabulary
from trcgl.errors import DataError

REPORTS = wheel_csv(OPENI_REPORTS_NAME)

#: torchxrayvision's rule (``Openi_Dataset``), written out again: a term counts toward a class
#: when it contains the class's name or one of its synonyms (lower case).
TXRV_SYNONYMS = {
    "Atelectasis": ["atelectasis", "atelectases"],
    "Calcified Granuloma": ["calcified granuloma"],
    "Cardiomegaly": ["cardiomegaly"],
    "Edema": ["edema"],
    "Effusion": ["effusion"],
    "Emphysema": ["emphysema"],
    "Fibrosis": ["fibrosis"],
    "Fracture": ["fracture"],
    "Granuloma": ["granuloma"],
    "Hernia": ["hernia"],
    "Infiltration": ["infiltration", "infiltrate"],
    "Lung Lesion": ["lesion"],
    "Mass": ["mass"],
    "Nodule": ["nodule"],
    "Lung Opacity": ["opacity"],
    "Pleural_Thickening": ["pleural_thickening", "pleural thickening"],
    "Pneumonia": ["pneumonia"],
    "Pneumothorax": ["pneumothorax"],
}
#: The shipped table's departures from that rule (the reader's docstring): term → (class
#: removed or None, class added or None).
DEPARTURES = {
    "subcutaneous emphysema": ("Emphysema", None),
    "mediastinal emphysema": ("Emphysema", None),
    "pericardial effusion": ("Effusion", None),
    "expansile bone lesions": ("Lung Lesion", None),
    "fibroses": (None, "Fibrosis"),
    "pulmonary fibroses": (None, "Fibrosis"),
    "thickening/pleura": (None, "Pleural_Thickening"),
}


def _rule(term: str) -> set[str]:
    out = {c for c, words in TXRV_SYNONYMS.items() if any(w in term for w in words)}
    removed, added = DEPARTURES.get(term, (None, None))
    return (out - {removed}) | ({added} if added else set())


@pytest.fixture(scope="module")
def reports():
    return {r.uid: r for r in iter_reports(REPORTS)}


# -- the real files ------------------------------------------------------------------------------
def test_real_archive_counts(openi, reports):
    frame = openi.manifest.frame
    assert len(reports) == 3955  # the published collection
    assert len(frame) == 7470 and frame["image_id"].is_unique
    assert openi.dropped == {"report without images": 104}
    assert frame["patient_id"].nunique() == 3955 - 104
    assert openi.manifest.classes == OPENI_CLASSES == vocabulary("openi18")
    assert openi.manifest.known().all()
    # views from the DICOM metadata: LL / RL / LATERAL / LARGE LATERAL are "L"
    meta = pd.read_csv(
        installed_label_csv(OPENI_METADATA_NAME), usecols=["imageid", "View Position"]
    )
    raw = dict(zip(meta["imageid"], meta["View Position"].fillna(""), strict=True))
    expected = [
        {"LL": "L", "RL": "L", "LATERAL": "L", "LARGE LATERAL": "L"}.get(v, v)
        for v in (raw.get(i, "") for i in frame["image_id"])
    ]
    assert frame["view"].tolist() == expected
    assert set(frame["view"]) == {"PA", "AP", "L", ""}
    assert (frame["image"] == frame["image_id"] + ".png").all()
    # rows: each image's report's position in the archive
    number = {r.uid: r.number for r in reports.values()}
    assert openi.rows.tolist() == [number[p] for p in frame["patient_id"]]


def test_hand_read_reports(openi):
    frame = openi.manifest.frame.set_index("image_id")
    classes = openi.manifest.classes

    def positives(image_id: str) -> list[str]:
        return [c for c in classes if frame.loc[image_id, c] == 1]

    # CXR1: MeSH "normal" only; "There are no XXXX of a pleural effusion", "Normal chest x-XXXX."
    for image in ("CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"):
        assert frame.loc[image, "patient_id"] == "CXR1"
        assert positives(image) == []
        assert frame.loc[image, "view"] == ""  # the metadata spells it CXR1_IM-0001-3001
    assert frame.loc["CXR1_1_IM-0001-3001", "report"] == (
        "The cardiac silhouette and mediastinum size are within normal limits. There is no "
        "pulmonary edema. There is no focal consolidation. There are no of a pleural effusion. "
        "There is no evidence of pneumothorax. Normal chest x-ray."
    )
    # CXR1233: major "Cardiomegaly", "Pulmonary Atelectasis/base/left/mild"; automatic
    # "atelectases", "Cardiomegaly", "scarring"
    assert positives("CXR1233_IM-0157-1001") == ["Atelectasis", "Cardiomegaly"]
    assert frame.loc["CXR1233_IM-0157-1001", "report"].endswith(
        "Negative for acute bone abnormality. Cardiomegaly without heart failure. Minimal left "
        "basilar scarring/atelectasis."
    )
    assert "Left base density." in frame.loc["CXR1233_IM-0157-1001", "report"]
    # CXR1501: "Pulmonary Atelectasis/base/right" (major), "fracture", "Fractures, Bone"
    # (automatic); its numbered impression loses the numbers
    assert positives("CXR1501_IM-0327-1001") == ["Atelectasis", "Fracture"]
    assert frame.loc["CXR1501_IM-0327-2001", "report"].endswith(
        "Chest. Continued right hemidiaphragm elevation with right lower lobe airspace disease. "
        "Right shoulder. Scapular fracture. Clavicle. Acromioclavicular separation."
    )
    # CXR3838: devices only; "A single XXXX cardiac defibrillator XXXX projects", "No acute
    # cardiopulmonary findings. ."
    assert positives("CXR3838_IM-1939-2001") == []
    assert frame.loc["CXR3838_IM-1939-2001", "report"].endswith(
        "A single cardiac defibrillator projects over the right ventricle, in stable position. "
        "There are sternotomy and surgical clips from prior CABG. No acute cardiopulmonary "
        "findings."
    )
    # CXR2849 has a report but no image: dropped
    assert "CXR2849" not in set(frame["patient_id"])


def test_table_is_torchxrayvisions_rule_with_the_listed_departures(reports):
    mapping = load_mapping(DEFAULT_OPENI_MAPPING, OPENI_CLASSES)
    terms = set()
    for report in reports.values():
        terms |= {normalise_term(t).split("/")[0] for t in report.major}
        terms |= {normalise_term(t) for t in report.automatic}
    # the table lists every heading and automatic term of the release, and nothing else but
    # the one qualified heading
    assert set(mapping.targets) == terms | {"thickening/pleura"}
    for term, classes in mapping.targets.items():
        assert set(classes) == _rule(term), term
    assert term_classes("Thickening/pleura/apex/bilateral/mild", mapping) == ("Pleural_Thickening",)
    assert term_classes("Thickening/bronchovascular", mapping) == ()
    assert term_classes("Pulmonary Atelectasis/base/left", mapping) == ("Atelectasis",)
    assert term_classes("Subcutaneous  Emphysema", mapping) == ()
    assert term_classes("no such finding/left", mapping) is None


def test_against_torchxrayvision(openi, reports):
    """torchxrayvision reads only the automatic terms: each of its positives is ours too,
    except where a departure of the table removes it; each of ours that it lacks comes from an
    indexer's major term or a departure that adds the class."""
    xrv = pytest.importorskip("torchxrayvision")
    theirs = xrv.datasets.Openi_Dataset(imgpath="unused", views="*", unique_patients=False)
    assert [str(p) for p in theirs.pathologies] == list(OPENI_CLASSES)
    assert len(theirs) == len(openi.manifest)
    ours = openi.manifest.frame.set_index("image_id").loc[theirs.csv["imageid"]]
    y_ours = ours[list(OPENI_CLASSES)].to_numpy()
    mapping = load_mapping(DEFAULT_OPENI_MAPPING, OPENI_CLASSES)
    automatic = theirs.csv["labels_automatic"].fillna("").to_numpy()
    patients = ours["patient_id"].to_numpy()
    differences = 0
    for j, cls in enumerate(OPENI_CLASSES):
        removing = {t for t, (removed, _) in DEPARTURES.items() if removed == cls}
        adding = {t for t, (_, added) in DEPARTURES.items() if added == cls}
        for i in np.flatnonzero((theirs.labels[:, j] == 1) & (y_ours[:, j] == 0)):
            assert set(automatic[i].split("|")) & removing, (cls, automatic[i])
            differences += 1
        for i in np.flatnonzero((theirs.labels[:, j] == 0) & (y_ours[:, j] == 1)):
            report = reports[patients[i]]
            from_major = any(cls in term_classes(t, mapping) for t in report.major)
            terms = {normalise_term(t) for t in report.automatic}
            assert from_major or terms & adding, (cls, report.uid)
            differences += 1
    assert differences > 0  # the two readings do differ (major terms, departures)
    # the view the reader gives is the metadata's, as torchxrayvision's
    views = theirs.csv["View Position"].fillna("").str.upper().to_numpy()
    for raw, view in zip(views, ours["view"], strict=True):
        assert view == {"LL": "L", "RL": "L", "LATERAL": "L", "LARGE LATERAL": "L"}.get(raw, raw)


def test_prepare_with_the_preset_labels_only(tmp_path, monkeypatch):
    from trcgl.stages.prepare import prepare

    monkeypatch.chdir(tmp_path)
    cfg = load_config("openi")
    prepared = prepare(cfg, tmp_path / "run", progress=False)
    frame = prepared.manifest.frame
    assert set(frame["view"]) == {"PA", "AP"}
    assert len(frame) == 3591 + 423
    assert "report" in frame.columns and (frame["report"] != "").mean() > 0.99
    assert prepared.info["dropped"] == {
        "report without images": 104,
        "projection not in PA/AP": 7470 - 3591 - 423,
    }
    # data.mapping unset: OpenI's own MeSH table, recorded as such
    assert prepared.info["mapping"] == "openi_to_openi18_v1.csv"


# -- the de-identification masks -------------------------------------------------------------
@pytest.mark.parametrize(
    ("sentence", "cleaned"),
    [
        ("Normal chest x-XXXX.", "Normal chest x-ray."),
        ("No comparison chest X-XXXX.", "No comparison chest X-ray."),
        ("The XXXX are intact.", "The are intact."),
        ("XXXX left base density.", "Left base density."),
        ("Heart XXXX, mediastinum, XXXX, bony structures and lung XXXX are unremarkable.",
         "Heart, mediastinum, bony structures and lung are unremarkable."),
        ("Calcified aortic XXXX.", "Calcified aortic."),
        ("Stable XXXX/granulomas.", "Stable granulomas."),
        ("Dual-XXXX cardiac pacing device.", "Cardiac pacing device."),
        ("XXXX/XXXX.", ""),
        ("XXXX XXXX XXXX.", ""),
        ("Stable heart XXXX", "Stable heart."),
        ("There is no XXXX;", "There is no."),
        ("Lungs are clear.", "Lungs are clear."),
    ],
)  # fmt: skip
def test_clean_sentence(sentence, cleaned):
    assert clean_sentence(sentence) == cleaned


def test_report_text_and_sentences():
    assert report_text("", "1. No acute disease. 2. XXXX. 3. Stable  heart.") == (
        "No acute disease. Stable heart."
    )
    assert report_text("Heart normal.", "") == "Heart normal."
    assert report_text("Heart normal", "No acute disease") == "Heart normal. No acute disease."
    assert report_text("", "") == ""
    assert split_sentences("A 3.5 cm nodule. Hilar/perihilar  nodes!  Why? 2.") == [
        "A 3.5 cm nodule.",
        "Hilar/perihilar nodes!",
        "Why?",
    ]
    assert split_sentences(None) == [] and split_sentences("  ") == []


# -- bad input --------------------------------------------------------------------------------
def _xml(uid: str = "CXR9", images=("CXR9_IM-0001-1001",), major=("normal",), automatic=()):
    parts = [f'<eCitation><uId id="{uid}"/><MedlineCitation><Article><Abstract>',
             '<AbstractText Label="FINDINGS">Lungs are clear.</AbstractText>',
             '<AbstractText Label="IMPRESSION">Normal chest x-XXXX.</AbstractText>',
             "</Abstract></Article></MedlineCitation><MeSH>",
             *(f"<major>{t}</major>" for t in major),
             *(f"<automatic>{t}</automatic>" for t in automatic),
             "</MeSH>",
             *(f'<parentImage id="{i}"><caption>x</caption></parentImage>' for i in images),
             "</eCitation>"]  # fmt: skip
    return '<?xml version="1.0" encoding="utf-8"?>\n' + "".join(parts)


def _archive(folder: Path, members: dict[str, str | bytes], views: dict[str, str] | None = None):
    """``NLMCXR_reports.tgz`` with ``members`` (name → text) and the view table beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "NLMCXR_reports.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode() if isinstance(text, str) else text
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with (folder / "nlmcxr_dicom_metadata.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["imageid", "View Position", "Rows"])
        for image, view in (views or {}).items():
            writer.writerow([image, view, 2048])
    return path


def test_small_archive(tmp_path):
    path = _archive(
        tmp_path,
        {
            "ecgen-radiology/1.xml": _xml("CXR1", ("A", "B"), ("Thickening/pleura/left",)),
            "ecgen-radiology/2.xml": _xml("CXR2", (), ("normal",)),
            "ecgen-radiology/readme.txt": "not a report",
            "ecgen-radiology/3.xml": _xml(
                "CXR3", ("C",), ("normal",), ("pericardial effusion", "Pleural Effusions")
            ),
        },
        {"A": "PA", "B": "LL", "C": "AP"},
    )
    result = read_openi(path)  # the view table beside the archive is read
    frame = result.manifest.frame
    assert frame["image"].tolist() == ["A.png", "B.png", "C.png"]
    assert frame["view"].tolist() == ["PA", "L", "AP"]
    assert frame["patient_id"].tolist() == ["CXR1", "CXR1", "CXR3"]
    assert result.rows.tolist() == [1, 1, 3]
    assert result.dropped == {"report without images": 1}
    assert frame["report"].tolist() == ["Lungs are clear. Normal chest x-ray."] * 3
    y = pd.DataFrame(result.manifest.labels(), columns=OPENI_CLASSES)
    assert y.sum(axis=1).tolist() == [1, 1, 1]
    assert y["Pleural_Thickening"].tolist() == [1, 1, 0] and y["Effusion"].tolist() == [0, 0, 1]
    assert result.unmapped_findings == {"normal": 1, "pericardial effusion": 1}


def test_unknown_term_names_the_report_field_and_value(tmp_path):
    path = _archive(
        tmp_path, {"r/7.xml": _xml("CXR7", ("A",), ("normal",), ("Quantum Lung",))}, {"A": "PA"}
    )
    with pytest.raises(DataError, match=r"report CXR7: MeSH term 'Quantum Lung'") as err:
        read_openi(path)
    assert err.value.path == f"{path}:r/7.xml" and err.value.column == "MeSH/automatic"
    path = _archive(tmp_path / "b", {"r/7.xml": _xml("CXR7", ("A",), ("Quark/left",))})
    with pytest.raises(DataError, match=r"'Quark/left'") as err:
        read_openi(path)
    assert err.value.column == "MeSH/major"


@pytest.mark.parametrize(
    ("members", "message", "column"),
    [
        ({"r/1.xml": _xml("CXR1", ("A",)), "r/2.xml": _xml("CXR2", ("A",))},
         r"image id 'A' of report CXR2 is also in report CXR1", "parentImage"),
        ({"r/1.xml": _xml("", ("A",))}, r"no uId", "uId"),
        ({"r/1.xml": _xml("CXR1", ("",))}, r"report CXR1: parentImage without an id",
         "parentImage"),
        ({"r/1.xml": _xml("CXR1", ("../../etc/passwd",))}, r"leaves the image root",
         "parentImage"),
        ({"r/1.xml": "<eCitation><uId id='x'>"}, r"cannot parse as XML", None),
        ({"r/1.xml": '<!DOCTYPE lol [<!ENTITY a "aaaa">]><eCitation>&a;</eCitation>'},
         r"refused: XML with a DTD", None),
        ({"r/readme.txt": "no reports"}, r"no XML report in the archive", None),
    ],
)  # fmt: skip
def test_bad_reports(tmp_path, members, message, column):
    path = _archive(tmp_path, members, {"A": "PA"})
    with pytest.raises(DataError, match=message) as err:
        read_openi(path)
    assert err.value.column == column


def test_archive_is_read_in_memory_only(tmp_path):
    # a link member is skipped (never followed), an oversized member refused, nothing written
    path = tmp_path / "a" / "NLMCXR_reports.tgz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tar:
        link = tarfile.TarInfo("r/evil.xml")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        data = _xml("CXR1", ("A",)).encode()
        info = tarfile.TarInfo("../../outside/1.xml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    reports = list(iter_reports(path))
    assert [r.uid for r in reports] == ["CXR1"] and reports[0].member == "../../outside/1.xml"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    big = _archive(tmp_path / "b", {"r/1.xml": _xml() + " " * MAX_REPORT_BYTES})
    with pytest.raises(DataError, match=r"refused: .* bytes") as err:
        list(iter_reports(big))
    assert err.value.path == f"{big}:r/1.xml"
    (tmp_path / "c.tgz").write_bytes(b"not a tar archive")
    with pytest.raises(DataError, match=r"cannot read as a tar archive"):
        list(iter_reports(tmp_path / "c.tgz"))


def test_view_table_errors(tmp_path):
    path = _archive(tmp_path, {"r/1.xml": _xml("CXR1", ("A",))}, {"A": "PA"})
    table = tmp_path / "nlmcxr_dicom_metadata.csv"
    table.write_text("imageid,View Position\nA,PA\nA,LL\n")
    with pytest.raises(DataError, match=r"image id 'A' is listed twice") as err:
        read_openi(path)
    assert (err.value.row, err.value.column) == (2, "imageid")
    table.write_text("imageid,ViewPosition\nA,PA\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['View Position'\]"):
        read_openi(path)


def test_openi_joins_nih_without_a_relabel_table(tmp_path, nih_sample, openi):
    """NIH's class names: the union vocabulary shares 13 classes; each data set's classes that
    the other lacks are unknown there; the report column is empty for the NIH rows."""
    from trcgl.data.vocab import NIH_CLASSES
    from trcgl.stages.prepare import prepare

    entries = pd.read_csv(nih_sample / "Data_Entry_sample.csv", dtype=str).head(60)
    entries.to_csv(tmp_path / "nih.csv", index=False)
    sources = [
        {"name": "nih", "format": "nih", "labels_csv": str(tmp_path / "nih.csv")},
        {"name": "openi", "format": "openi", "projections": ["PA"]},
    ]
    cfg = load_config("nih-demo", [f"data.sources={sources}", "data.vocabulary=null"])
    manifest = prepare(cfg, tmp_path / "run", progress=False).manifest
    assert manifest.classes == (*NIH_CLASSES, *(c for c in OPENI_CLASSES if c not in NIH_CLASSES))
    assert len(set(NIH_CLASSES) & set(OPENI_CLASSES)) == 13
    frame = manifest.frame
    values = pd.DataFrame(manifest.label_values(), columns=manifest.classes)
    from_openi = (frame["dataset"] == "openi").to_numpy()
    assert from_openi.sum() == 3591 and (~from_openi).sum() == 60
    alone = openi.manifest.frame[openi.manifest.frame["view"] == "PA"]
    for cls in manifest.classes:
        if cls not in OPENI_CLASSES:
            expected = from_openi
        elif cls not in NIH_CLASSES:
            expected = ~from_openi
        else:
            expected = np.zeros(len(frame), bool)
            assert values.loc[from_openi, cls].sum() == alone[cls].sum()  # no relabelling
        assert (values[cls].isna().to_numpy() == expected).all(), cls
    assert (frame.loc[~from_openi, "report"] == "").all()
    assert (frame.loc[from_openi, "report"].to_numpy() == alone["report"].to_numpy()).all()
