"""`trcgl experiment`: the paper's tables from variants trained on one prepared run."""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest

from tests.conftest import TINY_DIFFUSION, invoke
from trcgl.config import load_config
from trcgl.errors import ConfigError
from trcgl.stages.experiments import (
    PAPER,
    run_experiment,
    table_frame,
    variant_config,
    variant_dir,
    variants_for,
)


@pytest.fixture(scope="module")
def table5(prepared, tmp_path_factory):
    run, overrides = prepared
    copy = tmp_path_factory.mktemp("experiments") / "run"
    shutil.copytree(run, copy)
    args = [*overrides, *TINY_DIFFUSION]
    result = invoke("experiment", "table5", "-c", "nih-demo", "--run-dir", str(copy), *args)
    assert result.exit_code == 0, result.output
    return copy, args, result.output


def test_table5_has_one_row_per_alpha_with_the_variants_metrics(table5):
    run, args, output = table5
    frame = pd.read_csv(run / "experiments" / "table5.csv")
    assert list(frame["α"]) == [0.025, 0.05, 0.1]
    cfg = load_config("nih-demo", args)
    for variant, (_, row) in zip(variants_for("table5"), frame.iterrows(), strict=True):
        vcfg, synthetic = variant_config(cfg, variant, [])
        assert vcfg.model.alpha == row["α"] and synthetic
        folder = variant_dir(run, variant, vcfg, synthetic)
        summary = json.loads((folder / "evaluation" / "val" / "metrics.json").read_text())
        assert row["mAP"] == pytest.approx(summary["summary"]["overall"]["mAP"])
        kept = json.loads((run / "synthetic" / "summary.json").read_text())["kept"]
        assert kept >= 1  # the filter kept synthetic images, and every variant trained on them
        assert json.loads((folder / "train.json").read_text())["synthetic_images"] == kept
    markdown = (run / "experiments" / "table5.md").read_text()
    assert markdown.startswith("# Table 5") and "| α |" in markdown
    # Each row's interval; the rows against α = 0.05 (the configuration's own value), paired.
    assert frame["mAP 95 % CI"].str.match(r"\[0\.\d{4}, [01]\.\d{4}\]").all()
    delta = frame["Δ mAP vs α = 0.05"]
    assert delta.iloc[1] == "reference" and math.isnan(frame["p"].iloc[1])
    for i in (0, 2):
        assert delta.iloc[i].startswith(("+", "-")) and 0 < frame["p"].iloc[i] <= 1
        difference = float(delta.iloc[i].split()[0])
        assert difference == pytest.approx(frame["mAP"].iloc[i] - frame["mAP"].iloc[1], abs=1e-4)
    assert "paired bootstrap against α = 0.05" in markdown
    assert "Table 5" in output and "table5.csv" in output


def test_shared_variants_are_trained_once(table5, tmp_path):
    run, args, _ = table5
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = load_config("nih-demo", args)
    again = run_experiment(cfg, copy, "table5", progress=False, log=lambda line: None)
    assert again.trained == []
    # w_syn = 0.5 with α = 0.05 is the default TRCGL-Net: already trained for Table 5.
    table4 = run_experiment(cfg, copy, "table4", progress=False, log=lambda line: None)
    assert table4.trained == ["w_syn = 0.25", "w_syn = 0.75"]
    assert list(table4.frame["w_syn"]) == [0.25, 0.5, 0.75]


def test_table1_subset_with_small_backbones(prepared, tmp_path):
    run, overrides = prepared
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = load_config("nih-demo", [*overrides, "diffusion.enabled=false"])
    result = run_experiment(
        cfg,
        copy,
        "table1",
        extra=[
            "model.backbone=convnextv2_atto",
            "model.pretrained=null",
            "evaluate.f1_thresholds=[0.5, 0.2]",
        ],
        only=["ConvNeXt", "ConvNeXt + CSRA"],
        progress=False,
        log=lambda line: None,
    )
    assert list(result.frame["method"]) == ["ConvNeXt", "ConvNeXt + CSRA"]
    assert list(result.frame.columns[:5]) == ["method", "mAP", "mAUC", "F1", "F1@0.2"]
    assert result.frame["F1@0.2"].between(0, 1).all()
    assert not any(c.endswith("(paper)") for c in result.frame.columns)  # NIH, not PadChest
    models = copy.glob("experiments/*/model/config.json")
    archs = [json.loads(p.read_text())["architecture"] for p in models]
    assert sorted(archs) == ["csra", "timm"]
    with pytest.raises(ConfigError, match="no variant"):
        run_experiment(cfg, copy, "table1", only=["VGG"], log=lambda line: None)


def test_ablation_variants_switch_one_thing_each(prepared):
    _, overrides = prepared
    cfg = load_config("nih-demo", overrides)
    configs = {v.name: variant_config(cfg, v, []) for v in variants_for("table3")}
    full, synthetic = configs["TRCGL-Net"]
    assert synthetic and full.model.channel_attention and full.model.label_gcn
    no_att, syn = configs["w/o channel-class attention"]
    assert syn and not no_att.model.channel_attention and not no_att.model.spatial_attention
    assert no_att.model.label_gcn
    no_gcn, syn = configs["w/o label relation"]
    assert syn and not no_gcn.model.label_gcn and no_gcn.model.channel_attention
    real, syn = configs["w/o diffusion data"]
    assert not syn and real.model == full.model
    base, syn = configs["backbone only"]
    assert not syn and not (base.model.channel_attention or base.model.label_gcn)
    assert not base.model.spatial_attention
    # Table 3's first row as the authors' code reads it: the spatial branch stays.
    authors, syn = configs["××× (authors' reading)"]
    assert not syn and not (authors.model.channel_attention or authors.model.label_gcn)
    assert authors.model.spatial_attention


def test_paper_numbers_stand_beside_ours_on_padchest():
    variants = {v.name: v for v in variants_for("table1")}
    rows = [(variants["TRCGL-Net"], {"mAP": 0.3}), (variants["ResNet-50"], {"mAP": 0.2})]
    frame = table_frame("table1", rows, paper=True)
    assert frame.loc[0, "mAP (paper)"] == PAPER["TRCGL-Net"]["mAP"] == 0.4408
    assert math.isnan(frame.loc[1, "mAP (paper)"])  # no ResNet-50 number in docs/method.md
    assert "F1 (tuned thr.) (paper)" not in frame  # the paper has none: column dropped
    # evaluated at the authors' 0.2 too: F1@0.2 beside F1, the paper's F1 beside F1@0.2
    rows = [(variants["TRCGL-Net"], {"mAP": 0.3, "F1": 0.1, "F1@0.2": 0.4})]
    frame = table_frame("table1", rows, paper=True)
    columns = [c for c in frame.columns if not c.endswith("(paper)")]
    assert columns[:5] == ["method", "mAP", "mAUC", "F1", "F1@0.2"]
    assert frame.loc[0, "F1@0.2 (paper)"] == PAPER["TRCGL-Net"]["F1"]
    assert "F1 (paper)" not in frame


def test_seeds_give_mean_and_sd_over_training_seeds(table5, tmp_path):
    """--seeds 0,1: each variant trained once per train.seed (seed 0's are Table 5's own,
    reused); the table gives the mean and the sample sd of the seeds' metrics."""
    import numpy as np

    run, args, _ = table5
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    only = "α = 0.025,α = 0.05"
    result = invoke(
        "experiment", "table5", "-c", "nih-demo", "--run-dir", str(copy), *args,
        "--only", only, "--seeds", "0,1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.count("(seed 1): training in") == 2
    assert "(seed 0): training in" not in result.output
    frame = pd.read_csv(copy / "experiments" / "table5.csv")
    cfg = load_config("nih-demo", args)
    for variant, (_, row) in zip(variants_for("table5")[:2], frame.iterrows(), strict=True):
        vcfg, synthetic = variant_config(cfg, variant, [])
        values = []
        for seed in (0, 1):
            folder = variant_dir(copy, variant, vcfg.updated([], [f"train.seed={seed}"]), synthetic)
            record = json.loads((folder / "evaluation" / "val" / "metrics.json").read_text())
            values.append(record["summary"]["overall"]["mAP"])
        assert row["mAP"] == pytest.approx(np.mean(values))
        assert row["mAP sd"] == pytest.approx(np.std(values, ddof=1))
    markdown = (copy / "experiments" / "table5.md").read_text()
    assert f"{frame['mAP'].iloc[0]:.4f} ± {frame['mAP sd'].iloc[0]:.4f}" in markdown
    assert "2 training seeds (0, 1)" in markdown
    bad = invoke("experiment", "table5", "-c", "nih-demo", "--run-dir", str(copy), "--seeds", "0,x")
    assert bad.exit_code == 2 and "comma-separated integers" in bad.output
