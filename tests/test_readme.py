"""Every ``trcgl`` command in README.md's code blocks runs as documented.

Each README code block runs as one user session in a fresh working directory, with the
default relative run directories. A command runs exactly as written when everything it names
exists here; where it names data or weights this machine does not have, the documented
command runs with those names replaced by real stand-ins (the vendored NIH sample, a tiny
diffusers folder) and small-size overrides appended; commands that need PadChest's pixels or
several GPUs are listed with the reason, and their configuration is still checked. A command
added to the README without an entry here fails :func:`test_every_readme_command_has_a_plan`.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import SMALL_CLASSES, TINY_DIFFUSION, TINY_TRAIN, chexpert_standin, invoke
from trcgl.config import load_config
from trcgl.data.vocab import CXRLT_CLASSES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: Small sizes for the nih-demo preset's CPU work (TINY_TRAIN without its backbone choice).
SMALL = [
    *(a for a in TINY_TRAIN if not a.startswith(("model.backbone", "model.pretrained"))),
    "train.epochs=1",
]
SMALL_RUN = [*TINY_TRAIN, "train.epochs=1", *TINY_DIFFUSION]


@dataclass
class Run:
    """Run the command; ``replace`` maps names in it to stand-ins, ``extra`` is appended,
    ``expect`` lists files (relative to the working directory) that must exist after it."""

    replace: dict[str, str] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)
    expect: list[str] = field(default_factory=list)


@dataclass
class Skip:
    """Not run here: ``reason``; its ``-c`` layers and ``key=value`` overrides still load."""

    reason: str


PADCHEST = (
    "needs the PadChest images (about 1 TB, not distributed with trcgl) and GPU-sized models; "
    "the same code path runs on the NIH sample in this table"
)
GPUS = (
    "needs several GPUs; tests/training/test_trainer.py runs the same training in two CPU "
    "processes (gloo)"
)
RUN_GPUS = (
    "needs several GPUs; tests/stages/test_pipeline.py runs `trcgl run` in two CPU processes "
    "(gloo) and compares it with one process's run"
)

COMMANDS: dict[str, Run | Skip] = {
    # -- Two commands
    "trcgl demo": Run(
        extra=SMALL_RUN, expect=["runs/demo/report.html", "runs/demo/synthetic/manifest.parquet"]
    ),
    # -- Preparing a data set
    "trcgl prepare --config padchest": Run(expect=["runs/padchest/prepare.json"]),
    "trcgl prepare --config padchest data.image_root=/data/padchest": Skip(PADCHEST),
    "trcgl prepare --config cxrlt2026 data.labels_csv=/data/cxrlt/train.csv "
    "data.image_root=/data/cxrlt/img": Run(
        replace={"/data/cxrlt/train.csv": "{cxrlt_csv}", "/data/cxrlt/img": "{nih_images}"},
        extra=["images.size=32"],
        expect=["runs/cxrlt2026/cache/32", "runs/cxrlt2026/prepare.json"],
    ),
    "trcgl prepare --config nih data.image_root=/data/nih/images": Run(
        replace={"/data/nih/images": "{nih_images}"},
        extra=["data.labels_csv={nih_csv}", "images.size=32"],
        expect=["runs/nih/prepare.json"],
    ),
    "trcgl prepare --config chexpert": Run(expect=["runs/chexpert/prepare.json"]),
    "trcgl prepare --config vindr": Run(expect=["runs/vindr/prepare.json"]),
    "trcgl prepare --config openi": Run(expect=["runs/openi/prepare.json"]),
    "trcgl prepare --config my.yaml --run-dir runs/exp1 split.seed=1 images.size=512": Run(
        expect=["runs/exp1/cache/512", "runs/exp1/prepare.json"]
    ),
    "trcgl list": Run(),
    # -- Data sets and unknown labels
    "trcgl run -c nih+chexpert.yaml diffusion.enabled=false": Run(
        extra=[*TINY_TRAIN, "train.epochs=1"],
        expect=["runs/nih+chexpert/evaluation/val/metrics.json"],
    ),
    # -- Training, evaluation, prediction, attention maps
    "trcgl train -c padchest data.image_root=/data/padchest": Skip(PADCHEST),
    "trcgl train -c padchest -c baselines/resnet50 --run-dir runs/resnet50": Skip(PADCHEST),
    "trcgl train -c nih-demo -c baselines/resnet50 --run-dir runs/resnet50": Run(
        extra=[*SMALL, "diffusion.enabled=false"], expect=["runs/resnet50/model/config.json"]
    ),
    "trcgl evaluate --run-dir runs/padchest": Run(
        expect=["runs/padchest/evaluation/val/metrics.json"]
    ),
    "trcgl predict --model runs/padchest/model /data/new_images --out submission.csv": Run(
        replace={"/data/new_images": "{new_images}"}, expect=["submission.csv"]
    ),
    "trcgl explain --model runs/padchest/model img1.png img2.png --out figs "
    "--run-dir runs/padchest": Run(expect=["figs/img1_regions.png", "figs/img2_confidence.png"]),
    "trcgl export --model runs/padchest/model --out model.onnx --attention": Run(
        expect=["model.onnx", "model.onnx.json"]
    ),
    # -- Is one model better than another?
    "trcgl train -c my.yaml --run-dir runs/full": Run(expect=["runs/full/model/config.json"]),
    "trcgl train -c my.yaml --run-dir runs/linear model.channel_attention=false "
    "model.spatial_attention=false model.label_gcn=false": Run(
        expect=["runs/linear/model/config.json"]
    ),
    "trcgl evaluate --run-dir runs/full": Run(expect=["runs/full/evaluation/val/metrics.json"]),
    "trcgl evaluate --run-dir runs/linear": Run(expect=["runs/linear/evaluation/val/metrics.json"]),
    "trcgl compare runs/full runs/linear": Run(
        expect=["runs/full/evaluation/val/comparison.csv", "runs/full/evaluation/val/comparison.md"]
    ),
    "accelerate launch --multi_gpu --num_processes 8 -m trcgl.cli train -c padchest "
    "data.image_root=/data/padchest": Skip(GPUS),
    "accelerate launch --multi_gpu --num_machines 2 --num_processes 16 --machine_rank 0 "
    "--main_process_ip 10.0.0.1 --main_process_port 29500 -m trcgl.cli train -c padchest ...": (
        Skip(GPUS)
    ),
    "accelerate launch --multi_gpu --num_processes 8 -m trcgl.cli diffusion train -c padchest "
    "data.image_root=/data/padchest diffusion.source=/models/roentgen": Skip(
        "needs several GPUs; tests/stages/test_diffusion.py trains the generator with two CPU "
        "processes (gloo) and compares it with one process's"
    ),
    "accelerate launch --multi_gpu --num_processes 8 -m trcgl.cli diffusion sample -c padchest "
    "data.image_root=/data/padchest diffusion.source=/models/roentgen": Skip(
        "needs several GPUs; tests/stages/test_diffusion.py samples with two CPU processes "
        "(gloo) and compares the files with one process's"
    ),
    "accelerate launch --multi_gpu --num_processes 8 -m trcgl.cli run -c padchest "
    "data.image_root=/data/padchest diffusion.source=/models/roentgen": Skip(RUN_GPUS),
    "accelerate launch --multi_gpu --num_machines 2 --num_processes 16 --machine_rank 0 "
    "--main_process_ip 10.0.0.1 --main_process_port 29500 -m trcgl.cli run -c padchest "
    "--run-dir /shared/runs/padchest data.image_root=/data/padchest "
    "diffusion.source=/models/roentgen": Skip(RUN_GPUS),
    # -- The whole method in one command
    "trcgl run -c padchest data.image_root=/data/padchest diffusion.source=/models/roentgen": (
        Skip(PADCHEST)
    ),
    "trcgl run -c nih data.image_root=/data/nih/images diffusion.source=/models/roentgen": Run(
        replace={"/data/nih/images": "{nih_images}", "/models/roentgen": "{diffusers_folder}"},
        extra=[
            "data.labels_csv={nih_csv}",
            *SMALL_RUN,
            "diffusion.unet_mode=lora",
            "diffusion.lora_rank=2",
            "diffusion.vae_steps=0",
        ],
        expect=["runs/nih/report.html", "runs/nih/diffusion/generator/unet_lora"],
    ),
    "trcgl run -c my.yaml --run-dir runs/exp1 diffusion.enabled=false": Run(
        expect=["runs/exp1/report.html"]
    ),
    # -- Prompt-latent diffusion
    "trcgl diffusion train -c padchest data.image_root=/data/padchest "
    "diffusion.source=/models/roentgen": Skip(PADCHEST),
    "trcgl diffusion sample -c padchest data.image_root=/data/padchest "
    "diffusion.source=/models/roentgen": Skip(PADCHEST),
    "trcgl diffusion filter -c padchest data.image_root=/data/padchest "
    "diffusion.source=/models/roentgen": Skip(PADCHEST),
    "trcgl diffusion train -c nih-demo": Run(
        extra=SMALL_RUN, expect=["runs/nih-demo/diffusion/stage.json"]
    ),
    "trcgl diffusion sample -c nih-demo": Run(
        extra=SMALL_RUN, expect=["runs/nih-demo/synthetic/sample.json"]
    ),
    "trcgl diffusion filter -c nih-demo": Run(
        extra=SMALL_RUN, expect=["runs/nih-demo/synthetic/manifest.parquet"]
    ),
    # -- Experiments
    "trcgl experiment table1 -c padchest data.image_root=/data/padchest "
    "diffusion.source=/models/roentgen": Skip(PADCHEST),
    "trcgl experiment table3 -c nih-demo": Run(
        extra=[*SMALL_RUN, "data.labels_csv={nih_subset_csv}"],
        expect=["runs/nih-demo/experiments/table3.md"],
    ),
    "trcgl experiment table1 -c nih-demo --only ConvNeXt,ConvNeXt + CSRA,TRCGL-Net "
    "--set model.backbone=convnextv2_atto": Run(
        extra=[*SMALL_RUN, "data.labels_csv={nih_subset_csv}"],
        expect=["runs/nih-demo/experiments/table1.md"],
    ),
    "trcgl experiment table5 -c nih-demo --seeds 0,1,2": Run(
        extra=[*SMALL_RUN, "data.labels_csv={nih_subset_csv}"],
        expect=["runs/nih-demo/experiments/table5.md"],
    ),
    # -- The report
    "trcgl report --run-dir runs/demo": Run(expect=["runs/demo/report.html"]),
}


def _words(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def readme_blocks() -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """(section heading, the ``trcgl`` commands of one ``bash`` block as (text, words)), in
    README order; the text is the words joined by single spaces, comments dropped."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for m in re.finditer(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        heading = re.findall(r"^#+ (.+)$", text[: m.start()], flags=re.M)[-1]
        joined = re.sub(r"\\\n\s*", " ", m.group(1))
        commands = []
        for line in joined.splitlines():
            for part in line.split("&&"):
                words = _words(part)
                if words and (words[0] == "trcgl" or "trcgl.cli" in words):
                    commands.append((" ".join(words), words))
        if commands:
            blocks.append((heading, commands))
    return blocks


def test_every_readme_command_has_a_plan():
    found = [c for _, commands in readme_blocks() for c, _ in commands]
    assert len(found) >= 20
    missing = [c for c in found if c not in COMMANDS]
    assert not missing, f"README commands with no entry in tests/test_readme.py: {missing}"
    stale = [c for c in COMMANDS if c not in found]
    assert not stale, f"entries for commands no longer in the README: {stale}"


def test_the_readme_setup_command_is_what_ci_runs():
    text = README.read_text(encoding="utf-8")
    setup = re.search(r"^python3 -m venv .*trcgl demo$", text, flags=re.M)
    assert setup is not None
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert setup.group(0) in ci  # unchanged, as a new user types it
    test_command = ". .venv/bin/activate && python -m pytest -q"
    assert test_command in text and test_command in ci


@pytest.mark.parametrize("command", [c for c, plan in COMMANDS.items() if isinstance(plan, Skip)])
def test_skipped_commands_still_have_a_valid_configuration(command):
    words = _words(command)
    words = words[words.index("trcgl.cli") + 1 :] if "trcgl.cli" in words else words[1:]
    layers = [words[i + 1] for i, w in enumerate(words) if w in ("-c", "--config")]
    overrides = [w for w in words if "=" in w and not w.startswith("-")]
    assert layers
    load_config(layers, overrides)


# -- stand-ins ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def standins(nih_sample, prepared, trained_run, tmp_path_factory) -> dict[str, Path]:
    """Real data and models in place of what the README names but this machine lacks."""
    from trcgl.diffusion.components import load_components, save_components

    root = tmp_path_factory.mktemp("standins")
    images = nih_sample / "images"
    entries = pd.read_csv(nih_sample / "Data_Entry_sample.csv").head(200)
    # the CXR-LT 2026 CSV layout, on real NIH images: classes of the same name carry over
    cxrlt = pd.DataFrame(
        {
            "ImageID": entries["Image Index"],
            "StudyDate_DICOM": "20200101",
            "PatientID": entries["Patient ID"].astype(str),
        }
    )
    findings = entries["Finding Labels"].str.lower().str.split("|")
    for c in CXRLT_CLASSES:
        cxrlt[c] = [int(c.lower().replace("pleural ", "") in f) for f in findings]
    cxrlt.to_csv(root / "cxrlt_train.csv", index=False)
    # the first 600 rows of the sample, for the experiment tables (8 trainings)
    subset = pd.read_csv(nih_sample / "Data_Entry_sample.csv").head(600)
    subset.to_csv(root / "nih_subset.csv", index=False)
    new = root / "new_images"
    new.mkdir()
    for name in sorted(p.name for p in images.iterdir())[:5]:
        shutil.copy(images / name, new / name)
    base = save_components(load_components(None, {"image_size": 32}), root / "roentgen-like")
    _, overrides = prepared
    return {
        "nih_images": images,
        "nih_csv": nih_sample / "Data_Entry_sample.csv",
        "nih_subset_csv": root / "nih_subset.csv",
        "cxrlt_csv": root / "cxrlt_train.csv",
        "new_images": new,
        "diffusers_folder": base,
        "trained_run": trained_run[0],
        "my_yaml": _my_yaml(root / "my.yaml", overrides),
        "sources_yaml": _sources_yaml(root, nih_sample),
    }


def _sources_yaml(root: Path, nih_sample: Path) -> Path:
    """The README's two-data-set configuration, its image roots replaced by stand-ins: 120 NIH
    sample images, and a CheXpert-layout stand-in (real CheXpert label rows)."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"^```yaml\n(# nih\+chexpert\.yaml\n.*?)^```", text, flags=re.M | re.S)
    tree = yaml.safe_load(block.group(1))
    pd.read_csv(nih_sample / "Data_Entry_sample.csv").head(120).to_csv(
        root / "nih120.csv", index=False
    )
    chexpert_csv, chexpert_images = chexpert_standin(root, nih_sample, 60)
    nih, chexpert = tree["data"]["sources"]
    nih.update(labels_csv=str(root / "nih120.csv"), image_root=str(nih_sample / "images"))
    chexpert.update(labels_csv=str(chexpert_csv), image_root=str(chexpert_images))
    path = root / "nih+chexpert.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _my_yaml(path: Path, overrides: list[str]) -> Path:
    """A user's own config: the 120-image, 5-class NIH subset of the test fixtures."""
    tree: dict = {"name": "exp"}
    for item in overrides:
        key, _, raw = item.partition("=")
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(raw)
    tree["data"]["classes"] = SMALL_CLASSES
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _session_dir(tmp_path: Path, standins: dict[str, Path], commands: list[str]) -> Path:
    """A fresh working directory holding what a user of these commands has made before:
    their own config and images, and a trained run where a command only reads one."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    shutil.copy(standins["my_yaml"], cwd / "my.yaml")
    shutil.copy(standins["sources_yaml"], cwd / "nih+chexpert.yaml")
    for name in ("padchest", "demo"):
        reads = f"--run-dir runs/{name}"
        if any(reads in c and not c.startswith(("trcgl prepare", "trcgl demo")) for c in commands):
            shutil.copytree(standins["trained_run"], cwd / "runs" / name)
    first, second = sorted(standins["new_images"].iterdir())[:2]
    shutil.copy(first, cwd / "img1.png")
    shutil.copy(second, cwd / "img2.png")
    return cwd


def _argv(words: list[str], plan: Run, standins: dict[str, Path]) -> list[str]:
    names = {k: str(v) for k, v in standins.items()}
    out = []
    for word in words[1:]:
        for old, new in plan.replace.items():
            word = word.replace(old, new.format(**names))
        out.append(word)
    return [*out, *(e.format(**names) for e in plan.extra)]


BLOCKS = readme_blocks()


@pytest.mark.parametrize("block", range(len(BLOCKS)), ids=[h for h, _ in BLOCKS])
def test_readme_block_runs_as_documented(block, standins, tmp_path, monkeypatch):
    heading, commands = BLOCKS[block]
    runnable = [(c, w, COMMANDS[c]) for c, w in commands if isinstance(COMMANDS.get(c), Run)]
    if not runnable:
        reasons = dict.fromkeys(COMMANDS[c].reason for c, _ in commands)
        pytest.skip(f"{heading}: " + "; ".join(reasons))
    cwd = _session_dir(tmp_path, standins, [c for c, _, _ in runnable])
    monkeypatch.chdir(cwd)
    outputs = {}
    for command, words, plan in runnable:
        result = invoke(*_argv(words, plan, standins))
        assert result.exit_code == 0, f"{command}\n{result.output}"
        for path in plan.expect:
            assert (cwd / path).exists(), f"{command}: {path} missing\n{result.output}"
        outputs[command] = result.output
    _check_outputs(cwd, outputs)


def _check_outputs(cwd: Path, outputs: dict[str, str]) -> None:
    """What the commands' documented outputs must say, beyond existing."""
    commands = list(outputs)
    if "trcgl list" in commands:  # every registered name, as the configuration accepts it
        text = outputs["trcgl list"]
        for name in ("nih-demo", "baselines/resnet50", "padchest", "plain", "trcgl_net", "csra"):
            assert name in text
        assert "ldam_drw" in text and "gamma_neg" in text  # a loss and one of its options
    if "trcgl run -c nih+chexpert.yaml diffusion.enabled=false" in commands:
        metrics = json.loads((cwd / "runs/nih+chexpert/evaluation/val/metrics.json").read_text())
        assert set(metrics["datasets"]) == {"nih", "chexpert"}
    if "trcgl compare runs/full runs/linear" in commands:
        text = outputs["trcgl compare runs/full runs/linear"]
        assert "paired bootstrap" in text and "Δ 95 % CI" in text
        table = pd.read_csv(cwd / "runs/full/evaluation/val/comparison.csv")
        full = json.loads((cwd / "runs/full/evaluation/val/metrics.json").read_text())
        linear = json.loads((cwd / "runs/linear/evaluation/val/metrics.json").read_text())
        row = table[(table["subset"] == "overall") & (table["metric"] == "mAP")].iloc[0]
        assert row["reference value"] == pytest.approx(full["summary"]["overall"]["mAP"])
        assert row["value"] == pytest.approx(linear["summary"]["overall"]["mAP"])
        assert 0 < row["p"] <= 1
    if "trcgl evaluate --run-dir runs/full" in commands:
        assert "95 % intervals" in outputs["trcgl evaluate --run-dir runs/full"]
    if "trcgl demo" in commands:
        summary = json.loads((cwd / "runs/demo/synthetic/summary.json").read_text())
        trained = json.loads((cwd / "runs/demo/train.json").read_text())
        assert trained["synthetic_images"] == summary["kept"] >= 1
        info = json.loads((cwd / "runs/demo/label_stats.json").read_text())
        assert info["images"]["train"] + info["images"]["val"] == 2279  # the whole sample
        for subset in ("overall", "head", "medium", "tail"):  # the one-screen summary
            assert subset in outputs["trcgl demo"]
        assert "report: runs/demo/report.html" in outputs["trcgl demo"]
    if any(c.startswith("trcgl train -c nih-demo -c baselines/resnet50") for c in commands):
        saved = json.loads((cwd / "runs/resnet50/model/config.json").read_text())
        assert "resnet50" in json.dumps(saved)
        resolved = yaml.safe_load((cwd / "runs/resnet50/config.yaml").read_text())
        assert resolved["model"]["backbone"] == "resnet50"
        assert resolved["data"]["format"] == "nih"  # the NIH sample, not the default data
    if any(c.startswith("trcgl predict") for c in commands):
        frame = pd.read_csv(cwd / "submission.csv")
        assert len(frame) == 5 and frame.columns[0] == "ImageID"
        assert np.all((frame.iloc[:, 1:] >= 0) & (frame.iloc[:, 1:] <= 1))


def test_readme_python_snippet_runs_as_documented(standins, tmp_path, monkeypatch):
    """The README's Python lines, run as written in a user's working directory (a trained,
    evaluated run at runs/demo and two images)."""
    blocks = re.findall(
        r"^ *```python\n(.*?)^ *```", README.read_text(encoding="utf-8"), re.M | re.S
    )
    assert blocks, "the README shows the Python API"
    cwd = _session_dir(tmp_path, standins, ["trcgl report --run-dir runs/demo"])
    monkeypatch.chdir(cwd)
    assert invoke("evaluate", "--run-dir", "runs/demo").exit_code == 0
    for block in blocks:
        namespace: dict = {}
        exec(compile(textwrap.dedent(block), "README.md", "exec"), namespace)
        table = namespace["table"]
        assert list(table["image"]) == ["img1.png", "img2.png"]
        assert any(c.startswith("pred:") for c in table.columns)
