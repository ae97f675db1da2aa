"""The static HTML report of a suite: per dataset the leaderboard with CIs and rank groups, Pareto and
Dice-vs-nfe plots, per-case distributions, rank stability, the significance map, training curves and the
prediction grid (the overlays the evaluations stored, embedded as PNG).

One self-contained file (plotly.js and images inlined, no network), built only from the store's
leaderboard, per-case tables and stored overlays. ``write_report(tracker, suite, output)`` is what ``segarena run`` and
``segarena report`` call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from segarena.dashboards import figures as F
from segarena.dashboards.data import ReportData, load_report_data
from segarena.dashboards.html import FigureSlots, esc, page, table
from segarena.dashboards.prediction_grid import grid_html
from segarena.platform.board.statistics import DEFAULT_STATS, DatasetStats, StatsConfig, board_statistics, mean_ranks
from segarena.platform.scoring.catalog import METRICS, Metric

PER_CASE = [m for m in METRICS.values() if m.figure]  # a per-case distribution figure each
HEADLINE = [m for m in METRICS.values() if m.headline]  # the board table's metric columns
FIGURES_PER_DATASET = ("pareto", "dice_vs_nfe", *(f"per_case_{m.name}" for m in PER_CASE), "rank_blob",
                       "significance", "training_curves")

HOW_TO_READ = (
    "<p><b>How to read this report.</b> Each row is one method variant at one inference budget. "
    "<b>Dice [95% CI]</b> is the mean over test cases of each case's Dice averaged over seeds (and classes); "
    "the interval is a paired case bootstrap: the same resampled cases for every row, so rows whose intervals "
    "overlap can still differ consistently case by case. Seeds measure training variance, cases test variance: "
    "significance is tested on cases. <b>Group</b> 1 (green) holds the leader and every row not significantly "
    "worse than it (two-sided Wilcoxon signed-rank on per-case Dice, Holm-corrected over the rows, "
    "α = {alpha:g}); group 2 is led by the best row left, and so on. Rows of one group are not "
    "distinguishable on this test set. <b>P(rank 1)</b> and <b>rank median [95%]</b> come from re-ranking on "
    "{n} bootstrap samples (the blob plot); a row that ranks first in 55% of samples is not a clear winner. "
    "Latency is the median at batch 1 on the machine that ran the suite; nfe counts denoiser passes per image."
    "</p>")


LEGEND = ("Dice, IoU, HD95: mean over test cases of seed-averaged case scores [95% paired case-bootstrap "
          "percentile interval, {n} resamples]. group: rank group (1 = not significantly worse than the leader; "
          "two-sided Wilcoxon signed-rank on per-case Dice, Holm, α = {alpha:g}). P(rank 1): share of bootstrap "
          "samples ranking the row first. rank [95%]: median bootstrap rank and its 95% interval. p vs 1st: "
          "Holm-adjusted p against the leader. latency: median at batch 1 (ms); nfe: denoiser passes per image; "
          "cases: test cases per seed; failed: failed seeds.")


@dataclass
class DatasetView:
    suite: str
    dataset: str
    part: pd.DataFrame                       # board rows in rank order, with statistics
    stats: DatasetStats
    series: list[str]                        # per row: the method-variant line it belongs to
    curves: pd.DataFrame
    cells: pd.DataFrame
    figures: list[tuple[str, str, go.Figure]] = field(default_factory=list)  # (name, title, figure)


def _f(v: Any, digits: int) -> str:
    return "–" if v is None or pd.isna(v) else f"{v:.{digits}f}"


def _ci(row: pd.Series, key: str, digits: int) -> str:
    mean = row.get(f"{key}_mean")
    lo, hi = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if lo is None or pd.isna(lo):
        return _f(mean, digits)
    return f"{_f(mean, digits)} [{_f(lo, digits)}, {_f(hi, digits)}]"


def _views(data: ReportData, config: StatsConfig) -> tuple[pd.DataFrame, list[DatasetView]]:
    board, per = board_statistics(data.board, data.cases, config)
    views = []
    if board.empty:
        return board, views
    for (suite, dataset), part in board.groupby(["suite", "dataset"], sort=True):
        part = part.sort_values("rank", kind="stable").reset_index(drop=True)
        series = F.series_labels(part)
        key = dict(zip(zip(part["method"], part["variant"], strict=True), series, strict=True))
        curves = data.curves[data.curves["dataset"] == dataset].copy() if len(data.curves) else data.curves
        if len(curves):
            curves["series"] = [key.get((m, v), f"{m}·{str(v)[:6]}") for m, v in
                                zip(curves["method"], curves["variant"], strict=True)]
        cells = data.cells[data.cells["dataset"] == dataset] if len(data.cells) else data.cells
        views.append(DatasetView(str(suite), str(dataset), part, per[(str(suite), str(dataset))], series, curves,
                                 cells))
    colors = F.colors_for([s for v in views for s in v.series])
    for v in views:
        figs = [("pareto", "Dice vs latency", F.pareto(v.part, colors)),
                ("dice_vs_nfe", "Dice vs nfe", F.dice_vs_nfe(v.part, colors)),
                *((f"per_case_{m.name}", f"Per-case {m.label}",
                   F.per_case(v.stats, m.name, _unit(v.part, m), colors, v.series)) for m in PER_CASE),
                ("rank_blob", "Rank stability", F.rank_blob(v.stats, colors, v.series)),
                ("significance", "Pairwise significance", F.significance(v.stats))]
        curves_fig = F.training_curves(v.curves, colors) if len(v.curves) else None
        if curves_fig is not None:
            figs.append(("training_curves", "Training curves", curves_fig))
        v.figures = figs
    return board, views


def _unit(part: pd.DataFrame, m: Metric) -> str:
    """The unit of a metric on one dataset (HD95: mm or px), "" when it has none."""
    return str(part[m.unit_column].iloc[0]) if m.unit_column and m.unit_column in part else ""


def _header(part: pd.DataFrame, m: Metric) -> str:
    head = f"{m.label} [95% CI]" if m.has_ci else m.label.lower()
    return f"{head} ({_unit(part, m)})" if m.unit_column else head


def _cell(r: pd.Series, m: Metric) -> str:
    if m.has_ci:
        return _ci(r, m.name, m.digits)
    v = r.get(f"{m.name}_mean")
    return ("–" if pd.isna(v) else f"{v:g}") if m.digits == 0 else _f(v, m.digits)


def leaderboard_table(v: DatasetView) -> str:
    headers = ["rank", "group", "method", "budget", *(_header(v.part, m) for m in HEADLINE),
               "P(rank 1)", "rank [95%]", "p vs 1st", "seeds", "cases", "failed"]
    rows, classes = [], []
    for i, r in v.part.iterrows():
        g = r.get("rank_group")
        grp = "–" if g is None or pd.isna(g) else str(int(g))
        rank_ci = ("–" if pd.isna(r.get("rank_median")) else
                   f"{r['rank_median']:g} [{r['rank_ci_low']:g}, {r['rank_ci_high']:g}]")
        rows.append([int(r["rank"]), f'<span class="grp">{esc(grp)}</span>', v.series[i], r["budget"],
                     *(_cell(r, m) for m in HEADLINE),
                     "–" if pd.isna(r.get("rank_first_pct")) else f"{r['rank_first_pct']:.1f}%", rank_ci,
                     "leader" if int(r["rank"]) == 1 else ("–" if pd.isna(r.get("p_vs_leader"))
                                                          else f"{r['p_vs_leader']:.3g}"),
                     int(r["n_seeds"]), int(r["n_cases"]), int(r.get("failed_seeds", 0))])
        classes.append(f"grp-{grp}")
    return table(headers, rows, "board", classes, raw_cols=frozenset({1}))


def _cells_table(v: DatasetView) -> str:
    if v.cells.empty:
        return ""
    labels = dict(zip(zip(v.part["method"], v.part["variant"], strict=True), v.series, strict=True))
    rows = [[labels.get((c.method, c.variant), c.method), str(c.variant)[:12], c.profile, c.seed, c.hparams,
             c.train_run] for c in v.cells.sort_values(["method", "variant", "seed"]).itertuples(index=False)]
    return ("<details><summary>Cells (training runs and hyperparameters)</summary>"
            + table(["method", "variant", "profile", "seed", "hparams", "training run"], rows, "plain")
            + "</details>")


def _predictions(data: ReportData, v: DatasetView) -> str:
    labels = dict(zip(zip(v.part["method"], v.part["variant"], strict=True), v.series, strict=True))
    return grid_html(data.predictions.get(v.dataset), labels)


def dataset_section(data: ReportData, v: DatasetView, slots: FigureSlots, anchor: str) -> str:
    n_paired = v.stats.columns["n_cases_paired"].iloc[0] if len(v.stats.columns) else 0
    seeds = sorted({int(s) for s in v.part["n_seeds"]})
    tau = v.stats.columns["kendall_tau"].dropna()
    summary = (f"{len(v.part)} rows · {n_paired} test cases paired across rows · seeds per row: "
               f"{', '.join(map(str, seeds))}" + (f" · Kendall's τ (bootstrap vs full ranking): {tau.iloc[0]:.3f}"
                                                   if len(tau) else ""))
    plots = "".join(slots.add(fig, title) for _, title, fig in v.figures)
    if not any(name == "training_curves" for name, _, _ in v.figures):
        plots += '<div class="missing">No training curves in the store for these cells.</div>'
    return (f'<section class="dataset" id="{esc(anchor)}"><h2>{esc(v.dataset)}</h2>'
            f'<p class="note">{esc(summary)}</p>{leaderboard_table(v)}'
            f'<p class="foot">{esc(LEGEND.format(n=v.stats.config.n_resamples, alpha=v.stats.config.alpha))}</p>'
            f'<div class="grid">{plots}</div><h3>Predictions</h3>{_predictions(data, v)}{_cells_table(v)}</section>')


def _mean_rank_section(board: pd.DataFrame, views: list[DatasetView]) -> str:
    if len(views) < 2:
        return ""
    mr = mean_ranks(board)
    labels = F.series_labels(mr.assign(dataset="all"))
    rows = [[lab, r.budget, f"{r.mean_rank:.2f}", r.n_datasets, r.ranks]
            for lab, r in zip(labels, mr.itertuples(index=False), strict=True)]
    return ('<section class="dataset" id="mean-rank"><h2>Across datasets: mean rank</h2>'
            '<p class="note">The mean of each row\'s rank over the datasets it ran on (raw Dice is never '
            "averaged across datasets).</p>"
            + table(["method", "budget", "mean rank", "datasets", "rank per dataset"], rows, "plain") + "</section>")


def _failed_section(failed: pd.DataFrame) -> str:
    if failed.empty:
        return ""
    rows = [[r.get("dataset", ""), r.get("method", ""), r.get("seed", ""), r.get("error", ""), r.get("run_id", "")]
            for r in failed.to_dict("records")]
    return ('<section class="dataset" id="failed"><h2>Failed cells</h2>'
            + table(["dataset", "method", "seed", "error", "run"], rows, "plain") + "</section>")


def build_html(data: ReportData, config: StatsConfig = DEFAULT_STATS) -> str:
    """The report as one HTML string."""
    return _html(data, config, *_views(data, config))


def _html(data: ReportData, config: StatsConfig, board: pd.DataFrame, views: list[DatasetView]) -> str:
    slots = FigureSlots()
    anchors = [(f"ds-{i}", v.dataset) for i, v in enumerate(views)]
    body = HOW_TO_READ.format(alpha=config.alpha, n=config.n_resamples)
    if not views:
        body += '<div class="missing">No finished runs in this suite yet.</div>'
    body += _mean_rank_section(board, views) + _failed_section(data.failed)
    body += "".join(dataset_section(data, v, slots, a) for v, (a, _) in zip(views, anchors, strict=True))
    header = [f"{len(views)} dataset(s) · {len(board)} leaderboard rows · {len(data.failed)} failed cell(s)",
              f"generated {time.strftime('%Y-%m-%d %H:%M')} from {data.source or 'the tracking store'} · "
              f"statistics: {config.n_resamples} paired bootstrap resamples (seed {config.seed}), "
              f"α = {config.alpha:g}"]
    nav = anchors + ([("mean-rank", "mean rank")] if len(views) > 1 else []) + (
        [("failed", "failed cells")] if not data.failed.empty else [])
    return page(f"segarena report · {data.suite}", header, nav, body, slots.script())


def report_figures(data: ReportData, config: StatsConfig = DEFAULT_STATS) -> list[tuple[str, str, go.Figure]]:
    """Every figure of the report as (dataset, name, figure), for PNG export."""
    _, views = _views(data, config)
    return [(v.dataset, name, fig) for v in views for name, _, fig in v.figures]


def default_output(workdir: Path | str, suite: str) -> Path:
    from segarena.platform.store.workdir import WorkDir

    return WorkDir.at(workdir).report(suite)


def write_report(tracker: Any, suite: str, output: Path | str, png_dir: Path | str | None = None,
                 config: StatsConfig = DEFAULT_STATS) -> Path:
    """Read ``suite`` from the store, write the HTML report to ``output`` (and PNGs to ``png_dir``)."""
    return write_report_data(load_report_data(tracker, suite), output, png_dir, config)


def write_report_data(data: ReportData, output: Path | str, png_dir: Path | str | None = None,
                      config: StatsConfig = DEFAULT_STATS) -> Path:
    board, views = _views(data, config)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_html(data, config, board, views), encoding="utf-8")
    if png_dir is not None:
        from segarena.dashboards.png import write_pngs

        write_pngs([(v.dataset, name, fig) for v in views for name, _, fig in v.figures], Path(png_dir))
    return out
