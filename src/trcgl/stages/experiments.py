"""The paper's tables as commands (``trcgl experiment table1 … table5``), docs/method.md §4–5.

An experiment trains one classifier per *variant* on the same prepared run (its split, image
cache and synthetic images are shared) and evaluates each on the same split (``test`` when the
run has one, else ``val``):

* Table 1 (baselines): ResNet-50, EfficientNet-B0, ConvNeXt, ViT-B/16, CLIP, ConvNeXt + LDAM-DRW,
  ConvNeXt + CSRA (the ``baselines/*`` presets, real images only) and TRCGL-Net;
* Table 2 (frequency groups): head / medium / tail mAP, mAUC and F1 of the Table 1 variants;
* Table 3 (ablation): TRCGL-Net with the diffusion data, the channel-class attention and the
  label relation modelling switched off one at a time, and all off in both readings of the
  paper's first row: the backbone with a linear head on real images (the equations') and the
  head with its spatial branch kept (the authors' code's, equal to their ConvNeXt + CSRA);
* Table 4: w_syn ∈ {0.25, 0.5, 0.75}; Table 5: α ∈ {0.025, 0.05, 0.1}.

A variant is the run's configuration with a preset layered on top and ``key=value`` overrides;
its folder ``<run>/experiments/<slug>-<digest>/`` is named by a digest of what it trains, so a
variant that appears in several tables (TRCGL-Net with the default w_syn and α) is trained
once, and a finished variant is not trained again (a killed one resumes). Each table is printed
and written as ``<run>/experiments/<table>.csv`` and ``.md``; where the data set is PadChest the
paper's numbers (docs/method.md §5) stand beside ours.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trcgl.config import Config
from trcgl.errors import ConfigError
from trcgl.files import atomic_write_text, slug
from trcgl.run_dir import RunDir

__all__ = ["PAPER", "TABLES", "Variant", "run_experiment", "variants_for"]

TABLES = ("table1", "table2", "table3", "table4", "table5")
TITLES = {
    "table1": "Table 1: comparison with baselines",
    "table2": "Table 2: head / medium / tail classes",
    "table3": "Table 3: ablation",
    "table4": "Table 4: weight of the synthetic images w_syn",
    "table5": "Table 5: weight of the label scores α",
}
#: The paper's numbers on PadChest (30 classes, 224 px, its own split), docs/method.md §5.
PAPER: dict[str, dict[str, float]] = {
    "ConvNeXt": {
        "mAP": 0.3323,
        "mAUC": 0.8720,
        "F1": 0.2166,
        "head mAP": 0.5156,
        "medium mAP": 0.2715,
        "tail mAP": 0.1280,
        "tail mAUC": 0.8707,
    },
    "ConvNeXt + LDAM": {
        "mAP": 0.2962,
        "mAUC": 0.8464,
        "F1": 0.2752,
        "head mAP": 0.4903,
        "medium mAP": 0.2352,
        "tail mAP": 0.0328,
        "tail mAUC": 0.6898,
    },
    "ConvNeXt + CSRA": {"mAP": 0.3671, "mAUC": 0.8581, "F1": 0.3227},
    "TRCGL-Net": {
        "mAP": 0.4408,
        "mAUC": 0.8989,
        "F1": 0.4369,
        "head mAP": 0.5479,
        "medium mAP": 0.3272,
        "tail mAP": 0.4904,
        "tail mAUC": 0.9229,
    },
}
FULL = "TRCGL-Net"
#: Our column → the paper's number it is compared with: the paper's F1 is the authors' code's
#: macro-F1 at 0.2 (docs/method.md §6), so it stands beside F1@0.2 where that was evaluated.
PAPER_COLUMN = {"F1@0.2": "F1"}


@dataclass(frozen=True)
class Variant:
    """One classifier of an experiment: a preset and overrides over the run's config.

    ``paper`` names the row of :data:`PAPER` it corresponds to; ``synthetic``: whether it trains
    on the synthetic images (only if the configuration's ``diffusion.enabled`` allows it).
    """

    name: str
    presets: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    synthetic: bool = True
    paper: str | None = None
    columns: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def _baselines() -> list[Variant]:
    real = {"synthetic": False}
    return [
        Variant("ResNet-50", ("baselines/resnet50",), **real),
        Variant("EfficientNet-B0", ("baselines/efficientnet_b0",), **real),
        Variant("ConvNeXt", ("baselines/convnext",), paper="ConvNeXt", **real),
        Variant("ViT-B/16", ("baselines/vit_b16",), **real),
        Variant("CLIP", ("baselines/clip",), **real),
        Variant(
            "ConvNeXt + LDAM-DRW", ("baselines/convnext_ldam",), paper="ConvNeXt + LDAM", **real
        ),
        Variant("ConvNeXt + CSRA", ("baselines/convnext_csra",), paper="ConvNeXt + CSRA", **real),
        Variant(FULL, paper=FULL),
    ]


def _ablation() -> list[Variant]:
    """Table 3's rows. The paper's first row (×××: no diffusion data, no channel-class
    attention, no label relation) is offered in both readings (docs/authors-code.md):

    * ``backbone only`` — the equations' reading: the backbone with a linear head (s = s_gap,
      Eq. 11), real images only; its paper number is Table 1's ConvNeXt row, the same model;
    * ``××× (authors' reading)`` — the authors' code's: their head always keeps the class-aware
      spatial branch (s_img = s_gap + λ s_spatial, Eq. 12–14), so "all off" leaves the gate
      (Eq. 8–10) and the label branch (Eq. 21–25) out but the spatial branch in; this is why
      the paper's ××× row equals its Table 1 "ConvNeXt + CSRA" row, its paper number here.

    The other rows switch one module off (channel-class attention = gate and spatial branch).
    """
    attention_off = ("model.channel_attention=false", "model.spatial_attention=false")
    rows = [
        ("backbone only", (*attention_off, "model.label_gcn=false"), False, "ConvNeXt"),
        (
            "××× (authors' reading)",
            ("model.channel_attention=false", "model.label_gcn=false"),
            False,
            "ConvNeXt + CSRA",
        ),
        ("w/o channel-class attention", attention_off, True, None),
        ("w/o label relation", ("model.label_gcn=false",), True, None),
        ("w/o diffusion data", (), False, None),
        (FULL, (), True, FULL),
    ]
    out = []
    for name, overrides, synthetic, paper in rows:
        columns = {
            "diffusion": synthetic,
            "channel-class attention": "model.channel_attention=false" not in overrides,
            "label relation": "model.label_gcn=false" not in overrides,
            "spatial branch": "model.spatial_attention=false" not in overrides,
        }
        out.append(Variant(name, (), overrides, synthetic, paper, columns))
    return out


def _sweep(key: str, label: str, values: tuple[float, ...]) -> list[Variant]:
    return [
        Variant(f"{label} = {v:g}", (), (f"{key}={v}",), True, None, {label: v}) for v in values
    ]


def variants_for(table: str) -> list[Variant]:
    """The variants of one table."""
    if table in ("table1", "table2"):
        return _baselines()
    if table == "table3":
        return _ablation()
    if table == "table4":
        return _sweep("train.w_syn", "w_syn", (0.25, 0.5, 0.75))
    if table == "table5":
        return _sweep("model.alpha", "α", (0.025, 0.05, 0.1))
    raise ConfigError(f"unknown table {table!r}; known: {', '.join(TABLES)}")


def variant_config(cfg: Config, variant: Variant, extra: list[str]) -> tuple[Config, bool]:
    """The variant's configuration (``extra`` overrides last) and whether it uses synthetic
    images."""
    vcfg = cfg.updated(list(variant.presets), [*variant.overrides, *extra])
    return vcfg, bool(variant.synthetic and cfg.diffusion.enabled)


def variant_dir(run_dir: Path, variant: Variant, vcfg: Config, synthetic: bool) -> Path:
    """``<run>/experiments/<slug>-<digest of the model and train sections, synthetic flag>``;
    a folder with the same digest made under another name (the same classifier in another
    table) is reused."""
    tree = vcfg.to_dict()
    what = json.dumps(
        {"model": tree["model"], "train": tree["train"], "synthetic": synthetic}, sort_keys=True
    )
    digest = hashlib.sha256(what.encode()).hexdigest()[:8]
    folder = run_dir / "experiments"
    same = sorted(folder.glob(f"*-{digest}")) if folder.is_dir() else []
    return same[0] if same else folder / f"{slug(variant.name.replace('α', 'alpha'))}-{digest}"


def _group_metrics(summary: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    overall = summary["overall"]
    out["mAP"], out["mAUC"], out["F1"] = overall["mAP"], overall["mAUC"], overall["macro_F1"]
    for key in overall:  # F1 at further fixed thresholds (evaluate.f1_thresholds), e.g. 0.2
        if key.startswith("macro_F1@"):
            out[f"F1@{key[9:]}"] = overall[key]
    if overall.get("macro_F1_tuned") is not None:
        out["F1 (tuned thr.)"] = overall["macro_F1_tuned"]
    for g in ("head", "medium", "tail"):
        s = summary.get(g) or {}
        for metric, key in (("mAP", "mAP"), ("mAUC", "mAUC"), ("F1", "macro_F1")):
            out[f"{g} {metric}"] = s.get(key, math.nan) if s.get("n_classes") else math.nan
    return out


LAYOUT = {
    "table1": ["mAP", "mAUC", "F1", "F1 (tuned thr.)"],
    "table2": [f"{g} {m}" for m in ("mAP", "mAUC", "F1") for g in ("head", "medium", "tail")],
    "table3": ["mAP", "mAUC", "F1", "tail mAP", "tail mAUC"],
    "table4": ["mAP", "mAUC", "F1", "tail mAP", "tail mAUC"],
    "table5": ["mAP", "mAUC", "F1", "tail mAP", "tail mAUC"],
}


def table_frame(
    table: str, rows: list[tuple[Variant, dict[str, float]]], paper: bool
) -> pd.DataFrame:
    """The table in the paper's layout; with ``paper``, its numbers beside ours."""
    fixed = sorted({k for _, m in rows for k in m if k.startswith("F1@")}, key=lambda k: k[3:])
    layout = list(LAYOUT[table])
    if "F1" in layout:  # the authors' F1@0.2 beside F1 (at 0.5), where it was evaluated
        at = layout.index("F1") + 1
        layout[at:at] = fixed
    records = []
    for variant, metrics in rows:
        record: dict[str, Any] = {"method": variant.name}
        for key, value in variant.columns.items():
            record[key] = ("✓" if value else "✗") if isinstance(value, bool) else value
        for col in layout:
            record[col] = metrics.get(col, math.nan)
            if paper:
                ref = PAPER.get(variant.paper or "", {}).get(PAPER_COLUMN.get(col, col))
                if col == "F1" and "F1@0.2" in layout:
                    ref = None  # the paper's F1 stands beside F1@0.2, its threshold
                record[f"{col} (paper)"] = math.nan if ref is None else ref
        records.append(record)
    frame = pd.DataFrame(records)
    if paper:  # drop paper columns the paper has no numbers for in this table
        empty = [c for c in frame.columns if c.endswith("(paper)") and frame[c].isna().all()]
        frame = frame.drop(columns=empty)
    return frame


def _over_seeds(per_seed: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample standard deviation (n − 1; NaN for one seed) of each metric."""
    keys = list(per_seed[0])
    mean, sd = {}, {}
    for key in keys:
        values = np.array([m.get(key, math.nan) for m in per_seed], dtype=float)
        mean[key] = float(values.mean())
        sd[key] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return mean, sd


def _add_spread(frame: pd.DataFrame, table: str, spreads: list[dict[str, float]]) -> None:
    """A ``<metric> sd`` column after each of the table's metric columns."""
    metrics = [c for c in frame.columns if c in LAYOUT[table] or c.startswith("F1@")]
    for col in reversed(metrics):
        frame.insert(
            frame.columns.get_loc(col) + 1,
            f"{col} sd",
            [s.get(col, math.nan) for s in spreads],
        )


def cell(value: Any) -> str:
    """A table cell: numbers with 4 decimals, a missing one as "–"."""
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """The table in Markdown; a ``<metric> sd`` column joins its metric as "mean ± sd"."""
    shown = frame.copy()
    for col in [c for c in frame.columns if f"{c} sd" in frame.columns]:
        shown[col] = [
            cell(m) if isinstance(d, float) and math.isnan(d) else f"{cell(m)} ± {cell(d)}"
            for m, d in zip(frame[col], frame[f"{col} sd"], strict=True)
        ]
        shown = shown.drop(columns=f"{col} sd")
    lines = ["| " + " | ".join(shown.columns) + " |"]
    lines.append("|" + "|".join("---" for _ in shown.columns) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in shown.itertuples(False)]
    return "\n".join(lines) + "\n"


def _reference(cfg: Config, variants: list[Variant]) -> int | None:
    """The row the others are compared with: the full model, or in a sweep the value the
    configuration itself has (the paper's w_syn 0.5, α 0.05)."""
    for i, v in enumerate(variants):
        if v.name == FULL:
            return i
    for i, v in enumerate(variants):
        if len(v.overrides) == 1 and "=" in v.overrides[0]:
            key, _, value = v.overrides[0].partition("=")
            section, _, name = key.partition(".")
            current = getattr(getattr(cfg, section, None), name, None)
            if isinstance(current, int | float) and math.isclose(float(value), float(current)):
                return i
    return None


def _with_intervals(
    frame: pd.DataFrame, folders: list[Path], split: str, reference: int | None
) -> str:
    """Add each row's mAP interval and, against the reference row, the paired bootstrap
    difference in mAP and its p-value (``*``: p < 0.05) to ``frame``; the table's note."""
    from trcgl.evaluation.bootstrap import format_interval
    from trcgl.stages.compare import compare_runs

    records = [RunDir(f).record(f"evaluate {split}") or {} for f in folders]
    frame["mAP 95 % CI"] = [
        format_interval(*((r.get("intervals") or {}).get("overall", {}).get("mAP", [None, None])))
        for r in records
    ]
    if reference is None or len(folders) < 2 or not all(r.get("bootstrap") for r in records):
        return ""
    others = [f for i, f in enumerate(folders) if i != reference]
    resamples = int(records[reference]["bootstrap"]["resamples"])
    compared = compare_runs([folders[reference], *others], split, resamples)
    rows = compared.frame[
        (compared.frame["subset"] == "overall") & (compared.frame["metric"] == "mAP")
    ]
    by_folder = {Path(r["folder"]): r for r in rows.to_dict("records")}
    name = frame["method"].iloc[reference]
    deltas, marks = [], []
    for i, f in enumerate(folders):
        r = by_folder.get(f)
        if i == reference or r is None:
            deltas.append("reference" if i == reference else "–")
            marks.append(math.nan)
            continue
        star = " *" if r["p"] is not None and r["p"] < 0.05 else ""
        deltas.append(f"{r['difference']:+.4f} {r['difference 95 % CI']}{star}")
        marks.append(r["p"])
    frame[f"Δ mAP vs {name}"] = deltas
    frame["p"] = marks
    return (
        f" mAP 95 % CI: patient-level bootstrap ({resamples:,} resamples); Δ mAP: paired "
        f"bootstrap against {name} on the same resamples, * where p < 0.05 (not corrected for "
        "the number of rows)."
    )


@dataclass
class ExperimentResult:
    table: str
    frame: pd.DataFrame
    csv: Path
    markdown: Path
    split: str
    trained: list[str]


def run_experiment(
    cfg: Config,
    run_dir: str | Path,
    table: str,
    *,
    extra: list[str] = (),
    only: list[str] | None = None,
    seeds: list[int] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Train and evaluate what ``table`` needs (skipping finished variants); write the table.

    ``extra``: overrides applied to every variant after its preset (e.g. a smaller
    ``train.epochs``); ``only``: a subset of the variants, by name; ``seeds``: train every
    variant once per ``train.seed`` and report the mean and sample sd over them beside the
    bootstrap interval of the first seed's model.
    """
    from trcgl.stages import diffusion
    from trcgl.stages.evaluate import evaluate_run
    from trcgl.stages.pipeline import evaluated_split, prepare_classifier
    from trcgl.stages.prepare import prepare
    from trcgl.stages.train import train

    run_dir = Path(run_dir)
    variants = variants_for(table)
    if only is not None:
        unknown = sorted(set(only) - {v.name for v in variants})
        if unknown:
            raise ConfigError(
                f"no variant(s) {unknown} in {table}; it has {[v.name for v in variants]}"
            )
        variants = [v for v in variants if v.name in only]
    prepare(cfg, run_dir, progress=progress)
    split = evaluated_split(run_dir)
    configs = [(v, *variant_config(cfg, v, list(extra))) for v in variants]
    synthetic_id = None
    if any(syn for _, _, syn in configs):
        for key, fn in diffusion.STAGES:
            if not diffusion.stage_done(run_dir, key):
                log(f"diffusion {key} ...")
            record = fn(cfg, run_dir, progress=progress)
        synthetic_id = record.get("id")
    seeds = list(seeds) if seeds else [None]
    rows, spreads, trained, folders = [], [], [], []
    for variant, vcfg, synthetic in configs:
        per_seed = []
        for seed in seeds:
            scfg = vcfg if seed is None else vcfg.updated([], [f"train.seed={seed}"])
            out = variant_dir(run_dir, variant, scfg, synthetic)
            label = variant.name if seed is None else f"{variant.name} (seed {seed})"
            if not prepare_classifier(out, synthetic_id if synthetic else None):
                log(f"{label}: training in {out}")
                out.mkdir(parents=True, exist_ok=True)
                atomic_write_text(out / "config.yaml", scfg.to_yaml())
                train(scfg, run_dir, progress=progress, out_dir=out, synthetic=synthetic)
                trained.append(label)
            if not RunDir(out).is_complete(f"evaluate {split}"):
                evaluate_run(
                    run_dir,
                    out / "model",
                    split,
                    scfg.train.batch_size,
                    scfg.train.num_workers,
                    out_dir=out,
                )
            evaluated = RunDir(out).record(f"evaluate {split}")
            assert evaluated is not None  # written by evaluate_run above, or complete
            per_seed.append(_group_metrics(evaluated["summary"]))
            if seed == seeds[0]:
                folders.append(out)
        mean, sd = _over_seeds(per_seed)
        rows.append((variant, mean))
        spreads.append(sd)
    frame = table_frame(table, rows, paper=cfg.data.format == "padchest")
    if len(seeds) > 1:
        _add_spread(frame, table, spreads)
    reference = _reference(cfg, [v for v, _, _ in configs])
    significance = _with_intervals(frame, folders, split, reference)
    folder = run_dir / "experiments"
    csv, md = folder / f"{table}.csv", folder / f"{table}.md"
    atomic_write_text(csv, frame.to_csv(index=False))
    if len(seeds) > 1:
        listed = ", ".join(map(str, seeds))
        note = (
            f"\n{cfg.name}, {split} split, {len(seeds)} training seeds ({listed}): mean ± "
            f"sample sd over the seeds; the intervals and Δ are those of seed {seeds[0]}'s "
            "models. F1 at 0.5"
        )
    else:
        note = f"\n{cfg.name}, {split} split, one seed. F1 at 0.5"
    for col in [c for c in frame.columns if c.startswith("F1@") and " " not in c]:
        note += f"; {col} at the fixed threshold {col[3:]}"
        if col == "F1@0.2" and cfg.data.format == "padchest":
            note += " (the paper's F1, from the authors' code, stands beside it)"
    if "F1 (tuned thr.)" in frame:
        note += "; F1 (tuned thr.) at per-class thresholds tuned on the validation split" + (
            " (optimistic here)" if split == "val" else ""
        )
    note += "."
    note += significance
    if cfg.data.format == "padchest":
        note += " Paper: PadChest, its own split (docs/method.md §5)."
    atomic_write_text(md, f"# {TITLES[table]}\n\n" + markdown_table(frame) + note + "\n")
    return ExperimentResult(table, frame, csv, md, split, trained)
