"""Readers: every supported label file becomes one :class:`~trcgl.data.manifest.Manifest`.

Each format is a module of this package that registers a
:class:`~trcgl.data.readers.format.DataFormat` under its ``data.format`` name in
:data:`trcgl.registry.DATA_FORMATS` (docs/method.md §0):

* ``cxrlt`` (:mod:`.cxrlt`): the CXR-LT 2026 CSV (``ImageID``, ``PatientID``, one 0/1 column
  per class);
* ``padchest`` (:mod:`.padchest`): the raw PadChest CSV, relabelled to the 30 CXR-LT classes by
  a mapping table;
* ``nih`` (:mod:`.nih`): NIH ChestX-ray14 ``Data_Entry_2017*.csv`` (``Finding Labels``
  pipe-separated);
* ``nih_google`` (:mod:`.nih_google`): Google's expert labels of NIH images (4 findings);
* ``chexpert`` (:mod:`.chexpert`): CheXpert ``train.csv`` / ``valid.csv`` (uncertain ``-1``
  and blank cells by ``data.uncertain`` / ``data.blank``);
* ``mimic`` (:mod:`.mimic`): MIMIC-CXR-JPG ``-chexpert.csv`` / ``-negbio.csv`` with its
  ``-metadata.csv`` and ``-split.csv``;
* ``cxrlt_mimic`` (:mod:`.cxrlt_mimic`): the CXR-LT 2023 / 2024 label CSVs;
* ``openi`` (:mod:`.openi`): the OpenI / Indiana University reports archive, labels from its
  MeSH terms by a mapping table, the report text kept;
* ``vindr`` (:mod:`.vindr`): VinDr-CXR radiologist annotations, readers combined per image,
  boxes kept;
* ``wide`` (:mod:`.wide`): a CSV with a 1 / 0 / -1 / blank column per class, columns chosen by
  ``data.columns``;
* ``plain`` (:mod:`.plain`): a CSV with ``image``, ``patient_id`` and ``labels``
  (pipe-separated class names).

Errors name the file, the data row (1-based, header not counted) and the column at fault
(:mod:`.csv_checks`). A new format is one module here, imported below.
"""

from trcgl.data.readers.chexpert import CHEXPERT_CSV_NAME, read_chexpert
from trcgl.data.readers.csv_checks import ReadResult, installed_label_csv
from trcgl.data.readers.cxrlt import read_cxrlt
from trcgl.data.readers.cxrlt_mimic import read_cxrlt_mimic
from trcgl.data.readers.filters import apply_filters, read_exclusion_list
from trcgl.data.readers.format import DataFormat
from trcgl.data.readers.mimic import read_mimic
from trcgl.data.readers.nih import NIH_CSV_NAME, read_nih
from trcgl.data.readers.nih_google import NIH_GOOGLE_CSV_NAME, read_nih_google
from trcgl.data.readers.openi import OPENI_REPORTS_NAME, read_openi
from trcgl.data.readers.padchest import PADCHEST_CSV_NAME, PADCHEST_EXCLUDE_FINDING, read_padchest
from trcgl.data.readers.plain import read_plain
from trcgl.data.readers.vindr import VINDR_CSV_NAME, read_vindr, read_vindr_boxes
from trcgl.data.readers.wide import read_wide

__all__ = [
    "CHEXPERT_CSV_NAME",
    "NIH_CSV_NAME",
    "NIH_GOOGLE_CSV_NAME",
    "OPENI_REPORTS_NAME",
    "PADCHEST_CSV_NAME",
    "PADCHEST_EXCLUDE_FINDING",
    "VINDR_CSV_NAME",
    "DataFormat",
    "ReadResult",
    "apply_filters",
    "installed_label_csv",
    "read_chexpert",
    "read_cxrlt",
    "read_cxrlt_mimic",
    "read_exclusion_list",
    "read_mimic",
    "read_nih",
    "read_nih_google",
    "read_openi",
    "read_padchest",
    "read_plain",
    "read_vindr",
    "read_vindr_boxes",
    "read_wide",
]
