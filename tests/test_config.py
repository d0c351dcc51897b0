from __future__ import annotations

import pytest

from trcgl.config import Config, load_config, preset_names, resolve_path
from trcgl.errors import ConfigError


def test_presets_exist_and_load():
    assert {"padchest", "cxrlt2026", "nih", "nih-demo"} <= set(preset_names())
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
