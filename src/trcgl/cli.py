"""``trcgl``: the command-line entry point."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trcgl.config import load_config, preset_names
from trcgl.errors import ConfigError, TrcglError
from trcgl.run_dir import RunDir

app = typer.Typer(
    help="TRCGL-Net: long-tailed multi-label chest X-ray classification.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",  # docstrings reflow into paragraphs
)

#: Width of the output in a log file or pipe: a paper table with its paper columns fits.
LOG_WIDTH = 240


def _console() -> Console:
    """The console: on a terminal rich fits the terminal's width; in a log file or a pipe (a
    cluster job's output) it would fold every table to 80 columns and crop its cells to
    "0.1…", so there it gets room for whole rows (``COLUMNS`` still decides where set)."""
    console = Console()
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return Console(width=LOG_WIDTH)


console = _console()

ConfigOption = Annotated[
    list[str],
    typer.Option(
        "--config",
        "-c",
        help="YAML file or preset name, repeatable: later ones override earlier ones, then "
        "key=value overrides. Presets: " + ", ".join(preset_names()),
    ),
]
RunDirOption = Annotated[
    Path | None, typer.Option("--run-dir", help="Run directory (default: runs/ + the config name).")
]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="Config overrides as key=value, e.g. split.seed=1 data.image_root=/data."),
]


@app.callback()
def _root() -> None:
    """TRCGL-Net: long-tailed multi-label chest X-ray classification."""


def _fail(exc: Exception) -> NoReturn:
    console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


def summary_table(stats_csv: Path, info: dict) -> Table:
    """The one-screen summary of a prepared run: per-class counts and groups."""
    import pandas as pd

    stats = pd.read_csv(stats_csv)
    splits = [s for s in ("train", "val", "test") if f"images_{s}" in stats]
    table = Table(
        title=f"{len(stats)} classes, "
        + ", ".join(
            f"{s}: {info['images'][s]:,} images / {info['patients'][s]:,} patients" for s in splits
        )
    )
    table.add_column("class")
    table.add_column("group")
    for s in splits:
        table.add_column(f"{s} img", justify="right")
        table.add_column(f"{s} pat", justify="right")
    colour = {"head": "blue", "medium": "yellow", "tail": "red"}
    for row in stats.itertuples(index=False):
        r = row._asdict()
        cells = [r["_0"] if "_0" in r else row[0], f"[{colour[r['group']]}]{r['group']}[/]"]
        for s in splits:
            cells += [f"{r[f'images_{s}']:,}", f"{r[f'patients_{s}']:,}"]
        table.add_row(*cells)
    return table


@app.command()
def prepare(
    config: ConfigOption,
    overrides: Overrides = None,
    run_dir: RunDirOption = None,
    force: Annotated[bool, typer.Option(help="Prepare again even if complete.")] = False,
) -> None:
    """Read labels (and images) into a run directory: manifest, split, label statistics,
    label graph, Fig. 2 and, with images, the resized image cache."""
    from trcgl.stages.prepare import STAGE_FILE
    from trcgl.stages.prepare import prepare as run_prepare

    try:
        cfg = load_config(config, overrides or [])
        out = run_dir or Path("runs") / cfg.name
        result = run_prepare(cfg, out, force=force)
    except TrcglError as exc:
        _fail(exc)
    if result is None:
        console.print(
            f"[green]{out} is already prepared[/] ({STAGE_FILE} present; --force redoes it)"
        )
    info = RunDir(out).label_stats()
    console.print(summary_table(out / "label_stats.csv", info))
    groups = info["groups"]
    console.print(
        f"groups ({groups['mode']}): head > {groups['head_above']:g} "
        f"({len(groups['head'])}), medium ({len(groups['medium'])}), "
        f"tail < {groups['tail_below']:g} ({len(groups['tail'])}) training images"
    )
    if info["dropped"]:
        console.print("dropped: " + "; ".join(f"{v:,} {k}" for k, v in info["dropped"].items()))
    if info.get("skipped_images"):
        console.print(
            f"[yellow]skipped {info['skipped_images']} images[/]: {out / 'skipped_images.csv'}"
        )
    console.print(f"run directory: [bold]{out}[/]")


def _run_dir(cfg, run_dir: Path | None) -> Path:
    return run_dir or Path("runs") / cfg.name


def _prepared(cfg, out: Path):
    """accelerate's process state, after the run at ``out`` is prepared: by the main process
    first, so that the others then find it prepared."""
    from trcgl.stages.prepare import prepare as run_prepare
    from trcgl.training.processes import processes

    state = processes()
    with state.main_process_first():
        run_prepare(cfg, out, progress=state.is_main_process)
    return state


def metrics_table(title: str, rows: dict[str, dict]) -> Table:
    from trcgl.evaluation.tables import fixed_f1_keys

    fixed = fixed_f1_keys(rows.get("overall", {}))
    table = Table(title=title)
    columns = ("subset", "mAP", "mAUC", "F1@0.5", *(c for _, c in fixed), "F1 tuned", "classes")
    for col in columns:
        table.add_column(col, justify="left" if col == "subset" else "right")
    for name, s in rows.items():
        if not s.get("n_classes"):
            continue
        tuned = s.get("macro_F1_tuned")
        table.add_row(
            name,
            f"{s['mAP']:.4f}",
            f"{s['mAUC']:.4f}",
            f"{s['macro_F1']:.4f}",
            *(f"{s[k]:.4f}" if s.get(k) is not None else "" for k, _ in fixed),
            "" if tuned is None else f"{tuned:.4f}",
            str(s["n_classes"]),
        )
    return table


def intervals_table(title: str, summary: dict, intervals: dict) -> Table:
    """The 95 % interval of each macro metric, one row per subset (the values themselves are
    in :func:`metrics_table`); three decimals, so that it fits 80 columns in a log."""
    from trcgl.evaluation.bootstrap import format_interval

    columns = {"mAP": "mAP", "mAUC": "mAUC", "macro_F1": "F1@0.5", "macro_F1_tuned": "F1 tuned"}
    table = Table(title=title)
    table.add_column("subset")
    for name in columns.values():
        table.add_column(name, justify="right")
    for name, s in summary.items():
        if not s.get("n_classes") or name not in intervals:
            continue
        cells = [format_interval(*intervals[name].get(k, (None, None)), 3) for k in columns]
        table.add_row(name, *cells)
    return table


def localisation_line(loc: dict) -> str:
    """One line of the localisation scores (macro over the classes with boxes)."""
    o = loc["overall"]
    maps = "attention maps" if loc["method"] == "attention" else "Grad-CAM"
    return (
        f"localisation ({maps}, {o['pairs']} boxed image-class pairs, {o['classes']} classes): "
        f"pointing {o['macro_pointing']:.3f}, mass inside boxes {o['macro_mass_inside']:.3f} "
        f"(chance {o['macro_chance']:.3f})"
    )


@app.command()
def train(
    config: ConfigOption,
    overrides: Overrides = None,
    run_dir: RunDirOption = None,
) -> None:
    """Prepare (if needed) and train the configured model in two stages; resumes a killed run.

    Multi-GPU / multi-node: `accelerate launch -m trcgl.cli train -c ...` (see the README)."""
    from trcgl.stages.train import train as run_train

    try:
        cfg = load_config(config, overrides or [])
        out = _run_dir(cfg, run_dir)
        state = _prepared(cfg, out)
        result = run_train(cfg, out)
    except TrcglError as exc:
        _fail(exc)
    if not state.is_main_process:
        return
    console.print(
        f"best validation mAP {result['best_val_mAP']:.4f} at epoch {result['best_epoch']} "
        f"({result['epochs_run']} epochs, {result['steps']} steps"
        + (", stopped early" if result["stopped_early"] else "")
        + ")"
    )
    console.print(f"model folder: [bold]{out / 'model'}[/]")


@app.command("evaluate")
def evaluate_cmd(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="A trained run directory.")],
    model: Annotated[
        Path | None, typer.Option(help="Model folder (default: RUN_DIR/model).")
    ] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate: val or test.")] = "val",
    batch_size: int = 32,
    workers: int = 0,
    bootstrap: Annotated[
        int,
        typer.Option(help="Patient-level bootstrap resamples for the 95 % intervals (0: none)."),
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap resamples.")] = 0,
    f1_at: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated fixed F1 thresholds, e.g. 0.5,0.2 (default: the model's "
            "training config, evaluate.f1_thresholds)."
        ),
    ] = None,
    empty_classes: Annotated[
        str | None,
        typer.Option(
            help="Classes without positives: exclude (named, left out of the means) or count "
            "(AP 0, AUC 0.5, as the authors' code). Default: the model's training config."
        ),
    ] = None,
) -> None:
    """Metrics of a model on a split, with patient-level bootstrap intervals: metrics.json,
    per-class table, Tables 1–2 layouts."""
    from trcgl.stages.evaluate import evaluate_run

    try:
        if empty_classes not in (None, "exclude", "count"):
            raise ConfigError(f"--empty-classes takes exclude or count, got {empty_classes!r}")
        try:
            thresholds = [float(t) for t in f1_at.split(",")] if f1_at else None
        except ValueError:
            raise ConfigError(f"--f1-at takes comma-separated numbers, got {f1_at!r}") from None
        if thresholds is not None and not all(0 < t < 1 for t in thresholds):
            raise ConfigError(f"--f1-at thresholds must lie in (0, 1), got {f1_at!r}")
        ev = evaluate_run(
            run_dir,
            model,
            split,
            batch_size,
            workers,
            bootstrap_resamples=bootstrap,
            seed=seed,
            f1_thresholds=thresholds,
            empty_classes=empty_classes,
        )
    except TrcglError as exc:
        _fail(exc)
    console.print(metrics_table(f"{ev.name} on {split}", ev.report.summary))
    for dataset, report in ev.datasets.items():
        console.print(metrics_table(f"{ev.name} on {split}, {dataset} images", report.summary))
    if ev.intervals is not None:
        console.print(
            intervals_table(
                f"95 % intervals (patient-level bootstrap, {bootstrap:,} resamples)",
                ev.report.summary,
                ev.intervals,
            )
        )
    if ev.calibration is not None:
        cal = ev.calibration
        console.print(
            f"calibration: macro ECE {cal['macro_ece']:.4f} ({cal['bins']} bins); after "
            f"temperature scaling (T = {cal['temperature']:.3f}, fitted on val) "
            f"{cal['macro_ece_after_temperature']:.4f}"
        )
    if ev.localisation is not None:
        console.print(localisation_line(ev.localisation))
    if ev.report.excluded:
        console.print(
            f"[yellow]no positives in {split}, left out:[/] {', '.join(ev.report.excluded)}"
        )
    if split == "val":
        console.print("F1 tuned: thresholds tuned on this same split (optimistic)")
    console.print(f"written to [bold]{ev.out_dir}[/]")


@app.command()
def compare(
    folders: Annotated[
        list[Path],
        typer.Argument(
            help="Evaluated run directories or experiment variant folders; the first: reference."
        ),
    ],
    split: Annotated[str, typer.Option(help="The evaluated split: val or test.")] = "val",
    bootstrap: Annotated[int, typer.Option(help="Patient-level bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the resamples.")] = 0,
) -> None:
    """Paired patient-level bootstrap of two or more evaluated models on the same images: each
    model against the first, per metric and frequency group, with 95 % intervals and p-values."""
    from trcgl.stages.compare import compare_runs

    try:
        result = compare_runs(folders, split, bootstrap, seed)
    except TrcglError as exc:
        _fail(exc)
    from trcgl.evaluation.bootstrap import format_interval

    console.print(
        f"paired bootstrap on {split}: {result.resamples:,} resamples of {result.patients:,} "
        "patients, the same for every model; Δ = model − reference"
    )
    frame = result.frame
    if len(frame):
        console.print(f"reference: {escape(str(frame['reference'].iloc[0]))}")
    for folder, rows in frame.groupby("folder", sort=False):
        table = Table(title=escape(f"{rows['model'].iloc[0]} ({folder})"), title_justify="left")
        for col in ("subset", "metric", "ref.", "model", "Δ", "Δ 95 % CI", "p"):
            table.add_column(col, justify="left" if col in ("subset", "metric") else "right")
        for row in rows.to_dict("records"):
            p = row["p"]
            table.add_row(
                row["subset"],
                row["metric"],
                f"{row['reference value']:.4f}",
                f"{row['value']:.4f}",
                f"{row['difference']:+.4f}",
                format_interval(row["difference low"], row["difference high"], 3),
                "–" if p is None or p != p else f"{p:.3f}",
            )
        console.print(table)
    console.print(f"written to [bold]{result.csv}[/] and [bold]{result.markdown}[/]")


@app.command()
def predict(
    model: Annotated[Path, typer.Option(help="Model folder (from trcgl train).")],
    images: Annotated[Path, typer.Argument(help="A folder of PNG/JPEG/DICOM images, or a CSV.")],
    out: Annotated[Path, typer.Option(help="Output CSV (ImageID + one column per class).")] = Path(
        "predictions.csv"
    ),
    image_root: Annotated[Path | None, typer.Option(help="Root of relative CSV paths.")] = None,
    batch_size: int = 32,
    workers: int = 0,
    skip_corrupt: Annotated[bool, typer.Option(help="Skip and list unreadable images.")] = False,
    binary: Annotated[
        bool,
        typer.Option(
            help="Add 0/1 columns pred:<class> from the thresholds the model folder keeps "
            "(tuned on validation by trcgl evaluate)."
        ),
    ] = False,
    tta: Annotated[str, typer.Option(help="Test-time augmentation: none or hflip.")] = "none",
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrated",
            help="Temperature-scaled probabilities (the T the model folder keeps, fitted on "
            "validation by trcgl evaluate); rankings and --binary decisions do not change.",
        ),
    ] = False,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:1, … (default: cuda when available).")
    ] = None,
) -> None:
    """Probabilities for new images, in the CXR-LT submission layout (with --binary, also the
    0/1 decisions at the model folder's tuned thresholds)."""
    import pandas as pd
    import torch

    from trcgl.errors import DataError
    from trcgl.evaluation.inference import (
        binary_columns,
        calibrated,
        list_images,
        predict_files,
    )
    from trcgl.files import atomic_write_text
    from trcgl.models.base import DECISIONS_FILE, load_model

    try:
        m = load_model(model)
        if binary and not (m.decisions or {}).get("thresholds"):
            raise DataError(
                f"the model folder has no tuned thresholds ({DECISIONS_FILE}): run `trcgl "
                "evaluate --run-dir RUN` on its run once, or leave out --binary",
                path=model,
            )
        table = list_images(images, image_root)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        preds = predict_files(
            m,
            table,
            batch_size,
            workers,
            skip_corrupt=skip_corrupt,
            device=device,
            tta=None if tta == "none" else tta,
        )
        frame = preds.to_frame()
        if calibrate:
            frame[list(m.classes)] = calibrated(preds.probabilities, m)
        if binary:
            decided = binary_columns(preds.probabilities, m.classes, m.decisions["thresholds"])
            frame = pd.concat([frame, decided], axis=1)
    except TrcglError as exc:
        _fail(exc)
    atomic_write_text(out, frame.to_csv(index=False))
    console.print(f"{len(preds.image_ids):,} images → [bold]{out}[/]")
    if preds.skipped:
        skipped = out.with_name(out.stem + "_skipped.txt")
        atomic_write_text(skipped, "\n".join(preds.skipped) + "\n")
        console.print(f"[yellow]skipped {len(preds.skipped)} unreadable images[/]: {skipped}")


@app.command()
def export(
    model: Annotated[Path, typer.Option(help="Model folder (from trcgl train).")],
    out: Annotated[Path, typer.Option(help="Output file (.onnx, .pt or .pt2).")],
    format_: Annotated[
        str, typer.Option("--format", help="onnx, torchscript or exported-program.")
    ] = "onnx",
    attention: Annotated[
        bool, typer.Option(help="Also output the class attention maps (TRCGL-Net, CSRA).")
    ] = False,
    size: Annotated[int | None, typer.Option(help="Input size (default: the model's).")] = None,
) -> None:
    """Export a model folder for deployment without trcgl: normalised images in, class
    probabilities (and attention maps) out; a .json beside it describes the input."""
    from trcgl.models.base import load_model
    from trcgl.models.export import export_model

    try:
        path, meta = export_model(load_model(model), out, format_, attention=attention, size=size)
    except TrcglError as exc:
        _fail(exc)
    console.print(f"{format_} → [bold]{path}[/] (inputs and outputs described in {meta.name})")


@app.command()
def explain(
    model: Annotated[Path, typer.Option(help="Model folder.")],
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("explain"),
    top_k: Annotated[int, typer.Option(help="Classes shown in Fig. 4.")] = 3,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Run directory: use its tuned thresholds and true labels in Fig. 5."),
    ] = None,
) -> None:
    """Fig. 4 (attention maps of the top-k classes) and Fig. 5 (confidences) per image."""
    from trcgl.evaluation.explain import explain_images
    from trcgl.models.base import load_model
    from trcgl.stages.evaluate import explain_context

    try:
        m = load_model(model)
        thresholds, labels = explain_context(run_dir, m.classes) if run_dir else (None, None)
        written = explain_images(m, images, out, top_k, thresholds, labels)
    except TrcglError as exc:
        _fail(exc)
    for path in written:
        console.print(str(path))


@app.command()
def report(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="A run directory.")],
    split: Annotated[
        str | None, typer.Option(help="Evaluated split to show (default: test if any, else val).")
    ] = None,
    explain_images: Annotated[
        int, typer.Option(help="Validation images shown in Fig. 4 and Fig. 5.")
    ] = 3,
) -> None:
    """One self-contained report.html: config, data statistics (Fig. 2), synthetic samples
    (Fig. 3), metrics overall / per group / per class, PR curves, Fig. 4 and Fig. 5."""
    from trcgl.stages.report import write_report

    try:
        path = write_report(run_dir, split, explain_images=explain_images)
    except TrcglError as exc:
        _fail(exc)
    console.print(f"report: [bold]{path}[/]")


def _pipeline(cfg, out: Path) -> None:
    """Run every stage and print the one-screen summary."""
    from trcgl.stages.pipeline import run_pipeline

    started = time.time()
    try:
        result = run_pipeline(cfg, out, log=lambda line: console.print(escape(line)))
    except TrcglError as exc:
        _fail(exc)
    if not result.main:  # the other processes of an `accelerate launch`: one summary
        return
    split = result.split
    console.print(metrics_table(f"{cfg.name}: {split} split", result.metrics))
    if result.intervals:
        console.print(
            intervals_table(
                "95 % intervals (patient-level bootstrap)", result.metrics, result.intervals
            )
        )
    if result.localisation is not None:
        console.print(localisation_line(result.localisation))
    if split == "val":
        console.print("F1 tuned: thresholds tuned on this same split (optimistic)")
    syn = result.synthetic
    if syn:
        rejected = ", ".join(f"{n} {why}" for why, n in (syn.get("rejected") or {}).items())
        console.print(
            f"synthetic images: {syn.get('made', 0):,} made, {syn.get('kept', 0):,} kept"
            + (f" (rejected: {rejected})" if rejected else "")
            + f", training weight w_syn = {cfg.train.w_syn:g}"
        )
    console.print(
        f"stages run: {', '.join(result.ran) or 'none'}; skipped as complete: "
        f"{', '.join(result.skipped) or 'none'} ({time.time() - started:.0f} s)"
    )
    console.print(f"report: [bold]{result.report}[/]")


@app.command("run")
def run_cmd(
    config: ConfigOption,
    overrides: Overrides = None,
    run_dir: RunDirOption = None,
) -> None:
    """The whole method in one run directory: prepare, diffusion train / sample / filter,
    two-stage training, evaluation, report.html. Complete stages are skipped; a killed run
    resumes where it stopped.

    Several GPUs or nodes: `accelerate launch -m trcgl.cli run -c ...` (see the README)."""
    try:
        cfg = load_config(config, overrides or [])
    except TrcglError as exc:
        _fail(exc)
    _pipeline(cfg, _run_dir(cfg, run_dir))


@app.command()
def demo(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Run directory.")] = Path("runs/demo"),
    overrides: Overrides = None,
) -> None:
    """The whole pipeline on the real NIH ChestX-ray14 sample shipped with trcgl, on the CPU
    (preset nih-demo: 2,279 images, tiny generator, ConvNeXtV2-atto), in minutes."""
    try:
        cfg = load_config("nih-demo", overrides or [])
    except TrcglError as exc:
        _fail(exc)
    _pipeline(cfg, run_dir)


@app.command()
def experiment(
    table: Annotated[str, typer.Argument(help="table1 … table5 (the paper's tables).")],
    config: ConfigOption,
    overrides: Overrides = None,
    run_dir: RunDirOption = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="key=value applied to every variant after its preset (repeatable)."
        ),
    ] = None,
    only: Annotated[
        str | None, typer.Option(help="Comma-separated variant names to run (default: all).")
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated train.seed values: each variant is trained once per seed and "
            "the table gives mean ± sd over them (e.g. 0,1,2)."
        ),
    ] = None,
) -> None:
    """Reproduce one of the paper's tables: train and evaluate each variant on the run's data
    (finished variants are reused), print the table, write experiments/TABLE.csv and .md."""
    from trcgl.stages.experiments import TITLES, cell, run_experiment

    try:
        cfg = load_config(config, overrides or [])
        names = [n.strip() for n in only.split(",")] if only else None
        seed_list = _seeds(seeds) if seeds else None
        result = run_experiment(
            cfg,
            _run_dir(cfg, run_dir),
            table,
            extra=set_ or [],
            only=names,
            seeds=seed_list,
            log=lambda line: console.print(escape(line)),
        )
    except TrcglError as exc:
        _fail(exc)
    frame = result.frame
    out = Table(title=f"{TITLES[table]} ({cfg.name}, {result.split})")
    for col in frame.columns:
        out.add_column(str(col), justify="left" if col == "method" else "right")
    for row in frame.itertuples(index=False):
        out.add_row(*(cell(v) for v in row))
    console.print(out)
    console.print(f"written to [bold]{result.csv}[/] and [bold]{result.markdown}[/]")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds needs distinct integers, got {text!r}")
    return seeds


@app.command("list")
def list_cmd() -> None:
    """What a configuration can choose by name: presets (`-c`), data formats (`data.format`),
    architectures (`model.architecture`), losses (`train.loss`, with the options
    `train.loss_options` takes) and generator families (`diffusion.generator`)."""
    import inspect

    from trcgl.registry import ARCHITECTURES, DATA_FORMATS, GENERATORS, LOSSES

    def first_line(obj: object) -> str:
        return (inspect.getdoc(obj) or "").split("\n\n")[0].replace("\n", " ")

    console.print("[bold]presets[/] (-c): " + ", ".join(preset_names()), soft_wrap=True)
    tables = {
        ("data formats (data.format)", "reads"): [
            (name, DATA_FORMATS.get(name).description) for name in DATA_FORMATS.names()
        ],
        ("architectures (model.architecture)", "what"): [
            (name, first_line(ARCHITECTURES.get(name))) for name in ARCHITECTURES.names()
        ],
        ("losses (train.loss)", "options (train.loss_options)"): [
            (name, ", ".join(LOSSES.get(name).options())) for name in LOSSES.names()
        ],
        ("generator families (diffusion.generator)", "class"): [
            (name, GENERATORS.get(name)) for name in GENERATORS.names()
        ],
    }
    for (title, column), rows in tables.items():
        out = Table(title=title, title_justify="left")
        out.add_column("name", no_wrap=True)
        out.add_column(column)
        for name, text in rows:
            out.add_row(name, escape(text))
        console.print(out)


diffusion_app = typer.Typer(
    help="Prompt-latent diffusion for the tail classes: train, sample, filter (docs/method.md §1).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(diffusion_app, name="diffusion")
ForceOption = Annotated[bool, typer.Option(help="Redo the stage even if it is complete.")]


def _diffusion_stage(
    name: str, config: list[str], overrides: list[str] | None, run_dir: Path | None, force: bool
) -> tuple[dict, Path]:
    """Prepare the run if needed, then run one diffusion stage; errors end the command. Under
    `accelerate launch`: the main process prepares, and only it returns, with the record to
    print."""
    from trcgl.stages import diffusion as stage

    try:
        cfg = load_config(config, overrides or [])
        out = _run_dir(cfg, run_dir)
        state = _prepared(cfg, out)
        record = getattr(stage, f"{name}_stage")(cfg, out, force=force)
    except TrcglError as exc:
        _fail(exc)
    if not state.is_main_process:
        raise typer.Exit()  # only the main process prints the record
    return record, out


@diffusion_app.command("train")
def diffusion_train(
    config: ConfigOption,
    overrides: Overrides = None,
    run_dir: RunDirOption = None,
    force: ForceOption = False,
) -> None:
    """Train the generator (Eq. 3) on the run's real tail images; resumes a killed run."""
    record, out = _diffusion_stage("train", config, overrides, run_dir, force)
    if record.get("skipped"):
        console.print(f"[yellow]nothing to train:[/] {record['skipped']}")
        return
    console.print(
        f"generator trained on {record['images']:,} images, {record['steps']} steps: loss "
        f"(Eq. 3, fixed batch) {record['loss_before']:.4f} → {record['loss_after']:.4f}"
    )
    console.print(f"generator: [bold]{RunDir(out).resolve(record['generator'])}[/]")


@diffusion_app.command("sample")
def diffusion_sample(
    config: ConfigOption,
    overrides: Overrides = None,
    run_dir: RunDirOption = None,
    force: ForceOption = False,
) -> None:
    """Generate the tail planner's images (Eq. 4–6) with the trained generator; resumable."""
    record, out = _diffusion_stage("sample", config, overrides, run_dir, force)
    per_class = record.get("per_class") or {}
    console.print(
        f"{record['made']:,} synthetic images"
        + (": " + ", ".join(f"{c} {n}" for c, n in per_class.items()) if per_class else "")
    )
    console.print(f"written to [bold]{out / 'synthetic' / 'images'}[/]")


@diffusion_app.command("filter")
def diffusion_filter(
    config: ConfigOption,
    overrides: Overrides = None,
    run_dir: RunDirOption = None,
    force: ForceOption = False,
) -> None:
    """Keep the synthetic images a real-data classifier recognises and that copy no training
    image; they become training rows (source=synthetic, weight=w_syn) and Fig. 3."""
    record, out = _diffusion_stage("filter", config, overrides, run_dir, force)
    console.print(synthetic_table(record))
    console.print(f"Fig. 3: [bold]{out / 'synthetic' / 'samples.png'}[/]")


def synthetic_table(record: dict) -> Table:
    """Made / kept / rejected per tail class."""
    table = Table(
        title=f"synthetic images: {record.get('kept', 0):,} kept of {record.get('made', 0):,}"
    )
    for col in ("class", "planned", "made", "kept", "near-copy", "low prob."):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, c in (record.get("per_class") or {}).items():
        table.add_row(
            name,
            str(c.get("planned", "")),
            str(c["made"]),
            str(c["kept"]),
            str(c["near_copy"]),
            str(c["low_probability"]),
        )
    return table


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
