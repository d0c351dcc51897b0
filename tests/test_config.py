from __future__ import annotations

import pytest

from trcgl.config import Config, load_config, preset_names, resolve_path
from trcgl.errors import ConfigError


def test_presets_exist_and_load():
    assert {"padchest", "cxrlt2026", "nih", "nih-demo", "chexpert", "vindr", "openi"} <= set(
        preset_names()
    )
    assert load_config("chexpert").data.uncertain == "ignore"
    assert load_config("vindr").data.aggregation == "majority"
    openi = load_config("openi")
    assert openi.data.format == "openi" and openi.data.vocabulary == "openi18"
    assert (
        openi.diffusion.prompt_source == "report" and Config().diffusion.prompt_source == "labels"
    )
    with pytest.raises(ConfigError, match=r"diffusion\.prompt_source"):
        load_config("openi", ["diffusion.prompt_source=impression"])
    cfg = load_config("padchest")
    assert cfg.data.format == "padchest" and cfg.groups.head == 5000 and cfg.graph.tau == 0.02
    assert load_config("nih-demo").images.size == 128
    cfg = load_config("cxrlt2026", ["data.labels_csv=/x/train.csv"])
    assert cfg.data.labels_csv == "/x/train.csv"


def test_defaults_are_the_papers():
    cfg = Config()
    assert cfg.split.val_fraction == 0.2 and cfg.graph.tau == 0.02 and cfg.images.size == 224
    assert (cfg.groups.head, cfg.groups.tail) == (5000, 500)


def test_overrides_are_typed():
    cfg = load_config("nih-demo", ["split.seed=3", "groups.head=0.75", "data.projections=[PA]"])
    assert cfg.split.seed == 3 and cfg.groups.head == 0.75 and cfg.data.projections == ["PA"]
    assert load_config("nih-demo", ["data.projections=null"]).data.projections is None
    # PyYAML reads 1e-3 as a string; float fields accept it
    assert load_config("nih-demo", ["train.head_lr=1e-3"]).train.head_lr == 0.001


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("split.sed=3", "unknown configuration key 'split.sed'"),
        ("nonsense=1", "unknown configuration key 'nonsense'"),
        ("split.seed=abc", "split.seed: expected an integer"),
        ("split.val_fraction=1.5", "split.val_fraction"),
        ("data.format=dicom", "data.format: must be one of"),
        ("images.size=-1", "images.size"),
        ("graph.tau=2", "graph.tau"),
        ("data.skip_corrupt=maybe", "data.skip_corrupt: expected true or false"),
        ("groups.tail=0.9", "groups.head and groups.tail"),
        ("split", "not of the form key=value"),
        ("data.mapping=my.csv", "data.mapping is set, but data.format 'nih' reads classes"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config("nih-demo", [override])


def test_cxrlt_preset_needs_its_csv():
    with pytest.raises(ConfigError, match=r"data\.labels_csv is required"):
        load_config("cxrlt2026")


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config("no-such-preset")
    bad = tmp_path / "c.yaml"
    bad.write_text("data: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_package_paths_resolve():
    p = resolve_path("trcgl://resources/nih_sample/Data_Entry_sample.csv")
    assert p.is_file()


def test_layers_override_in_order_then_key_values(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("train:\n  batch_size: 7\n  epochs: 3\nmodel:\n  backbone: resnet18\n")
    cfg = load_config(["nih-demo", "baselines/resnet50", mine], ["train.epochs=9"])
    assert cfg.data.format == "nih" and cfg.images.size == 128  # from nih-demo
    assert cfg.model.architecture == "timm"  # from baselines/resnet50
    assert cfg.model.backbone == "resnet18" and cfg.train.batch_size == 7  # from mine.yaml
    assert cfg.train.epochs == 9  # the override comes last
    assert cfg.train.warmup_epochs == 1  # nih-demo's value, untouched by later layers
    # a layer without a name extends the run's name (and so its default run directory)
    assert cfg.name == "nih-demo-resnet50-mine"
    assert load_config(["nih-demo"]).name == "nih-demo"


def test_cli_takes_c_twice_and_records_the_resolved_config(tmp_path, monkeypatch):
    from tests.conftest import invoke

    monkeypatch.chdir(tmp_path)
    result = invoke("prepare", "-c", "nih-demo", "-c", "baselines/resnet50", "images.size=16")
    assert result.exit_code == 0, result.output
    import yaml

    saved = yaml.safe_load((tmp_path / "runs/nih-demo-resnet50/config.yaml").read_text())
    assert saved["model"]["architecture"] == "timm" and saved["model"]["backbone"] == "resnet50"
    assert saved["data"]["format"] == "nih" and saved["images"]["size"] == 16


@pytest.mark.parametrize(
    ("layers", "override", "message"),
    [
        (["nih-demo", "no-such-layer"], [], "'no-such-layer' is neither a file nor a preset"),
        (["nih-demo"], ["train.batchsize=3"], "did you mean 'train.batch_size'"),
        (["nih-demo"], ["modle.alpha=3"], "did you mean 'model'"),
    ],
)
def test_layer_and_key_errors_name_them(layers, override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(layers, override)


def test_data_sources_are_checked_before_any_work():
    base = "data.sources=[{name: nih, format: nih}, {name: chex, format: chexpert}]"
    sources = load_config("nih-demo", [base]).data.source_configs()
    assert [(s.name, s.data.format, s.relabel) for s in sources] == [
        ("nih", "nih", None),
        ("chex", "chexpert", None),
    ]
    assert sources[1].data.uncertain == "ignore"  # a source's unset keys: their defaults
    cases = [
        ("[{name: a/b, format: nih}]", "letters, digits"),
        ("[{name: a, format: nih}, {name: a, format: chexpert}]", "used twice"),
        ("[{name: a, format: nhi}]", "did you mean 'nih'"),
        ("[{name: a, format: nih, labls_csv: x}]", "unknown configuration key 'data.sources"),
        ("[{name: a, format: plain}]", r"data.sources\[a\].labels_csv is required"),
        ("[{name: a, format: plain, vocabulary: null, labels_csv: x}]", "needs data.sources"),
        ("[{name: a, format: chexpert, relabel: t.csv}]", "data.vocabulary must name it"),
        ("[{name: a, format: nih, sources: []}]", "cannot have sources of its own"),
    ]
    for value, message in cases:
        overrides = [f"data.sources={value}"]
        if "relabel" in value or "plain, vocabulary" in value:
            overrides.append("data.vocabulary=null")
        with pytest.raises(ConfigError, match=message):
            load_config("nih-demo", overrides)
