"""The leaderboard as text: table, markdown, LaTeX (booktabs), csv, json, parquet.

The table shows Dice as ``mean [95% CI]`` with its rank group when the board carries the statistics
columns (``statistics.with_statistics``), and says what every column means in a footer line. Nothing
here computes a score: it formats the board ``leaderboard()`` returns.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from segarena.platform.errors import SegarenaError
from segarena.platform.scoring.catalog import METRICS, Metric

FORMATS = ("table", "markdown", "latex", "csv", "parquet", "json")


def _num(v: object) -> bool:
    return v is not None and not pd.isna(v)


def _pm(mean: float, std: float, digits: int, n: int) -> str:
    """mean ± std over seeds; the mean alone for one seed (a std of 0 would claim a precision nobody measured)."""
    if not _num(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")


def _pm_column(board: pd.DataFrame, key: str, digits: int) -> list[str]:
    return [_pm(m, s, digits, n) for m, s, n in zip(board[f"{key}_mean"], board[f"{key}_std"], board["n_seeds"],
                                                    strict=True)]


def _ci(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    if not _num(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" [{lo:.{digits}f}, {hi:.{digits}f}]" if _num(lo) and _num(hi) else "")


def has_statistics(board: pd.DataFrame) -> bool:
    return "dice_ci_low" in board.columns and "rank_group" in board.columns


def method_labels(board: pd.DataFrame) -> list[str]:
    """The method's name, with its variant id where one suite and dataset hold several variants of it."""
    n = board.groupby(["suite", "dataset", "method"])["variant"].transform("nunique")
    return [f"{m}·{str(v)[:6]}" if k > 1 else m for m, v, k in zip(board["method"], board["variant"], n, strict=True)]


def _group(v: object) -> str:
    return str(int(v)) if _num(v) else "–"


def _headline() -> list[Metric]:
    """The text board's columns after Dice, always there (scoring/catalog.py)."""
    return [m for m in METRICS.values() if m.shown and m.headline and m.name != "dice"]


def _extras() -> list[Metric]:
    """The text board's columns after the headline ones, once some row measured them."""
    return [m for m in METRICS.values() if m.shown and not m.headline]


def _column(board: pd.DataFrame, m: Metric) -> list[str]:
    """One headline column as text: mean ± std over seeds, with its unit; a count as it is."""
    if m.board_digits == 0:  # a count (nfe): as logged, no spread
        return list(board[f"{m.name}_mean"].map(lambda v: "–" if not _num(v) else f"{v:g}"))
    text = _pm_column(board, m.name, m.board_digits)
    if m.unit_column:
        return [f"{v} {u}" for v, u in zip(text, board[m.unit_column], strict=True)]
    return text


def display_frame(board: pd.DataFrame) -> pd.DataFrame:
    """One display row per board row (strings), keeping suite and dataset for grouping."""
    stats = has_statistics(board)
    cols: dict[str, object] = {"suite": board["suite"], "dataset": board["dataset"], "rank": board["rank"]}
    if stats:
        cols["grp"] = [_group(v) for v in board["rank_group"]]
    cols |= {"method": method_labels(board), "budget": board["budget"]}
    if stats:
        cols["dice [95% CI]"] = [_ci(m, lo, hi) for m, lo, hi in zip(board["dice_mean"], board["dice_ci_low"],
                                                                      board["dice_ci_high"], strict=True)]
        cols["sd"] = [f"{s:.3f}" if n > 1 and _num(s) else "–" for s, n in zip(board["dice_std"], board["n_seeds"],
                                                                                strict=True)]
    else:
        cols["dice"] = _pm_column(board, "dice", 4)
    cols |= {m.header: _column(board, m) for m in _headline()}
    for m in _shown_extras(board):
        cols[m.header] = board[f"{m.name}_mean"].map(lambda v, d=m.board_digits: "–" if not _num(v) else f"{v:.{d}f}")
    if stats:
        cols["p1st"] = [f"{v:.0f}%" if _num(v) else "–" for v in board["rank_first_pct"]]
    if "tuning" in board.columns and (board["tuning"] != "default").any():  # only boards with a search
        cols["tuning"] = board["tuning"]  # tuned (trials, trial-seconds of its search) | default
    cols |= {"seeds": board["n_seeds"], "cases": board["n_cases"], "failed": board["failed_seeds"]}
    return pd.DataFrame(cols)


def _shown_extras(board: pd.DataFrame) -> list[Metric]:
    """The diffusion-aware columns some row of the board measured (non-zero somewhere)."""
    # a column that is 0 everywhere says nothing (e.g. stability without `evaluation.repeats`)
    return [m for m in _extras() if f"{m.name}_mean" in board.columns and (board[f"{m.name}_mean"] > 0).any()]


def _extras_note(board: pd.DataFrame) -> str:
    if not _shown_extras(board):
        return ""
    return "".join(f"; {m.header}: {m.note}" for m in _extras()) + " (means over seeds)"


def footer(board: pd.DataFrame) -> str:
    """The one line that defines the columns (the statistics ones only when the board has them)."""
    if not has_statistics(board):
        return ("dice, iou, hd95: mean ± std over seeds of per-seed means over test cases; latency_ms: median at "
                "batch 1; nfe: denoiser passes per image" + _extras_note(board))
    cfg = board.attrs.get("statistics", {})
    n = f"{cfg['n_resamples']} resamples" if "n_resamples" in cfg else "resampled cases"
    alpha = cfg.get("alpha", 0.05)
    return (f"dice [95% CI]: mean over test cases of seed-averaged case Dice, paired case-bootstrap percentile "
            f"interval ({n}); sd: std over seeds; grp: rank group, 1 = not significantly worse than the leader "
            f"(two-sided Wilcoxon signed-rank on per-case Dice, Holm, α = {alpha:g}), 2 = likewise against the "
            f"best row left, …; p1st: share of bootstrap samples ranking the row first; iou, hd95: mean ± std over "
            f"seeds; latency_ms: median at batch 1; nfe: denoiser passes per image" + _extras_note(board))


def markdown_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _mean_rank_parts(board: pd.DataFrame, fmt: str) -> list[str]:
    """Across datasets (suites with several): the mean rank per row, never an average of raw Dice."""
    from segarena.platform.board.statistics import mean_ranks

    parts = []
    for suite, part in board.groupby("suite", sort=True):
        if part["dataset"].nunique() < 2:
            continue
        mr = mean_ranks(part)
        mr.insert(1, "label", method_labels(mr.assign(dataset="all")))
        body = pd.DataFrame({"method": mr["label"], "budget": mr["budget"],
                             "mean rank": mr["mean_rank"].map(lambda v: f"{v:.2f}"), "datasets": mr["n_datasets"],
                             "ranks": mr["ranks"]})
        if fmt == "markdown":
            parts.append(f"### {suite} · mean rank across datasets\n\n{markdown_table(body)}")
        else:
            parts.append(f"== {suite} · mean rank across datasets ==\n{body.to_string(index=False)}")
    return parts


# ---------------------------------------------------------------------------------------------- LaTeX
_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
        "·": r"$\cdot$", "±": r"$\pm$", "–": "--"}


def tex(text: object) -> str:
    """User text (plugin, dataset, suite names) escaped for LaTeX."""
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def _best(values: pd.Series, higher: bool, digits: int) -> set[int]:
    """Positions whose displayed value equals the best displayed value (ties are all bold)."""
    shown = [round(float(v), digits) if _num(v) else None for v in values]
    valid = [v for v in shown if v is not None]
    if not valid:
        return set()
    best = max(valid) if higher else min(valid)
    return {i for i, v in enumerate(shown) if v == best}


def latex(board: pd.DataFrame) -> str:
    """One booktabs table per suite × dataset, best value of each column in bold."""
    if board.empty:
        return "% no finished runs yet"
    stats = has_statistics(board)
    out = ["% segarena leaderboard; needs \\usepackage{booktabs}"]
    for (suite, dataset), part in board.groupby(["suite", "dataset"], sort=True):
        part = part.sort_values("rank").reset_index(drop=True)
        labels = method_labels(part)
        unit = tex(part["hd95_unit"].iloc[0]) if "hd95_unit" in part and len(part) else ""
        spec = [(f"{m.label} ({unit})" if m.unit_column else m.label, m.name, not m.lower_is_better, m.digits)
                for m in METRICS.values() if m.headline]
        bold = {key: _best(part[f"{key}_mean"], hi, d) for _, key, hi, d in spec}
        head = ["Rank", "Method", "Budget", *(h for h, *_ in spec)] + (["Group"] if stats else [])
        lines = [r"\begin{table}[htbp]", r"\centering",
                 rf"\caption{{{tex(suite)} / {tex(dataset)}: "
                 + (r"mean over test cases [95\% paired bootstrap CI]; group 1 = not significantly worse than "
                    r"the leader (Wilcoxon signed-rank, Holm); " if stats else "mean over seeds; ")
                 + r"best per column in bold.}",
                 rf"\label{{tab:{_label(suite)}-{_label(dataset)}}}",
                 r"\begin{tabular}{rll" + "r" * len(spec) + ("c" if stats else "") + "}", r"\toprule",
                 " & ".join(head) + r" \\", r"\midrule"]
        for i, row in part.iterrows():
            cells = [str(int(row["rank"])), tex(labels[i]), tex(row["budget"])]
            for _, key, _hi, d in spec:
                v = row[f"{key}_mean"]
                txt = "--" if not _num(v) else (f"{v:.{d}f}" if d else f"{v:g}")
                if i in bold[key]:
                    txt = rf"\textbf{{{txt}}}"
                if stats and METRICS[key].has_ci and _num(row.get(f"{key}_ci_low")):
                    txt += rf" {{\scriptsize[{row[f'{key}_ci_low']:.{d}f}, {row[f'{key}_ci_high']:.{d}f}]}}"
                cells.append(txt)
            if stats:
                cells.append(_group(row["rank_group"]))
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _label(text: object) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in str(text)).strip("-") or "x"


# ---------------------------------------------------------------------------------------------- render
def _json_safe(obj: object) -> object:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def render(board: pd.DataFrame, failed: pd.DataFrame, fmt: str = "table", output: str | None = None) -> str:
    """The board as text (table/markdown/latex/csv/json) or written to ``output`` (any format; parquet needs it)."""
    if fmt == "parquet":
        if not output:
            raise SegarenaError("--format parquet needs --output FILE")
        board.to_parquet(output, index=False)
        return f"wrote {len(board)} rows to {output}"
    if fmt == "csv":
        text = board.to_csv(index=False)
    elif fmt == "json":
        text = json.dumps({"leaderboard": json.loads(board.to_json(orient="records")),
                           "failed": json.loads(failed.to_json(orient="records"))}, indent=1, default=_json_safe)
    elif fmt == "latex":
        text = latex(board)
    elif fmt in ("table", "markdown"):
        shown = display_frame(board) if not board.empty else board
        parts = []
        for (suite, dataset), part in shown.groupby(["suite", "dataset"], sort=True) if not board.empty else []:
            body = part.drop(columns=["suite", "dataset"])
            if fmt == "markdown":
                parts.append(f"### {suite} · {dataset}\n\n{markdown_table(body)}")
            else:
                parts.append(f"== {suite} · {dataset} ==\n{body.to_string(index=False)}")
        if not board.empty:
            parts += _mean_rank_parts(board, fmt)
        if not failed.empty:
            fail = failed.drop(columns=["run_id"], errors="ignore")
            parts.append(("### Failed cells\n\n" + markdown_table(fail)) if fmt == "markdown"
                         else "== failed cells ==\n" + fail.to_string(index=False))
        text = "\n\n".join(parts) if parts else "(no finished runs yet)"
        if not board.empty:
            text += ("\n\n" + ("_" + footer(board) + "_" if fmt == "markdown" else footer(board)))
    else:
        raise SegarenaError(f"unknown format {fmt!r} ({', '.join(FORMATS)})")
    if output:
        Path(output).write_text(text)
        return f"wrote {output}"
    return text
