"""Benchmark: preprocessing-cache throughput on PadChest-like 16-bit 1024 px PNGs.

Makes ``--images`` 16-bit 1024×1024 PNGs in a temporary folder (real NIH images from
``/work/shared/data/nih-cxr14-256/images`` upscaled to 1024 px and stretched to a 12-bit range
stored in 16 bits, as PadChest stores them; synthetic images if that folder is absent), then
times :func:`trcgl.data.cache.build_image_cache` → 224 px with ``workers=1`` and ``workers=2``,
each into a fresh cache folder, ``--repeats`` times (default 5), alternating, and reports the median
images/s of each and their ratio in ``benchmarks/results/preprocess.json``.

The times include everything a user waits for: decoding, scaling, resizing, PNG writing and,
for ``workers=2``, starting the worker processes.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_preprocess.py``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from trcgl.data.cache import build_image_cache
from trcgl.files import atomic_write_text

NIH_IMAGES = Path("/work/shared/data/nih-cxr14-256/images")
RESULTS = Path(__file__).resolve().parent / "results"


def make_inputs(folder: Path, n: int, side: int = 1024) -> str:
    """Write ``n`` 16-bit ``side``² PNGs (12 bits used) into ``folder``; return their origin."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(NIH_IMAGES.glob("*.png"))[:n] if NIH_IMAGES.is_dir() else []
    rng = np.random.default_rng(0)
    for i in range(n):
        if i < len(sources):
            with Image.open(sources[i]) as img:
                big = np.asarray(img.convert("L").resize((side, side), Image.Resampling.BICUBIC))
            base = big.astype(np.float64) / 255.0
        else:  # synthetic fallback: smooth gradient + blobs + noise
            yy, xx = np.mgrid[0:side, 0:side] / side
            base = 0.5 + 0.3 * np.sin(6 * xx + i) * np.cos(4 * yy) - 0.2 * xx
        # 12-bit range with a per-image offset and gain, plus detector-like noise, as in PadChest
        lo = rng.integers(100, 600)
        hi = rng.integers(3000, 4095)
        arr = lo + base * (hi - lo) + rng.normal(0, 8, size=base.shape)
        arr16 = np.clip(arr, 0, 4095).astype(np.uint16)
        Image.fromarray(arr16).save(folder / f"img{i:03d}.png")
    return "nih-cxr14-256 upscaled" if sources else "synthetic"


def time_build(names: list[str], root: Path, cache: Path, size: int, workers: int) -> float:
    start = time.perf_counter()
    report = build_image_cache(names, root, cache, size, workers=workers, progress=False)
    elapsed = time.perf_counter() - start
    assert report.written == len(names), report
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "preprocess.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="trcgl-bench-pre-") as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        origin = make_inputs(tmp_path / "in", args.images)
        make_s = time.perf_counter() - t0
        names = sorted(p.name for p in (tmp_path / "in").glob("*.png"))
        input_mb = sum((tmp_path / "in" / n).stat().st_size for n in names) / 1e6
        times: dict[int, list[float]] = {1: [], 2: []}
        load_before = os.getloadavg()
        for rep in range(args.repeats):
            for workers in (1, 2):
                cache = tmp_path / f"cache_w{workers}_r{rep}"
                times[workers].append(time_build(names, tmp_path / "in", cache, args.size, workers))
        load_after = os.getloadavg()

    ips = {w: [len(names) / t for t in ts] for w, ts in times.items()}
    med = {w: statistics.median(v) for w, v in ips.items()}
    result = {
        "benchmark": "build_image_cache 16-bit 1024 px PNG -> 224 px 8-bit PNG",
        "inputs": {
            "count": len(names),
            "origin": origin,
            "format": "16-bit grayscale PNG, 1024x1024, 12-bit value range",
            "total_mb": round(input_mb, 1),
            "seconds_to_make": round(make_s, 2),
        },
        "size": args.size,
        "repeats": args.repeats,
        "images_per_s": {
            "workers_1": {"median": round(med[1], 2), "runs": [round(v, 2) for v in ips[1]]},
            "workers_2": {"median": round(med[2], 2), "runs": [round(v, 2) for v in ips[2]]},
        },
        "ratio_workers2_over_workers1": round(med[2] / med[1], 3),
        "note": "wall time per run, fresh cache folder each; workers=2 includes process start-up",
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"inputs: {len(names)} x 16-bit 1024 px PNG ({origin}, {input_mb:.0f} MB)")
    print(f"workers=1: {med[1]:6.1f} images/s  (runs {', '.join(f'{v:.1f}' for v in ips[1])})")
    print(f"workers=2: {med[2]:6.1f} images/s  (runs {', '.join(f'{v:.1f}' for v in ips[2])})")
    print(f"ratio 2/1: {med[2] / med[1]:.2f}   -> {args.out}")
    print(f"1-min load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")


if __name__ == "__main__":
    main()
