"""Cost as the data grows: time per image and peak memory of each stage at 2k, 8k and 32k images.

    HF_HUB_OFFLINE=1 python benchmarks/bench_scale.py [--sizes 2000 8000 32000]

Each data set is made from the 2,279 vendored NIH images (hard links under new image ids, each
copy with its own patient ids, the rows' real labels), so its images are real and the disk cost
is nil. Every stage runs as a user runs it — ``trcgl prepare`` (the 32 px cache), ``trcgl
train`` (one epoch, ``convnextv2_atto``, batch 64), ``trcgl evaluate`` (with the bootstrap),
``trcgl report`` — each in its own process, whose wall time and peak resident memory
(``wait4``'s ``ru_maxrss``) are recorded, and the command's own time: the process imports torch,
timm and pandas first and times the ``trcgl`` command from there on (starting the interpreter
and importing those libraries take 4–6 s whatever the data, and on a shared machine that time
moves by a second or more from run to run: as much as the image work of a small data set).
Each size's chain of stages runs ``--repeats`` times in fresh run directories; a stage keeps its
least times and its largest peak.

A command's time is a fixed cost (checking the configuration, starting the cache's workers,
drawing the figures, …) plus a cost per image. The fixed cost is measured in the same run, as
the command's time on ``--base`` images, so the time per image at size n is
``(t(n) - t(base)) / (n - base)``: constant from 2k to 32k images when time is linear (the
process's wall time over n, kept beside it, falls with n by the fixed costs alone).
``trcgl report`` reads the metrics, not the images, so its seconds (not a cost per image) are
what is compared across sizes. Then the full 160,861-row PadChest label CSV (from the
torchxrayvision wheel) goes through ``trcgl prepare --config padchest`` (labels only: reading,
mapping, the split and the label graph).

Writes ``benchmarks/results/scale.json``: per size and stage, seconds, peak memory, time per
image and wall time over n; the ratio of time per image at the largest size to the smallest,
per stage and for the pipeline as a whole (prepare + train + evaluate); the ratio of the
report's seconds; the marginal cost of an image between consecutive sizes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import save

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
STAGES = ("prepare", "train", "evaluate", "report")
#: The stages whose work grows with the images (the report reads the metrics only).
PER_IMAGE = ("prepare", "train", "evaluate")


def make_dataset(n: int, folder: Path) -> tuple[Path, Path]:
    """``n`` rows of the vendored NIH sample, cycled: copy k of image i is ``c<k>_<i>`` with
    patient ``<k>_<patient>``; returns the Data_Entry-style CSV and the image folder."""
    sample = resources.files("trcgl") / "resources" / "nih_sample"
    entries = pd.read_csv(Path(str(sample / "Data_Entry_sample.csv")))
    source = Path(str(sample / "images"))
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for j in range(n):
        k, i = divmod(j, len(entries))
        row = entries.iloc[i].copy()
        name = f"c{k}_{row['Image Index']}"
        target = images / name
        if not target.exists():
            os.link(source / row["Image Index"], target)
        row["Image Index"] = name
        row["Patient ID"] = int(k * 1_000_000 + int(row["Patient ID"]))
        rows.append(row)
    csv = folder / "Data_Entry.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv, images


#: Runs ``trcgl <args>`` after importing the libraries every stage loads, and writes the
#: command's own seconds to the file named first.
DRIVER = """
import json, sys, time
import pandas, timm, torch
from trcgl.cli import app
started = time.perf_counter()
try:
    app(sys.argv[2:], prog_name="trcgl")
finally:
    with open(sys.argv[1], "w") as out:
        json.dump({"command_seconds": time.perf_counter() - started}, out)
"""


def timed(args: list[str], log: Path) -> dict[str, float]:
    """Run ``trcgl <args>`` in its own process: its wall seconds, the command's own seconds
    (after the libraries' imports) and its peak resident memory (its own ``ru_maxrss``)."""
    own = log.with_suffix(".json")
    started = time.perf_counter()
    with log.open("w") as out:
        command = [sys.executable, "-c", DRIVER, str(own), *args]
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"trcgl {' '.join(args)} failed:\n{log.read_text()[-3000:]}")
    return {
        "seconds": seconds,
        **json.loads(own.read_text()),
        "peak_rss_gb": usage.ru_maxrss / 2**20,
    }


def run_stages(n: int, work: Path, repeats: int, common: list[str]) -> dict[str, dict]:
    """Each stage over ``repeats`` chains of stages on ``n`` images (each chain in a fresh run
    directory): its least seconds and its largest peak memory."""
    csv, images = make_dataset(n, work / f"data{n}")
    data = [f"data.labels_csv={csv}", f"data.image_root={images}"]
    best: dict[str, dict] = {}
    for repeat in range(repeats):
        run = work / f"run{n}_{repeat}"
        commands = {
            "prepare": ["prepare", "-c", "nih-demo", "--run-dir", str(run), *data, *common],
            "train": ["train", "-c", "nih-demo", "--run-dir", str(run), *data, *common],
            "evaluate": ["evaluate", "--run-dir", str(run)],
            "report": ["report", "--run-dir", str(run)],
        }
        for stage in STAGES:
            row = timed(commands[stage], work / f"{stage}{n}_{repeat}.log")
            print(n, repeat, stage, row, flush=True)
            kept = best.setdefault(stage, row)
            for key in ("seconds", "command_seconds"):
                kept[key] = min(kept[key], row[key])
            kept["peak_rss_gb"] = max(kept["peak_rss_gb"], row["peak_rss_gb"])
        shutil.rmtree(run)
    return best


def per_image(rows: dict, base: dict, stages: tuple[str, ...], n: int, m: int) -> float:
    """Milliseconds per image of ``stages`` together: their commands' seconds at ``n`` images
    (``rows``) less those at ``m`` images (``base``), over ``n - m``."""
    seconds = sum(rows[s]["command_seconds"] - base[s]["command_seconds"] for s in stages)
    return 1000 * seconds / (n - m)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000])
    parser.add_argument("--base", type=int, default=250, help="images of the fixed-cost run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-padchest", action="store_true")
    args = parser.parse_args()
    common = [
        "images.size=32",
        "diffusion.enabled=false",
        "train.warmup_epochs=0",
        "train.epochs=1",
        "train.batch_size=64",
        "train.ema_decay=0",
    ]
    sizes = sorted(args.sizes)
    if args.base >= sizes[0]:
        raise SystemExit(f"--base ({args.base}) must be below the smallest size ({sizes[0]})")
    result: dict = {"settings": common, "repeats": args.repeats, "base_images": args.base}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        base = run_stages(args.base, work, args.repeats, common)
        result["fixed_cost"] = base
        result["sizes"] = {}
        for n in sizes:
            rows = run_stages(n, work, args.repeats, common)
            for stage in PER_IMAGE:
                rows[stage]["ms_per_image"] = per_image(rows, base, (stage,), n, args.base)
                rows[stage]["wall_ms_per_image"] = 1000 * rows[stage]["seconds"] / n
            rows["pipeline"] = {"ms_per_image": per_image(rows, base, PER_IMAGE, n, args.base)}
            result["sizes"][str(n)] = rows
        small, large = result["sizes"][str(sizes[0])], result["sizes"][str(sizes[-1])]
        result["per_image_ratio_largest_to_smallest"] = {
            stage: large[stage]["ms_per_image"] / small[stage]["ms_per_image"]
            for stage in (*PER_IMAGE, "pipeline")
        }
        result["report_seconds_ratio_largest_to_smallest"] = (
            large["report"]["command_seconds"] / small["report"]["command_seconds"]
        )
        result["peak_rss_gb_ratio_largest_to_smallest"] = {
            stage: large[stage]["peak_rss_gb"] / small[stage]["peak_rss_gb"] for stage in STAGES
        }
        # Linear time: the cost of each further image is the same from size to size.
        result["marginal_ms_per_image"] = {
            f"{a}→{b}": {
                stage: per_image(result["sizes"][str(b)], result["sizes"][str(a)], (stage,), b, a)
                for stage in PER_IMAGE
            }
            for a, b in itertools.pairwise(sizes)
        }
        if not args.no_padchest:
            run = work / "padchest"
            rows = timed(
                ["prepare", "--config", "padchest", "--run-dir", str(run)], work / "padchest.log"
            )
            rows["rows"] = int(pd.read_parquet(run / "manifest.parquet").shape[0])
            result["padchest_labels_prepare"] = rows
            print("padchest", rows, flush=True)
    save(result, args.out)


if __name__ == "__main__":
    main()
