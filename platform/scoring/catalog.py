"""The catalogue of metrics: one typed row per metric, read by aggregation, statistics, the board's formats,
the report and the search objectives, so a fact about a metric (direction, summarised, CI, shown, label,
digits) is written once. Adding a metric = its function (scoring/metrics.py) + one row here + a test.

Torch-free and import-light: the store readers (board/, dashboards/) and the search stage read it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal


@dataclass(frozen=True)
class Metric:
    """Everything the platform needs to know about one metric besides how it is computed."""

    name: str                         # per-case column (aggregated) or logged run metric key
    lower_is_better: bool | None      # None: descriptive, no better direction (diversity, entropy)
    aggregated: bool                  # dataset mean of case means of a per-case column; False: logged per run
    has_ci: bool                      # paired case-bootstrap interval on the board
    shown: bool                       # a column of the text board (extras only once some row measured them)
    label: str                        # human name: titles, LaTeX and report headers
    digits: int                       # decimals in the report and LaTeX; 0 = a count, printed as is (``:g``)
    column: str = ""                  # text board header; "" = name
    table_digits: int | None = None   # text board decimals (mean ± std over seeds); None = digits
    headline: bool = False            # always on the board, LaTeX and report, whether measured or not
    figure: bool = False              # a per-case distribution figure in the report
    median: bool = False              # its median over cases is logged beside the mean (``dice_median``)
    unit_column: str | None = None    # per-case column naming the metric's unit (mm or px)
    note: str = ""                    # the board footer's definition of a shown extra column

    @property
    def header(self) -> str:
        return self.column or self.name

    @property
    def board_digits(self) -> int:
        return self.digits if self.table_digits is None else self.table_digits


def _row(name: str, lower: bool | None, label: str, digits: int, *, aggregated: bool = True, ci: bool = False,
         shown: bool = False, **kw: object) -> Metric:
    return Metric(name, lower, aggregated, ci, shown, label, digits, **kw)  # type: ignore[arg-type]


_ROWS = (
    # headline: the board's core columns, in the order it shows them
    _row("dice", False, "Dice", 3, ci=True, shown=True, table_digits=4, headline=True, figure=True, median=True),
    _row("iou", False, "IoU", 3, ci=True, shown=True, table_digits=4, headline=True),
    _row("hd95", True, "HD95", 2, ci=True, shown=True, headline=True, figure=True, median=True,
         unit_column="hd95_unit"),
    _row("latency_ms", True, "Latency (ms)", 1, aggregated=False, shown=True, headline=True),
    _row("nfe", True, "NFE", 0, aggregated=False, shown=True, headline=True),
    # diffusion-aware: means of the per-case columns, shown once measured
    _row("nsd", False, "NSD", 3, ci=True, shown=True, note="normalized surface Dice"),
    _row("ged", True, "GED", 3, ci=True, shown=True, note="generalized energy distance (d = 1 − IoU)"),
    _row("diversity", None, "diversity", 3, shown=True, column="div", note="mean pairwise 1 − Dice of members"),
    _row("entropy", None, "entropy", 3),
    _row("ece", True, "ECE", 3, ci=True, shown=True, note="expected calibration error (15 bins)"),
    _row("brier", True, "Brier", 3),
    _row("nll", True, "NLL", 3),
    _row("dice_repeat_std", True, "stability", 3, shown=True, column="stab",
         note="mean per-case std of Dice over repeated sampling seeds"),
)

METRICS: dict[str, Metric] = {m.name: m for m in _ROWS}

# The board's rank order: Dice first, HD95 breaking ties (the leaderboard's sort and a cell's best run)
RANK_BY = ("dice", "hd95")

_FLAGS = frozenset(f.name for f in fields(Metric) if f.type in ("bool", "bool | None"))
_SPLITS = ("val/", "test/", "best/")


def names(**where: bool | None) -> tuple[str, ...]:
    """The metric names whose flags equal ``where``, in catalogue order: ``names(aggregated=True,
    headline=False)`` = the diffusion-aware means; ``names(has_ci=True)`` = the metrics with CIs."""
    unknown = set(where) - _FLAGS
    if unknown:
        raise TypeError(f"not a flag of Metric: {', '.join(sorted(unknown))}")
    return tuple(m.name for m in METRICS.values() if all(getattr(m, k) == v for k, v in where.items()))


def lookup(key: str) -> Metric:
    """The row of a metric key, also when logged under a split prefix (``val/dice`` → ``dice``)."""
    for prefix in _SPLITS:
        key = key.removeprefix(prefix)
    try:
        return METRICS[key]
    except KeyError:
        raise KeyError(f"{key!r} is not in the metric catalogue ({', '.join(METRICS)})") from None


def mode(key: str) -> Literal["min", "max"]:
    """Tune's optimisation mode of a metric key (``val/dice`` → max, ``latency_ms`` → min)."""
    m = lookup(key)
    if m.lower_is_better is None:
        raise ValueError(f"{m.name} has no better direction: it cannot be an objective")
    return "min" if m.lower_is_better else "max"
