"""Registries: names chosen in a configuration are checked before any work, and a new data
format, architecture or loss is one module plus one registration (the contributor exercises of
docs/architecture.md, done here in the test module itself)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from trcgl.config import load_config
from trcgl.data.manifest import build_manifest
from trcgl.data.readers import DataFormat, ReadResult
from trcgl.data.readers.csv_checks import read_csv, require_columns, row_numbers
from trcgl.errors import ConfigError
from trcgl.models.base import Classifier, load_model
from trcgl.models.build import build_model
from trcgl.models.losses import LossSpec, MultiLabelLoss, build_loss
from trcgl.registry import ARCHITECTURES, DATA_FORMATS, LOSSES, Registry
from trcgl.stages.train import trainer_for_run


def test_unknown_names_are_refused_with_the_key_the_choices_and_a_suggestion():
    with pytest.raises(ConfigError, match=r"data\.format: must be one of \['chexpert', 'cxrlt', "):
        load_config("nih-demo", ["data.format=dicom"])
    with pytest.raises(ConfigError, match=r"got 'nhi'; did you mean 'nih'\?"):
        load_config("nih-demo", ["data.format=nhi"])
    with pytest.raises(ConfigError, match=r"model\.architecture: .*got 'csr'; did you mean 'csra'"):
        load_config("nih-demo", ["model.architecture=csr"])
    with pytest.raises(
        ConfigError, match=r"train\.loss: must be one of \['asl', 'bce', 'cb_margin', 'db', "
    ):
        load_config("nih-demo", ["train.loss=focal"])


def test_an_architecture_checks_the_model_options_it_reads():
    csra = ["model.architecture=csra"]
    with pytest.raises(ConfigError, match=r"model\.csra_heads must be one of 1, 2, 4, 6, 8, got 3"):
        load_config("nih-demo", [*csra, "model.csra_heads=3"])
    assert load_config("nih-demo", [*csra, "model.csra_heads=4"]).model.csra_heads == 4
    # TRCGL-Net does not read csra_heads; it checks its own widths
    assert load_config("nih-demo", ["model.csra_heads=3"]).model.architecture == "trcgl_net"
    with pytest.raises(ConfigError, match=r"model\.reduction, model\.embed_dim"):
        load_config("nih-demo", ["model.embed_dim=0"])


def test_loss_options_are_checked_by_name_and_by_the_loss_itself():
    cfg = load_config("nih-demo", ["train.loss=asl", "train.loss_options={gamma_neg: 2}"])
    assert cfg.train.loss_options == {"gamma_neg": 2}
    with pytest.raises(
        ConfigError,
        match=r"unknown configuration key 'train\.loss_options\.gamma_negg'; "
        r"did you mean 'train\.loss_options\.gamma_neg'\?",
    ):
        load_config("nih-demo", ["train.loss=asl", "train.loss_options={gamma_negg: 2}"])
    with pytest.raises(ConfigError, match=r"train\.loss_options: gamma_neg and gamma_pos must"):
        load_config("nih-demo", ["train.loss=asl", "train.loss_options={gamma_neg: -1}"])
    with pytest.raises(ConfigError, match=r"train\.loss_options: expected a mapping"):
        load_config("nih-demo", ["train.loss_options=3"])
    # options that belong to another loss are refused, naming what this one takes
    with pytest.raises(ConfigError, match=r"known in train\.loss_options: pos_weight"):
        load_config("nih-demo", ["train.loss=bce", "train.loss_options={gamma_neg: 2}"])


def test_loss_options_reach_the_trainers_loss(prepared, tmp_path):
    run, overrides = prepared
    shutil.copytree(run, tmp_path / "run")
    cfg = load_config(
        "nih-demo",
        [*overrides, "train.loss=asl", "train.loss_options={gamma_neg: 1.5, clip: 0.0}"],
    )
    trainer = trainer_for_run(cfg, tmp_path / "run", progress=False)
    assert (trainer.loss_fn.gamma_neg, trainer.loss_fn.clip) == (1.5, 0.0)
    # LDAM-DRW: DRW at 80 % of stage 2 unless the user says otherwise
    for options, start in (("{}", round(0.8 * cfg.train.epochs)), ("{drw_start_epoch: 1}", 1)):
        cfg = load_config(
            "nih-demo", [*overrides, "train.loss=ldam_drw", f"train.loss_options={options}"]
        )
        trainer = trainer_for_run(cfg, tmp_path / "run", progress=False)
        assert trainer.loss_fn.drw_start_epoch == start


def test_registry_lists_and_refuses_a_second_entry_under_one_name():
    reg: Registry[int] = Registry("thing.kind", "trcgl.registry")
    reg.add("a", 1)
    reg.add("a", 1)  # the same entry again (a module imported twice) is fine
    assert reg.names() == ["a"] and "a" in reg and reg.get("a") == 1
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", 2)


# -- the contributor exercises ------------------------------------------------------------------


def _read_wide(path, classes: Sequence[str], data) -> ReadResult:
    """A 'wide' CSV: file, subject and one Y/N column per class (a made-up private layout)."""
    df = read_csv(path)
    require_columns(df, ["file", "subject", *classes], path)
    labels = (df[list(classes)] == "Y").to_numpy(dtype=np.uint8)
    records = pd.DataFrame(
        {"image": df["file"], "image_id": df["file"], "patient_id": df["subject"]}
    )
    return ReadResult(build_manifest(records, labels, tuple(classes)), path, row_numbers(len(df)))


@pytest.fixture
def wide_format(monkeypatch):
    fmt = DataFormat(read=_read_wide, description="file, subject, Y/N per class")
    monkeypatch.setitem(DATA_FORMATS._entries, "wide", fmt)
    return fmt


def test_a_new_data_format_is_one_registration(wide_format, nih_sample, tmp_path):
    from trcgl.data.readers import read_nih
    from trcgl.stages.diffusion import plan_for_run
    from trcgl.stages.prepare import prepare

    entries = read_nih(nih_sample / "Data_Entry_sample.csv").manifest.frame.head(80)
    classes = ["Effusion", "Infiltration", "Hernia"]
    wide = pd.DataFrame({"file": entries["image"], "subject": entries["patient_id"]})
    for c in classes:
        wide[c] = np.where(entries[c] == 1, "Y", "N")
    wide.to_csv(tmp_path / "wide.csv", index=False)
    base = [
        "data.format=wide",
        f"data.labels_csv={tmp_path / 'wide.csv'}",
        f"data.image_root={nih_sample / 'images'}",
        "data.vocabulary=null",
        "images.size=32",
    ]
    # the configuration knows what the format needs: it has no vocabulary of its own
    with pytest.raises(ConfigError, match=r"data\.format 'wide' needs data\.classes"):
        load_config("nih-demo", base)
    cfg = load_config("nih-demo", [*base, f"data.classes=[{', '.join(classes)}]"])
    prepare(cfg, tmp_path / "run", progress=False)
    info = json.loads((tmp_path / "run/label_stats.json").read_text())
    assert info["images"]["train"] + info["images"]["val"] == 80
    stats = pd.read_csv(tmp_path / "run/label_stats.csv").set_index("class")
    total = stats["images_train"] + stats["images_val"]
    assert total.to_dict() == {c: int(entries[c].sum()) for c in classes}
    # the diffusion stages take the format's prompt style (labels and view) with no edit
    plan = plan_for_run(cfg, tmp_path / "run")
    assert plan["prompt"].str.startswith("chest x-ray: ").all()


class MeanPoolClassifier(Classifier):
    """A test architecture: the image mean per channel and a linear head."""

    architecture = "_test_mean_pool"

    def __init__(self, *, classes: Sequence[str], pretrained: str | None = None, scale: float = 1):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.head = nn.Linear(4, len(classes))

    @classmethod
    def from_config(cls, cfg, classes, graph, image_size):
        return cls(classes=classes, pretrained=cfg.pretrained, scale=cfg.lam)

    def display_name(self) -> str:
        return "mean pool"

    def forward_features(self, images):
        return self.stem(images)

    def forward_head(self, features, return_attention=False):
        return {"logits": self.head(features.mean((2, 3))) * self.init_kwargs["scale"]}

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.stem.parameters()


def test_a_new_architecture_is_one_class_and_its_registration(tmp_path, monkeypatch):
    monkeypatch.setitem(ARCHITECTURES._entries, "_test_mean_pool", MeanPoolClassifier)
    cfg = load_config("nih-demo", ["model.architecture=_test_mean_pool", "model.lam=2"])
    model = build_model(cfg.model, ["a", "b"], graph=None)
    assert isinstance(model, MeanPoolClassifier) and model.init_kwargs["scale"] == 2.0
    model.save_pretrained(tmp_path / "m")
    again = load_model(tmp_path / "m")
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(again(x)["logits"], model.eval()(x)["logits"])
    assert again.display_name() == "mean pool"


def test_constructor_arguments_are_recorded_once_for_every_subclass():
    """No architecture writes ``init_kwargs`` by hand: the base class records the outermost
    constructor's arguments (defaults included, JSON values) and refuses one it cannot save."""

    class Scaled(MeanPoolClassifier):
        def __init__(self, *, classes, factor: float = 3.0, pretrained=None):
            super().__init__(classes=classes, pretrained=pretrained, scale=factor)

    model = Scaled(classes=("a", "b"))
    assert model.init_kwargs == {"classes": ["a", "b"], "factor": 3.0, "pretrained": None}

    class Holding(MeanPoolClassifier):
        def __init__(self, *, classes, thing: object = None):
            super().__init__(classes=classes)

    with pytest.raises(TypeError, match="unsaved_arguments"):
        Holding(classes=["a"], thing=object())


class HingeLoss(MultiLabelLoss):
    """A test loss: the squared hinge on ±1 targets, with a margin option."""

    def __init__(self, margin: float = 1.0, num_classes: int | None = None) -> None:
        super().__init__(num_classes)
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        self.margin = margin

    def element_loss(self, logits, targets):
        return torch.relu(self.margin - (2 * targets - 1) * logits) ** 2


def test_a_new_loss_is_one_class_and_its_registration(monkeypatch):
    monkeypatch.setitem(LOSSES._entries, "hinge", LossSpec(HingeLoss))
    cfg = load_config("nih-demo", ["train.loss=hinge", "train.loss_options={margin: 0.5}"])
    loss = build_loss(cfg.train.loss, [3, 5], 10, **cfg.train.loss_options)
    logits, targets = torch.tensor([[0.2, -1.0]]), torch.tensor([[1.0, 0.0]])
    expected = ((0.5 - 0.2) ** 2 + 0.0) / 2  # mean over classes; the second is past the margin
    assert loss(logits, targets).item() == pytest.approx(expected)
    with pytest.raises(ConfigError, match=r"train\.loss_options: margin must be > 0"):
        load_config("nih-demo", ["train.loss=hinge", "train.loss_options={margin: 0}"])


def _counted_family():
    """A generator family defined here alone: the Stable Diffusion networks, its denoiser
    counted (one class and one registration, the contributor exercise)."""
    from trcgl.diffusion.components import Components

    class Counted(Components):
        calls = 0

        def predict_noise(self, latents, timesteps, condition):
            type(self).calls += 1
            return super().predict_noise(latents, timesteps, condition)

    return Counted


Counted = _counted_family()


def test_a_new_generator_family_is_one_class_and_one_registration(prepared, tmp_path, monkeypatch):
    from tests.conftest import TINY_DIFFUSION
    from trcgl.registry import GENERATORS
    from trcgl.stages import diffusion as stage

    run, overrides = prepared
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with pytest.raises(ConfigError, match=r"diffusion\.generator: must be one of .*'counted'"):
        load_config("nih-demo", [*overrides, "diffusion.generator=counted"])
    monkeypatch.setitem(GENERATORS._entries, "counted", f"{__name__}:Counted")
    cfg = load_config("nih-demo", [*overrides, *TINY_DIFFUSION, "diffusion.generator=counted"])
    record = stage.train_stage(cfg, copy, progress=False)
    assert record["family"] == "counted"
    assert Counted.calls == cfg.diffusion.steps + 2 * 4  # steps; the check batch, twice
    components, _ = stage.load_generator(copy)
    assert type(components) is Counted
    Counted.calls = 0
    sampled = stage.sample_stage(cfg, copy, progress=False)
    assert sampled["made"] >= 1 and Counted.calls >= cfg.diffusion.sample_steps
