"""``trcgl``: the command-line entry point."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trcgl.config import load_config, preset_names
from trcgl.errors import TrcglError

app = typer.Typer(
    help="TRCGL-Net: long-tailed multi-label chest X-ray classification.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()

ConfigOption = Annotated[
    str,
    typer.Option(
        "--config", "-c", help="YAML file, or a preset name: " + ", ".join(preset_names())
    ),
]
RunDirOption = Annotated[
    Path | None, typer.Option("--run-dir", help="Run directory (default: runs/<config name>).")
]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="Config overrides as key=value, e.g. split.seed=1 data.image_root=/data."),
]


@app.callback()
def _root() -> None:
    """TRCGL-Net: long-tailed multi-label chest X-ray classification."""


def _fail(exc: Exception) -> None:
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
    from trcgl.prepare import STAGE_FILE
    from trcgl.prepare import prepare as run_prepare

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
    info = json.loads((out / "label_stats.json").read_text())
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


def main() -> None:  # pragma: no cover
    app()
