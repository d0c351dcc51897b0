"""build_image_cache: size, resume, corrupt inputs, parallel == serial, atomic outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trcgl.data.cache import (
    CACHE_INFO_NAME,
    CacheReport,
    build_image_cache,
    cached_path,
    cached_relpath,
)
from trcgl.data.images import read_image
from trcgl.errors import ConfigError, DataError, ImageReadError

SIZE = 32


def synthetic(h: int, w: int, high: float, seed: int) -> np.ndarray:
    """A gradient-plus-noise image, so resampling has structure to work on."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = (np.sin(yy / 7.0) + np.cos(xx / 5.0) + 2.0) / 4.0 * high
    noise = np.random.default_rng(seed).normal(0.0, high * 0.03, size=(h, w))
    return np.clip(base + noise, 0, high)


@pytest.fixture
def image_root(tmp_path: Path) -> tuple[Path, list[str]]:
    """A folder of mixed inputs (16-bit, 8-bit, RGB JPEG, odd sizes) and their manifest paths."""
    root = tmp_path / "images"
    names: list[str] = []
    for i in range(10):
        sub = root / f"p{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        h, w = 60 + 7 * i, 50 + 5 * i
        if i % 3 == 0:
            name = f"p{i % 3}/img{i}.png"
            Image.fromarray(synthetic(h, w, 4095.0, i).astype(np.uint16)).save(root / name)
        elif i % 3 == 1:
            name = f"p{i % 3}/img{i}.png"
            Image.fromarray(synthetic(h, w, 255.0, i).astype(np.uint8)).save(root / name)
        else:
            name = f"p{i % 3}/img{i}.jpg"
            rgb = np.stack([synthetic(h, w, 255.0, i).astype(np.uint8)] * 3, axis=-1)
            Image.fromarray(rgb).save(root / name, quality=90)
        names.append(name)
    return root, names


def corrupt(root: Path, name: str = "bad/corrupt_one.png") -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic(64, 64, 255.0, 9).astype(np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return name


def temp_leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


def test_cached_relpath_layout() -> None:
    assert cached_relpath("a/b/c.dcm") == "a/b/c.png"
    assert cached_relpath("./a/c.jpeg") == "a/c.png"
    assert cached_relpath("noext") == "noext.png"
    assert cached_relpath("a\\b\\c.jpg") == "a/b/c.png"
    absolute = cached_relpath("/data/padchest/0/xyz.png")
    assert absolute.startswith("_abs/") and absolute.endswith("/xyz.png")
    assert absolute == cached_relpath("/data/padchest/0/xyz.png")  # stable
    assert absolute != cached_relpath("/data/padchest/1/xyz.png")  # parent matters
    assert cached_relpath("../outside/x.png").startswith("_abs/")  # never leaves the root
    assert cached_path("/cache", "a/b.jpg") == Path("/cache/a/b.png")
    with pytest.raises(DataError):
        cached_relpath("")


def test_writes_right_size_and_info(image_root: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, names = image_root
    cache = tmp_path / "cache"
    report = build_image_cache(names, root, cache, SIZE, workers=1, progress=False)
    assert report == CacheReport(written=len(names), already_present=0, skipped=[])
    for name in names:
        out = cached_path(cache, name)
        with Image.open(out) as img:
            assert img.format == "PNG" and img.mode == "L" and img.size == (SIZE, SIZE)
        # the cached image is the source read the same way, only smaller
        small = np.asarray(Image.fromarray(read_image(root / name)).resize((SIZE, SIZE)))
        assert np.abs(np.asarray(Image.open(out), dtype=int) - small).mean() < 12
    info = json.loads((cache / CACHE_INFO_NAME).read_text())
    assert info["size"] == SIZE
    assert temp_leftovers(cache) == []


def test_rerun_skips_existing(image_root: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, names = image_root
    cache = tmp_path / "cache"
    build_image_cache(names, root, cache, SIZE, workers=1, progress=False)
    stamps = {n: cached_path(cache, n).stat().st_mtime_ns for n in names}
    report = build_image_cache(names, root, cache, SIZE, workers=1, progress=True)
    assert (report.written, report.already_present) == (0, len(names))
    assert stamps == {n: cached_path(cache, n).stat().st_mtime_ns for n in names}


def test_resume_after_partial_run(image_root: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, names = image_root
    cache = tmp_path / "cache"
    first = build_image_cache(names[:4], root, cache, SIZE, workers=1, progress=False)
    assert first.written == 4
    # a marker file pretending to be an output: must be left alone, not recomputed
    cached_path(cache, names[5]).parent.mkdir(parents=True, exist_ok=True)
    cached_path(cache, names[5]).write_bytes(b"kept")
    report = build_image_cache(names + names[:2], root, cache, SIZE, workers=1, progress=False)
    assert (report.written, report.already_present) == (len(names) - 5, 5)
    assert cached_path(cache, names[5]).read_bytes() == b"kept"
    assert all(cached_path(cache, n).exists() for n in names)


def test_corrupt_input_raises_naming_file(
    image_root: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, names = image_root
    bad = corrupt(root)
    images = [*names[:3], bad, *names[3:]]
    with pytest.raises(ImageReadError) as info:
        build_image_cache(
            images, root, tmp_path / "c", SIZE, workers=1, progress=False, rows=range(100, 111)
        )
    assert "corrupt_one.png" in str(info.value)
    assert "manifest row 103" in str(info.value)
    assert info.value.path == str(root / bad)
    assert not cached_path(tmp_path / "c", bad).exists()
    assert temp_leftovers(tmp_path / "c") == []


def test_missing_input_raises(image_root: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, _ = image_root
    with pytest.raises(ImageReadError, match=r"ghost\.png.*not found"):
        build_image_cache(["ghost.png"], root, tmp_path / "c", SIZE, workers=1, progress=False)


def test_skip_corrupt_lists_it(image_root: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, names = image_root
    bad = corrupt(root)
    images = [*names, bad, "missing/none.png"]
    cache = tmp_path / "c"
    report = build_image_cache(
        images, root, cache, SIZE, workers=1, skip_corrupt=True, progress=False
    )
    assert report.written == len(names)
    assert [img for img, _ in report.skipped] == [bad, "missing/none.png"]
    assert all(reason for _, reason in report.skipped)
    listing = tmp_path / "skipped.csv"
    report.write_skipped_list(listing)
    with listing.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == [bad, "missing/none.png"]
    assert "not found" in rows[1]["reason"]
    assert temp_leftovers(tmp_path) == []


def test_parallel_equals_serial_and_parallel_errors(
    image_root: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, names = image_root
    serial = build_image_cache(names, root, tmp_path / "s", SIZE, workers=1, progress=False)
    parallel = build_image_cache(names, root, tmp_path / "p", SIZE, workers=2, progress=False)
    assert serial == parallel
    for name in names:
        assert (
            cached_path(tmp_path / "s", name).read_bytes()
            == cached_path(tmp_path / "p", name).read_bytes()
        )
    assert temp_leftovers(tmp_path / "p") == []

    # the same error handling in worker processes
    bad = corrupt(root)
    with pytest.raises(ImageReadError, match=r"corrupt_one\.png"):
        build_image_cache([*names, bad], root, tmp_path / "p2", SIZE, workers=2, progress=False)
    report = build_image_cache(
        [*names, bad], root, tmp_path / "p3", SIZE, workers=2, skip_corrupt=True, progress=False
    )
    assert report.written == len(names) and [i for i, _ in report.skipped] == [bad]
    assert temp_leftovers(tmp_path) == []


def test_absolute_paths(image_root: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, names = image_root
    absolute = [str(root / n) for n in names[:3]]
    report = build_image_cache(absolute, None, tmp_path / "c", SIZE, workers=1, progress=True)
    assert report.written == 3
    for a in absolute:
        out = cached_path(tmp_path / "c", a)
        assert out.is_relative_to(tmp_path / "c") and out.exists()


def test_other_size_in_same_folder_is_an_error(
    image_root: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, names = image_root
    build_image_cache(names[:2], root, tmp_path / "c", SIZE, workers=1, progress=False)
    with pytest.raises(DataError, match="one cache folder per size"):
        build_image_cache(names, root, tmp_path / "c", SIZE * 2, workers=1, progress=False)


def test_colliding_outputs_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="same cache file"):
        build_image_cache(["a/x.png", "a/x.jpg"], tmp_path, tmp_path / "c", SIZE, progress=False)
    with pytest.raises(ConfigError):
        build_image_cache([], tmp_path, tmp_path / "c", 0)
    with pytest.raises(ConfigError):
        build_image_cache([], tmp_path, tmp_path / "c", SIZE, workers=0)
    report = build_image_cache([], tmp_path, tmp_path / "c", SIZE, progress=False)
    assert report == CacheReport()
