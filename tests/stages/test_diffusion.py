"""`trcgl diffusion train|sample|filter` on a prepared run of real NIH images, tiny models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.conftest import TINY_DIFFUSION, invoke, two_processes
from trcgl.config import load_config
from trcgl.data.cache import cached_path
from trcgl.data.images import read_image
from trcgl.data.manifest import Manifest
from trcgl.diffusion.filter import features
from trcgl.evaluation.generative import quality
from trcgl.models.base import load_model
from trcgl.run_dir import RunDir
from trcgl.stages import diffusion as stage

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # as in tests/diffusion


@pytest.fixture(scope="module")
def synthesized(prepared, tmp_path_factory):
    """The prepared run, through train → sample → filter by the three commands."""
    run, overrides = prepared
    copy = tmp_path_factory.mktemp("diffusion") / "run"
    shutil.copytree(run, copy)
    args = [*overrides, *TINY_DIFFUSION]
    outputs = []
    for command in ("train", "sample", "filter"):
        result = invoke("diffusion", command, "-c", "nih-demo", "--run-dir", str(copy), *args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    return copy, args, outputs


def test_plan_tops_up_each_tail_class(synthesized):
    run, args, _ = synthesized
    cfg = load_config("nih-demo", args)
    info = json.loads((run / "label_stats.json").read_text())
    tail = info["groups"]["tail"]
    assert tail, "the fixture has tail classes"
    plan = pd.read_csv(run / "synthetic" / "plan.csv")
    counts = (
        RunDir(run).training_data().manifest.subset(split="train", source="real").labels().sum(0)
    )
    classes = RunDir(run).training_data().manifest.classes
    target = int(np.ceil(info["groups"]["tail_below"]))
    for name in tail:
        need = max(0, target - int(counts[classes.index(name)]))
        rows = plan[plan["target_class"] == name]
        assert len(rows) == min(need, cfg.diffusion.max_per_class)
        assert (rows[name] == 1).all()  # each image is labelled with its target class
    assert plan["image_id"].is_unique
    assert stage.stage_done(run, "train") and stage.stage_done(run, "sample")


def test_generator_is_saved_and_reloads(synthesized):
    run, _, outputs = synthesized
    record = json.loads((run / "diffusion" / "stage.json").read_text())
    assert np.isfinite(record["loss_before"]) and np.isfinite(record["loss_after"])
    assert record["steps"] == 4 and record["vae"]["steps"] == 3
    assert "→" in outputs[0]
    components, conditioner = stage.load_generator(run)
    assert conditioner.num_context == 8
    assert components.image_size == 32


def test_sampled_images_and_filter_accounting(synthesized):
    run, args, outputs = synthesized
    plan = pd.read_csv(run / "synthetic" / "plan.csv")
    images = sorted((run / "synthetic" / "images").glob("*.png"))
    assert len(images) == len(plan) > 0
    with Image.open(images[0]) as im:
        assert im.mode == "L" and im.size == (32, 32)
    summary = json.loads((run / "synthetic" / "summary.json").read_text())
    assert summary["planned"] == summary["made"] == len(plan)
    assert summary["kept"] + sum(summary["rejected"].values()) == summary["made"]
    assert summary["kept"] >= 1
    for c in summary["per_class"].values():
        assert c["kept"] + c["near_copy"] + c["low_probability"] == c["made"] == c["planned"]
    report = pd.read_csv(run / "synthetic" / "filter_report.csv")
    assert len(report) == len(plan)
    assert (report["threshold"] == 0.0).all()  # diffusion.prob_threshold=0.0
    assert (run / "synthetic" / "samples.png").is_file()
    assert (run / "filter_classifier" / "model" / "config.json").is_file()
    assert "kept of" in outputs[2]
    # quality of each tail class's images, before and after the filter, recomputed here
    q = summary["quality"]["per_class"]
    assert set(q) == set(summary["per_class"])
    model = load_model(run / "filter_classifier" / "model")
    data = RunDir(run).training_data()
    real = data.manifest.subset(split="train", source="real")
    name = max(q, key=lambda c: q[c]["before"]["synthetic"])
    positives = real.frame[real.frame[name] == 1]
    real_features = features(
        model, [read_image(cached_path(data.cache_root, p)) for p in positives["image"]]
    )
    made = report[report["target_class"] == name]
    fake = features(
        model,
        [
            read_image(run / "synthetic" / "images" / f"{i}.png")
            for i in plan.loc[made.index, "image_id"]
        ],
    )
    expected = quality(real_features, fake, seed=load_config("nih-demo", args).diffusion.seed)
    for key in ("real", "synthetic", "kid", "fid", "precision", "recall"):
        want = expected[key]
        got = q[name]["before"][key]
        assert got is None if want is None else got == pytest.approx(want, rel=1e-4, abs=1e-6)
    assert q[name]["after"]["synthetic"] == int(made["kept"].sum())


def test_kept_images_become_weighted_training_rows(synthesized):
    run, args, _ = synthesized
    cfg = load_config("nih-demo", args)
    plan = pd.read_csv(run / "synthetic" / "plan.csv", dtype={"image_id": str})
    report = pd.read_csv(run / "synthetic" / "filter_report.csv")
    kept = plan[report["kept"].to_numpy()]
    rows = Manifest.load(run / "synthetic" / "manifest.parquet")
    assert len(rows.frame) == len(kept) >= 1
    frame = rows.frame
    assert (frame["source"] == "synthetic").all() and (frame["split"] == "train").all()
    assert np.allclose(frame["weight"], cfg.train.w_syn)
    assert list(frame["image_id"]) == list(kept["image_id"])
    assert np.array_equal(rows.labels(), kept[list(rows.classes)].to_numpy())
    data = RunDir(run).training_data(synthetic=True)
    real = RunDir(run).training_data()
    assert len(data.manifest.frame) == len(real.manifest.frame) + len(frame)
    if len(frame):
        ds = data.dataset("train", train=False, mean=(0.5,), std=(0.5,), size=32)
        item = ds[len(ds) - 1]  # a synthetic row, read from synthetic/cache/<size>/
        assert tuple(item["image"].shape[-2:]) == (32, 32)


def test_complete_stages_are_skipped_and_resampling_is_identical(synthesized, tmp_path):
    run, args, _ = synthesized
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = load_config("nih-demo", args)
    before = stage._record(copy, "sample")
    assert stage.sample_stage(cfg, copy, progress=False) == before  # complete: skipped
    images = sorted((copy / "synthetic" / "images").glob("*.png"))
    original = {p.name: np.asarray(Image.open(p)) for p in images}
    # A sampling run killed after its first images: the record is missing, one image too.
    (copy / "synthetic" / "sample.json").unlink()
    images[-1].unlink()
    stage.sample_stage(cfg, copy, progress=False)
    for name, array in original.items():
        assert np.array_equal(np.asarray(Image.open(copy / "synthetic" / "images" / name)), array)
    # The filter was made from the earlier sampling record: stale now, so not done.
    assert not stage.stage_done(copy, "filter")


def test_retraining_the_generator_invalidates_samples(synthesized, tmp_path):
    run, args, _ = synthesized
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = load_config("nih-demo", args)
    stage.train_stage(cfg, copy, force=True, progress=False)
    assert stage.stage_done(copy, "train")
    assert not (copy / "synthetic").exists()
    assert not stage.stage_done(copy, "sample")


def test_sample_before_train_is_a_clear_error(prepared, tmp_path):
    run, overrides = prepared
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = invoke("diffusion", "sample", "-c", "nih-demo", "--run-dir", str(copy), *overrides)
    assert result.exit_code == 2
    assert "trcgl diffusion train" in result.output


def test_bad_diffusion_config_names_the_key(prepared):
    _, overrides = prepared
    result = invoke("diffusion", "train", "-c", "nih-demo", *overrides, "diffusion.image_size=30")
    assert result.exit_code == 2 and "diffusion.image_size" in result.output
    result = invoke("diffusion", "train", "-c", "nih-demo", *overrides, "diffusion.stepz=3")
    assert result.exit_code == 2 and "diffusion.stepz" in result.output


def _lora_on_a_diffusers_folder(prepared, tmp_path: Path) -> tuple[Path, list[str]]:
    """A tiny generator saved as a diffusers folder (the stand-in for RoentGen) and the
    overrides that train a LoRA generator on it without VAE training."""
    from trcgl.diffusion.components import load_components, save_components

    _, overrides = prepared
    base = save_components(load_components(None, {"image_size": 32}), tmp_path / "base-model")
    return base, [
        *overrides,
        *TINY_DIFFUSION,
        f"diffusion.source={base}",
        "diffusion.unet_mode=lora",
        "diffusion.lora_rank=2",
        "diffusion.vae_steps=0",
    ]


def test_a_diffusers_folder_as_source_with_lora(prepared, tmp_path):
    """The GPU path (diffusion.source = a Stable-Diffusion-style folder, LoRA), on tiny parts."""
    from trcgl.diffusion.components import LORA_FOLDER

    run, _ = prepared
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    base, args = _lora_on_a_diffusers_folder(prepared, tmp_path)
    cfg = load_config("nih-demo", args)
    record = stage.train_stage(cfg, copy, progress=False)
    assert record["source"] == str(base) and record["vae"] is None
    assert not (copy / "diffusion" / "base").exists()  # no VAE training for a real model
    generator = copy / "diffusion" / "generator"
    assert (generator / LORA_FOLDER).is_dir()
    # No copy of the base model: C, the adapter and a reference to the base with its hash.
    assert not (generator / "unet").exists() and not (generator / "vae").exists()
    reference = json.loads((generator / "generator.json").read_text())
    assert reference["base"] == str(base) and len(reference["base_fingerprint"]) == 64
    sampled = stage.sample_stage(cfg, copy, progress=False)
    assert sampled["made"] == len(list((copy / "synthetic" / "images").glob("*.png"))) > 0


def _pngs(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "synthetic" / "images").glob("*.png"))}


def _two_processes(command: str, run: Path, args: list[str]):
    """`torchrun --nproc_per_node 2 -m trcgl.cli diffusion <command>` (CPU, gloo); its result."""
    return two_processes("diffusion", command, "-c", "nih-demo", "--run-dir", str(run), *args)


def test_two_processes_write_the_same_images_as_one(synthesized, tmp_path):
    """`torchrun --nproc_per_node 2 -m trcgl.cli diffusion sample` (CPU, gloo): the seeded
    chunks are shared out, and the files are byte for byte those of one process."""

    run, args, _ = synthesized
    args = [*args, "diffusion.sample_chunk=2"]
    one = tmp_path / "one"
    shutil.copytree(run, one)
    record = stage.sample_stage(load_config("nih-demo", args), one, force=True, progress=False)
    assert record["processes"] == 1 and record["made"] >= 4  # at least 2 chunks
    two = tmp_path / "two"
    shutil.copytree(run, two)
    shutil.rmtree(two / "synthetic")
    (two / "synthetic").mkdir()
    result = _two_processes("sample", two, args)
    assert stage._record(two, "sample")["processes"] == 2
    assert _pngs(two) == _pngs(one) and len(_pngs(one)) == record["made"]
    assert result.stdout.count("2 processes") == 1  # one runtime line, from the main process


def test_bf16_sampling_stays_close_to_fp32(synthesized, tmp_path):
    run, args, _ = synthesized
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = load_config("nih-demo", [*args, "diffusion.sample_precision=bf16"])
    record = stage.sample_stage(cfg, copy, force=True, progress=False)
    assert record["sample_precision"] == "bfloat16"
    assert stage.sample_precision("auto", torch.device("cpu")) == torch.float32
    fp32 = {k: np.asarray(Image.open(run / "synthetic" / "images" / k)) for k in _pngs(run)}
    bf16 = {k: np.asarray(Image.open(copy / "synthetic" / "images" / k)) for k in _pngs(copy)}
    assert fp32.keys() == bf16.keys()
    diff = np.mean([np.abs(fp32[k].astype(int) - bf16[k].astype(int)).mean() for k in fp32])
    assert diff < 8  # mean absolute difference in grey levels (of 255)


def test_two_process_generator_training_equals_one_process_with_the_whole_batch(prepared, tmp_path):
    """`torchrun --nproc_per_node 2 -m trcgl.cli diffusion train` with batch 2 per process
    (DDP over C and the LoRA weights, CPU / gloo) trains the same generator as one process
    with batch 4: the same logged losses and dropped conditions, the same C and adapter."""
    from safetensors.torch import load_file

    from trcgl.diffusion.components import LORA_FOLDER

    run, _ = prepared
    _, args = _lora_on_a_diffusers_folder(prepared, tmp_path)
    args.append("diffusion.cond_dropout=0.5")
    one = tmp_path / "one"
    shutil.copytree(run, one)
    stage.train_stage(
        load_config("nih-demo", [*args, "diffusion.batch_size=4"]), one, progress=False
    )
    two = tmp_path / "two"
    shutil.copytree(run, two)
    result = _two_processes("train", two, [*args, "diffusion.batch_size=2"])
    assert stage._record(two, "train")["processes"] == 2
    assert result.stdout.count("generator training: device cpu") == 1

    def log(r: Path) -> list[tuple[float, int]]:
        rows = (r / "diffusion" / "loss.jsonl").read_text().splitlines()
        return [(json.loads(x)["loss"], json.loads(x)["dropped"]) for x in rows]

    assert [d for _, d in log(one)] == [d for _, d in log(two)]
    assert [v for v, _ in log(one)] == pytest.approx([v for v, _ in log(two)], abs=1e-5)
    for name in ("context.safetensors", f"{LORA_FOLDER}/adapter_model.safetensors"):
        a = load_file(str(one / "diffusion" / "generator" / name))
        b = load_file(str(two / "diffusion" / "generator" / name))
        assert a.keys() == b.keys()
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4, name
