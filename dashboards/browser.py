"""Open a report in headless Chromium (selenium + chromedriver) and report what a reader would see.

Used by the browser test and to take the README screenshot. Needs Debian's ``chromium`` and
``chromium-driver`` (same version; the setup script installs both as root) and selenium (test extra).
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")
CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")
DRIVER = ("/usr/bin/chromedriver", "chromedriver")


def _which(candidates: tuple[str, ...]) -> str | None:
    return next((p for p in (c if Path(c).is_file() else shutil.which(c) for c in candidates) if p), None)


def browser_paths() -> tuple[str | None, str | None]:
    """(chromium, chromedriver) found on this machine, None where missing."""
    return _which(CHROMIUM), _which(DRIVER)


@dataclass
class PageCheck:
    """What the loaded page showed."""

    plots_ready: int                 # figures plotly reported drawn (data-plots-ready)
    plot_divs: int                   # .js-plotly-plot elements in the DOM
    board_rows: int                  # rows of the leaderboard tables
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)   # every resource the page fetched
    plot_error: str = ""
    injected_images: int = 0         # <img> elements other than the prediction grid's own (class pred-img)
    pred_images: int = 0             # prediction-grid images the browser decoded (naturalWidth > 0)
    text: str = ""                   # the page's visible text


def check_report(path: Path, screenshot: Path | None = None, width: int = 1400, height: int = 1000,
                 timeout_s: float = 90.0, full_page: bool = False, scroll_to: str | None = None) -> PageCheck:
    """Load ``path`` offline in headless Chromium, wait for every plot, collect the console and DOM."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, driver_path = browser_paths()
    if chromium is None or driver_path is None:
        raise FileNotFoundError("chromium and chromium-driver are needed (apt-get install chromium chromium-driver)")
    with tempfile.TemporaryDirectory(prefix="segarena-chromium-") as profile:
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
        try:
            driver.set_page_load_timeout(timeout_s)
            driver.get(Path(path).resolve().as_uri())
            WebDriverWait(driver, timeout_s).until(lambda d: d.execute_script(
                "return document.body.getAttribute('data-plots-ready') !== null"
                " || document.body.getAttribute('data-plots-error') !== null"))
            js = driver.execute_script
            check = PageCheck(
                plots_ready=int(js("return document.body.getAttribute('data-plots-ready') || '0'")),
                plot_divs=int(js("return document.querySelectorAll('.js-plotly-plot').length")),
                board_rows=int(js("return document.querySelectorAll('table.board tbody tr').length")),
                requests=list(js("return performance.getEntriesByType('resource').map(e => e.name)")),
                plot_error=str(js("return document.body.getAttribute('data-plots-error') || ''")),
                injected_images=int(js("return document.querySelectorAll('img:not(.pred-img)').length")),
                pred_images=int(js("return Array.from(document.querySelectorAll('img.pred-img'))"
                                   ".filter(i => i.complete && i.naturalWidth > 0).length")),
                text=str(js("return document.body.innerText")))
            check.console_errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            if screenshot is not None:
                if scroll_to:
                    js("const e = document.querySelector(arguments[0]); if (e) e.scrollIntoView();", scroll_to)
                _screenshot(driver, Path(screenshot), width, full_page)
            return check
        finally:
            driver.quit()


def _screenshot(driver, path: Path, width: int, full_page: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not full_page:
        driver.save_screenshot(str(path))
        return
    h = int(driver.execute_script("return document.documentElement.scrollHeight"))
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                               "clip": {"x": 0, "y": 0, "width": width, "height": h,
                                                                        "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


def main(argv: list[str] | None = None) -> int:
    """``python -m segarena.dashboards.browser REPORT.html OUT.png``: check a report, screenshot its first
    dataset section (palette PNG, small enough for a README)."""
    import argparse

    from PIL import Image

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("report", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1050)
    ap.add_argument("--section", default="section.dataset[id^=ds-]", help="CSS selector scrolled to the top")
    args = ap.parse_args(argv)
    page = check_report(args.report, args.png, args.width, args.height, scroll_to=args.section)
    with Image.open(args.png) as im:
        im.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(args.png, optimize=True)
    print(f"{args.png}: {args.png.stat().st_size // 1024} KB · {page.plots_ready} plots drawn · "
          f"{page.board_rows} leaderboard rows · {len(page.console_errors)} console errors")
    return 0 if not page.console_errors and not page.plot_error else 1


if __name__ == "__main__":
    raise SystemExit(main())
