"""Open a run's ``report.html`` in a real headless Chromium and check it loads cleanly.

    python scripts/check_report.py RUN_DIR [--split val] [--rewrite] [--screenshot PATH]

Writes ``RUN_DIR/report.html`` when it is missing (or with ``--rewrite``), opens it from a
``file://`` URL in Debian's ``chromium`` (``apt-get install chromium``) driven by Playwright
(``pip install playwright``; never ``playwright install``: no browser is downloaded), then
prints the console errors, page errors, requests for anything but ``file:`` / ``data:`` URLs
and images that did not decode, and saves a full-page screenshot next to the report
(``report.png``). Exits 1 when any of those lists is not empty, 2 when no browser is available.

``tests/stages/test_report_browser.py`` runs the same check (:func:`check_in_browser`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}


@dataclass
class BrowserCheck:
    """What the browser saw while loading the page."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    #: ``(alt, naturalWidth)`` of every ``<img>``.
    images: list[tuple[str, int]] = field(default_factory=list)
    headings: list[str] = field(default_factory=list)
    table_ids: list[str] = field(default_factory=list)
    page_height: int = 0
    viewport_height: int = VIEWPORT["height"]

    @property
    def broken_images(self) -> list[str]:
        return [alt for alt, width in self.images if width <= 0]

    @property
    def problems(self) -> list[str]:
        return (
            [f"console error: {m}" for m in self.console_errors]
            + [f"page error: {m}" for m in self.page_errors]
            + [f"external request: {u}" for u in self.external_requests]
            + [f"image did not load: {a}" for a in self.broken_images]
        )


def browser_unavailable() -> str | None:
    """Why the check cannot run here, or ``None`` when it can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (apt-get install --no-install-recommends chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install -e '.[dev]')"
    return None


def check_in_browser(report: Path, screenshot: Path) -> BrowserCheck:
    """Load ``report`` in headless Chromium, record what went wrong, save a screenshot."""
    from playwright.sync_api import sync_playwright

    result = BrowserCheck()

    def on_request(request) -> None:
        if not request.url.startswith(("file:", "data:")):
            result.external_requests.append(request.url)

    def on_console(message) -> None:
        if message.type == "error":
            result.console_errors.append(message.text)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("console", on_console)
            page.on("pageerror", lambda exc: result.page_errors.append(str(exc)))
            page.on("request", on_request)
            page.goto(report.resolve().as_uri(), wait_until="load")
            result.images = [
                (str(alt), int(width))
                for alt, width in page.eval_on_selector_all(
                    "img", "els => els.map(e => [e.alt, e.complete ? e.naturalWidth : 0])"
                )
            ]
            result.headings = page.eval_on_selector_all(
                "h1, h2, h3", "els => els.map(e => e.textContent.trim())"
            )
            result.table_ids = page.eval_on_selector_all("table[id]", "els => els.map(e => e.id)")
            result.page_height = int(page.evaluate("document.documentElement.scrollHeight"))
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--split", default=None, help="evaluated split (default: test, else val)")
    parser.add_argument("--rewrite", action="store_true", help="write the report even if present")
    parser.add_argument("--explain-images", type=int, default=3)
    parser.add_argument("--screenshot", type=Path, default=None, help="default: RUN/report.png")
    args = parser.parse_args(argv)

    why = browser_unavailable()
    if why:
        print(f"cannot check in a browser: {why}", file=sys.stderr)
        return 2
    from trcgl.stages.report import REPORT_NAME, write_report

    report = args.run_dir / REPORT_NAME
    if args.rewrite or not report.is_file():
        report = write_report(args.run_dir, args.split, explain_images=args.explain_images)
        print(f"wrote {report}")
    screenshot = args.screenshot or report.with_suffix(".png")
    result = check_in_browser(report, screenshot)
    print(
        f"{len(result.images)} images, {len(result.table_ids)} tables, page "
        f"{result.page_height} px tall; screenshot: {screenshot}"
    )
    for problem in result.problems:
        print(problem)
    if result.problems:
        return 1
    print("no console errors, no page errors, nothing fetched, every image decoded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
