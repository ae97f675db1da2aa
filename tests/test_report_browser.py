"""The report in a real browser: headless Chromium (Debian's chromium + chromium-driver) through selenium.

Under CI=true a missing browser fails the test: the setup script installs it when run as root.
"""

from __future__ import annotations

import os

import pytest

from segarena.dashboards.browser import browser_paths, check_report
from segarena.dashboards.report import FIGURES_PER_DATASET, write_report_data
from segarena.platform.board.statistics import StatsConfig


def _fixtures():
    import segarena_test_report_fixtures

    return segarena_test_report_fixtures


@pytest.fixture(scope="module")
def browser():
    chromium, driver = browser_paths()
    if chromium is None or driver is None:
        missing = "chromium" if chromium is None else "chromium-driver"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {missing} is missing: run scripts/bootstrap.sh as root")
        pytest.skip(f"{missing} not installed (scripts/bootstrap.sh installs it when run as root)")
    pytest.importorskip("selenium")
    return chromium, driver


def test_report_opens_offline_with_every_plot_and_no_console_error(browser, tmp_path):
    fx = _fixtures()
    data = fx.report_data()
    path = write_report_data(data, tmp_path / "report.html", config=StatsConfig(n_resamples=500))
    shot = tmp_path / "report.png"
    page = check_report(path, screenshot=shot)
    expected = len(fx.DATASETS) * len(FIGURES_PER_DATASET)
    assert page.plot_error == "" and page.console_errors == []
    assert page.plots_ready == expected and page.plot_divs == expected
    assert page.board_rows == len(data.board)
    assert all(not r.startswith(("http:", "https:")) for r in page.requests), page.requests  # nothing fetched
    assert page.injected_images == 0  # the hostile plugin name did not become an <img> (nor fire alert())
    assert page.pred_images == fx.grid_images(data) > 0  # the prediction grid's embedded PNGs decoded
    assert fx.XSS in page.text and fx.XSS_ERROR in page.text  # ... it shows as the text it is
    assert shot.stat().st_size > 20_000
