"""Plotly figures of one suite × dataset, built from the board (with statistics) and per-case rows.

Every label that comes from users (method, budget, dataset names, case ids) is HTML-escaped before it
reaches plotly, whose labels accept a subset of HTML: a name like ``<b>x</b>`` shows as typed.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from segarena.platform.board.statistics import DatasetStats
from segarena.platform.scoring.catalog import METRICS

PALETTE = qualitative.D3 + qualitative.Set2
LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 48, "b": 50}, "font": {"size": 12},
          "legend": {"font": {"size": 11}}}


def t(text: object) -> str:
    """User text for plotly labels: escaped, so it renders as typed."""
    return html.escape(str(text), quote=False)


def series_labels(part: pd.DataFrame) -> list[str]:
    """One label per method variant (the line of a method across its budgets)."""
    n = part.groupby("method")["variant"].transform("nunique")
    return [f"{m}·{str(v)[:6]}" if k > 1 else str(m) for m, v, k in zip(part["method"], part["variant"], n,
                                                                        strict=True)]


def colors_for(names: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(names)))}


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _layout(fig: go.Figure, title: str, **kw: object) -> go.Figure:
    fig.update_layout(**{**LAYOUT, **kw}, title={"text": title, "x": 0.01, "font": {"size": 14}})
    return fig


def _err(part: pd.DataFrame, key: str) -> dict[str, object]:
    if f"{key}_ci_low" not in part or part[f"{key}_ci_low"].isna().all():
        return {"visible": False}
    return {"type": "data", "symmetric": False, "array": (part[f"{key}_ci_high"] - part[f"{key}_mean"]).tolist(),
            "arrayminus": (part[f"{key}_mean"] - part[f"{key}_ci_low"]).tolist(), "thickness": 1.2, "width": 3}


def pareto_front(latency: np.ndarray, dice: np.ndarray) -> np.ndarray:
    """Indices of the rows no other row beats on both (higher Dice at lower or equal latency), by latency."""
    ok = np.flatnonzero(np.isfinite(latency) & np.isfinite(dice))
    order = ok[np.lexsort((-dice[ok], latency[ok]))]
    front, best = [], -np.inf
    for i in order:
        if dice[i] > best:
            front.append(i)
            best = dice[i]
    return np.array(front, int)


def _hover(part: pd.DataFrame) -> tuple[np.ndarray, str]:
    custom = np.column_stack([[t(b) for b in part["budget"]], part["nfe_mean"].to_numpy(float),
                              part.get("dice_ci_low", pd.Series(np.nan, index=part.index)).to_numpy(float),
                              part.get("dice_ci_high", pd.Series(np.nan, index=part.index)).to_numpy(float),
                              part["n_seeds"].to_numpy(float)]).astype(object)
    tpl = ("%{fullData.name} · %{customdata[0]}<br>Dice %{y:.3f} [%{customdata[2]:.3f}, %{customdata[3]:.3f}]"
           "<br>latency %{x:.1f} ms · nfe %{customdata[1]:g} · seeds %{customdata[4]:g}<extra></extra>")
    return custom, tpl


def pareto(part: pd.DataFrame, colors: dict[str, str]) -> go.Figure:
    """Dice vs latency (log axis) over (method, budget), the Pareto front drawn as a step line."""
    fig = go.Figure()
    part = part.reset_index(drop=True)
    labels = series_labels(part)
    for name in dict.fromkeys(labels):
        sub = part[[lab == name for lab in labels]]
        custom, tpl = _hover(sub)
        fig.add_trace(go.Scatter(x=sub["latency_ms_mean"], y=sub["dice_mean"], mode="markers+text", name=t(name),
                                 text=[t(b) for b in sub["budget"]], textposition="top center",
                                 textfont={"size": 10}, marker={"size": 11, "color": colors[name]},
                                 error_y=_err(sub, "dice"), customdata=custom, hovertemplate=tpl))
    front = pareto_front(part["latency_ms_mean"].to_numpy(float), part["dice_mean"].to_numpy(float))
    if len(front):
        f = part.iloc[front]
        fig.add_trace(go.Scatter(x=f["latency_ms_mean"], y=f["dice_mean"], mode="lines", name="Pareto front",
                                 line={"shape": "hv", "dash": "dot", "color": "#333", "width": 1.5},
                                 hoverinfo="skip"))
    return _layout(fig, "Dice vs latency (Pareto front dotted; bars: 95% CI)",
                   xaxis={"type": "log", "title": "latency at batch 1 (ms, log)", "dtick": "D2"},
                   yaxis={"title": "Dice"})


def dice_vs_nfe(part: pd.DataFrame, colors: dict[str, str]) -> go.Figure:
    """One line per method across its budgets, with the 95% CI as a band."""
    fig = go.Figure()
    part = part.reset_index(drop=True)
    labels = series_labels(part)
    has_ci = "dice_ci_low" in part and part["dice_ci_low"].notna().any()
    for name in dict.fromkeys(labels):
        sub = part[[lab == name for lab in labels]].sort_values(["nfe_mean", "budget"])
        color = colors[name]
        if has_ci and len(sub) > 1:
            fig.add_trace(go.Scatter(x=sub["nfe_mean"], y=sub["dice_ci_high"], mode="lines", line={"width": 0},
                                     showlegend=False, hoverinfo="skip", legendgroup=t(name)))
            fig.add_trace(go.Scatter(x=sub["nfe_mean"], y=sub["dice_ci_low"], mode="lines", line={"width": 0},
                                     fill="tonexty", fillcolor=_rgba(color, 0.18), showlegend=False,
                                     hoverinfo="skip", legendgroup=t(name)))
        custom, _ = _hover(sub)
        fig.add_trace(go.Scatter(x=sub["nfe_mean"], y=sub["dice_mean"], mode="lines+markers", name=t(name),
                                 legendgroup=t(name), line={"color": color}, marker={"size": 8},
                                 error_y=_err(sub, "dice") if len(sub) == 1 else {"visible": False},
                                 customdata=custom,
                                 hovertemplate=("%{fullData.name} · %{customdata[0]}<br>nfe %{x:g} · Dice %{y:.3f} "
                                                "[%{customdata[2]:.3f}, %{customdata[3]:.3f}]<extra></extra>")))
    nfe = part["nfe_mean"].dropna()
    log = len(nfe) and nfe.min() > 0 and nfe.max() / nfe.min() >= 4
    return _layout(fig, "Dice vs nfe per method (band: 95% CI)",
                   xaxis={"type": "log" if log else "linear", "title": "nfe (denoiser passes per image)"},
                   yaxis={"title": "Dice"})


def per_case(ds: DatasetStats, metric: str, unit: str, colors: dict[str, str], series: Sequence[str]) -> go.Figure:
    """Per-case seed-averaged scores of each row: box + every case as a point (hover: case id)."""
    fig = go.Figure()
    mat = ds.scores.get(metric)
    for i, label in enumerate(ds.rows["label"]):
        if mat is None or mat.empty:
            break
        values = mat.iloc[i]
        fig.add_trace(go.Box(y=values.to_numpy(float), name=t(label), boxpoints="all", jitter=0.45, pointpos=0,
                             marker={"size": 4, "color": colors[series[i]], "opacity": 0.75},
                             line={"color": colors[series[i]]}, text=[t(c) for c in values.index],
                             hovertemplate="%{text}: %{y:.3f}<extra>" + t(label) + "</extra>", showlegend=False))
    label = METRICS[metric].label if metric in METRICS else metric.upper()
    title = f"Per-case {label}" + (f" ({t(unit)})" if unit else "")
    return _layout(fig, title + " per row, seed-averaged", yaxis={"title": metric}, xaxis={"tickangle": -30})


def rank_blob(ds: DatasetStats, colors: dict[str, str], series: Sequence[str]) -> go.Figure:
    """challengeR's blob plot: the share of bootstrap samples giving each row each rank (area), with
    the median rank and its 95% interval."""
    fig = go.Figure()
    labels = [t(x) for x in ds.rows["label"]]
    counts = ds.rank_counts
    for i, label in enumerate(labels):
        shares = counts.iloc[i]
        shares = shares[shares > 0]
        if shares.empty:
            continue
        fig.add_trace(go.Scatter(x=[label] * len(shares), y=list(shares.index), mode="markers", showlegend=False,
                                 marker={"size": np.sqrt(shares.to_numpy()) * 40, "color": colors[series[i]],
                                         "opacity": 0.7, "line": {"width": 0}},
                                 customdata=(shares.to_numpy() * 100).round(1),
                                 hovertemplate=label + ": rank %{y} in %{customdata}% of samples<extra></extra>"))
    cols = ds.columns
    ok = cols["rank_median"].notna().to_numpy()
    if ok.any():
        med = cols.loc[ok, "rank_median"].to_numpy(float)
        fig.add_trace(go.Scatter(x=[lab for lab, k in zip(labels, ok, strict=True) if k], y=med, mode="markers",
                                 name="median rank, 95% interval", marker={"symbol": "line-ew-open", "size": 16,
                                                                           "color": "#111"},
                                 error_y={"type": "data", "symmetric": False,
                                          "array": cols.loc[ok, "rank_ci_high"].to_numpy(float) - med,
                                          "arrayminus": med - cols.loc[ok, "rank_ci_low"].to_numpy(float),
                                          "color": "#111", "thickness": 1}, hoverinfo="skip"))
    k = len(labels)
    tau = cols["kendall_tau"].dropna()
    sub = f" · Kendall's τ vs the full ranking: mean {tau.iloc[0]:.3f}" if len(tau) else ""
    return _layout(fig, f"Rank stability over {ds.config.n_resamples} bootstrap samples{sub}",
                   yaxis={"title": "rank", "dtick": 1, "range": [k + 0.5, 0.5]},  # rank 1 on top
                   xaxis={"tickangle": -30}, legend={"orientation": "h", "y": -0.35})


def significance(ds: DatasetStats) -> go.Figure:
    """Pairwise significance map: row better / worse than column (Holm-adjusted two-sided Wilcoxon on
    per-case Dice, α), grey = not significant."""
    labels = [t(x) for x in ds.rows["label"]]
    p = ds.pairwise_p.to_numpy(float)
    sign = ds.pairwise_sign.to_numpy(float)
    z = np.where(np.isnan(p), np.nan, np.where(p < ds.config.alpha, sign, 0.0))
    np.fill_diagonal(z, np.nan)
    text = [["" if i == j or np.isnan(p[i, j]) else f"{p[i, j]:.2g}" for j in range(len(labels))]
            for i in range(len(labels))]
    scale = [[0.0, "#d6604d"], [0.33, "#d6604d"], [0.33, "#e7e9ee"], [0.66, "#e7e9ee"], [0.66, "#4dac26"],
             [1.0, "#4dac26"]]
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=labels, zmin=-1, zmax=1, colorscale=scale, text=text,
                               texttemplate="%{text}", textfont={"size": 10}, xgap=2, ygap=2,
                               colorbar={"tickvals": [-0.67, 0, 0.67], "ticktext": ["worse", "n.s.", "better"],
                                         "len": 0.6},
                               hovertemplate="%{y} vs %{x}: Holm p = %{text}<extra></extra>"))
    if len(labels) < 2:
        fig.add_annotation(text="one row: nothing to compare", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5)
    return _layout(fig, f"Pairwise significance (row vs column, α = {ds.config.alpha:g})",
                   yaxis={"autorange": "reversed"}, xaxis={"tickangle": -30})


def headline_loss(keys: Sequence[str], headline: str | None = None) -> str | None:
    """The loss curve to show for a cell: the plugin's headline loss when the store names it, else
    ``train/loss`` when logged, else its first other ``train/`` key."""
    train = sorted(k for k in keys if k.startswith("train/") and k not in ("train/steps",) and "time" not in k)
    if headline and f"train/{headline.removeprefix('train/')}" in train:
        return f"train/{headline.removeprefix('train/')}"
    return "train/loss" if "train/loss" in train else (train[0] if train else None)


def training_curves(curves: pd.DataFrame, colors: dict[str, str]) -> go.Figure | None:
    """val/dice and the headline loss per epoch, one line per cell (method · seed)."""
    if curves.empty:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("val/dice", "training loss (headline key)"))
    shown = set()
    seed_order = {s: i for i, s in enumerate(sorted(curves["seed"].astype(str).unique()))}
    for (name, seed, _run), cell in curves.groupby(["series", "seed", "train_run"], sort=True):
        color = colors.get(name, "#555")
        dash = ("solid", "dash", "dot", "dashdot")[seed_order[str(seed)] % 4]  # seeds of one method
        named = str(cell["headline"].iloc[0]) if "headline" in cell and cell["headline"].notna().any() else None
        for col, key in ((1, "val/dice"), (2, headline_loss(cell["key"].unique(), named))):
            pts = cell[cell["key"] == key].sort_values("step") if key else cell.iloc[:0]
            if pts.empty:
                continue
            fig.add_trace(go.Scatter(x=pts["step"], y=pts["value"], mode="lines+markers", marker={"size": 4},
                                     line={"color": color, "dash": dash, "width": 1.5}, name=t(name),
                                     legendgroup=t(name), showlegend=name not in shown,
                                     hovertemplate=f"{t(name)} · seed {t(seed)} · {t(key)}<br>"
                                                   "epoch %{x}: %{y:.4g}<extra></extra>"), row=1, col=col)
            shown.add(name)
    if not fig.data:
        return None
    fig.update_xaxes(title_text="epoch")
    return _layout(fig, "Training curves per cell")
