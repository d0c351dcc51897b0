"""The diffusion stages of a run directory: train the generator, sample, filter (docs/method.md §1).

``trcgl diffusion train|sample|filter`` (and ``trcgl run``) call :func:`train_stage`,
:func:`sample_stage` and :func:`filter_stage` on a prepared run directory. What they write:

* ``diffusion/``: the generator's training (:func:`~trcgl.diffusion.train.train_generator`):
  ``checkpoints/``, ``loss.jsonl``, ``train.json`` (loss before / after, seconds per step);
  for the tiny generator first ``base/`` (the components with their VAE trained on the real
  images, :mod:`~trcgl.diffusion.vae_train`) and ``vae.json``; then ``generator/``, the trained
  generator (:mod:`~trcgl.diffusion.generator_folder`): for LoRA and frozen runs the context
  vectors C in ``context.safetensors``, the adapter in ``unet_lora/`` and ``generator.json``,
  a reference to the base model with its fingerprint (no copy of it); for full runs the whole
  diffusers layout; ``stage.json`` last.
* ``synthetic/plan.csv``: the tail planner's rows (:func:`~trcgl.diffusion.planner.
  plan_synthesis`), each with its ``image_id``; ``synthetic/images/<image_id>.png``: the images
  (Eq. 4–6) at ``diffusion.image_size``; ``synthetic/sample.json`` last.
* ``filter_classifier/``: the filter's classifier, trained on the real images only (unless
  ``diffusion.filter_model`` names one) and evaluated on the validation split, whose tuned
  thresholds are the default probability thresholds;
  ``synthetic/filter_report.csv`` / ``filter_summary.json`` (:func:`~trcgl.diffusion.filter.
  filter_synthetic`); ``synthetic/cache/<size>/``: the kept images resized to ``images.size``;
  ``synthetic/manifest.parquet``: them as manifest rows (``source=synthetic``, ``weight=w_syn``),
  read by the classifier's trainer; ``synthetic/samples.png``: Fig. 3; ``synthetic/summary.json``
  last (planned, made, kept, rejected and why, per class).

Every stage is skipped when its record exists and its input stage's record is the one it was
made from; a killed stage resumes: generator training from its last checkpoint, sampling from
the first missing image (each chunk of ``diffusion.sample_chunk`` images has its own seed, so a
resumed run writes the same images), the filter classifier from its last epoch.

Decisions: the generator learns from the real training images that carry a tail class
(``diffusion.train_images = "tail"``) or from all of them; the near-copy check compares with
those same images, the only ones the generator could have memorised. A tail class is topped up
to ``diffusion.target`` images (default: the tail threshold), at most ``max_per_class`` new ones.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from trcgl.config import Config, resolve_path
from trcgl.data.cache import build_image_cache, cached_path
from trcgl.data.images import read_image
from trcgl.data.manifest import Manifest
from trcgl.errors import ConfigError, DataError
from trcgl.files import atomic_write_text, slug
from trcgl.progress import runtime_line, say
from trcgl.run_dir import SYNTHETIC_MANIFEST, RunDir
from trcgl.training.data import TrainingData
from trcgl.training.precision import DTYPES, resolve_mixed_precision
from trcgl.training.processes import processes

__all__ = [
    "STAGES",
    "filter_stage",
    "load_generator",
    "plan_for_run",
    "sample_precision",
    "sample_stage",
    "stage_done",
    "train_stage",
]

DIFFUSION_DIR = "diffusion"
SYNTHETIC_DIR = "synthetic"
FILTER_DIR = "filter_classifier"
GENERATOR_DIR = "generator"
CONTEXT_FILE = "context.safetensors"


# -- records (RunDir's stage records "diffusion train|sample|filter") ----------------------------
def _record(run_dir: str | Path, stage: str) -> dict[str, Any] | None:
    return RunDir(run_dir).record(f"diffusion {stage}")


def stage_done(run_dir: str | Path, stage: str) -> bool:
    """True when ``stage`` (``train``, ``sample``, ``filter``) is complete and was made from the
    current record of the stage before it (:meth:`~trcgl.run_dir.RunDir.is_complete`)."""
    return RunDir(run_dir).is_complete(f"diffusion {stage}")


def _write_record(run_dir: Path, stage: str, payload: dict[str, Any], started: float) -> dict:
    return RunDir(run_dir).write_record(f"diffusion {stage}", payload, started)


def _require(run_dir: Path, stage: str, command: str) -> dict[str, Any]:
    if not stage_done(run_dir, stage):
        path = RunDir(run_dir).record_path(f"diffusion {stage}")
        raise DataError(f"run `trcgl diffusion {command}` first", path=path)
    record = _record(run_dir, stage)
    assert record is not None
    return record


# -- what to generate ---------------------------------------------------------------------------
def _info(run_dir: Path) -> dict[str, Any]:
    return RunDir(run_dir).label_stats()


def _target(cfg: Config, info: dict[str, Any]) -> int:
    if cfg.diffusion.target is not None:
        return int(cfg.diffusion.target)
    return math.ceil(float(info["groups"]["tail_below"]))


def plan_for_run(
    cfg: Config, run_dir: str | Path, tokenizer: Any = None, data: TrainingData | None = None
) -> pd.DataFrame:
    """The tail planner's rows for this run (capped at ``max_per_class``), with image ids
    ``syn_<class>_<k>``; ``data``: the run, if already loaded."""
    from trcgl.diffusion.planner import plan_synthesis

    run_dir = Path(run_dir)
    data = data or RunDir(run_dir).training_data()
    info = _info(run_dir)
    tail = list(info["groups"]["tail"])
    plan = plan_synthesis(
        data.manifest,
        tail,
        _target(cfg, info),
        seed=cfg.diffusion.seed,
        dataset=cfg.data.prompt_style(),
        source=cfg.diffusion.prompt_source,
        tokenizer=tokenizer,
    )
    cap = cfg.diffusion.max_per_class
    if cap is not None and len(plan):
        plan = plan.groupby("target_class", sort=False).head(cap).reset_index(drop=True)
    counter = plan.groupby("target_class", sort=False).cumcount()
    names = plan["target_class"]
    ids = [f"syn_{slug(c) or 'class'}_{k:05d}" for c, k in zip(names, counter, strict=True)]
    plan.insert(0, "image_id", ids)
    return plan


def _training_rows(cfg: Config, data: TrainingData, tail: list[str]) -> Manifest:
    pool = data.manifest.subset(split="train", source="real")
    if cfg.diffusion.train_images == "all":
        return pool
    columns = [pool.classes.index(c) for c in tail]
    mask = pool.labels()[:, columns].any(axis=1) if columns else np.zeros(len(pool), bool)
    return Manifest(pool.frame[mask], pool.classes)


def _generator_cache(
    cfg: Config, data: TrainingData, rows: Manifest, info: dict, progress: bool, run_dir: Path
):
    """The generator's training images at ``diffusion.image_size`` (cached next to the
    classifier's cache, from the original images)."""
    size = cfg.diffusion.image_size
    root = data.cache_root.parent / str(size)
    # One data set: its image root; several (data.sources): each one's, under <name>/.
    roots = info.get("image_roots") or {"": info.get("image_root")}
    if None in roots.values():
        raise DataError("the run was prepared without images", path=run_dir)
    images = rows.frame["image"].astype(str)
    for name, image_root in roots.items():
        prefix = f"{name}/" if name else ""
        mine = images[images.str.startswith(prefix)].str.slice(len(prefix))
        build_image_cache(
            list(mine),
            image_root,
            root / name,
            size=size,
            workers=cfg.images.workers,
            progress=progress,
        )
    return root


# -- train ----------------------------------------------------------------------------------------
def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _dataset(cfg: Config, run_dir: Path, data: TrainingData, progress: bool, tokenizer: Any):
    from trcgl.diffusion.prompts import prompts_for_manifest
    from trcgl.diffusion.train import PromptImageDataset

    info = _info(run_dir)
    rows = _training_rows(cfg, data, list(info["groups"]["tail"]))
    if len(rows) == 0:
        raise DataError("no real training images carry a tail class", path=run_dir)
    root = _generator_cache(cfg, data, rows, info, progress, run_dir)
    prompts = prompts_for_manifest(
        rows, cfg.data.prompt_style(), source=cfg.diffusion.prompt_source, tokenizer=tokenizer
    )
    dataset = PromptImageDataset(
        rows,
        root,
        cfg.diffusion.image_size,
        prompts,
        cached=True,
        in_memory=len(rows) <= 20_000,
    )
    return dataset, rows


def _tiny_base(
    cfg: Config, out: Path, dataset: Any, progress: bool = False, dtype: torch.dtype | None = None
) -> Any:
    """The tiny generator with its VAE trained on the real images (once; saved to ``base/``),
    loaded in ``dtype`` (default: fp32)."""
    from torch.utils.data import DataLoader

    from trcgl.diffusion.families import generator_family
    from trcgl.diffusion.vae_train import fit_scaling_factor, train_vae

    d = cfg.diffusion
    family = generator_family(d.generator)
    base = out / "base"
    if (out / "vae.json").is_file() and (base / "model_index.json").is_file():
        return family.from_pretrained(str(base), torch_dtype=dtype)
    components = family.from_pretrained(None, {"image_size": d.image_size, "seed": d.seed})
    components.vae.to(_device())
    loader = DataLoader(
        dataset,
        batch_size=d.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(d.seed),
    )
    started = time.time()
    losses = train_vae(
        components.vae, loader, d.vae_steps, lr=d.vae_lr, seed=d.seed, progress=progress
    )
    factor = fit_scaling_factor(components.vae, loader, seed=d.seed)
    components.vae.to("cpu")
    components.save_pretrained(base)
    summary = {
        "steps": d.vae_steps,
        "loss_first": float(np.mean(losses[:20])) if losses else None,
        "loss_last": float(np.mean(losses[-20:])) if losses else None,
        "scaling_factor": factor,
        "seconds": round(time.time() - started, 2),
    }
    atomic_write_text(out / "vae.json", json.dumps(summary, indent=2) + "\n")
    return family.from_pretrained(str(base), torch_dtype=dtype)


def _source(cfg: Config) -> str | None:
    source = cfg.diffusion.source
    if source is None:
        return None
    local = resolve_path(source)
    return str(local) if local is not None and local.exists() else source


def check_settings(cfg: Config) -> None:
    """What the diffusion stages need that loading the configuration does not check (it
    imports diffusers): the generator family and the sampler (``diffusion.scheduler``) exist.
    Called before the generator trains, so that a typo does not surface only at sampling."""
    from trcgl.diffusion.families import generator_family
    from trcgl.diffusion.sample import scheduler_class

    generator_family(cfg.diffusion.generator)
    scheduler_class(cfg.diffusion.scheduler)


def train_stage(
    cfg: Config, run_dir: str | Path, *, force: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train the generator (Eq. 3) on the run's real tail images; returns the stage record.

    Under ``accelerate launch`` / ``torchrun`` every process trains its shard of each batch
    (:func:`~trcgl.diffusion.train.train_generator`); the main process builds the image cache
    and the tiny generator's VAE first, then saves the generator and writes the record."""
    check_settings(cfg)
    from trcgl.diffusion.conditioning import PromptConditioner
    from trcgl.diffusion.families import generator_family
    from trcgl.diffusion.generator_folder import save_generator_folder
    from trcgl.diffusion.text import load_tokenizer
    from trcgl.diffusion.train import frozen_dtype, train_generator

    run_dir = Path(run_dir)
    out = run_dir / DIFFUSION_DIR
    state = processes()
    main = state.is_main_process
    if force:
        if main:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(run_dir / SYNTHETIC_DIR, ignore_errors=True)
        state.wait_for_everyone()
    elif stage_done(run_dir, "train"):
        return _record(run_dir, "train") or {}
    started = time.time()
    d = cfg.diffusion
    data = RunDir(run_dir).training_data()
    plan = plan_for_run(cfg, run_dir, data=data)
    if plan.empty:
        if main:
            _write_record(
                run_dir, "train", {"skipped": "no tail class needs synthetic images"}, started
            )
        state.wait_for_everyone()
        return _record(run_dir, "train") or {}
    source = _source(cfg)
    tokenizer = load_tokenizer(source) if source is not None else load_tokenizer(None)
    # Under mixed precision LoRA and frozen runs hold the frozen weights in its dtype
    # (:func:`~trcgl.diffusion.train.hold_frozen`): loaded in it.
    held = frozen_dtype(resolve_mixed_precision(d.mixed_precision), d.unet_mode)
    with state.main_process_first():  # the cache and the tiny VAE: built once, then read
        dataset, rows = _dataset(cfg, run_dir, data, progress and main, tokenizer)
        out.mkdir(parents=True, exist_ok=True)
        if source:
            components = generator_family(d.generator).from_pretrained(source, torch_dtype=held)
        else:
            components = _tiny_base(cfg, out, dataset, progress and main, held)
    conditioner = PromptConditioner(
        components.text_encoder, components.tokenizer, num_context=d.num_context
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(d.seed)
        torch.nn.init.normal_(conditioner.context, std=0.02)
    summary = train_generator(components, conditioner, dataset, d, out, progress=progress)
    if not main:
        state.wait_for_everyone()
        return _record(run_dir, "train") or {}
    components.to("cpu")
    conditioner.to("cpu")
    generator = save_generator_folder(
        components,
        conditioner,
        out / GENERATOR_DIR,
        base=source or out / "base",
        unet_mode=d.unet_mode,
    )
    vae = json.loads((out / "vae.json").read_text()) if (out / "vae.json").is_file() else None
    record = _write_record(
        run_dir,
        "train",
        {
            "generator": RunDir(run_dir).store(generator),
            "family": d.generator,
            "source": source or "tiny",
            "images": len(rows),
            "loss_before": summary["loss_before"],
            "loss_after": summary["loss_after"],
            "steps": summary["steps"],
            "processes": summary["processes"],
            "vae": vae,
        },
        started,
    )
    state.wait_for_everyone()
    return record


def load_generator(run_dir: str | Path, num_context: int | None = None, base: str | None = None):
    """The trained generator of a run: ``(components, conditioner)``; ``base``: where its base
    model is now, if not where it was (:func:`~trcgl.diffusion.generator_folder.
    load_generator_folder` checks that it is the same)."""
    from trcgl.diffusion.conditioning import PromptConditioner, read_context
    from trcgl.diffusion.families import generator_family
    from trcgl.diffusion.generator_folder import load_generator_folder

    folder = Path(run_dir) / DIFFUSION_DIR / GENERATOR_DIR
    if not (folder / CONTEXT_FILE).is_file():
        raise DataError("no trained generator here (run `trcgl diffusion train`)", path=folder)
    tensor, _ = read_context(folder / CONTEXT_FILE)
    m = int(tensor.shape[0]) if num_context is None else num_context
    family = (_record(run_dir, "train") or {}).get("family", "stable_diffusion")
    components = load_generator_folder(folder, generator_family(family), base=base)
    conditioner = PromptConditioner(components.text_encoder, components.tokenizer, num_context=m)
    conditioner.load_context(folder / CONTEXT_FILE)
    return components, conditioner


# -- sample ---------------------------------------------------------------------------------------
def sample_precision(setting: str, device: torch.device) -> torch.dtype:
    """``diffusion.sample_precision`` as a dtype: ``auto`` = bf16 on a GPU that has it, fp16 on
    another GPU, fp32 on the CPU (:func:`~trcgl.training.precision.resolve_mixed_precision`)."""
    if setting == "auto":
        setting = resolve_mixed_precision("auto") if device.type == "cuda" else "no"
    return DTYPES[setting]


def sample_stage(
    cfg: Config, run_dir: str | Path, *, force: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Sample the planned images (Eq. 4–6) into ``synthetic/images/``; returns the record.

    Under ``accelerate launch`` / ``torchrun`` the seeded chunks of ``diffusion.sample_chunk``
    images are shared out across the processes (chunk k on process k mod N), each on its own
    device: every chunk's images depend only on its seed, so 1 or N processes write the same
    files. The main process writes the plan first and the record last."""
    from trcgl.diffusion.components import cast_components
    from trcgl.diffusion.sample import sample_images, save_pngs

    run_dir = Path(run_dir)
    trained = _require(run_dir, "train", "train")
    out = run_dir / SYNTHETIC_DIR
    if not force and stage_done(run_dir, "sample"):
        return _record(run_dir, "sample") or {}
    state = processes()
    main = state.is_main_process
    started = time.time()
    d = cfg.diffusion
    if trained.get("skipped"):
        if main:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "plan.csv", plan_for_run(cfg, run_dir).to_csv(index=False))
            _write_record(run_dir, "sample", {"made": 0, "skipped": trained["skipped"]}, started)
        state.wait_for_everyone()
        return _record(run_dir, "sample") or {}
    components, conditioner = load_generator(run_dir, d.num_context, _source(cfg))
    plan = plan_for_run(cfg, run_dir, components.tokenizer)
    if main:
        if force or _record(run_dir, "sample") is not None:  # redo, or an older generator's
            shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "plan.csv", plan.to_csv(index=False))
    state.wait_for_everyone()
    device = state.device
    dtype = sample_precision(d.sample_precision, device)
    cast_components(components, dtype)
    components.to(device)
    conditioner.to(device)
    images_dir = out / "images"
    made = 0
    size = d.sample_chunk
    chunks = -(-len(plan) // size)
    mine = range(state.process_index, chunks, state.num_processes)
    shown = progress and main
    if shown:
        precision = str(dtype).removeprefix("torch.").replace("float", "fp")
        say(runtime_line("sampling", device, precision, state.num_processes))
    for done, chunk in enumerate(mine, 1):
        part = plan.iloc[chunk * size : (chunk + 1) * size]
        if all((images_dir / f"{i}.png").is_file() for i in part["image_id"]):
            continue
        images = sample_images(
            components,
            conditioner,
            part["prompt"].tolist(),
            guidance_scale=d.guidance_scale,
            steps=d.sample_steps,
            scheduler=d.scheduler,
            seed=d.seed * 1_000_003 + chunk,
            batch_size=d.sample_batch_size,
            image_size=d.image_size,
            progress=shown,
        )
        save_pngs(images, images_dir, part["image_id"].tolist())
        made += len(images)
        if shown:
            where = f" on process 1 of {state.num_processes}" if state.num_processes > 1 else ""
            say(
                f"sampling (Eq. 4–6): chunk {done}/{len(mine)}{where}, "
                f"{min((chunk + 1) * size, len(plan)):,}/{len(plan):,} images, "
                f"{time.time() - started:.0f} s"
            )
    state.wait_for_everyone()
    if main:
        missing = [i for i in plan["image_id"] if not (images_dir / f"{i}.png").is_file()]
        if missing:
            raise DataError(f"{len(missing)} planned images were not written", path=images_dir)
        _write_record(
            run_dir,
            "sample",
            {
                "made": len(plan),
                "made_now": made,
                "processes": state.num_processes,
                "per_class": {
                    str(k): int(v) for k, v in plan["target_class"].value_counts().items()
                },
                "guidance_scale": d.guidance_scale,
                "sample_steps": d.sample_steps,
                "scheduler": d.scheduler,
                "image_size": d.image_size,
                "sample_precision": str(dtype).removeprefix("torch."),
            },
            started,
        )
    state.wait_for_everyone()
    return _record(run_dir, "sample") or {}


# -- filter ---------------------------------------------------------------------------------------
def _filter_classifier(cfg: Config, run_dir: Path, progress: bool) -> Path:
    """The filter's model folder: ``diffusion.filter_model``, or one trained here on the real
    images (``filter_classifier/model``).

    It is trained as ``trcgl train`` trains (:class:`~trcgl.training.trainer.Trainer`): under
    ``accelerate launch`` / ``torchrun`` on every process, data-parallel, each process its
    shard of every epoch (``train.batch_size`` per process), the main process writing the
    folder. That is the natural shape: it is the classifier's own trainer, at the classifier's
    size and cost, so it scales as the classifier does; N processes train with N times the
    batch of one (as ``trcgl train`` does), so the folder is not that of one process."""
    from trcgl.stages.train import train

    given = cfg.diffusion.filter_model
    if given is not None:
        model_dir = resolve_path(given)
        assert model_dir is not None
        if not (model_dir / "config.json").is_file():
            raise ConfigError(f"diffusion.filter_model {given!r} is not a model folder")
        return model_dir
    filter_cfg = copy.deepcopy(cfg)
    if cfg.diffusion.filter_epochs is not None:
        filter_cfg.train.epochs = cfg.diffusion.filter_epochs
    out = run_dir / FILTER_DIR
    train(filter_cfg, run_dir, progress=progress, out_dir=out, synthetic=False)
    return out / "model"


def _evaluated_filter(cfg: Config, run_dir: Path, model_dir: Path) -> RunDir:
    """The folder where the filter's classifier was evaluated on the validation split (its
    tuned thresholds), evaluating it there first if needed; one process."""
    from trcgl.stages.evaluate import evaluate_run

    out = run_dir / FILTER_DIR
    filter_run = RunDir(out)
    if filter_run.tuned_thresholds("val") is None:
        evaluate_run(
            run_dir, model_dir, "val", cfg.train.batch_size, cfg.train.num_workers, out_dir=out
        )
    return filter_run


def _thresholds(cfg: Config, filter_run: RunDir, classes: list[str]) -> float | dict[str, float]:
    """``diffusion.prob_threshold``, else the filter classifier's tuned threshold per class
    (0.5 where it has none)."""
    if cfg.diffusion.prob_threshold is not None:
        return cfg.diffusion.prob_threshold
    tuned = filter_run.tuned_thresholds("val") or {}
    out = {}
    for c in classes:
        value = tuned.get(c, np.nan)
        out[c] = float(value) if np.isfinite(value) else 0.5
    return out


def filter_stage(
    cfg: Config, run_dir: str | Path, *, force: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Keep the good synthetic images and make them manifest rows; returns the summary.

    Under ``accelerate launch`` / ``torchrun`` the filter's classifier trains on every
    process (:func:`_filter_classifier`); its evaluation, the decisions (probability and
    near-copy checks), the kept images' cache, the manifest rows and Fig. 3 are the main
    process's: they read each image once and take minutes where the sampling took hours.
    The others wait for the record."""
    from trcgl.diffusion.filter import (
        ReferenceFeatures,
        features,
        filter_synthetic,
        similarity_bound,
    )
    from trcgl.diffusion.synthetic import append_synthetic
    from trcgl.evaluation.figures import plot_class_grid
    from trcgl.models.base import load_model

    run_dir = Path(run_dir)
    sampled = _require(run_dir, "sample", "sample")
    out = run_dir / SYNTHETIC_DIR
    if not force and stage_done(run_dir, "filter"):
        return _record(run_dir, "filter") or {}
    state = processes()
    main = state.is_main_process
    started = time.time()
    d = cfg.diffusion
    data = RunDir(run_dir).training_data()
    text = {c: str for c in ("image_id", "source_image_id", "view", "prompt")}
    plan = pd.read_csv(out / "plan.csv", dtype=text, keep_default_na=False)
    if sampled.get("skipped") or plan.empty:
        if main:
            (out / "manifest.parquet").unlink(missing_ok=True)
            Manifest(data.manifest.frame.iloc[:0], data.manifest.classes).save(
                run_dir / SYNTHETIC_MANIFEST
            )
            payload = {"planned": 0, "made": 0, "kept": 0, "rejected": {}, "per_class": {}}
            _write_record(run_dir, "filter", payload, started)
        state.wait_for_everyone()
        return _record(run_dir, "filter") or {}
    if main:
        (out / "manifest.parquet").unlink(missing_ok=True)
    model_dir = _filter_classifier(cfg, run_dir, progress)
    if not main:
        state.wait_for_everyone()
        return _record(run_dir, "filter") or {}
    filter_run = _evaluated_filter(cfg, run_dir, model_dir)
    model = load_model(model_dir).to(_device()).eval()
    targets = plan["target_class"].astype(str).tolist()
    thresholds = _thresholds(cfg, filter_run, sorted(set(targets)))
    info = _info(run_dir)
    rows = _training_rows(cfg, data, list(info["groups"]["tail"]))
    vectors = []
    batch = cfg.train.batch_size
    for start in range(0, len(rows), 512):
        part = rows.frame.iloc[start : start + 512]
        images = [read_image(cached_path(data.cache_root, p)) for p in part["image"]]
        vectors.append(features(model, images, batch))
    reference = ReferenceFeatures(np.concatenate(vectors), tuple(rows.frame["image_id"]))
    synthetic = [read_image(out / "images" / f"{i}.png") for i in plan["image_id"]]
    bound = d.max_similarity
    if bound is None:
        bound = similarity_bound(reference, rows.frame["patient_id"].tolist(), seed=d.seed)
    report = filter_synthetic(model, synthetic, targets, reference, thresholds, bound, batch)
    report.save(out)

    kept = report.rows["kept"].to_numpy()
    kept_plan = plan[kept].reset_index(drop=True)
    size = cfg.images.size
    relative = [f"images/{i}.png" for i in kept_plan["image_id"]]
    cache = out / "cache" / str(size)
    build_image_cache(relative, out, cache, size=size, workers=1, progress=False)
    paths = [f"{SYNTHETIC_DIR}/cache/{size}/{p}" for p in relative]
    merged = append_synthetic(
        data.manifest, kept_plan, paths, cfg.train.w_syn, image_ids=kept_plan["image_id"].tolist()
    )
    frame = merged.frame[merged.frame["source"] == "synthetic"]
    Manifest(frame.reset_index(drop=True), merged.classes).save(run_dir / SYNTHETIC_MANIFEST)

    shown = [im for im, k in zip(synthetic, kept, strict=True) if k]
    shown_targets = [t for t, k in zip(targets, kept, strict=True) if k]
    title = "Synthetic samples per tail class (kept by the filter)"
    if not shown:
        shown, shown_targets = synthetic, targets
        title = "Synthetic samples per tail class (none kept by the filter)"
    plot_class_grid(shown, shown_targets, out / "samples.png", per_class=4, title=title)

    summary = report.summary()
    planned = plan["target_class"].value_counts()
    for name, counts in summary["per_class"].items():
        counts["planned"] = int(planned.get(name, 0))
    evaluated = json.loads((filter_run.evaluation("val") / "metrics.json").read_text())
    made = features(model, synthetic, batch)
    payload = {
        "planned": len(plan),
        **summary,
        "quality": synthetic_quality(reference.vectors, rows, made, targets, kept, d.seed),
        "w_syn": cfg.train.w_syn,
        "similarity_calibrated": d.max_similarity is None,
        "filter_model": RunDir(run_dir).store(model_dir),
        "filter_model_val": evaluated.get("summary", {}).get("overall"),
    }
    record = _write_record(run_dir, "filter", payload, started)
    state.wait_for_everyone()
    return record


def synthetic_quality(
    real: np.ndarray,
    rows: Manifest,
    made: np.ndarray,
    targets: list[str],
    kept: np.ndarray,
    seed: int,
) -> dict[str, Any]:
    """Per target class: KID, FID and precision / recall (:mod:`trcgl.evaluation.generative`)
    of the synthetic images made for it, before and after the filter, against the real
    training images with that label (``real``: their features, rows of ``rows``), in the
    filter classifier's feature space."""
    from trcgl.evaluation.generative import quality

    labels = rows.labels()
    targets_arr = np.asarray(targets)
    per_class = {}
    for name in dict.fromkeys(targets):
        positives = real[labels[:, rows.classes.index(name)] == 1]
        mine = targets_arr == name
        per_class[name] = {
            "before": quality(positives, made[mine], seed=seed),
            "after": quality(positives, made[mine & kept], seed=seed),
        }
    return {
        "feature_space": "the filter classifier's pooled features (L2-normalised)",
        "k": 3,
        "per_class": per_class,
    }


#: The stages in order, by their record name: what ``trcgl run`` and the experiments run.
STAGES = (("train", train_stage), ("sample", sample_stage), ("filter", filter_stage))
