"""The report's prediction grid: per dataset, one row per method, its best / median / worst test case.

The images are the overlays each evaluation run stored (``predictions/overlays/{best,median,worst}{k}_<case>.png``,
written by ``platform/scoring/predictions.py``: image with truth contour green + prediction contour red, beside the
member-disagreement map), read through ``Tracker.fetch`` only, recompressed to a small palette PNG and
embedded as base64 so the report stays one file that opens offline. Case ids come from the run's per-case
table (the file names hold a sanitised slug). No torch: ``platform/scoring/predictions.py`` imports it, so its slug
rule is repeated here (a test keeps the two equal).
"""

from __future__ import annotations

import base64
import io
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from segarena.dashboards.html import esc

KINDS = ("best", "median", "worst")
MAX_ROWS = 12           # rows per dataset; a larger board shows each method's best budget
MAX_WIDTH = 720         # px: wider overlays are downscaled
PALETTE_COLORS = 64     # overlays are flat colours + grey: 64 keep them sharp at a third of the bytes
OVERLAY_FOLDER = "predictions/overlays"
SAVE_PARAM = "evaluation.save_predictions"
_FILE = re.compile(r"^(best|median|worst)(\d+)_(.*)\.png$")
KEYS = ["suite", "dataset", "method", "variant", "profile", "budget"]


def slug(text: str) -> str:
    """The overlay file-name form of a case id (the same rule as ``platform/scoring/predictions.py``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80]


@dataclass(frozen=True)
class Overlay:
    """One stored overlay: which case of the ranking it shows, and the image as a compact PNG."""

    kind: str                # best | median | worst
    rank: int                # 1 = the best (worst) case; median k: the k-th of the stored median window
    case_id: str
    dice: float | None       # the case's Dice (mean over classes) in that run, when the per-case table has it
    png: bytes

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class PredictionRow:
    """One board row's overlays (from one seed's evaluation run), or why there are none."""

    method: str
    variant: str
    budget: str
    seed: str
    run_id: str
    overlays: tuple[Overlay, ...] = ()
    note: str = ""           # set when ``overlays`` is empty: "not stored (...)" or the read error


@dataclass
class PredictionGrid:
    dataset: str
    rows: list[PredictionRow] = field(default_factory=list)
    rule: str = ""           # which board rows were chosen, said on the page


def select_rows(part: pd.DataFrame, max_rows: int = MAX_ROWS) -> tuple[pd.DataFrame, str]:
    """The board rows of one dataset the grid shows (rank order) and the rule, in words."""
    part = part.sort_values("rank", kind="stable")
    if len(part) <= max_rows:
        return part, f"one per leaderboard row ({len(part)})"
    best = part.drop_duplicates(["method", "variant"], keep="first")
    shown = (f"the first {max_rows} of {len(best)} methods by rank" if len(best) > max_rows
             else f"{len(best)} methods")
    return best.head(max_rows), (f"the leaderboard has {len(part)} rows, so one per method at its best-ranked "
                                 f"budget ({shown})")


def _seed_order(seed: Any) -> tuple[int, Any]:
    s = str(seed)
    return (0, int(s)) if s.lstrip("-").isdigit() else (1, s)


def compact_png(data: bytes, max_width: int = MAX_WIDTH, colors: int = PALETTE_COLORS) -> bytes:
    """A palette PNG of at most ``max_width`` px (overlays are flat colours: few bytes, still sharp)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    if rgb.width > max_width:
        rgb = rgb.resize((max_width, max(1, round(rgb.height * max_width / rgb.width))), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(out, format="PNG", optimize=True)
    return out.getvalue()


def _case_scores(cases: pd.DataFrame, run_id: str) -> dict[str, tuple[str, float | None]]:
    """slug → (case id, Dice as the mean over classes) of one run's per-case rows."""
    if cases.empty or "run_id" not in cases:
        return {}
    mine = cases[cases["run_id"] == run_id]
    dice = mine.groupby("case_id")["dice"].mean() if "dice" in mine else pd.Series(dtype=float)
    return {slug(str(c)): (str(c), None if pd.isna(d) else float(d)) for c, d in dice.items()}


def _not_stored(tracker: Any, run_id: str) -> str:
    try:
        mode = tracker.client.get_run(run_id).data.params.get(SAVE_PARAM) or "none"
    except Exception:  # the mode is only informative: the missing images are the fact
        mode = "none"
    return f"not stored (evaluation.save_predictions: {mode})"


def read_overlays(tracker: Any, run_id: str, cases: pd.DataFrame) -> tuple[tuple[Overlay, ...], str]:
    """The best and worst overlay (rank 1) and the middle one of the median ranks of one evaluation run
    (the evaluation stores the median three, centred on the median case), or a note saying why there are none."""
    from segarena.platform.errors import StoreError

    scores = _case_scores(cases, run_id)
    with tempfile.TemporaryDirectory(prefix="segarena-report-") as tmp:
        try:
            folder = tracker.fetch(run_id, OVERLAY_FOLDER, Path(tmp))
        except StoreError as exc:
            if "missing" in str(exc) or "not found" in str(exc).lower() or "no such" in str(exc).lower():
                return (), _not_stored(tracker, run_id)
            return (), f"not readable: {exc}"
        found: dict[str, list[tuple[int, Path, str]]] = {}
        for path in sorted(Path(folder).glob("*.png")) if Path(folder).is_dir() else []:
            m = _FILE.match(path.name)
            if m:
                found.setdefault(m[1], []).append((int(m[2]), path, m[3]))
        if not found:
            return (), _not_stored(tracker, run_id)
        overlays = []
        for kind in KINDS:
            if kind in found:
                ranked = sorted(found[kind])
                rank, path, name = ranked[len(ranked) // 2] if kind == "median" else ranked[0]
                case_id, dice = scores.get(name, (name, None))
                overlays.append(Overlay(kind, rank, case_id, dice, compact_png(path.read_bytes())))
    return tuple(overlays), ""


def load_prediction_grids(tracker: Any, board: pd.DataFrame, seeds: pd.DataFrame, cases: pd.DataFrame,
                          max_rows: int = MAX_ROWS) -> dict[str, PredictionGrid]:
    """Per dataset, the grid rows of the board (``select_rows``), each from its lowest seed's evaluation run."""
    grids: dict[str, PredictionGrid] = {}
    if board.empty or seeds.empty:
        return grids
    runs = {key: sorted(zip(g["seed"], g["run_id"], strict=True), key=lambda sr: _seed_order(sr[0]))
            for key, g in seeds.groupby(KEYS, dropna=False)}
    for (_, dataset), part in board.groupby(["suite", "dataset"], sort=True):
        chosen, rule = select_rows(part, max_rows)
        grid = grids.setdefault(str(dataset), PredictionGrid(str(dataset), rule=rule))
        for r in chosen.itertuples(index=False):
            key = tuple(getattr(r, k) for k in KEYS)
            if key not in runs:
                continue
            seed, run_id = runs[key][0]
            overlays, note = read_overlays(tracker, str(run_id), cases)
            grid.rows.append(PredictionRow(str(r.method), str(r.variant), str(r.budget), str(seed), str(run_id),
                                           overlays, note))
    return grids


NOTE = ("Rows: {rule}; at most {rows} rows per dataset, each from the lowest seed's evaluation run of its "
        "leaderboard row. Columns: that run's best, median and worst test case by Dice (at most {kinds} images "
        "per row). Each image: the case with the ground truth contour (green) and the prediction contour (red), "
        "beside the ensemble members' disagreement 4v(1−v) (black where all members agree, so all black for one "
        "member). Images are the overlays stored with the evaluation run (artifacts predictions/overlays/), "
        "recompressed to {colors} colours; the masks and probabilities of every test case are in its artifact "
        "predictions/predictions.npz (stored below 500 test cases).")


def _cell(o: Overlay | None) -> str:
    if o is None:
        return '<td class="pred-none">–</td>'
    dice = "" if o.dice is None else f" · Dice {o.dice:.3f}"
    caption = f"{o.kind} {o.rank}: {o.case_id}{dice}"
    return (f'<td><figure class="pred"><img class="pred-img" src="{o.data_uri()}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure></td>")


def grid_html(grid: PredictionGrid | None, labels: dict[tuple[str, str], str]) -> str:
    """The grid of one dataset as HTML; ``labels`` maps (method, variant) to the board's method label."""
    if grid is None or not grid.rows:
        return ('<div class="missing">Prediction grid: no stored predictions were read for this dataset '
                "(the store holds no evaluation runs with overlays for these rows).</div>")
    body = []
    for r in grid.rows:
        head = (f"<th>{esc(labels.get((r.method, r.variant), r.method))}<br><small>{esc(r.budget)} · seed "
                f"{esc(r.seed)}</small></th>")
        if r.overlays:
            by_kind = {o.kind: o for o in r.overlays}
            body.append(f"<tr>{head}{''.join(_cell(by_kind.get(k)) for k in KINDS)}</tr>")
        else:
            body.append(f'<tr>{head}<td colspan="{len(KINDS)}" class="pred-missing">{esc(r.note)}</td></tr>')
    note = NOTE.format(kinds=len(KINDS), rows=MAX_ROWS, rule=grid.rule, colors=PALETTE_COLORS)
    return (f'<p class="foot">{esc(note)}</p><div class="scroll"><table class="predgrid"><thead><tr><th>method</th>'
            + "".join(f"<th>{k} case</th>" for k in KINDS) + f"</tr></thead><tbody>{''.join(body)}</tbody></table>"
            "</div>")
