"""Class vocabularies and the raw-PadChest → CXR-LT mapping table (docs/method.md §0).

The mapping is data, not code: ``resources/padchest_to_cxrlt30_v1.csv`` lists every raw
PadChest finding with the CXR-LT class it counts toward (one finding may count toward two
classes, e.g. a central venous catheter is also a support device) or an empty class when it is
left unmapped. The table approximates the CXR-LT 2026 challenge's own harmonisation, which
is not published; its per-class counts on the real CSV are in the README.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from trcgl.errors import DataError

#: The 30 classes of CXR-LT 2026 task 1, in the challenge's column order.
CXRLT_CLASSES: tuple[str, ...] = (
    "Normal",
    "aortic elongation",
    "cardiomegaly",
    "pleural effusion",
    "Nodule",
    "atelectasis",
    "pleural thickening",
    "aortic atheromatosis",
    "Support Devices",
    "alveolar pattern",
    "fracture",
    "Hernia",
    "Emphysema",
    "azygos lobe",
    "Hydropneumothorax",
    "Kyphosis",
    "Mass",
    "Pneumothorax",
    "Subcutaneous Emphysema",
    "pneumoperitoneo",
    "vascular hilar enlargement",
    "vertebral degenerative changes",
    "hyperinflated lung",
    "interstitial pattern",
    "central venous catheter",
    "hypoexpansion",
    "bronchiectasis",
    "hemidiaphragm elevation",
    "sternotomy",
    "calcified densities",
)

#: NIH ChestX-ray14: the 14 findings in the order of Wang et al. (2017), then "No Finding".
NIH_CLASSES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
    "No Finding",
)

#: CheXpert's 14 observations (Irvin et al., 2019), in the column order of its ``train.csv``;
#: MIMIC-CXR-JPG's ``-chexpert.csv`` / ``-negbio.csv`` carry the same 14 (sorted by name).
CHEXPERT_CLASSES: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

#: VinDr-CXR's 14 local findings and "No finding", as ``class_name`` / ``class_id`` 0–14 of
#: its radiologist annotations (the VinBigData challenge's ``train.csv``).
VINDR_CLASSES: tuple[str, ...] = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Nodule/Mass",
    "Other lesion",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
    "No finding",
)

#: The four findings that Google's radiologists re-labelled on NIH ChestX-ray14 images
#: (Majkowska et al., Radiology 2020; ``google2019_nih-chest-xray-labels.csv``).
NIH_GOOGLE_CLASSES: tuple[str, ...] = (
    "Fracture",
    "Pneumothorax",
    "Airspace opacity",
    "Nodule or mass",
)

#: CXR-LT 2023 (MIMIC-CXR-LT): the 26 classes of its ``train.csv`` / ``development.csv`` /
#: ``test.csv``, in their column order.
CXRLT2023_CLASSES: tuple[str, ...] = (
    "Atelectasis",
    "Calcification of the Aorta",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged Cardiomediastinum",
    "Fibrosis",
    "Fracture",
    "Hernia",
    "Infiltration",
    "Lung Lesion",
    "Lung Opacity",
    "Mass",
    "No Finding",
    "Nodule",
    "Pleural Effusion",
    "Pleural Other",
    "Pleural Thickening",
    "Pneumomediastinum",
    "Pneumonia",
    "Pneumoperitoneum",
    "Pneumothorax",
    "Subcutaneous Emphysema",
    "Support Devices",
    "Tortuous Aorta",
)

#: CXR-LT 2024 task 1: the 40 classes of ``train_labeled.csv`` / ``*_labeled_task1.csv``.
CXRLT2024_CLASSES: tuple[str, ...] = (
    "Adenopathy",
    "Atelectasis",
    "Azygos Lobe",
    "Calcification of the Aorta",
    "Cardiomegaly",
    "Clavicle Fracture",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged Cardiomediastinum",
    "Fibrosis",
    "Fissure",
    "Fracture",
    "Granuloma",
    "Hernia",
    "Hydropneumothorax",
    "Infarction",
    "Infiltration",
    "Kyphosis",
    "Lobar Atelectasis",
    "Lung Lesion",
    "Lung Opacity",
    "Mass",
    "Nodule",
    "Normal",
    "Pleural Effusion",
    "Pleural Other",
    "Pleural Thickening",
    "Pneumomediastinum",
    "Pneumonia",
    "Pneumoperitoneum",
    "Pneumothorax",
    "Pulmonary Embolism",
    "Pulmonary Hypertension",
    "Rib Fracture",
    "Round(ed) Atelectasis",
    "Subcutaneous Emphysema",
    "Support Devices",
    "Tortuous Aorta",
    "Tuberculosis",
)

#: CXR-LT 2024 task 3 (zero-shot): the 5 classes held out of training.
CXRLT2024_UNSEEN: tuple[str, ...] = ("Bulla", "Cardiomyopathy", "Hilum", "Osteopenia", "Scoliosis")

#: CXR-LT 2024's ``labels.csv``: all 45 classes (40 + 5), sorted by name as in that file.
CXRLT2024_ALL_CLASSES: tuple[str, ...] = tuple(sorted(CXRLT2024_CLASSES + CXRLT2024_UNSEEN))

#: OpenI / Indiana University chest X-rays: torchxrayvision's 18 pathologies of its reports'
#: MeSH terms (``Openi_Dataset.pathologies``, in its order), NIH-style names where NIH has the
#: finding (``Effusion``, ``Infiltration``, ``Pleural_Thickening``), so that the data set joins
#: NIH ChestX-ray14 in ``data.sources`` without a relabel table.
OPENI_CLASSES: tuple[str, ...] = (
    "Atelectasis",
    "Calcified Granuloma",
    "Cardiomegaly",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Fracture",
    "Granuloma",
    "Hernia",
    "Infiltration",
    "Lung Lesion",
    "Mass",
    "Nodule",
    "Lung Opacity",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)

VOCABULARIES: dict[str, tuple[str, ...]] = {
    "cxrlt30": CXRLT_CLASSES,
    "nih15": NIH_CLASSES,
    "chexpert14": CHEXPERT_CLASSES,
    "vindr15": VINDR_CLASSES,
    "nih_google4": NIH_GOOGLE_CLASSES,
    "cxrlt2023": CXRLT2023_CLASSES,
    "cxrlt2024": CXRLT2024_CLASSES,
    "cxrlt2024_all": CXRLT2024_ALL_CLASSES,
    "openi18": OPENI_CLASSES,
}

DEFAULT_PADCHEST_MAPPING = "padchest_to_cxrlt30_v1.csv"
#: The OpenI table: every MeSH heading and automatic term of the released reports → openi18.
DEFAULT_OPENI_MAPPING = "openi_to_openi18_v1.csv"


def vocabulary(name: str) -> tuple[str, ...]:
    """Return the class names of a named vocabulary (:data:`VOCABULARIES`)."""
    try:
        return VOCABULARIES[name]
    except KeyError:
        raise DataError(
            f"unknown vocabulary {name!r}; known: {', '.join(sorted(VOCABULARIES))}"
        ) from None


@dataclass(frozen=True)
class FindingMapping:
    """Raw finding → target classes. ``unmapped`` findings are known but count toward none."""

    name: str
    targets: dict[str, tuple[str, ...]]
    #: The table's file, and the first (1-based) data row of each finding, for errors.
    path: Path | None = None
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def unmapped(self) -> tuple[str, ...]:
        return tuple(sorted(f for f, t in self.targets.items() if not t))

    def classes_of(self, finding: str) -> tuple[str, ...] | None:
        """Target classes of a finding, ``()`` when unmapped, ``None`` when unknown."""
        return self.targets.get(finding)


def mapping_path(name_or_path: str | Path = DEFAULT_PADCHEST_MAPPING) -> Path:
    """Resolve a mapping table: a file path, or the name of a table shipped with trcgl."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = resources.files("trcgl.resources").joinpath(str(name_or_path))
    if shipped.is_file():
        return Path(str(shipped))
    raise DataError(f"mapping table not found: {name_or_path}", path=name_or_path)


def load_mapping(
    name_or_path: str | Path = DEFAULT_PADCHEST_MAPPING,
    classes: tuple[str, ...] = CXRLT_CLASSES,
) -> FindingMapping:
    """Read a mapping table (CSV with columns ``finding``, ``class``).

    Every ``class`` must be one of ``classes`` or empty (known but unmapped finding).
    """
    path = mapping_path(name_or_path)
    known = set(classes)
    targets: dict[str, list[str]] = {}
    rows: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"finding", "class"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"missing column(s) {sorted(missing)}", path=path)
        for line, row in enumerate(reader, start=1):
            finding = (row["finding"] or "").strip()
            cls = (row["class"] or "").strip()
            if not finding:
                raise DataError("empty finding", path=path, row=line, column="finding")
            if cls and cls not in known:
                raise DataError(f"unknown class {cls!r}", path=path, row=line, column="class")
            rows.setdefault(finding, line)
            entry = targets.setdefault(finding, [])
            if cls and cls not in entry:
                entry.append(cls)
    order = {c: i for i, c in enumerate(classes)}
    return FindingMapping(
        name=path.stem,
        targets={f: tuple(sorted(t, key=order.__getitem__)) for f, t in targets.items()},
        path=path,
        rows=rows,
    )
