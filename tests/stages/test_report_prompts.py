"""``diffusion.prompt_source: report`` through the diffusion stage's planner and training set, on
an OpenI stand-in: 150 real OpenI reports (copied member by member from the shipped archive),
their real view rows, NIH sample images under the OpenI image names, and a copy of the shipped
MeSH table restricted to three classes (``data.mapping``, ``data.classes``)."""

from __future__ import annotations

import csv
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import wheel_csv
from trcgl.config import load_config
from trcgl.data.readers import OPENI_REPORTS_NAME
from trcgl.data.readers.openi import OPENI_METADATA_NAME, iter_reports
from trcgl.data.report_text import split_sentences
from trcgl.data.vocab import DEFAULT_OPENI_MAPPING, mapping_path
from trcgl.diffusion.prompts import prompt_parts, prompts_for_manifest, report_prompt
from trcgl.diffusion.text import load_tokenizer

CLASSES = ["Atelectasis", "Cardiomegaly", "Lung Opacity"]


@pytest.fixture(scope="module")
def openi_run(tmp_path_factory, nih_sample) -> tuple[Path, list[str]]:
    from trcgl.stages.prepare import prepare

    root = tmp_path_factory.mktemp("openi")
    archive = wheel_csv(OPENI_REPORTS_NAME)
    chosen = [r for r in iter_reports(archive) if r.images][:150]
    with tarfile.open(archive) as source, tarfile.open(root / OPENI_REPORTS_NAME, "w:gz") as out:
        for report in chosen:
            member = source.getmember(report.member)
            out.addfile(member, source.extractfile(member))
    images = [i for r in chosen for i in r.images]
    meta = pd.read_csv(wheel_csv(OPENI_METADATA_NAME), usecols=["imageid", "View Position"])
    meta[meta["imageid"].isin(images)].to_csv(root / "nlmcxr_dicom_metadata.csv", index=False)
    (root / "png").mkdir()
    pngs = sorted((nih_sample / "images").iterdir())
    for image, png in zip(images, pngs, strict=False):
        (root / "png" / f"{image}.png").write_bytes(png.read_bytes())
    with mapping_path(DEFAULT_OPENI_MAPPING).open() as fh, (root / "mesh.csv").open("w") as out:
        writer = csv.writer(out, lineterminator="\n")
        for finding, cls in csv.reader(fh):
            writer.writerow([finding, cls if cls in (*CLASSES, "class") else ""])
    overrides = [
        f"data.labels_csv={root / OPENI_REPORTS_NAME}",
        f"data.image_root={root / 'png'}",
        f"data.mapping={root / 'mesh.csv'}",
        "data.vocabulary=null",
        f"data.classes=[{', '.join(CLASSES)}]",
        "data.projections=null",
        "images.size=32",
        "images.workers=1",
        "diffusion.source=null",
        "diffusion.image_size=16",
        "diffusion.prompt_source=report",
    ]
    prepare(load_config("openi", overrides), root / "run", progress=False)
    return root / "run", overrides


def test_the_stage_builds_report_prompts(openi_run):
    from trcgl.run_dir import RunDir
    from trcgl.stages.diffusion import _dataset, plan_for_run

    run, overrides = openi_run
    cfg = load_config("openi", overrides)
    tokenizer = load_tokenizer()
    data = RunDir(run).training_data()
    manifest = data.manifest
    assert list(manifest.classes) == CLASSES and "report" in manifest.frame
    by_id = manifest.frame.set_index("image_id")
    plan = plan_for_run(cfg, run, tokenizer, data)
    assert len(plan) > 0
    for _, row in plan.iterrows():
        source = by_id.loc[row["source_image_id"]]
        labels = [c for c in CLASSES if row[c] == 1]
        assert labels == [c for c in CLASSES if source[c] == 1]
        parts = prompt_parts(labels, source["view"], dataset="plain")
        expected = report_prompt(parts, split_sentences(source["report"]), tokenizer)
        assert row["prompt"] == expected
        assert len(tokenizer(row["prompt"]).input_ids) <= 77
    # the generator's training set: every real training image with its report prompt
    dataset, rows = _dataset(cfg, run, data, False, tokenizer)
    assert dataset.prompts == prompts_for_manifest(
        rows, "plain", source="report", tokenizer=tokenizer
    )
    with_report = rows.frame["report"].to_numpy() != ""
    assert with_report.any()
    labelled = prompts_for_manifest(rows, "plain", tokenizer=tokenizer)
    differs = np.array([a != b for a, b in zip(dataset.prompts, labelled, strict=True)])
    assert (differs == with_report).all()
