"""The HTML report and the leaderboard formats, from plain DataFrames, plus one run through a real store."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segarena.dashboards import figures as F
from segarena.dashboards.html import json_for_script
from segarena.dashboards.png import HEIGHT, SCALE, WIDTH, find_chromium, write_pngs
from segarena.dashboards.report import FIGURES_PER_DATASET, build_html, report_figures, write_report_data
from segarena.platform.board_format import latex, render
from segarena.platform.statistics import StatsConfig, with_statistics


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fx = _load("report_fixtures")
CONFIG = StatsConfig(n_resamples=500, seed=0)


@pytest.fixture(scope="module")
def data():
    return fx.report_data()


@pytest.fixture(scope="module")
def page(data):
    return build_html(data, CONFIG)


def test_one_self_contained_file_with_plotly_inlined(page):
    from plotly.offline import get_plotlyjs

    assert get_plotlyjs()[-2000:] in page  # the whole bundle is inline
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=[\"']?(https?:)?//", page)
    assert page.count("<script>") == 2  # plotly.js and the figure data, nothing fetched


def test_every_section_per_dataset(data, page):
    n = len(fx.DATASETS)
    assert page.count('class="plot"') == n * len(FIGURES_PER_DATASET)
    assert page.count('<tr class="grp-') == len(data.board)
    for d in fx.DATASETS:
        assert f"<h2>{d}</h2>" in page
    assert "Across datasets: mean rank" in page and "Failed cells" in page
    assert page.count("holds no saved predictions") == n  # the grid says why it is not there
    assert page.count("Cells (training runs and hyperparameters)") == n


def test_user_text_is_escaped_everywhere(page):
    for raw in (fx.XSS, "<script>alert(2)</script>", "<b>bold</b>"):
        assert raw not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # tables: rendered as text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" not in page  # figures get entity-escaped labels ...
    assert "&amp;lt;img src=x" not in page                          # ... once, not twice in the tables
    assert json_for_script({"a": "</script><!--"}) == '{"a": "\\u003c/script\\u003e\\u003c!--"}'


def test_figure_labels_are_escaped_for_plotly(data):
    figs = report_figures(data, CONFIG)
    names = {tr.name for _, n, f in figs if n == "pareto" for tr in f.data}
    assert "&lt;img src=x onerror=alert(1)&gt;" in names and fx.XSS not in names


def test_table_shows_the_statistics_it_was_given(data, page):
    board = with_statistics(data.board, data.cases, CONFIG)
    for r in board.itertuples(index=False):
        assert f"{r.dice_mean:.3f} [{r.dice_ci_low:.3f}, {r.dice_ci_high:.3f}]" in page
    leaders = board[board["rank"] == 1]
    assert (leaders["rank_group"] == 1).all()
    worst = board[board["method"] == fx.XSS]
    assert (worst["rank_group"] > 1).all()  # 0.70 vs 0.86 on 20 paired cases: separable


def test_pareto_front():
    lat = np.array([10.0, 5.0, 20.0, 30.0, np.nan])
    dice = np.array([0.8, 0.7, 0.9, 0.85, 0.99])
    assert F.pareto_front(lat, dice).tolist() == [1, 0, 2]  # 30 ms at 0.85 is beaten by 20 ms at 0.9


def test_dice_vs_nfe_draws_one_line_and_band_per_method(data):
    part = with_statistics(data.board, data.cases, CONFIG)
    part = part[part["dataset"] == fx.DATASETS[0]].reset_index(drop=True)
    fig = F.dice_vs_nfe(part, F.colors_for(F.series_labels(part)))
    lines = [tr for tr in fig.data if tr.showlegend is not False]
    bands = [tr for tr in fig.data if tr.fill == "tonexty"]
    assert len(lines) == part["method"].nunique() and len(bands) == 1  # only cdal has two budgets
    cdal = next(tr for tr in lines if tr.name == "cdal")
    assert list(cdal.x) == sorted(cdal.x)


def test_significance_map_colours_follow_holm_p(data):
    figs = {(d, n): f for d, n, f in report_figures(data, CONFIG)}
    z = np.array(figs[(fx.DATASETS[0], "significance")].data[0].z, dtype=float)
    assert np.isnan(np.diag(z)).all()
    assert (z[:-1, -1] == 1).all() and (z[-1, :-1] == -1).all()  # every row beats the weak last one
    np.testing.assert_array_equal(z, -z.T)


def test_headline_loss_key():
    assert F.headline_loss(["train/steps", "train/g_loss", "train/loss", "val/dice"]) == "train/loss"
    assert F.headline_loss(["train/steps", "train/g_loss", "train/d_loss"]) == "train/d_loss"
    assert F.headline_loss(["val/dice"]) is None
    assert F.headline_loss(["train/loss", "train/g_mse"], "g_mse") == "train/g_mse"  # the plugin's own choice
    assert F.headline_loss(["train/loss"], "g_mse") == "train/loss"  # named but not logged


def test_empty_suite_still_writes_a_page(tmp_path):
    empty = fx.report_data()
    empty.board, empty.cases, empty.failed = empty.board.iloc[:0], empty.cases.iloc[:0], empty.failed.iloc[:0]
    path = write_report_data(empty, tmp_path / "r.html", config=CONFIG)
    assert "No finished runs in this suite yet" in path.read_text()


def _png_ok(path: Path, size: tuple[int, int] | None = None) -> None:
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert size is None or im.size == size
        px = np.asarray(im.convert("L"), float)
    assert px.std() > 5, f"{path.name} is blank"


def test_png_export_with_matplotlib(data, tmp_path):
    figs = [f for f in report_figures(data, CONFIG) if f[0] == fx.DATASETS[1]]  # every kind of figure once
    res = write_pngs(figs, tmp_path, engine="matplotlib")
    assert res.engine == "matplotlib" and [n for _, n, _ in figs] == list(FIGURES_PER_DATASET)
    expected = sorted(f"{fx.DATASETS[1]}__{n}.png" for n in FIGURES_PER_DATASET)
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
    for p in res.paths:
        _png_ok(p)


def test_png_export_falls_back_to_matplotlib_without_a_browser(data, tmp_path, monkeypatch, capsys):
    from segarena.dashboards import png

    monkeypatch.setattr(png, "find_chromium", lambda: None)
    figs = [f for f in report_figures(data, CONFIG) if f[1] == "significance"][:1]
    res = write_pngs(figs, tmp_path, engine="auto")
    assert res.engine == "matplotlib" and "no Chromium" in res.note and "no Chromium" in capsys.readouterr().err
    _png_ok(res.paths[0])
    with pytest.raises(RuntimeError, match="no Chromium"):
        write_pngs(figs, tmp_path, engine="kaleido")


def test_png_export_with_kaleido_and_the_system_chromium(data, tmp_path):
    import os

    if find_chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no Chromium: run scripts/bootstrap.sh as root (it installs chromium)")
        pytest.skip("no Chromium on this machine (scripts/bootstrap.sh installs it when run as root)")
    figs = [f for f in report_figures(data, CONFIG) if f[0] == fx.DATASETS[0]][:3]
    res = write_pngs(figs, tmp_path, engine="kaleido")
    assert res.engine == "kaleido" and len(res.paths) == 3
    for p in res.paths:
        _png_ok(p, (WIDTH * SCALE, HEIGHT * SCALE))


# ---------------------------------------------------------------------------------------------- leaderboard text
@pytest.fixture(scope="module")
def board(data):
    return with_statistics(data.board, data.cases, CONFIG)


def test_table_format_shows_ci_group_and_a_footer(board, data):
    text = render(board, data.failed, "table")
    top = board.iloc[0]
    assert f"{top['dice_mean']:.3f} [{top['dice_ci_low']:.3f}, {top['dice_ci_high']:.3f}]" in text
    assert " grp " in text and "p1st" in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("dice [95% CI]: mean over test cases") and "Holm" in last and "500 resamples" in last
    assert "mean rank across datasets" in text and "== failed cells ==" in text


def test_table_without_statistics_keeps_mean_pm_std(data):
    text = render(data.board, data.failed, "table")
    r = data.board.iloc[0]
    assert f"{r['dice_mean']:.4f} ± {r['dice_std']:.4f}" in text and "[95% CI]" not in text


def test_markdown_escapes_pipes(board, data):
    b = board.copy()
    b.loc[0, "budget"] = "a|b"
    assert "a\\|b" in render(b, data.failed, "markdown")


def test_machine_formats_carry_the_statistics_columns(board, data, tmp_path):
    wanted = {"dice_ci_low", "dice_ci_high", "hd95_ci_low", "hd95_ci_high", "p_vs_leader", "rank_group",
              "rank_first_pct", "rank_median", "run_ids"}
    csv = pd.read_csv(tmp_path / "b.csv") if render(board, data.failed, "csv", str(tmp_path / "b.csv")) else None
    assert wanted <= set(csv.columns)
    doc = json.loads(render(board, data.failed, "json"))
    assert wanted <= set(doc["leaderboard"][0]) and doc["leaderboard"][0]["p_vs_leader"] is None  # the leader
    render(board, data.failed, "parquet", str(tmp_path / "b.parquet"))
    back = pd.read_parquet(tmp_path / "b.parquet")
    assert wanted <= set(back.columns) and back["rank_group"].tolist() == board["rank_group"].tolist()


def test_latex_booktabs_bold_best_and_escaped(board):
    b = board.copy()
    b.loc[b["method"] == "cdal", "method"] = "c_d&l"
    tex = latex(b)
    assert tex.count(r"\begin{tabular}") == len(fx.DATASETS) and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"c\_d\&l" in tex and r"\textless{}img src=x onerror=alert(1)\textgreater{}" in tex
    first = next(part for part in tex.split(r"\begin{table}") if fx.DATASETS[1] in part)
    rows = [ln for ln in first.splitlines() if ln.endswith(r"\\") and not ln.startswith("Rank")]
    best_dice_row = rows[0]  # rank 1
    assert best_dice_row.split(" & ")[3].startswith(r"\textbf{")
    fastest = min(rows, key=lambda ln: float(re.sub(r"[^0-9.]", "", ln.split(" & ")[6])))
    assert fastest.split(" & ")[6].startswith(r"\textbf{")


def test_cli_report_module_is_light():
    code = ("import sys, segarena.platform.cli_report; heavy = {'pandas', 'plotly', 'torch', 'mlflow'} & "
            "set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reading_the_store_for_a_report_imports_no_torch():
    code = ("import sys, segarena.dashboards.report, segarena.dashboards.png, segarena.platform.leaderboard; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------- through a store
def test_report_and_latex_from_a_real_store(tmp_path, capsys):
    """Two methods × two seeds in a SQLite MLflow store (the tracking tests' helpers), read by the CLI."""
    tt = _load("test_tracking")
    from segarena.platform.cli import main
    from segarena.platform.tracking import Tracker
    from segarena.platform.workdir import WorkDir

    root = WorkDir.at(tmp_path / "runs")
    tracker = Tracker(root.tracking_uri, root)
    exp = tracker.experiment("store-suite")
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.9, 12)
    for seed in (0, 1):
        tt.finish(tracker, exp, tt.make_cell("store-suite", "unet", seed), list(base + rng.normal(0, 0.01, 12)))
        tt.finish(tracker, exp, tt.make_cell("store-suite", "weak", seed), list(base - 0.2 + rng.normal(0, 0.01, 12)))
    out = tmp_path / "report.html"
    assert main(["report", "store-suite", "--workdir", str(root.root), "--output", str(out),
                 "--resamples", "300"]) == 0
    assert str(out.resolve()) in capsys.readouterr().out
    html = out.read_text()
    assert html.count('<tr class="grp-') == 2 and html.count('class="plot"') == len(FIGURES_PER_DATASET)
    assert "training loss (headline key)" in html and "train\\u002floss" in html  # the run history
    assert main(["leaderboard", "--workdir", str(root.root), "--suite", "store-suite", "--format", "latex"]) == 0
    tex = capsys.readouterr().out
    assert r"\toprule" in tex and "weak" in tex
    assert main(["report", "nope", "--workdir", str(root.root), "--output", str(tmp_path / "x.html")]) == 2
