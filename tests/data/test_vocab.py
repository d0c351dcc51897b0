from __future__ import annotations

import pytest

from trcgl.data.vocab import CXRLT_CLASSES, NIH_CLASSES, load_mapping, vocabulary
from trcgl.errors import DataError


def test_cxrlt_classes_are_the_30_of_the_challenge_in_order():
    assert len(CXRLT_CLASSES) == 30 == len(set(CXRLT_CLASSES))
    assert CXRLT_CLASSES[:5] == (
        "Normal",
        "aortic elongation",
        "cardiomegaly",
        "pleural effusion",
        "Nodule",
    )
    assert CXRLT_CLASSES[-1] == "calcified densities"
    assert vocabulary("cxrlt30") == CXRLT_CLASSES


def test_nih_vocabulary_has_14_findings_and_no_finding():
    assert len(NIH_CLASSES) == 15 and NIH_CLASSES[-1] == "No Finding"
    with pytest.raises(DataError, match="unknown vocabulary"):
        vocabulary("chexpert")


def test_shipped_mapping_covers_every_class():
    mapping = load_mapping()
    targets = {c for t in mapping.targets.values() for c in t}
    assert targets == set(CXRLT_CLASSES)
    # a finding may count toward two classes
    assert mapping.classes_of("central venous catheter via jugular vein") == (
        "Support Devices",
        "central venous catheter",
    )
    assert mapping.classes_of("callus rib fracture") == ("fracture",)
    assert mapping.classes_of("COPD signs") == ()
    assert mapping.classes_of("not a finding") is None


def test_mapping_with_unknown_class_names_row_and_column(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("finding,class\nnormal,Normal\nrib fracture,Fractures\n")
    with pytest.raises(DataError) as err:
        load_mapping(path)
    assert err.value.row == 2 and err.value.column == "class" and str(path) in str(err.value)
