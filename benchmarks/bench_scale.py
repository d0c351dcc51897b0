"""Cost as the data grows: time per image and peak memory of each stage at 2k, 8k and 32k images.

    HF_HUB_OFFLINE=1 python benchmarks/bench_scale.py [--sizes 2000 8000 32000]

Each data set is made from the 2,279 vendored NIH images (hard links under new image ids, each
copy with its own patient ids, the rows' real labels), so its images are real and the disk cost
is nil. Every stage runs as a user runs it — ``trcgl prepare`` (the 32 px cache), ``trcgl
train`` (one epoch, ``convnextv2_atto``, batch 64), ``trcgl evaluate`` (with the bootstrap),
``trcgl report`` — each in its own process, whose wall time and peak resident memory
(``wait4``'s ``ru_maxrss``) are recorded; time per image is the wall time less a process's
fixed start-up cost (``trcgl list``, best of 3). Then the full 160,861-row PadChest label CSV (from
the torchxrayvision wheel) goes through ``trcgl prepare --config padchest`` (labels only:
reading, mapping, the split and the label graph).

Writes ``benchmarks/results/scale.json``: per size and stage, seconds, seconds per image and
peak memory; the ratio of seconds per image at the largest size to the smallest (below 1
where a stage has fixed costs); and the marginal cost of an image between consecutive sizes,
which is constant when time is linear.
"""

from __future__ import annotations

import argparse
import itertools
import os
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


def timed(command: list[str], log: Path) -> dict[str, float]:
    """Run ``command``; its wall seconds and peak resident memory (its own ``ru_maxrss``)."""
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(command)} failed:\n{log.read_text()[-3000:]}")
    return {"seconds": seconds, "peak_rss_gb": usage.ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-padchest", action="store_true")
    args = parser.parse_args()
    trcgl = [sys.executable, "-m", "trcgl.cli"]
    common = [
        "images.size=32",
        "diffusion.enabled=false",
        "train.warmup_epochs=0",
        "train.epochs=1",
        "train.batch_size=64",
        "train.ema_decay=0",
    ]
    result: dict = {"sizes": {}, "settings": common}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        # A process's fixed cost (interpreter, imports, the CLI): `trcgl list`, best of 3.
        startup = min(timed([*trcgl, "list"], work / "list.log")["seconds"] for _ in range(3))
        result["startup_seconds"] = startup
        for n in args.sizes:
            csv, images = make_dataset(n, work / f"data{n}")
            run = work / f"run{n}"
            data = [f"data.labels_csv={csv}", f"data.image_root={images}"]
            commands = {
                "prepare": ["prepare", "-c", "nih-demo", "--run-dir", str(run), *data, *common],
                "train": ["train", "-c", "nih-demo", "--run-dir", str(run), *data, *common],
                "evaluate": ["evaluate", "--run-dir", str(run)],
                "report": ["report", "--run-dir", str(run)],
            }
            rows = {}
            for stage in STAGES:
                rows[stage] = timed([*trcgl, *commands[stage]], work / f"{stage}{n}.log")
                own = max(rows[stage]["seconds"] - startup, 0.0)
                rows[stage]["ms_per_image"] = 1000 * own / n
                print(n, stage, rows[stage], flush=True)
            result["sizes"][str(n)] = rows
        small, large = str(min(args.sizes)), str(max(args.sizes))
        result["per_image_ratio_largest_to_smallest"] = {
            stage: result["sizes"][large][stage]["ms_per_image"]
            / result["sizes"][small][stage]["ms_per_image"]
            for stage in STAGES
        }
        # Linear time: the cost of each further image is the same from size to size.
        sizes = sorted(args.sizes)
        result["marginal_ms_per_image"] = {
            f"{a}→{b}": {
                stage: 1000
                * (
                    result["sizes"][str(b)][stage]["seconds"]
                    - result["sizes"][str(a)][stage]["seconds"]
                )
                / (b - a)
                for stage in STAGES
            }
            for a, b in itertools.pairwise(sizes)
        }
        if not args.no_padchest:
            run = work / "padchest"
            rows = timed(
                [*trcgl, "prepare", "--config", "padchest", "--run-dir", str(run)],
                work / "padchest.log",
            )
            rows["rows"] = int(pd.read_parquet(run / "manifest.parquet").shape[0])
            result["padchest_labels_prepare"] = rows
            print("padchest", rows, flush=True)
    save(result, args.out)


if __name__ == "__main__":
    main()
