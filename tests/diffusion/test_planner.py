"""The tail planner (docs/method.md §1): counts, copied label sets, sources, determinism."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from trcgl.data.manifest import Manifest
from trcgl.data.readers import read_nih
from trcgl.diffusion.planner import PLAN_COLUMNS, class_counts, plan_synthesis
from trcgl.diffusion.prompts import build_prompt, prompt_parts, report_prompt
from trcgl.diffusion.text import load_tokenizer
from trcgl.errors import ConfigError

CLASSES = ("Normal", "Pneumothorax", "Mass", "Hernia")


def _manifest() -> Manifest:
    # image id, split, source, labels (Normal, Pneumothorax, Mass, Hernia)
    rows = [
        ("t0", "train", "real", (0, 1, 0, 0)),
        ("t1", "train", "real", (0, 1, 1, 0)),
        ("t2", "train", "real", (0, 1, 0, 1)),
        ("t3", "train", "real", (0, 0, 1, 0)),
        ("t4", "train", "real", (1, 0, 0, 0)),
        ("t5", "train", "real", (0, 0, 1, 1)),
        ("v0", "val", "real", (0, 1, 1, 1)),
        ("v1", "val", "real", (0, 1, 0, 0)),
        ("s0", "train", "synthetic", (0, 1, 0, 0)),
        ("s1", "train", "synthetic", (0, 1, 0, 1)),
    ]
    frame = pd.DataFrame(
        {
            "image": [f"{r[0]}.png" for r in rows],
            "image_id": [r[0] for r in rows],
            "patient_id": [f"p{i}" for i in range(len(rows))],
            "view": ["PA"] * len(rows),
            "split": [r[1] for r in rows],
            "source": [r[2] for r in rows],
            "weight": [1.0] * len(rows),
        }
    )
    labels = pd.DataFrame([r[3] for r in rows], columns=list(CLASSES), dtype=np.uint8)
    return Manifest(pd.concat([frame, labels], axis=1), CLASSES)


def test_counts_only_real_training_rows():
    counts = class_counts(_manifest())
    assert counts.to_dict() == {"Normal": 1, "Pneumothorax": 3, "Mass": 3, "Hernia": 2}


def test_plan_counts_and_columns():
    plan = plan_synthesis(_manifest(), ["Pneumothorax", "Hernia", "Normal"], target=7)
    assert list(plan.columns) == [*PLAN_COLUMNS, *CLASSES]
    assert Counter(plan["target_class"]) == {"Pneumothorax": 4, "Hernia": 5, "Normal": 6}
    # grouped by tail class in the order given
    assert plan["target_class"].tolist() == ["Pneumothorax"] * 4 + ["Hernia"] * 5 + ["Normal"] * 6
    assert (plan[list(CLASSES)].to_numpy().sum(axis=1) >= 1).all()


def test_target_reached_gives_nothing():
    plan = plan_synthesis(_manifest(), ["Pneumothorax", "Mass"], target=3)
    assert len(plan) == 0
    assert list(plan.columns) == [*PLAN_COLUMNS, *CLASSES]
    assert len(plan_synthesis(_manifest(), ["Mass"], target=0)) == 0


def test_label_sets_copied_exactly_and_prompts():
    manifest = _manifest()
    by_id = manifest.frame.set_index("image_id")
    plan = plan_synthesis(manifest, ["Pneumothorax", "Hernia"], target=10, dataset="plain")
    for _, row in plan.iterrows():
        source = by_id.loc[row["source_image_id"]]
        assert source["split"] == "train"
        assert source["source"] == "real"
        assert row[row["target_class"]] == 1
        assert [int(row[c]) for c in CLASSES] == [int(source[c]) for c in CLASSES]
        labels = [c for c in CLASSES if source[c]]
        assert row["prompt"] == build_prompt(labels, "PA", dataset="plain")
        assert row["view"] == "PA"


def test_no_source_from_val_or_synthetic():
    plan = plan_synthesis(_manifest(), ["Pneumothorax", "Hernia", "Mass"], target=20)
    assert not set(plan["source_image_id"]) & {"v0", "v1", "s0", "s1"}


def test_round_robin_uses_every_source_before_repeats():
    plan = plan_synthesis(_manifest(), ["Pneumothorax"], target=3 + 7)  # 7 from 3 sources
    ids = plan["source_image_id"].tolist()
    assert len(ids) == 7
    assert sorted(ids[:3]) == ["t0", "t1", "t2"]
    assert ids[3:6] == ids[:3] and ids[6] == ids[0]  # the same permutation, repeated


def test_deterministic_and_seeded():
    manifest = _manifest()
    a = plan_synthesis(manifest, ["Pneumothorax", "Hernia"], target=12, seed=3)
    b = plan_synthesis(manifest, ["Pneumothorax", "Hernia"], target=12, seed=3)
    pd.testing.assert_frame_equal(a, b)
    # a class's plan does not depend on the other tail classes asked for
    alone = plan_synthesis(manifest, ["Hernia"], target=12, seed=3)
    assert (
        alone["source_image_id"].tolist()
        == a.loc[a["target_class"] == "Hernia", "source_image_id"].tolist()
    )
    orders = {
        tuple(plan_synthesis(manifest, ["Pneumothorax"], 6, seed=s)["source_image_id"][:3])
        for s in range(12)
    }
    assert len(orders) > 1  # the seed changes the permutation


def test_does_not_modify_manifest():
    manifest = _manifest()
    before = manifest.frame.copy()
    plan_synthesis(manifest, ["Pneumothorax"], target=9)
    pd.testing.assert_frame_equal(manifest.frame, before)


@pytest.mark.parametrize(
    ("tail", "target"), [(["Nope"], 5), (["Mass", "Mass"], 5), (["Mass"], -1), (["Mass"], 2.5)]
)
def test_bad_arguments(tail, target):
    with pytest.raises(ConfigError):
        plan_synthesis(_manifest(), tail, target=target)


def test_tail_class_without_sources():
    manifest = _manifest()
    frame = manifest.frame.copy()
    frame.loc[frame["split"] == "train", "Normal"] = 0
    with pytest.raises(ConfigError, match="no real training image"):
        plan_synthesis(Manifest(frame, CLASSES), ["Normal"], target=3)


def test_real_nih_manifest(nih_sample):
    manifest = read_nih(nih_sample / "Data_Entry_sample.csv").manifest
    frame = manifest.frame.copy()
    frame["split"] = np.where(frame["patient_id"].astype(int) % 5 == 0, "val", "train")
    manifest = Manifest(frame, manifest.classes)
    counts = class_counts(manifest)
    tail = ["Hernia", "Edema", "Fibrosis"]
    target = int(counts[tail].max()) + 10
    plan = plan_synthesis(manifest, tail, target=target, seed=1, dataset="nih")
    assert Counter(plan["target_class"]) == {c: target - int(counts[c]) for c in tail}
    for name in tail:
        assert (plan.loc[plan["target_class"] == name, name] == 1).all()
    val_ids = set(frame.loc[frame["split"] == "val", "image_id"])
    assert not set(plan["source_image_id"]) & val_ids
    assert plan["prompt"].str.startswith("chest x-ray").all()
    hernia = plan[plan["target_class"] == "Hernia"]
    assert hernia["prompt"].str.contains("hernia").all()


def test_shortened_prompts_keep_the_target_class():
    from trcgl.diffusion.prompts import token_lengths
    from trcgl.diffusion.text import load_tokenizer

    tokenizer = load_tokenizer()
    manifest = _manifest()
    full = plan_synthesis(manifest, ["Hernia"], target=4, dataset="plain")
    short = plan_synthesis(
        manifest, ["Hernia"], target=4, dataset="plain", tokenizer=tokenizer, max_length=12
    )
    assert short["source_image_id"].tolist() == full["source_image_id"].tolist()
    assert short["prompt"].str.contains("hernia").all()
    assert max(token_lengths(short["prompt"].tolist(), tokenizer)) <= 12
    assert (short["prompt"] != full["prompt"]).any()  # "pneumothorax, hernia" was shortened


def test_report_prompts_come_from_the_source_image():
    manifest = _manifest()
    frame = manifest.frame.assign(
        report=[f"Report of {i}. Second sentence of {i}." for i in manifest.frame["image_id"]]
    )
    frame.loc[frame["image_id"] == "t2", "report"] = ""  # no report: its label prompt
    manifest = Manifest(frame, CLASSES)
    tokenizer = load_tokenizer()
    plan = plan_synthesis(
        manifest, ["Pneumothorax", "Hernia"], target=10, dataset="plain", source="report",
        tokenizer=tokenizer,
    )  # fmt: skip
    labelled = plan_synthesis(manifest, ["Pneumothorax", "Hernia"], target=10, dataset="plain")
    # the same sources and label sets as with label prompts; only the prompts differ
    pd.testing.assert_frame_equal(
        plan.drop(columns="prompt"), labelled.drop(columns="prompt"), check_dtype=False
    )
    for _, row in plan.iterrows():
        source = row["source_image_id"]
        labels = [c for c in CLASSES if row[c] == 1]
        parts = prompt_parts(labels, "PA", dataset="plain")
        if source == "t2":
            assert row["prompt"] == parts.text()
        else:
            sentences = [f"Report of {source}.", f"Second sentence of {source}."]
            assert row["prompt"] == report_prompt(parts, sentences)
            assert row["prompt"].endswith(f". Report of {source}. Second sentence of {source}.")
