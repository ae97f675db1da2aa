"""The report's figures as PNG files for papers (``segarena report --png DIR``).

kaleido renders plotly figures exactly through a Chrome; we point it at the system Chromium
(Debian's ``chromium``, installed by the setup script as root). Without one, a matplotlib renderer
draws the same traces (scatter with error bars and bands, box + points, heatmap): plainer, same data.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

WIDTH, HEIGHT, SCALE = 900, 520, 2
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


@dataclass(frozen=True)
class PngResult:
    paths: list[Path]
    engine: str          # "kaleido" or "matplotlib"
    note: str = ""       # why kaleido was not used, when it was not


def find_chromium() -> str | None:
    """A Chrome/Chromium binary: $BROWSER_PATH (kaleido's own setting) or the first one on PATH."""
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).exists():
        return env
    return next((p for p in map(shutil.which, CHROMIUM_CANDIDATES) if p), None)


def _name(dataset: str, name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{dataset}__{name}").strip("_") + ".png"


def write_pngs(figs: Sequence[tuple[str, str, go.Figure]], out_dir: Path, engine: str = "auto") -> PngResult:
    """Write every (dataset, name, figure) to ``out_dir/<dataset>__<name>.png``. ``engine``: auto (kaleido
    with the system Chromium, else matplotlib), kaleido (fail without it) or matplotlib."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for d, n, _ in figs:
        name = _name(d, n)
        names.append(name if name not in names else name.replace(".png", f"-{len(names)}.png"))
    paths = [out_dir / name for name in names]
    for path in paths:
        path.unlink(missing_ok=True)  # a stale file must not pass for a fresh one
    note, todo = "", list(range(len(figs)))
    if engine in ("auto", "kaleido"):
        try:
            todo = _kaleido([f for _, _, f in figs], paths)
        except Exception as exc:  # kaleido's failures are many (no browser, sandbox, timeouts)
            if engine == "kaleido":
                raise
            note = f"kaleido unavailable ({type(exc).__name__}: {str(exc)[:160]}); used matplotlib"
        if todo and engine == "kaleido":
            raise RuntimeError(f"kaleido wrote no file for {', '.join(paths[i].name for i in todo)}")
        if todo and not note:
            note = f"kaleido wrote no file for {len(todo)} figure(s); those used matplotlib"
        if note:
            print(f"segarena: {note}", file=sys.stderr)
    elif engine != "matplotlib":
        raise ValueError(f"unknown PNG engine {engine!r} (auto, kaleido, matplotlib)")
    for i in todo:
        render_matplotlib(figs[i][2], paths[i])
    used = "kaleido" if not todo else ("matplotlib" if len(todo) == len(figs) else "kaleido+matplotlib")
    return PngResult(paths, used, note)


def _kaleido(figs: Sequence[go.Figure], paths: Sequence[Path]) -> list[int]:
    """Render with kaleido through the system Chromium; returns the indices it did not write (kaleido
    returns per-figure errors instead of raising them, so files are checked, and a miss is retried once)."""
    browser = find_chromium()
    if browser is None:
        raise RuntimeError("no Chromium/Chrome found (set BROWSER_PATH)")
    os.environ.setdefault("BROWSER_PATH", browser)
    import plotly.io as pio

    pio.write_images(list(figs), list(paths), width=WIDTH, height=HEIGHT, scale=SCALE)
    missing = [i for i, p in enumerate(paths) if not p.exists() or p.stat().st_size == 0]
    if missing:
        pio.write_images([figs[i] for i in missing], [paths[i] for i in missing], width=WIDTH, height=HEIGHT,
                         scale=SCALE)
    return [i for i, p in enumerate(paths) if not p.exists() or p.stat().st_size == 0]


# ---------------------------------------------------------------------------------------------- matplotlib
def _text(s: object) -> str:
    return html.unescape(re.sub(r"<br\s*/?>", " ", re.sub(r"</?(b|i|sup|sub|span)[^>]*>", "", str(s or ""))))


def _color(c: object, default: str = "#1f77b4") -> tuple[float, ...] | str:
    if not c or not isinstance(c, str):
        return default
    m = re.fullmatch(r"rgba?\(([^)]*)\)", c.replace(" ", ""))
    if m:
        v = [float(x) for x in m.group(1).split(",")]
        return (v[0] / 255, v[1] / 255, v[2] / 255, v[3] if len(v) > 3 else 1.0)
    return c


def _positions(values: Sequence[object], cats: list[str]) -> np.ndarray:
    """Numeric positions; strings become category indices (in order of first appearance)."""
    vals = list(values)
    if vals and isinstance(vals[0], str):
        for v in vals:
            if v not in cats:
                cats.append(v)
        return np.array([cats.index(v) for v in vals], float)
    return np.asarray(vals, float)


_DASHES = {"dash": "--", "dot": ":", "dashdot": "-."}


def _scatter(ax: Any, tr: Any, cats: list[str], prev: np.ndarray | None) -> np.ndarray:
    """A plotly scatter (lines, markers, text, error bars, a band to the previous trace); returns its y."""
    x, y = _positions(tr.x, cats), np.asarray(tr.y, float)
    mode = tr.mode or "lines+markers"
    mc = tr.marker.color if isinstance(tr.marker.color, str) else None
    color = _color(tr.line.color or mc)
    name = _text(tr.name)
    label = name if tr.showlegend is not False and name else None
    if tr.fill == "tonexty" and prev is not None and len(prev) == len(y):
        ax.fill_between(x, prev, y, color=_color(tr.fillcolor), linewidth=0)
    if "lines" in mode and (tr.line.width is None or tr.line.width > 0):
        ax.plot(x, y, _DASHES.get(tr.line.dash, "-"), color=color, lw=1.4, label=label,
                drawstyle="steps-post" if tr.line.shape == "hv" else "default")
        label = None
    if "markers" in mode:
        size = np.asarray(tr.marker.size if tr.marker.size is not None else 8, float)
        ax.scatter(x, y, s=size ** 2 * 0.6, color=color, alpha=tr.marker.opacity or 1.0, label=label, zorder=3)
    err = tr.error_y
    if err and err.visible is not False and err.array is not None:
        lo = np.asarray(err.arrayminus if err.arrayminus is not None else err.array, float)
        ax.errorbar(x, y, yerr=[lo, np.asarray(err.array, float)], fmt="none", ecolor=color, lw=1, zorder=2)
    if "text" in mode and tr.text is not None:
        for xi, yi, s in zip(x, y, tr.text, strict=False):
            ax.annotate(_text(s), (xi, yi), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    return y


def _box(ax: Any, tr: Any, cats: list[str]) -> None:
    """A plotly box with all points: a box plot and the points jittered over it."""
    pos = _positions([_text(tr.name)], cats)[0]
    y = np.asarray(tr.y, float)
    y = y[np.isfinite(y)]
    color = _color(tr.marker.color)
    if y.size:
        ax.boxplot(y, positions=[pos], widths=0.5, showfliers=False, medianprops={"color": color}, manage_ticks=False)
        jitter = np.random.default_rng(int(pos)).uniform(-0.18, 0.18, y.size)
        ax.scatter(pos + jitter, y, s=6, color=color, alpha=0.7, zorder=3)


def _heatmap(ax: Any, tr: Any) -> None:
    """The significance map: worse / n.s. / better colours with the p-values written in."""
    from matplotlib.colors import ListedColormap

    z = np.asarray(tr.z, float)
    ax.imshow(np.ma.masked_invalid(z), cmap=ListedColormap(["#d6604d", "#e7e9ee", "#4dac26"]), vmin=-1.5, vmax=1.5)
    labels = [_text(v) for v in tr.x]
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(tr.y)), [_text(v) for v in tr.y], fontsize=7)
    for i, row in enumerate(tr.text or []):
        for j, s in enumerate(row):
            if s:
                ax.text(j, i, s, ha="center", va="center", fontsize=6)


def _style(ax: Any, xa: Any, ya: Any, cats: list[str], reversed_ok: bool) -> None:
    """Scale, categories, range, titles, grid and legend of one subplot from its plotly axes."""
    if xa.type == "log":
        ax.set_xscale("log")
    if cats:
        ax.set_xticks(range(len(cats)), [_text(c) for c in cats], rotation=30, ha="right", fontsize=7)
    if ya.range is not None:
        ax.set_ylim(ya.range[0], ya.range[1])  # a descending range is plotly's way to reverse
    elif ya.autorange == "reversed" and reversed_ok:
        ax.invert_yaxis()
    ax.set_xlabel(_text(xa.title.text))
    ax.set_ylabel(_text(ya.title.text))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def render_matplotlib(fig: go.Figure, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lay = fig.layout
    ids = sorted({getattr(tr, "xaxis", None) or "x" for tr in fig.data}) or ["x"]
    f, axs = plt.subplots(1, len(ids), figsize=(WIDTH / 100, HEIGHT / 100), dpi=100 * SCALE, squeeze=False)
    axes = {a: axs[0][i] for i, a in enumerate(ids)}
    cats: dict[str, list[str]] = {a: [] for a in ids}
    prev: dict[str, np.ndarray] = {}
    for tr in fig.data:
        a = getattr(tr, "xaxis", None) or "x"
        if tr.type == "scatter":
            prev[a] = _scatter(axes[a], tr, cats[a], prev.get(a))
        elif tr.type == "box":
            _box(axes[a], tr, cats[a])
        elif tr.type == "heatmap":
            _heatmap(axes[a], tr)
    no_heatmap = not any(tr.type == "heatmap" for tr in fig.data)
    for i, a in enumerate(ids):
        suffix = "" if i == 0 else str(i + 1)
        _style(axes[a], lay[f"xaxis{suffix}"], lay[f"yaxis{suffix}"], cats[a], no_heatmap)
    f.suptitle(_text(lay.title.text), fontsize=10)
    f.tight_layout()
    f.savefig(path)
    plt.close(f)
