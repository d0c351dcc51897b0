from __future__ import annotations

import numpy as np
import pytest

from trcgl.errors import ConfigError
from trcgl.labels.groups import frequency_groups


def test_absolute_thresholds_are_the_papers_with_strict_inequalities():
    classes = ["a", "b", "c", "d", "e", "f"]
    g = frequency_groups(classes, [5001, 5000, 2000, 500, 499, 0])
    assert g.group_of == ("head", "medium", "medium", "medium", "tail", "tail")
    assert g.as_dict() == {"head": ["a"], "medium": ["b", "c", "d"], "tail": ["e", "f"]}
    assert (g.head_above, g.tail_below) == (5000, 500)


def test_quantile_thresholds():
    counts = np.arange(1, 31) * 10  # 10 … 300
    g = frequency_groups(
        [str(i) for i in range(30)], counts, mode="quantile", head=2 / 3, tail=1 / 3
    )
    assert g.head_above == pytest.approx(np.quantile(counts, 2 / 3))
    assert g.tail_below == pytest.approx(np.quantile(counts, 1 / 3))
    sizes = {k: len(v) for k, v in g.as_dict().items()}
    assert sizes == {"head": 10, "medium": 10, "tail": 10}


def test_bad_thresholds():
    with pytest.raises(ConfigError):
        frequency_groups(["a"], [1], mode="quantile", head=0.2, tail=0.5)
    with pytest.raises(ConfigError):
        frequency_groups(["a"], [1], mode="absolute", head=10, tail=50)
    with pytest.raises(ConfigError):
        frequency_groups(["a"], [1], mode="relative")


def test_real_padchest_groups_at_the_papers_thresholds(padchest):
    from trcgl.data.split import split_patients

    m = split_patients(padchest.manifest, 0.2, seed=0)
    counts = m.subset(split="train").labels().sum(axis=0)
    g = frequency_groups(m.classes, counts)
    tail = set(g.members("tail"))
    # the paper's tail includes the rarest findings; our mapping gives these five
    assert {"Hydropneumothorax", "pneumoperitoneo", "Subcutaneous Emphysema"} <= tail
    assert "Normal" in g.members("head")
    assert sum(len(v) for v in g.as_dict().values()) == 30
