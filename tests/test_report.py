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
import segarena_test_report_fixtures as fx

from segarena.dashboards import figures as F
from segarena.dashboards.html import json_for_script
from segarena.dashboards.png import HEIGHT, SCALE, WIDTH, find_chromium, write_pngs
from segarena.dashboards.report import FIGURES_PER_DATASET, build_html, report_figures, write_report_data
from segarena.platform.board.formats import latex, render
from segarena.platform.board.statistics import StatsConfig, with_statistics
from segarena.platform.records import Evaluation


def _load(name: str):
    """Another test module's helpers (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    assert page.count("no stored predictions were read for this dataset") == n - 1  # the grid says why not
    assert page.count('<img class="pred-img"') == fx.grid_images(data)  # ... and is there where stored
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


# ---------------------------------------------------------------------------------------------- prediction grid
def _embedded_pngs(html: str) -> list[bytes]:
    import base64

    return [base64.b64decode(b) for b in re.findall(r'<img class="pred-img" src="data:image/png;base64,([^"]+)"', html)]


def _pixels(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


def test_prediction_grid_rows_images_and_escaping(data, page):
    start = page.index(f"<h2>{fx.DATASETS[0]}</h2>")
    grid = page[start:page.index("</section>", start)]
    table_html = grid[grid.index('<table class="predgrid">'):]
    table_html = table_html[:table_html.index("</table>")]
    assert table_html.count("<tr><th>") - 1 == len(data.predictions[fx.DATASETS[0]].rows) == 4  # + the header
    pngs = _embedded_pngs(grid)
    assert len(pngs) == fx.grid_images(data) == 8  # 3 + 2 + 3: the row missing its median case has a dash
    first = data.predictions[fx.DATASETS[0]].rows[0].overlays[0]
    np.testing.assert_array_equal(_pixels(pngs[0]), _pixels(first.png))  # palette recompression kept the pixels
    assert fx.XSS_CASE not in page and "alert(3)" in page
    assert 'alt="best 1: &quot;&gt;&lt;script&gt;alert(3)&lt;/script&gt; · Dice 0.900"' in grid  # attribute too
    assert f'<td colspan="3" class="pred-missing">{fx.NOT_STORED}</td>' in grid
    assert '<td class="pred-none">–</td>' in grid
    assert "at most 12 rows per dataset" in grid and "at most 3 images per row" in grid


def test_grid_shows_each_methods_best_budget_on_a_large_board():
    from segarena.dashboards.prediction_grid import select_rows

    small = pd.DataFrame({"rank": [2, 1, 3], "method": ["a", "b", "a"], "variant": "v", "budget": ["x", "y", "z"]})
    rows, rule = select_rows(small)
    assert rows["rank"].tolist() == [1, 2, 3] and rule == "one per leaderboard row (3)"
    n = 30  # 15 methods × 2 budgets, ranks interleaved
    big = pd.DataFrame({"rank": range(1, n + 1), "method": [f"m{i % 15:02d}" for i in range(n)], "variant": "v",
                        "budget": [f"b{i // 15}" for i in range(n)]})
    rows, rule = select_rows(big.sample(frac=1, random_state=0))
    assert len(rows) == 12 and rows["method"].is_unique and rows["rank"].tolist() == list(range(1, 13))
    assert rule == ("the leaderboard has 30 rows, so one per method at its best-ranked budget "
                    "(the first 12 of 15 methods by rank)")


def test_slug_rule_matches_the_evaluation_writer():
    pytest.importorskip("torch")
    from segarena.dashboards.prediction_grid import slug
    from segarena.platform.scoring.predictions import _slug

    for case in (fx.XSS_CASE, "mni152_z121", "a b/c", "x" * 120, "é-ü.1"):
        assert slug(case) == _slug(case)


def _finish_with_predictions(tracker, exp, tt, cell, case_ids, dices, pngs: dict[str, bytes] | None, tmp):
    """One training + one evaluation run in the store; ``pngs`` (overlay file name → bytes) as the run's
    ``predictions/overlays/`` artifacts, None = the evaluation stored none."""
    import dataclasses

    from segarena.platform.records import Budget
    from segarena.platform.store.tracking import cell_tags

    res = tt.result({"direct-e1": (Budget(), dices, 0.5)})
    res.per_case["case_id"] = case_ids
    if pngs is not None:
        folder = Path(tmp) / f"{cell.method}-{cell.seed}"
        (folder / "direct-e1" / "overlays").mkdir(parents=True)
        for name, data in pngs.items():
            (folder / "direct-e1" / "overlays" / name).write_bytes(data)
        (folder / "direct-e1" / "predictions.npz").write_bytes(b"not read by the report")
        res = dataclasses.replace(res, predictions=str(folder))
    tags = cell_tags(cell, "0.1.0", "abc")
    run_id = tracker.start_training(exp, cell, tags)
    tracker.finish_training(exp, run_id, cell, tags, res, {"config.json": {"cell": cell.as_dict()}}, {})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for this module's store tests (creating its schema costs seconds); one suite each."""
    from segarena.platform.store.tracking import Tracker
    from segarena.platform.store.workdir import WorkDir

    root = WorkDir.at(tmp_path_factory.mktemp("runs"))
    return Tracker(root.tracking_uri, root), root


def test_prediction_grid_from_a_real_store(store, tmp_path):
    """Eval runs in a SQLite store with stored overlays (one hostile case id): the report embeds the lowest
    seed's images, maps file-name slugs back to case ids, and says so where a row stored none."""
    import dataclasses

    tt = _load("test_tracking")
    from segarena.dashboards.data import load_report_data
    from segarena.dashboards.prediction_grid import slug

    tracker, _ = store
    exp = tracker.experiment("grid-suite")
    ids = [fx.XSS_CASE, "c1", "c2", "c3"]
    best, median, worst = fx.overlay_png(30), fx.overlay_png(90), fx.overlay_png(150)
    files = {f"best1_{slug(ids[0])}.png": best, "best2_c1.png": fx.overlay_png(60),
             "median1_c1.png": fx.overlay_png(70), "median2_c2.png": median, "median3_c3.png": fx.overlay_png(110),
             "worst1_c3.png": worst, "worst2_c2.png": fx.overlay_png(200), "notes.txt": b"ignored"}
    for seed in (1, 0):  # seed 1 first: the grid must still pick seed 0's run
        cell = tt.make_cell("grid-suite", "unet", seed)
        _finish_with_predictions(tracker, exp, tt, cell, ids, [0.95, 0.8, 0.7, 0.4],
                                 files if seed == 0 else {"best1_c1.png": fx.overlay_png(250)}, tmp_path)
    weak = dataclasses.replace(tt.make_cell("grid-suite", "weak", 0), evaluation=Evaluation(save_predictions="none"))
    _finish_with_predictions(tracker, exp, tt, weak, ids, [0.5, 0.4, 0.3, 0.2], None, tmp_path)

    data = load_report_data(tracker, "grid-suite")
    rows = data.predictions["synthetic"].rows
    assert [(r.method, r.seed) for r in rows] == [("unet", "0"), ("weak", "0")]
    assert [(o.kind, o.rank, o.case_id) for o in rows[0].overlays] == [
        ("best", 1, fx.XSS_CASE), ("median", 2, "c2"), ("worst", 1, "c3")]
    assert rows[0].overlays[0].dice == pytest.approx(0.95)
    assert rows[1].overlays == () and rows[1].note == fx.NOT_STORED  # its logged evaluation.save_predictions
    html = build_html(data, CONFIG)
    pngs = _embedded_pngs(html)
    assert len(pngs) == 3
    for got, want in zip(pngs, (best, median, worst), strict=True):
        np.testing.assert_array_equal(_pixels(got), _pixels(want))
    assert fx.XSS_CASE not in html and "&quot;&gt;&lt;script&gt;alert(3)&lt;/script&gt; · Dice 0.950" in html
    assert "not stored (evaluation.save_predictions: none)" in html


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
    code = ("import sys, segarena.platform.cli.report; heavy = {'pandas', 'plotly', 'torch', 'mlflow'} & "
            "set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reading_the_store_for_a_report_imports_no_torch():
    code = ("import sys, segarena.dashboards.report, segarena.dashboards.png, segarena.platform.board.leaderboard; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------- through a store
def test_report_and_latex_from_a_real_store(store, tmp_path, capsys):
    """Two methods × two seeds in a SQLite MLflow store (the tracking tests' helpers), read by the CLI."""
    tt = _load("test_tracking")
    from segarena.platform.cli import main

    tracker, root = store
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
