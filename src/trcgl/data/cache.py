"""Preprocessing cache: every radiograph decoded once, resized, and stored as a small 8-bit PNG.

Decoding a 16-bit 2,500² PadChest PNG or a DICOM costs tens of milliseconds; doing it every
epoch would starve the model. :func:`build_image_cache` does it once per image:
:func:`~trcgl.data.images.read_image` → square resize → 8-bit grayscale PNG under a cache root,
in parallel worker processes, with a progress bar.

Decisions:

* **Layout.** ``cached_path(cache_root, image)`` is the manifest's relative image path with its
  suffix replaced by ``.png``, so the cache mirrors the image folder and a manifest is pointed at
  it by :func:`cached_relpath` alone. Absolute paths (and relative ones that climb out with
  ``..``) go under ``_abs/<12 hex digits of SHA-1 of the parent folder>/<stem>.png``: stable
  across runs and machines that use the same paths, and never outside the cache root.
* **One size per folder.** The cache root holds ``cache_info.json`` (size, format, resampling
  filter). Building into a folder made at another size raises :class:`~trcgl.errors.DataError`:
  keep one folder per size (e.g. ``cache/224``), chosen by the caller.
* **Resampling.** Images are resized straight to ``size × size`` (chest radiographs are close to
  square; the training transform squashes the same way) with Pillow's Lanczos filter and
  ``reducing_gap=3.0``: Pillow first shrinks by an integer factor with a box filter and does the
  last step with Lanczos. On a 2,500×2,048 image → 224 px this took 5 ms instead of 30 ms,
  and differed from a full Lanczos resize by at most 2 grey levels (mean 0.2).
* **PNG.** 8-bit grayscale, zlib level 1: about 3× faster to write than Pillow's default
  level 6, files about 15 % larger, as fast to read back. The bytes depend only on the input,
  so serial and parallel runs give identical files.
* **Workers.** ``workers > 1`` uses a ``ProcessPoolExecutor`` over chunks of images, with the
  ``forkserver`` start method (this module preloaded) where available, ``spawn`` elsewhere:
  never a plain ``fork`` of a parent that may already run torch or OpenCV threads. Both start
  methods import the program's main module again in each worker (for ``trcgl``, the
  command-line module), so :mod:`trcgl.cli` imports no torch and a worker starts in about half a
  second.
* **Resumable and atomic.** Each PNG is written through :func:`~trcgl.files.atomic_path`, so a
  killed run leaves no half-written PNG (at most a hidden ``.name.*.tmp.png``, never read);
  outputs that already exist are skipped, so running again finishes the job.
* **Corrupt inputs.** A missing or undecodable image raises
  :class:`~trcgl.errors.ImageReadError` naming the file (and its manifest row when ``rows`` is
  given); with ``skip_corrupt=True`` it is skipped and listed in :attr:`CacheReport.skipped`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from pathlib import Path, PurePath, PurePosixPath

import numpy as np
from PIL import Image

from trcgl.data.images import read_image
from trcgl.errors import ConfigError, DataError, ImageReadError
from trcgl.files import atomic_path, atomic_write_text
from trcgl.progress import progress as progress_reporter

__all__ = [
    "CACHE_INFO_NAME",
    "CacheReport",
    "build_image_cache",
    "cached_path",
    "cached_relpath",
    "resize_square",
]

CACHE_INFO_NAME = "cache_info.json"
_CACHE_FORMAT = "png-8bit-grayscale"
_RESAMPLE = "lanczos, reducing_gap=3.0"
_REDUCING_GAP = 3.0
_PNG_COMPRESS_LEVEL = 1  # see "PNG" in the module docstring
_ABS_DIR = "_abs"


@dataclass
class CacheReport:
    """What :func:`build_image_cache` did.

    Attributes:
        written: images decoded, resized and written in this run.
        already_present: images whose cached PNG existed already and were left alone.
        skipped: ``(image, reason)`` for each unreadable input (only with ``skip_corrupt``).
    """

    written: int = 0
    already_present: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def write_skipped_list(self, path: str | Path) -> None:
        """Write the skipped images as a CSV with columns ``image,reason`` (atomically)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["image", "reason"])
        writer.writerows(self.skipped)
        atomic_write_text(path, buf.getvalue())


def cached_relpath(image: str | os.PathLike[str]) -> str:
    """The cache-relative POSIX path of a manifest ``image`` entry (suffix replaced by ``.png``).

    Use it to point a manifest at a cache: ``manifest.image.map(cached_relpath)`` with the cache
    root as image root. Absolute paths and paths with ``..`` map to
    ``_abs/<sha1(parent)[:12]>/<stem>.png``.
    """
    raw = os.fspath(image)
    if not raw:
        raise DataError("empty image path", column="image")
    # Accept both separators so that a manifest written on Windows maps the same way.
    posix = raw.replace("\\", "/")
    pure = PurePosixPath(posix)
    is_abs = pure.is_absolute() or PurePath(raw).is_absolute() or (len(raw) > 1 and raw[1] == ":")
    if is_abs or ".." in pure.parts:
        parent = str(pure.parent)
        digest = hashlib.sha1(parent.encode("utf-8")).hexdigest()[:12]
        return f"{_ABS_DIR}/{digest}/{_png_name(pure.name)}"
    parts = [p for p in pure.parts if p not in ("", ".")]
    if not parts:
        raise DataError(f"not a file path: {raw!r}", column="image")
    parts[-1] = _png_name(parts[-1])
    return "/".join(parts)


def _png_name(name: str) -> str:
    stem = PurePosixPath(name).stem if PurePosixPath(name).suffix else name
    return f"{stem}.png"


def cached_path(cache_root: str | Path, image: str | os.PathLike[str]) -> Path:
    """Where the cached PNG of manifest entry ``image`` lives under ``cache_root``."""
    return Path(cache_root) / cached_relpath(image)


def resize_square(gray: np.ndarray, size: int) -> Image.Image:
    """Resize a 2-D ``uint8`` array to a ``size × size`` mode-"L" image (Lanczos, see module)."""
    img = Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8))
    if img.size == (size, size):
        return img
    return img.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP)


def _source_path(image: str, image_root: Path | None) -> Path:
    p = Path(image)
    if p.is_absolute() or image_root is None:
        return p
    return image_root / p


# ---------------------------------------------------------------------------------------------
# work items: (position, source path, output path) -> (position, error reason or None)


def _process_one(source: str, output: str, size: int) -> str | None:
    """Cache one image; return ``None`` on success or the reason it could not be read."""
    try:
        gray = read_image(source)
    except ImageReadError as exc:
        return exc.reason
    img = resize_square(gray, size)
    with atomic_path(output) as tmp:
        img.save(tmp, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return None


def _process_chunk(items: list[tuple[int, str, str]], size: int) -> list[tuple[int, str | None]]:
    """Worker entry point: process a chunk of items, never raising for a bad input."""
    return [(pos, _process_one(src, out, size)) for pos, src, out in items]


def _chunks(items: list[tuple[int, str, str]], size: int) -> Iterator[list[tuple[int, str, str]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _check_cache_info(cache_root: Path, size: int) -> None:
    """Create ``cache_info.json`` or check that the existing one has the same size."""
    info_path = cache_root / CACHE_INFO_NAME
    wanted = {"size": size, "format": _CACHE_FORMAT, "resample": _RESAMPLE, "version": 1}
    if info_path.exists():
        try:
            found = json.loads(info_path.read_text(encoding="utf-8"))
            found_size = int(found["size"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"unreadable cache info ({exc}); delete it or use another cache folder",
                path=info_path,
            ) from exc
        if found_size != size:
            raise DataError(
                f"this cache folder holds {found_size} px images but {size} px were asked for; "
                "use one cache folder per size",
                path=info_path,
            )
        return
    cache_root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(info_path, json.dumps(wanted, indent=2) + "\n")


def _mp_context() -> BaseContext:
    """``forkserver`` where available (no fork of a threaded parent, e.g. one that ran torch),
    with this module preloaded so workers start fast; ``spawn`` elsewhere."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return mp.get_context("spawn")


def build_image_cache(
    images: Sequence[str],
    image_root: str | Path | None,
    cache_root: str | Path,
    size: int,
    workers: int = 2,
    skip_corrupt: bool = False,
    progress: bool = True,
    rows: Sequence[object] | None = None,
) -> CacheReport:
    """Decode, resize to ``size × size`` and store every image as an 8-bit PNG under ``cache_root``.

    Args:
        images: manifest ``image`` entries, relative to ``image_root`` or absolute. Duplicates
            are processed once.
        image_root: folder the relative entries are relative to (``None``: the working folder).
        cache_root: cache folder for this ``size``; outputs are at :func:`cached_path`.
        size: output side in pixels.
        workers: worker processes; ``1`` runs in this process.
        skip_corrupt: skip unreadable inputs (listed in the report) instead of raising.
        progress: a bar on a terminal, plain lines elsewhere.
        rows: optional manifest row labels, one per image, quoted in error messages.

    Returns:
        A :class:`CacheReport` with the counts and the skipped inputs.

    Raises:
        ImageReadError: an input is missing or corrupt and ``skip_corrupt`` is false; outputs
            written so far are kept, so a re-run resumes.
        DataError: ``cache_root`` was built at another size, or two inputs map to one output.
        ConfigError: ``size`` or ``workers`` is not a positive integer, or ``rows`` has the
            wrong length.
    """
    if int(size) != size or size < 1:
        raise ConfigError(f"cache size must be a positive integer, got {size!r}")
    if int(workers) != workers or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if rows is not None and len(rows) != len(images):
        raise ConfigError(f"rows has {len(rows)} entries but images has {len(images)}")
    size, workers = int(size), int(workers)
    root = None if image_root is None else Path(image_root)
    cache_root = Path(cache_root)
    _check_cache_info(cache_root, size)

    report = CacheReport()
    # Resolve outputs, drop duplicates, detect collisions, and skip what is already there.
    todo: list[tuple[int, str, str]] = []
    owner_of_output: dict[Path, str] = {}
    for pos, image in enumerate(images):
        if not isinstance(image, (str, os.PathLike)):
            where = "" if rows is None else f" (manifest row {rows[pos]})"
            raise DataError(f"image entry {image!r} is not a path{where}", column="image")
        image = os.fspath(image)
        out = cached_path(cache_root, image)
        owner = owner_of_output.get(out)
        if owner is not None:
            if owner != image:
                raise DataError(
                    f"images {owner!r} and {image!r} map to the same cache file {out}",
                    column="image",
                )
            continue
        owner_of_output[out] = image
        if out.exists():
            report.already_present += 1
        else:
            todo.append((pos, str(_source_path(image, root)), str(out)))

    def handle(results: list[tuple[int, str | None]]) -> None:
        for pos, reason in results:
            if reason is None:
                report.written += 1
                continue
            image = os.fspath(images[pos])
            if not skip_corrupt:
                where = "" if rows is None else f" (manifest row {rows[pos]})"
                raise ImageReadError(f"{reason}{where}", path=_source_path(image, root))
            report.skipped.append((image, reason))

    with _progress_bar(progress, len(todo), size) as advance:
        if workers == 1 or len(todo) <= 1:
            for item in todo:
                handle(_process_chunk([item], size))
                advance(1)
        else:
            # Small chunks keep the bar moving and the load balanced; at least a few images per
            # task so the inter-process overhead stays small next to decoding.
            chunk = max(1, min(32, len(todo) // (workers * 8)))
            with ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context()) as pool:
                pending: set[Future[list[tuple[int, str | None]]]] = set()
                try:
                    for part in _chunks(todo, chunk):
                        pending.add(pool.submit(_process_chunk, part, size))
                    while pending:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            results = fut.result()
                            handle(results)
                            advance(len(results))
                except BaseException:
                    # Stop handing out work; chunks already running finish their files.
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    return report


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, size: int) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``: a bar on a terminal, plain lines elsewhere, a no-op if disabled."""
    reporter = progress_reporter(
        f"caching images at {size} px", total, unit="images", enabled=enabled
    )
    try:
        yield reporter.advance
    finally:
        reporter.close()
