"""Typed, validated configuration. Defaults are the paper's (docs/method.md); presets are YAML.

A configuration is a tree of dataclasses. :func:`load_config` reads a YAML file (or a preset
shipped with trcgl, by name), applies ``key.sub=value`` overrides, and checks every key and type
before any work starts: an unknown key, a wrong type or an impossible value raises
:class:`~trcgl.errors.ConfigError` naming the key.

Paths in a configuration are taken relative to the current directory; a value starting with
``trcgl://`` names a file shipped inside the trcgl package (e.g. the NIH demo sample).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib.util
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from trcgl.errors import ConfigError
from trcgl.registry import ARCHITECTURES, DATA_FORMATS, GENERATORS, LOSSES

PRESET_DIR = "configs"
PACKAGE_SCHEME = "trcgl://"


#: Tracker name → the package it needs and the extra that installs it.
TRACKERS: dict[str, tuple[str, str | None]] = {
    "tensorboard": ("tensorboard", None),
    "mlflow": ("mlflow", "mlflow"),
    "wandb": ("wandb", "wandb"),
}


def check_trackers(names: Sequence[str]) -> None:
    """Every name known and its package importable, else a :class:`ConfigError` saying how
    to install it."""
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(
                f"train.log_with: unknown tracker {name!r}; known: {', '.join(TRACKERS)}"
            )
        package, extra = TRACKERS[name]
        if importlib.util.find_spec(package) is None:
            how = f"pip install 'trcgl[{extra}]'" if extra else f"pip install {package}"
            raise ConfigError(
                f"train.log_with names {name!r}, but {package} is not installed: `{how}`, "
                "or leave it out of train.log_with"
            )


@dataclass
class DataConfig:
    """Where the labels and images are, and how to read them."""

    #: A registered format (``trcgl formats`` lists them): ``cxrlt`` (CXR-LT 2026 CSV),
    #: ``padchest`` (raw PadChest CSV), ``nih`` (Data_Entry CSV), ``nih_google`` (Google's
    #: expert labels of NIH images), ``chexpert``, ``mimic`` (MIMIC-CXR-JPG), ``cxrlt_mimic``
    #: (CXR-LT 2023 / 2024 CSVs), ``vindr`` (VinDr-CXR), ``openi`` (OpenI's reports archive),
    #: ``wide`` (a 0/1 column per class), ``plain`` (image, patient_id, labels).
    format: str = "padchest"
    #: The label CSV (for ``openi`` the reports archive, ``NLMCXR_reports.tgz``). ``None``: for
    #: ``padchest``, ``nih``, ``nih_google``, ``chexpert``, ``vindr`` and ``openi``, the copy
    #: shipped inside the installed ``torchxrayvision`` wheel.
    labels_csv: str | None = None
    #: Folder the manifest's image paths are relative to. ``None``: labels only.
    image_root: str | None = None
    #: Class vocabulary: ``cxrlt30`` or ``nih15``; ``None`` picks the format's own. A plain CSV
    #: may instead list its classes in ``classes``.
    vocabulary: str | None = None
    classes: list[str] | None = None
    #: Raw finding → class mapping table (a shipped table's name or a CSV path) of the formats
    #: that relabel raw findings (PadChest's findings → CXR-LT, OpenI's MeSH terms → openi18).
    #: ``None``: the format's own table (``trcgl formats`` names it).
    mapping: str | None = None
    #: Projections (views) to keep; ``None`` keeps all.
    projections: list[str] | None = field(
        default_factory=lambda: ["PA", "AP", "AP_horizontal", "L"]
    )
    #: Exclusion lists of image ids (shipped names or paths).
    exclude: list[str] = field(default_factory=list)
    #: Skip (and list) missing or corrupt images instead of stopping with an error.
    skip_corrupt: bool = False
    #: Keep the data set's radiologist boxes (``boxes.parquet``) so that ``evaluate`` scores
    #: the class maps against them; only formats with a box reader have them (``nih``).
    boxes: bool = True
    #: The box file. ``None``: the format's copy inside the installed ``torchxrayvision`` wheel
    #: (NIH's ``BBox_List_2017.csv.gz``); VinDr-CXR's boxes are in its label CSV.
    boxes_csv: str | None = None
    #: An uncertain label (``-1``: CheXpert, MIMIC-CXR, ``wide``) becomes positive (``ones``,
    #: the CheXpert paper's U-Ones), negative (``zeros``, U-Zeros) or unknown (``ignore``,
    #: U-Ignore: left out of the loss and the metrics).
    uncertain: Literal["ones", "zeros", "ignore"] = "ignore"
    #: A blank label cell (the report does not mention the finding) is negative (``zero``) or
    #: unknown (``unknown``).
    blank: Literal["zero", "unknown"] = "zero"
    #: ``wide`` CSVs: the column of each manifest field (``image``, ``patient_id``, and
    #: optionally ``image_id`` and ``view``) and of any class whose column is not named by the
    #: class, e.g. ``{image: file, patient_id: subject, Effusion: pleural_effusion}``.
    columns: dict[str, str] = field(default_factory=dict)
    #: VinDr-CXR: how the readers of an image are combined per class: ``any`` (one reader is
    #: enough), ``majority`` (more than half of them) or ``strict`` (they must all agree; an
    #: image they disagree on is an error).
    aggregation: Literal["any", "majority", "strict"] = "majority"
    #: VinDr-CXR boxes are in pixels of the original DICOM: a CSV of ``image_id``, ``width``,
    #: ``height`` (pixels) to turn them into image fractions. ``None``: read each DICOM header
    #: (``train/<image_id>.dicom`` under ``data.image_root``); with neither, no boxes are kept.
    image_sizes: str | None = None
    #: Several data sets in one run (:mod:`trcgl.data.sources`): a list of data sections, each
    #: with a ``name`` (the manifest's ``dataset``; letters, digits, ``-``, ``_``), any
    #: ``data.*`` key of its own (``format``, ``labels_csv``, ``image_root``, ``uncertain``,
    #: …; unset keys take their defaults, not this section's values, except that a format
    #: without a vocabulary of its own reads the shared one) and ``relabel``, a table
    #: mapping its classes to the shared vocabulary (a shipped name such as
    #: ``chexpert_to_nih15_v1.csv`` or a path; ``null``: the same class names). The shared
    #: vocabulary is this section's ``classes`` or ``vocabulary``, or else the union of the
    #: sources' classes. Empty: one data set, this section.
    sources: list[dict[str, Any]] = field(default_factory=list)

    def source_configs(self) -> list[SourceConfig]:
        """The parsed ``sources``: each a name, its own data section and its relabel table."""
        out: list[SourceConfig] = []
        for i, entry in enumerate(self.sources):
            key = f"data.sources[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"{key}: expected a mapping of data.* keys, got {entry!r}")
            entry = dict(entry)
            name, relabel = entry.pop("name", None), entry.pop("relabel", None)
            if not isinstance(name, str) or not SOURCE_NAME.fullmatch(name):
                raise ConfigError(
                    f"{key}.name: a name of letters, digits, '-' and '_' is required, got {name!r}"
                )
            if relabel is not None and not isinstance(relabel, str):
                raise ConfigError(f"{key}.relabel: expected a table name or path, got {relabel!r}")
            if "sources" in entry:
                raise ConfigError(f"{key}: a source cannot have sources of its own")
            data = _build(DataConfig, entry, key)
            if (
                not (data.classes or data.vocabulary)
                and not DATA_FORMATS.get(data.format).vocabulary
            ):
                # A format without a vocabulary of its own (plain, wide) reads the shared one.
                data.classes, data.vocabulary = self.classes, self.vocabulary
            out.append(SourceConfig(name, data, relabel))
        names = [s.name for s in out]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"data.sources: the name(s) {repeated} are used twice")
        return out

    def prompt_style(self) -> str:
        """The diffusion prompts' style: the format's, or ``plain`` for several data sets."""
        return "plain" if self.sources else DATA_FORMATS.get(self.format).prompt_style


#: A ``data.sources`` name: it prefixes ids and image paths, so no ``/`` or ``:``.
SOURCE_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class SourceConfig:
    """One data set of a multi-source run (``data.sources``)."""

    name: str
    data: DataConfig
    #: The relabel table (source class → shared class; :mod:`trcgl.data.sources`) or ``None``.
    relabel: str | None = None


@dataclass
class SplitConfig:
    """Patient-level multilabel-stratified split (fractions of patients)."""

    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 0
    #: Keep the split the data set is published with (MIMIC-CXR-JPG's ``-split.csv``, a
    #: CXR-LT ``split`` column) instead of drawing one; only formats that read one.
    given: bool = False


@dataclass
class GroupsConfig:
    """Head / medium / tail thresholds on training counts (docs/method.md §0)."""

    mode: Literal["absolute", "quantile"] = "absolute"
    #: head: n_c > head; with ``quantile``, a quantile of the class counts.
    head: float = 5000
    #: tail: n_c < tail; with ``quantile``, a quantile of the class counts.
    tail: float = 500


@dataclass
class GraphConfig:
    """Label co-occurrence graph (Eq. 15–20)."""

    tau: float = 0.02
    #: ``paper`` (Eq. 16–20: row-normalised, then symmetrised) or ``authors`` (their code:
    #: Q_ij / (n_i + 1), diagonal forced to 1, then + I; docs/method.md §6).
    formula: Literal["paper", "authors"] = "paper"
    #: Build the graph from synthetic rows too (the authors' code did; the paper's form is not).
    include_synthetic: bool = False


@dataclass
class ImagesConfig:
    """Preprocessing cache: images resized once to ``size`` px, 8-bit PNG."""

    size: int = 224
    #: Cache folder; ``None``: ``<run dir>/cache``.
    cache_dir: str | None = None
    workers: int = 2


@dataclass
class ModelConfig:
    """The classifier (docs/method.md §2–§3). ``architecture`` picks TRCGL-Net or a baseline."""

    #: A registered architecture (``trcgl architectures`` lists them): ``trcgl_net``;
    #: baselines: ``timm`` (timm's own head: ResNet-50, EfficientNet-B0, ConvNeXt, ViT-B/16),
    #: ``csra`` (ConvNeXt + CSRA head), ``clip_linear`` (CLIP image tower).
    architecture: str = "trcgl_net"
    #: A timm model name (for ``clip_linear``: an open_clip architecture such as ViT-B-16).
    backbone: str = "convnextv2_tiny"
    #: ``hub`` (the library's default pretrained weights), a hub tag (``hf-hub:…``; open_clip
    #: tag for CLIP), a local .safetensors file, or ``null`` for a random init on purpose.
    pretrained: str | None = "hub"
    #: TRCGL-Net switches (Table 3 ablation) and hyper-parameters.
    channel_attention: bool = True
    spatial_attention: bool = True
    label_gcn: bool = True
    reduction: int = 16
    #: Eq. 10 scale s in X_r = X + s X ⊙ g (paper 1; authors' code 0.05).
    reweight_scale: float = 1.0
    #: Class-specific w_c, b_c for s_spatial (paper); false reuses the GAP classifier's.
    spatial_class_weights: bool = True
    #: λ of Eq. 14 and α of Eq. 25.
    lam: float = 0.1
    alpha: float = 0.05
    embed_dim: int = 300
    hidden_dim: int = 1024
    #: s_label by dot product (paper, Eq. 24) or, as the authors' code, the cosine of a learned
    #: D×D projection of g_r with E_2 (no temperature).
    label_score: Literal["dot", "cosine"] = "dot"
    #: The map φ(I) through the backbone's own final norm (``head``: timm ConvNeXt's
    #: LayerNorm) or, as the authors' code, a BatchNorm2d trained with the head (``batchnorm``).
    feature_norm: Literal["head", "batchnorm"] = "head"
    #: Biases in the channel gate's W1, W2 and the score maps M (the authors' have none).
    attention_bias: bool = True
    #: Dropout on E_1 between the two graph convolutions (the authors' 0.1).
    gcn_dropout: float = 0.0
    drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    #: CSRA head: number of heads and λ.
    csra_heads: int = 1
    csra_lam: float = 0.1


#: Optimiser name → the package it needs beyond torch, and the extra that installs it.
OPTIMIZERS: dict[str, tuple[str, str] | None] = {
    "adamw": None,
    "adamw8bit": ("bitsandbytes", "bnb"),
}


def check_optimizer(name: str, key: str) -> None:
    """``name`` known and its package importable, else a :class:`ConfigError` naming ``key``
    and saying how to install it."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"{key}: unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    need = OPTIMIZERS[name]
    if need is not None and importlib.util.find_spec(need[0]) is None:
        raise ConfigError(
            f"{key}={name} needs {need[0]}, which is not installed: `pip install "
            f"'trcgl[{need[1]}]'` (CUDA), or use {key}=adamw"
        )


@dataclass
class TrainConfig:
    """Two-stage training (docs/method.md §4). Defaults are the paper's and the authors' code's."""

    batch_size: int = 32
    #: Stage 1: backbone frozen, head and label branch trained.
    warmup_epochs: int = 10
    warmup_lr: float = 1e-3
    #: Stage 2: everything trained, separate learning rates.
    epochs: int = 50
    backbone_lr: float = 1.5e-5
    head_lr: float = 1.5e-4
    backbone_weight_decay: float = 0.01
    head_weight_decay: float = 0.05
    #: Linear learning-rate warm-up at the start of stage 2 (epochs), then cosine decay.
    lr_warmup_epochs: float = 5
    #: The stage-2 schedule's unit: every optimiser ``step`` (default) or once an ``epoch``
    #: (the authors' code), and its floor as a fraction of the base rate (theirs: 0.01).
    lr_schedule: Literal["step", "epoch"] = "step"
    min_lr_ratio: float = 0.0
    #: AdamW's eps (the authors': 1e-5) and stage 1's weight decay (``null``: head_weight_decay;
    #: the authors': 0.01).
    adam_eps: float = 1e-8
    warmup_weight_decay: float | None = None
    #: Recompute the backbone's activations in the backward pass (timm / open_clip
    #: ``set_grad_checkpointing``): less memory for large backbones and images, same gradients.
    gradient_checkpointing: bool = False
    #: Micro-batches of ``batch_size`` whose gradients are summed into one optimiser step
    #: (effective batch ``batch_size × grad_accumulation`` per process; same result, less memory).
    grad_accumulation: int = 1
    #: ``adamw`` (torch) or ``adamw8bit`` (bitsandbytes' 8-bit AdamW, a quarter of the optimiser
    #: state's memory; the ``bnb`` extra: ``pip install 'trcgl[bnb]'``).
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"
    #: Channels-last memory format for the model and its inputs (faster convolutions on GPU
    #: tensor cores); ``null``: on a GPU, off on the CPU.
    channels_last: bool | None = None
    #: Exponential moving average of the weights (0 turns it off); evaluation uses it.
    ema_decay: float = 0.9999
    #: When the EMA starts (``warmup``: with stage 1; ``finetune``: with stage 2, as the
    #: authors' code), and whether its decay warms up (timm's ``use_warmup``; theirs: no).
    ema_start: Literal["warmup", "finetune"] = "warmup"
    ema_warmup: bool = True
    grad_clip: float = 1.0
    #: ``auto``: bf16 on a GPU that supports it, else fp16 on GPU, none on CPU.
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    #: Stop when validation mAP has not improved for this many epochs (0: never).
    early_stopping_patience: int = 10
    #: A registered loss (``trcgl losses`` lists them with their options): ``bce``, ``asl``,
    #: ``db``, ``ldam``, ``ldam_drw``, ``cb_margin`` (the authors' code's loss).
    loss: str = "db"
    #: Keyword options of that loss, e.g. ``{gamma_neg: 2}`` for ``asl``; checked against the
    #: loss's constructor. ``ldam_drw``'s ``drw_start_epoch`` defaults to 80 % of ``epochs``.
    loss_options: dict[str, Any] = field(default_factory=dict)
    #: ``repeat_factor``: repeat-factor sampling (LVIS, Gupta et al.) at ``repeat_threshold``
    #: on the fraction of images with a class, stochastic rounding. ``authors``: their code's
    #: variant (share of all positive labels, threshold 0.01, at most 10 integer repeats;
    #: :func:`trcgl.data.sampling.authors_repeat_factors`).
    sampler: Literal["random", "repeat_factor", "authors"] = "repeat_factor"
    repeat_threshold: float = 0.001
    #: Loss weight of synthetic images in stage 2 (Table 4) and in stage 1 (authors: 0).
    w_syn: float = 0.5
    w_syn_warmup: float = 0.0
    num_workers: int = 2
    seed: int = 0
    #: Cap on optimiser steps per epoch (``null``: the whole training set); for quick runs.
    max_steps_per_epoch: int | None = None
    #: Experiment trackers (:mod:`trcgl.training.trackers`): ``tensorboard``, ``mlflow``,
    #: ``wandb`` (the last two are extras: ``pip install 'trcgl[mlflow]'``).
    log_with: list[str] = field(default_factory=lambda: ["tensorboard"])


@dataclass
class DiffusionConfig:
    """Prompt-latent diffusion for the tail classes (docs/method.md §1, Eq. 1–6).

    ``trcgl diffusion train`` fits the generator (Eq. 3), ``sample`` makes images for the tail
    planner's rows (Eq. 4–6), ``filter`` keeps the good ones; the classifier then trains on them
    with loss weight ``train.w_syn``.
    """

    #: Make synthetic images and train on them; false: real images only (the ablation's row).
    enabled: bool = True
    #: A Stable-Diffusion-style model in diffusers format: a local folder or a hub id (e.g. a
    #: chest X-ray fine-tune such as RoentGen). ``null``: a small randomly initialised generator
    #: built in code, its VAE trained here first (CPU, demo).
    source: str | None = None
    #: The generator family that loads ``source`` (``trcgl list`` shows the registered ones):
    #: ``stable_diffusion``, a UNet + VAE + CLIP text encoder in the diffusers layout.
    generator: str = "stable_diffusion"
    #: Side of the generated images (the paper: 512; the tiny generator: 64 or 128).
    image_size: int = 512
    #: Which real training images the generator learns from: those with a tail class, or all.
    train_images: Literal["tail", "all"] = "tail"
    #: The words of a prompt p_n (docs/method.md §1): the image's ``labels`` (with the view and
    #: PadChest's locations), or its ``report``: the label words, then the report's sentences
    #: (OpenI's ``report``, PadChest's English localisations) as far as 77 tokens allow; an
    #: image without report text keeps its label prompt. A synthetic image takes the prompt of
    #: the real image whose label set it copies.
    prompt_source: Literal["labels", "report"] = "labels"
    #: m, the learnable context vectors of Eq. 2.
    num_context: int = 8
    #: What of the UNet trains beside C: nothing (``frozen``), a LoRA adapter, or all of it.
    unet_mode: Literal["frozen", "lora", "full"] = "lora"
    #: LoRA rank r and alpha (scale alpha / r; ``null``: alpha = r).
    lora_rank: int = 8
    lora_alpha: float | None = None
    #: Optimiser steps of Eq. 3 in all (a resumed run continues to this many), images a step.
    steps: int = 2000
    batch_size: int = 8
    #: AdamW learning rates of C (no weight decay) and of the UNet's trainable weights, the
    #: UNet's weight decay, and the gradient-norm clip over all trainable weights (0: off).
    lr_context: float = 1e-3
    lr_unet: float = 1e-4
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    #: Probability of training with the empty prompt, for classifier-free guidance.
    cond_dropout: float = 0.1
    #: ``auto``: bf16 on a GPU with bf16, else fp16 on a GPU, none on the CPU.
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    checkpoint_every: int = 200
    #: Checkpoints kept (the newest; a full-mode SD 1.5 checkpoint with its optimiser is 10 GB).
    keep_checkpoints: int = 2
    #: Recompute the UNet's activations in the backward pass (diffusers'
    #: ``enable_gradient_checkpointing``, each transformer recomputed as a whole:
    #: :func:`trcgl.diffusion.train.checkpoint_unet`): the same gradients in less memory.
    gradient_checkpointing: bool = False
    #: Micro-batches of ``batch_size`` summed into one optimiser step (the same step as one
    #: batch of ``batch_size × grad_accumulation``, in less memory).
    grad_accumulation: int = 1
    #: ``adamw`` or ``adamw8bit`` (bitsandbytes; the ``bnb`` extra), as ``train.optimizer``.
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"
    #: Images of the fixed batch whose Eq. 3 loss is reported before and after training (the
    #: dataset's first), and the fixed, stratified timesteps per image (fixed noise).
    eval_size: int = 16
    eval_timesteps: int = 4
    #: Weights' precision while sampling (Eq. 4–6): ``auto`` = bf16 on a GPU that has it, fp16
    #: on other GPUs, fp32 on the CPU (a VAE whose config asks ``force_upcast`` decodes in fp32).
    sample_precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    #: Tiny generator only: AdamW steps and learning rate of its VAE's training.
    vae_steps: int = 1500
    vae_lr: float = 1e-3
    #: Training images each tail class is topped up to; ``null``: the tail threshold.
    target: int | None = None
    #: At most this many synthetic images per tail class (``null``: no cap).
    max_per_class: int | None = None
    #: ω of Eq. 4, denoising steps and scheduler (a diffusers class name) of Eq. 5.
    guidance_scale: float = 3.0
    sample_steps: int = 50
    scheduler: str = "DDIMScheduler"
    sample_batch_size: int = 8
    #: Images per seeded chunk of the sampling stage: a chunk's images depend only on its seed,
    #: so a killed run resumes with the same images and several processes share the chunks out.
    sample_chunk: int = 64
    #: The filter's classifier: a model folder trained on real data; ``null``: one is trained
    #: here on the real images with this configuration's model and train sections.
    filter_model: str | None = None
    #: Stage-2 epochs of that classifier (``null``: ``train.epochs``).
    filter_epochs: int | None = None
    #: Keep an image if p(target class) ≥ this; ``null``: the class's threshold tuned on the
    #: validation split (F1-optimal), which follows the classifier's own calibration.
    prob_threshold: float | None = None
    #: Reject an image as a near-copy if its nearest training image has cosine similarity ≥ this
    #: (in the filter classifier's feature space). ``null``: calibrated on the real images, the
    #: 99th percentile of their nearest-neighbour similarity to other patients' images.
    max_similarity: float | None = None
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`~trcgl.errors.ConfigError` for a value its type does not rule out."""
        GENERATORS.get(self.generator)
        check_optimizer(self.optimizer, "diffusion.optimizer")
        for key in ("num_context", "steps", "vae_steps", "max_per_class", "filter_epochs"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ConfigError(f"diffusion.{key} must be >= 0, got {value}")
        for key in (
            "batch_size",
            "sample_steps",
            "sample_batch_size",
            "checkpoint_every",
            "eval_size",
            "eval_timesteps",
            "keep_checkpoints",
            "sample_chunk",
            "grad_accumulation",
        ):
            if getattr(self, key) < 1:
                raise ConfigError(f"diffusion.{key} must be >= 1, got {getattr(self, key)}")
        for key, options in (
            ("unet_mode", ("frozen", "lora", "full")),
            ("prompt_source", ("labels", "report")),
            ("mixed_precision", ("auto", "no", "fp16", "bf16")),
            ("sample_precision", ("auto", "fp32", "fp16", "bf16")),
        ):
            if getattr(self, key) not in options:
                raise ConfigError(
                    f"diffusion.{key} must be one of {options}, got {getattr(self, key)!r}"
                )
        if self.image_size < 16 or self.image_size % 8:
            raise ConfigError(
                f"diffusion.image_size must be a multiple of 8 and >= 16, got {self.image_size}"
            )
        if self.unet_mode == "lora" and self.lora_rank < 1:
            raise ConfigError(f"diffusion.lora_rank must be >= 1, got {self.lora_rank}")
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            raise ConfigError(f"diffusion.lora_alpha must be > 0 or null, got {self.lora_alpha}")
        if not 0 <= self.cond_dropout <= 1:
            raise ConfigError(f"diffusion.cond_dropout must lie in [0, 1], got {self.cond_dropout}")
        if self.lr_context < 0 or self.lr_unet < 0 or self.vae_lr <= 0:
            raise ConfigError("diffusion.lr_context and lr_unet must be >= 0, vae_lr > 0")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("diffusion.weight_decay and grad_clip must be >= 0")
        if self.target is not None and self.target < 0:
            raise ConfigError(f"diffusion.target must be >= 0 or null, got {self.target}")
        if self.prob_threshold is not None and not 0 <= self.prob_threshold <= 1:
            raise ConfigError(
                f"diffusion.prob_threshold must lie in [0, 1] or be null, got {self.prob_threshold}"
            )
        if self.max_similarity is not None and not 0 < self.max_similarity <= 1:
            raise ConfigError(
                f"diffusion.max_similarity must lie in (0, 1], got {self.max_similarity}"
            )


@dataclass
class EvaluateConfig:
    """``trcgl evaluate``: how results are reported beside the paper's metrics (Eq. 26–35)."""

    #: Fixed thresholds of the reported F1 (0.5 always; the authors' code reports 0.2, so the
    #: ``padchest`` and ``cxrlt2026`` presets add it).
    f1_thresholds: list[float] = field(default_factory=lambda: [0.5])
    #: Classes without positives in the evaluated split: ``exclude`` (left out of the means and
    #: named) or ``count`` (AP 0, AUC 0.5, F1 0 in the means, as the authors' code does).
    empty_classes: Literal["exclude", "count"] = "exclude"


@dataclass
class Config:
    """An experiment: one section per stage."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    groups: GroupsConfig = field(default_factory=GroupsConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, presets: list[str | Path] = (), overrides: list[str] = ()) -> Config:
        """A validated copy with YAML files / presets layered on top (section by section), then
        ``key=value`` overrides: how an experiment derives its variants from one config."""
        tree = self.to_dict()
        for item in presets:
            path = _preset_or_path(item)
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            tree = _merge(tree, loaded)
        for key, value in parse_overrides(list(overrides)):
            _set(tree, key, value)
        config = _build(Config, tree)
        config.validate()
        return config

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def validate(self) -> None:
        """Check values that types alone do not catch."""
        s, g, i = self.split, self.groups, self.images
        if not 0 < s.val_fraction < 1:
            raise ConfigError(f"split.val_fraction must lie in (0, 1), got {s.val_fraction}")
        if not 0 <= s.test_fraction < 1 or s.val_fraction + s.test_fraction >= 1:
            raise ConfigError(
                "split.test_fraction must be >= 0 with val_fraction + test_fraction < 1"
            )
        if g.mode == "quantile" and not 0 <= g.tail <= g.head <= 1:
            raise ConfigError(
                "groups.head and groups.tail must be quantiles with 0 <= tail <= head <= 1"
            )
        if g.mode == "absolute" and not 0 <= g.tail <= g.head:
            raise ConfigError("groups.tail must not exceed groups.head")
        if not 0 <= self.graph.tau < 1:
            raise ConfigError(f"graph.tau must lie in [0, 1), got {self.graph.tau}")
        if i.size < 16:
            raise ConfigError(f"images.size must be at least 16, got {i.size}")
        if i.workers < 1:
            raise ConfigError(f"images.workers must be at least 1, got {i.workers}")
        t, m = self.train, self.model
        for key in ("batch_size", "num_workers", "warmup_epochs", "epochs"):
            value = getattr(t, key)
            if value < (1 if key == "batch_size" else 0):
                raise ConfigError(
                    f"train.{key} must be {'>= 1' if key == 'batch_size' else '>= 0'}, got {value}"
                )
        if t.warmup_epochs + t.epochs < 1:
            raise ConfigError("train.warmup_epochs + train.epochs must be at least 1")
        for key in ("warmup_lr", "backbone_lr", "head_lr"):
            if getattr(t, key) <= 0:
                raise ConfigError(f"train.{key} must be > 0, got {getattr(t, key)}")
        if not 0 <= t.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must lie in [0, 1), got {t.ema_decay}")
        if t.w_syn < 0 or t.w_syn_warmup < 0:
            raise ConfigError("train.w_syn and train.w_syn_warmup must be >= 0")
        if t.max_steps_per_epoch is not None and t.max_steps_per_epoch < 1:
            raise ConfigError("train.max_steps_per_epoch must be >= 1 or null")
        check_trackers(t.log_with)
        check_optimizer(t.optimizer, "train.optimizer")
        if t.grad_accumulation < 1:
            raise ConfigError(f"train.grad_accumulation must be >= 1, got {t.grad_accumulation}")
        if not 0 <= t.min_lr_ratio <= 1 or t.adam_eps <= 0:
            raise ConfigError("train.min_lr_ratio must lie in [0, 1] and train.adam_eps be > 0")
        bad = [v for v in self.evaluate.f1_thresholds if not 0 < float(v) < 1]
        if bad:
            raise ConfigError(f"evaluate.f1_thresholds must lie in (0, 1), got {bad}")
        ARCHITECTURES.get(m.architecture).check_config(m)
        LOSSES.get(t.loss).check_options(t.loss_options, "train.loss_options")
        self.diffusion.validate()
        self._validate_data()

    def _validate_data(self) -> None:
        sources = self.data.source_configs()
        for source in sources:
            self._validate_source(source.data, f"data.sources[{source.name}]")
        union = not (self.data.classes or self.data.vocabulary)
        if union and any(s.relabel is not None for s in sources):
            raise ConfigError(
                "data.sources: a relabel table maps to the shared vocabulary, so data.classes "
                "or data.vocabulary must name it"
            )
        if not sources:
            self._validate_source(self.data, "data")

    def _validate_source(self, d: DataConfig, key: str) -> None:
        fmt = DATA_FORMATS.get(d.format)
        if fmt.vocabulary is None and not (d.classes or d.vocabulary):
            raise ConfigError(f"{key}.format {d.format!r} needs {key}.classes or {key}.vocabulary")
        if fmt.installed_csv is None and d.labels_csv is None:
            raise ConfigError(f"{key}.labels_csv is required for {key}.format {d.format!r}")
        if d.mapping is not None and fmt.mapping is None:
            raise ConfigError(
                f"{key}.mapping is set, but {key}.format {d.format!r} reads classes, not raw "
                "findings to relabel (a data.sources entry maps its classes with relabel)"
            )
        if self.split.given and not fmt.split:
            raise ConfigError(
                f"split.given: {key}.format {d.format!r} reads no published split; "
                "set split.given=false to split by patient"
            )


def _check_type(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` where lossless (int → float), else raise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key}: expected a mapping of names to values, got {value!r}")
        return dict(value)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp)
        return [_check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if tp is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads 1e-3 as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), sorted(names), n=1)
            hint = f"; did you mean {_dotted(prefix, close[0])!r}?" if close else ""
            raise ConfigError(
                f"unknown configuration key {full!r}{hint} (known in "
                f"{prefix or 'the top level'}: {', '.join(sorted(names))})"
            )
        kwargs[key] = _check_type(value, hints[key], full)
    return cls(**kwargs)


def _dotted(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """``["data.image_root=/x", "split.seed=3"]`` → pairs; values are parsed as YAML."""
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        out.append((key.strip(), yaml.safe_load(raw) if raw.strip() else None))
    return out


def preset_names() -> list[str]:
    """Shipped presets, by name (``padchest``, ``baselines/resnet50``, …)."""
    folder = Path(str(resources.files("trcgl").joinpath(PRESET_DIR)))
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))


def _preset_or_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = resources.files("trcgl").joinpath(PRESET_DIR, f"{name_or_path}.yaml")
    if shipped.is_file():
        return Path(str(shipped))
    raise ConfigError(
        f"config {str(name_or_path)!r} is neither a file nor a preset; presets: {preset_names()}"
    )


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    names_or_paths: str | Path | list[str | Path] | None = None, overrides: list[str] = ()
) -> Config:
    """Read YAML files or shipped presets (later ones update earlier ones, section by
    section), apply ``key=value`` overrides, validate.

    The run's ``name`` (the default run directory is ``runs/<name>``) is the first layer's;
    a later layer that does not set one appends its file name: ``-c padchest -c
    baselines/resnet50`` is ``padchest-resnet50``, so layering never reuses another run's
    directory by accident."""
    if names_or_paths is None:
        names_or_paths = []
    elif isinstance(names_or_paths, str | Path):
        names_or_paths = [names_or_paths]
    tree: dict[str, Any] = {}
    for i, item in enumerate(names_or_paths):
        path = _preset_or_path(item)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        loaded = dict(loaded or {})
        if i > 0 and "name" not in loaded and "name" in tree:
            # A layer that does not name the run extends the name: padchest-resnet50.
            loaded["name"] = f"{tree['name']}-{Path(str(item)).stem}"
        tree = _merge(tree, loaded)
    for key, value in parse_overrides(list(overrides)):
        _set(tree, key, value)
    config = _build(Config, tree)
    config.validate()
    return config


def resolve_path(value: str | None) -> Path | None:
    """A configured path as a real path; ``trcgl://x`` is the file ``x`` inside the package."""
    if value is None:
        return None
    if value.startswith(PACKAGE_SCHEME):
        return Path(str(resources.files("trcgl").joinpath(value.removeprefix(PACKAGE_SCHEME))))
    return Path(value).expanduser()
