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
* ``plain`` (:mod:`.plain`): a CSV with ``image``, ``patient_id`` and ``labels``
  (pipe-separated class names).

Errors name the file, the data row (1-based, header not counted) and the column at fault
(:mod:`.csv_checks`). A new format is one module here, imported below.
"""

from trcgl.data.readers.csv_checks import ReadResult, installed_label_csv
from trcgl.data.readers.cxrlt import read_cxrlt
from trcgl.data.readers.filters import apply_filters, read_exclusion_list
from trcgl.data.readers.format import DataFormat
from trcgl.data.readers.nih import NIH_CSV_NAME, read_nih
from trcgl.data.readers.padchest import PADCHEST_CSV_NAME, PADCHEST_EXCLUDE_FINDING, read_padchest
from trcgl.data.readers.plain import read_plain

__all__ = [
    "NIH_CSV_NAME",
    "PADCHEST_CSV_NAME",
    "PADCHEST_EXCLUDE_FINDING",
    "DataFormat",
    "ReadResult",
    "apply_filters",
    "installed_label_csv",
    "read_cxrlt",
    "read_exclusion_list",
    "read_nih",
    "read_padchest",
    "read_plain",
]
