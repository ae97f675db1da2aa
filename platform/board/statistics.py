"""Leaderboard statistics from per-case rows (challengeR-style), shared by the leaderboard and the report.

Per suite × dataset, over the board's rows (method variant × budget): seed-averaged per-case scores
(case score = mean over classes, then mean over seeds), a paired case bootstrap (one resample of case
ids shared by every row) for percentile CIs and rank stability, and paired two-sided Wilcoxon
signed-rank tests on per-case Dice, Holm-corrected, for rank groups and the significance matrix.
Significance is tested on cases (test variance), never on seeds (n = 1-5 training runs).

No torch here: numpy, pandas and scipy only, so reading a store stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from segarena.platform.scoring.catalog import METRICS, names

KEYS = ["suite", "dataset", "method", "variant", "profile", "budget"]
ROW_KEYS = KEYS[2:]  # a row within one suite × dataset
# Always on a board with statistics: the headline CIs, then the rank columns (extra CIs follow when measured)
STAT_COLUMNS = [*(f"{m}_ci_{s}" for m in names(has_ci=True, headline=True) for s in ("low", "high")),
                "p_vs_leader", "rank_group", "rank_first_pct", "rank_median", "rank_ci_low", "rank_ci_high",
                "kendall_tau", "n_cases_paired", "run_ids"]


@dataclass(frozen=True)
class StatsConfig:
    """How the statistics are computed; the defaults are the leaderboard's."""

    n_resamples: int = 2000
    seed: int = 0
    confidence: float = 0.95
    alpha: float = 0.05


DEFAULT_STATS = StatsConfig()


@dataclass
class DatasetStats:
    """Everything computed for one suite × dataset; ``rows`` are in board rank order."""

    suite: str
    dataset: str
    rows: pd.DataFrame                      # ROW_KEYS + label, board rank order
    scores: dict[str, pd.DataFrame]         # metric -> rows × case_id, seed-averaged, paired cases only
    columns: pd.DataFrame                   # one row per board row: the STAT_COLUMNS values
    rank_counts: pd.DataFrame               # rows × rank (1..k): share of bootstrap samples
    pairwise_p: pd.DataFrame                # rows × rows: Holm-adjusted two-sided Wilcoxon p on Dice
    pairwise_sign: pd.DataFrame             # +1: the row's Dice is higher than the column's (signed ranks)
    taus: np.ndarray = field(default_factory=lambda: np.empty(0))  # Kendall's τ-b per bootstrap sample
    config: StatsConfig = field(default_factory=StatsConfig)


# ---------------------------------------------------------------------------------------------- loading
def case_rows(tracker: Any, seeds_df: pd.DataFrame) -> pd.DataFrame:
    """Every seed row's per-case table (``tracker.load_table(run_id)``) with the row keys, seed and run id.

    Columns of the table that collide with the keys (its ``budget``) are replaced by the keys; metric
    columns beyond dice/iou/hd95 are kept as they are."""
    keys = [*KEYS, "seed", "run_id"]
    parts = []
    for row in seeds_df.itertuples(index=False):
        table = tracker.load_table(row.run_id)
        table = table.drop(columns=[c for c in keys if c in table.columns])
        for k in reversed(keys):
            table.insert(0, k, getattr(row, k))
        parts.append(table)
    if not parts:
        return pd.DataFrame(columns=[*keys, "case_id", "class", "dice", "iou", "hd95", "hd95_unit"])
    return pd.concat(parts, ignore_index=True)


def row_labels(rows: pd.DataFrame) -> list[str]:
    """``method budget`` (with the variant's id when a method has several variants in the frame)."""
    n = rows.groupby("method")["variant"].transform("nunique") if len(rows) else pd.Series(dtype=int)
    return [f"{m}·{str(v)[:6]} {b}" if k > 1 else f"{m} {b}"
            for m, v, b, k in zip(rows["method"], rows["variant"], rows["budget"], n, strict=True)]


def score_matrix(cases: pd.DataFrame, metric: str) -> pd.DataFrame:
    """rows (ROW_KEYS) × case_id of seed-averaged case scores: mean over classes per seed, then over seeds."""
    per_seed = cases.groupby([*ROW_KEYS, "seed", "case_id"], dropna=False)[metric].mean()
    per_case = per_seed.groupby([*ROW_KEYS, "case_id"], dropna=False).mean()
    return per_case.unstack("case_id")


# ---------------------------------------------------------------------------------------------- tests
def wilcoxon_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided paired Wilcoxon signed-rank p (scipy defaults: zero differences dropped, exact when
    small and untied); 1.0 when the two rows are identical on every case (nothing to test)."""
    d = np.asarray(x, float) - np.asarray(y, float)
    if not np.any(d != 0):
        return 1.0
    return float(stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided", method="auto").pvalue)


def signed_rank_direction(x: np.ndarray, y: np.ndarray) -> int:
    """+1 when x is above y by the signed-rank sums the Wilcoxon test uses (W+ > W−), −1 below, 0 tied."""
    d = np.asarray(x, float) - np.asarray(y, float)
    d = d[d != 0]
    if d.size == 0:
        return 0
    r = stats.rankdata(np.abs(d))
    return int(np.sign(r[d > 0].sum() - r[d < 0].sum()))


def holm(pvalues: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values (monotone, capped at 1), in the input order."""
    p = np.asarray(pvalues, float)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def rank_groups(dice: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Rank groups over rows in rank order (``dice``: rows × cases) and Holm-adjusted p vs the leader.

    The leader and every row not significantly worse than it (Holm over the remaining rows, two-sided
    Wilcoxon, α) form group 1; the best row left leads group 2 against the rows still left; and so on.
    A row significantly different but *above* the leader by signed ranks is not worse: it joins."""
    k = dice.shape[0]
    groups = np.zeros(k, int)
    p_leader = np.full(k, np.nan)
    remaining, g = list(range(k)), 1
    while remaining:
        lead, others = remaining[0], remaining[1:]
        adj = holm([wilcoxon_p(dice[lead], dice[o]) for o in others])
        if g == 1:
            p_leader[others] = adj
        worse = {o for o, p in zip(others, adj, strict=True)
                 if p < alpha and signed_rank_direction(dice[lead], dice[o]) > 0}
        members = [lead, *(o for o in others if o not in worse)]
        groups[members] = g
        remaining = [o for o in remaining if o not in members]
        g += 1
    return groups, p_leader


def pairwise(dice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs: Holm-adjusted (over the k(k−1)/2 pairs) two-sided Wilcoxon p, and the direction."""
    k = dice.shape[0]
    iu = np.triu_indices(k, 1)
    raw = np.array([wilcoxon_p(dice[i], dice[j]) for i, j in zip(*iu, strict=True)])
    p = np.ones((k, k))
    p[iu] = holm(raw)
    p.T[iu] = p[iu]
    sign = np.zeros((k, k), int)
    for i, j in zip(*iu, strict=True):
        sign[i, j] = signed_rank_direction(dice[i], dice[j])
        sign[j, i] = -sign[i, j]
    return p, sign


# ---------------------------------------------------------------------------------------------- bootstrap
def bootstrap_indices(n_cases: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_cases) case indices, drawn like ``scipy.stats.bootstrap`` draws them from
    ``np.random.default_rng(seed)``, so our intervals equal scipy's for the same seed."""
    return np.random.default_rng(seed).integers(0, n_cases, (n_resamples, n_cases))


def bootstrap_means(matrix: np.ndarray, idx: np.ndarray, chunk_elems: int = 4_000_000) -> np.ndarray:
    """rows × resamples of means over resampled cases (the same cases for every row: paired)."""
    k, n = matrix.shape
    step = max(1, chunk_elems // max(1, k * n))
    return np.concatenate([matrix[:, idx[s:s + step]].mean(axis=-1) for s in range(0, len(idx), step)], axis=1)


def percentile_ci(boot: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    a = (1 - confidence) / 2
    lo, hi = np.quantile(boot, [a, 1 - a], axis=-1)
    return lo, hi


def bootstrap_ranks(boot_dice: np.ndarray) -> np.ndarray:
    """rows × resamples of ranks by mean Dice (1 = best; ties share the best rank, challengeR's 'min')."""
    return stats.rankdata(-boot_dice, method="min", axis=0).astype(int)


def kendall_tau_b(reference: np.ndarray, rankings: np.ndarray) -> np.ndarray:
    """Kendall's τ-b of one ranking (k,) against each of (k, B) rankings; NaN when either is all ties."""
    k = len(reference)
    if k < 2:
        return np.full(rankings.shape[1], np.nan)
    i, j = np.triu_indices(k, 1)
    s0 = np.sign(reference[i] - reference[j])[:, None]
    sb = np.sign(rankings[i] - rankings[j])
    n0, nb = np.count_nonzero(s0), np.count_nonzero(sb, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (s0 * sb).sum(axis=0) / np.sqrt(n0 * nb)
    return np.where(nb == 0, np.nan, tau)


# ---------------------------------------------------------------------------------------------- per dataset
def dataset_statistics(board_part: pd.DataFrame, cases: pd.DataFrame, config: StatsConfig = StatsConfig()
                       ) -> DatasetStats:
    """The statistics of one suite × dataset: ``board_part`` gives the rows and their rank order,
    ``cases`` their per-case rows. Only cases every row has are paired; rows without cases get NaN."""
    part = board_part.sort_values("rank", kind="stable") if "rank" in board_part else board_part
    if len(cases) and "seed" not in cases:
        cases = cases.assign(seed="0")  # rows of one seed each
    rows = part[ROW_KEYS].reset_index(drop=True)
    rows["label"] = row_labels(rows)
    suite, dataset = str(part["suite"].iloc[0]), str(part["dataset"].iloc[0])
    index = pd.MultiIndex.from_frame(rows[ROW_KEYS])
    metrics = [m for m in names(has_ci=True) if m in cases.columns and pd.api.types.is_numeric_dtype(cases[m])]
    full = {m: score_matrix(cases, m).reindex(index) if len(cases) else pd.DataFrame(index=index)
            for m in metrics}
    dice_full = full.get("dice", pd.DataFrame(index=index))
    has = dice_full.notna().any(axis=1).to_numpy()
    present = dice_full[has]
    paired = present.columns[present.notna().all(axis=0)]
    scores = {m: full[m][paired] for m in metrics}
    cols = _empty_columns(len(rows), metrics, cases, index)
    cols["n_cases_paired"] = len(paired)
    labels = list(rows["label"])
    ranking = _Ranking(pd.DataFrame(0.0, index=labels, columns=range(1, len(rows) + 1)),
                       pd.DataFrame(np.nan, index=labels, columns=labels),
                       pd.DataFrame(0, index=labels, columns=labels))
    if has.any() and len(paired):
        ranking.taus = _fill(cols, ranking, scores, np.flatnonzero(has), labels, config)
    for c in ("rank_group", "n_cases_paired"):
        cols[c] = pd.array(cols[c], dtype="Int64")
    numeric = [c for c in cols.columns if c not in ("run_ids", "rank_group", "n_cases_paired")]
    cols[numeric] = cols[numeric].astype(float)
    return DatasetStats(suite, dataset, rows, scores, cols, ranking.counts, ranking.p, ranking.sign, ranking.taus,
                        config)


@dataclass
class _Ranking:
    """The rank and pairwise frames of one dataset, filled by ``_fill`` for the rows with cases."""

    counts: pd.DataFrame
    p: pd.DataFrame
    sign: pd.DataFrame
    taus: np.ndarray = field(default_factory=lambda: np.empty(0))


def _empty_columns(n_rows: int, metrics: list[str], cases: pd.DataFrame, index: pd.MultiIndex) -> pd.DataFrame:
    """The STAT_COLUMNS (and the measured extras' CIs) of each row: NaN, with the rows' eval run ids."""
    extra = [f"{m}_ci_{s}" for m in metrics if not METRICS[m].headline for s in ("low", "high")]
    columns = [*STAT_COLUMNS, *extra]
    cols = pd.DataFrame(index=range(n_rows), columns=columns, dtype=object)
    cols[[c for c in columns if c != "run_ids"]] = np.nan
    if len(cases) and "run_id" in cases:
        ids = cases.groupby(ROW_KEYS, dropna=False)["run_id"].agg(lambda s: ",".join(sorted(set(map(str, s)))))
        cols["run_ids"] = ids.reindex(index).fillna("").to_numpy()
    else:
        cols["run_ids"] = ""
    return cols


def _fill(cols: pd.DataFrame, ranking: _Ranking, scores: dict[str, pd.DataFrame], ok: np.ndarray,
          labels: list[str], config: StatsConfig) -> np.ndarray:
    """CIs, rank groups, bootstrap ranks and pairwise tests of the rows ``ok`` (those with cases), written
    into ``cols`` and ``ranking``; returns Kendall's τ-b per bootstrap sample."""
    k_ok = len(ok)
    idx = bootstrap_indices(scores["dice"].shape[1], config.n_resamples, config.seed)
    boots = {m: bootstrap_means(s.to_numpy(float)[ok], idx) for m, s in scores.items()}
    for m, boot in boots.items():
        lo, hi = percentile_ci(boot, config.confidence)
        cols.loc[ok, f"{m}_ci_low"], cols.loc[ok, f"{m}_ci_high"] = lo, hi
    dice = scores["dice"].to_numpy(float)[ok]
    groups, p_leader = rank_groups(dice, config.alpha)
    cols.loc[ok, "rank_group"], cols.loc[ok, "p_vs_leader"] = groups, p_leader
    ranks = bootstrap_ranks(boots["dice"])
    cols.loc[ok, "rank_first_pct"] = 100.0 * (ranks == 1).mean(axis=1)
    cols.loc[ok, "rank_median"] = np.median(ranks, axis=1)
    a = (1 - config.confidence) / 2
    rlo, rhi = np.quantile(ranks, [a, 1 - a], axis=1)
    cols.loc[ok, "rank_ci_low"], cols.loc[ok, "rank_ci_high"] = rlo, rhi
    taus = kendall_tau_b(np.arange(1, k_ok + 1), ranks)
    cols.loc[ok, "kendall_tau"] = float(np.nanmean(taus)) if np.isfinite(taus).any() else np.nan
    ok_labels = [labels[i] for i in ok]
    for r in range(1, k_ok + 1):
        ranking.counts.loc[ok_labels, r] = (ranks == r).mean(axis=1)
    p, sign = pairwise(dice)
    ranking.p.loc[ok_labels, ok_labels] = p
    ranking.sign.loc[ok_labels, ok_labels] = sign
    return taus


def board_statistics(board: pd.DataFrame, cases: pd.DataFrame, config: StatsConfig = StatsConfig()
                     ) -> tuple[pd.DataFrame, dict[tuple[str, str], DatasetStats]]:
    """The board with STAT_COLUMNS (replacing any already there) and each dataset's full statistics."""
    ours = [c for c in board.columns if c in STAT_COLUMNS or c.endswith(("_ci_low", "_ci_high"))]
    out = board.drop(columns=ours).reset_index(drop=True)
    per: dict[tuple[str, str], DatasetStats] = {}
    if out.empty:
        for c in STAT_COLUMNS:
            out[c] = pd.Series(dtype=object if c == "run_ids" else float)
        return out, per
    filled = []
    for (suite, dataset), part in out.groupby(["suite", "dataset"], sort=False):
        sub = cases[(cases["suite"] == suite) & (cases["dataset"] == dataset)] if len(cases) else cases
        ds = dataset_statistics(part, sub, config)
        per[(str(suite), str(dataset))] = ds
        merged = ds.rows[ROW_KEYS].join(ds.columns)
        filled.append(part.reset_index().merge(merged, on=ROW_KEYS, how="left").set_index("index"))
    result = pd.concat(filled).loc[out.index].rename_axis(None)
    result.attrs["statistics"] = {"n_resamples": config.n_resamples, "seed": config.seed,
                                  "confidence": config.confidence, "alpha": config.alpha}
    return result, per


def with_statistics(board: pd.DataFrame, case_rows: pd.DataFrame, config: StatsConfig = StatsConfig()
                    ) -> pd.DataFrame:
    """``leaderboard()``'s board with the statistics columns: CIs (``dice_ci_low`` ...), ``p_vs_leader``
    (Holm-adjusted), ``rank_group``, ``rank_first_pct``, ``rank_median`` (+ its interval), ``kendall_tau``
    (the dataset's mean over bootstrap samples), ``n_cases_paired`` and ``run_ids`` (eval runs)."""
    return board_statistics(board, case_rows, config)[0]


def mean_ranks(board: pd.DataFrame) -> pd.DataFrame:
    """Across datasets, per suite: each (method variant, budget) row's mean rank over the datasets it
    appears in (never averaged raw Dice), with the number of datasets and the per-dataset ranks."""
    cols = ["suite", *ROW_KEYS, "mean_rank", "n_datasets", "ranks"]
    if board.empty:
        return pd.DataFrame(columns=cols)
    g = board.groupby(["suite", *ROW_KEYS], dropna=False)
    out = g.agg(mean_rank=("rank", "mean"), n_datasets=("dataset", "nunique")).reset_index()
    out["ranks"] = g.apply(lambda p: ", ".join(f"{d}:{int(r)}" for d, r in zip(p["dataset"], p["rank"], strict=True)),
                           include_groups=False).to_numpy()
    return out.sort_values(["suite", "mean_rank", "method", "budget"]).reset_index(drop=True)[cols]
