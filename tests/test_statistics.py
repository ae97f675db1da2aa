"""Leaderboard statistics on fixed per-case data, cross-checked against scipy, statsmodels and scikit-posthocs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from segarena.platform.board import statistics as st

ROW = {"suite": "s", "variant": "v", "profile": "tiny"}


def make_cases(scores: dict[tuple[str, str], np.ndarray], dataset: str = "d", seeds: int = 1,
               seed_noise: float = 0.0, rng_seed: int = 0) -> pd.DataFrame:
    """Per-case rows for (method, budget) -> per-case Dice; IoU and HD95 derived from it."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for (method, budget), dice in scores.items():
        for s in range(seeds):
            noisy = np.clip(dice + rng.normal(0, seed_noise, len(dice)), 0, 1) if seed_noise else dice
            for c, v in enumerate(noisy):
                rows.append({**ROW, "dataset": dataset, "method": method, "budget": budget, "seed": str(s),
                             "run_id": f"{method}-{budget}-{s}", "case_id": f"case{c:03d}", "class": "1",
                             "dice": float(v), "iou": float(v / (2 - v)), "hd95": float(20 * (1 - v)),
                             "hd95_unit": "px"})
    return pd.DataFrame(rows)


def board_of(cases: pd.DataFrame) -> pd.DataFrame:
    """The board's row keys and rank order as leaderboard() gives them (seed means of dataset means)."""
    per_seed = cases.groupby([*st.KEYS, "seed"])["dice"].mean().reset_index()
    board = per_seed.groupby(st.KEYS)["dice"].mean().rename("dice_mean").reset_index()
    board = board.sort_values(["suite", "dataset", "dice_mean"], ascending=[True, True, False])
    board.insert(2, "rank", board.groupby(["suite", "dataset"]).cumcount() + 1)
    return board.reset_index(drop=True)


@pytest.fixture(scope="module")
def fixed():
    """Five rows on 40 cases: two close leaders, one a bit worse, two clearly worse."""
    rng = np.random.default_rng(12)
    base = rng.uniform(0.55, 0.95, 40)
    scores = {("unet", "direct-e1"): base,
              ("cdal", "posterior2-e1"): np.clip(base - 0.005 + rng.normal(0, 0.02, 40), 0, 1),
              ("medsegdiff", "ddim5-e1"): np.clip(base - 0.03 + rng.normal(0, 0.03, 40), 0, 1),
              ("sdseg", "direct-e1"): np.clip(base - 0.15 + rng.normal(0, 0.03, 40), 0, 1),
              ("sdseg", "direct-e2"): np.clip(base - 0.12 + rng.normal(0, 0.03, 40), 0, 1)}
    cases = make_cases(scores)
    board = board_of(cases)
    out, per = st.board_statistics(board, cases, st.StatsConfig(n_resamples=2000, seed=7))
    return cases, board, out, per[("s", "d")]


def test_cis_equal_scipy_bootstrap_with_the_same_resamples(fixed):
    _, _, out, ds = fixed
    for metric in ("dice", "iou", "hd95"):
        mat = ds.scores[metric].to_numpy(float)
        ref = stats.bootstrap((mat,), np.mean, axis=-1, vectorized=True, paired=False, n_resamples=2000,
                              method="percentile", confidence_level=0.95, rng=np.random.default_rng(7))
        np.testing.assert_allclose(out[f"{metric}_ci_low"], ref.confidence_interval.low, rtol=0, atol=1e-9)
        np.testing.assert_allclose(out[f"{metric}_ci_high"], ref.confidence_interval.high, rtol=0, atol=1e-9)
    assert (out["dice_ci_low"] < out["dice_mean"]).all() and (out["dice_mean"] < out["dice_ci_high"]).all()


def test_bootstrap_resamples_cases_jointly_across_rows(fixed):
    """Paired: shifting every case of one row by a constant shifts its bootstrap means by exactly that."""
    _, _, _, ds = fixed
    mat = ds.scores["dice"].to_numpy(float)
    idx = st.bootstrap_indices(mat.shape[1], 500, 3)
    shifted = np.vstack([mat[0], mat[0] - 0.1])
    boot = st.bootstrap_means(shifted, idx, chunk_elems=1000)  # small chunks: the chunking must not matter
    np.testing.assert_allclose(boot[0] - boot[1], 0.1, atol=1e-12)
    np.testing.assert_allclose(boot[0], mat[0][idx].mean(axis=1), atol=1e-12)


def test_wilcoxon_and_holm_equal_scipy_statsmodels_and_scikit_posthocs(fixed):
    sp = pytest.importorskip("scikit_posthocs")
    from statsmodels.stats.multitest import multipletests

    _, _, out, ds = fixed
    mat = ds.scores["dice"].to_numpy(float)
    raw = [stats.wilcoxon(mat[0], mat[i]).pvalue for i in range(1, len(mat))]
    np.testing.assert_allclose([st.wilcoxon_p(mat[0], mat[i]) for i in range(1, len(mat))], raw, atol=1e-12)
    ref = sp.posthoc_wilcoxon(list(mat)).to_numpy()  # independent pairwise implementation, raw p
    np.testing.assert_allclose(ref[0, 1:], raw, atol=1e-12)
    np.testing.assert_allclose(out["p_vs_leader"].iloc[1:], multipletests(raw, method="holm")[1], atol=1e-9)
    assert np.isnan(out["p_vs_leader"].iloc[0])  # the leader is not tested against itself
    holm_all = sp.posthoc_wilcoxon(list(mat), p_adjust="holm").to_numpy()
    np.testing.assert_allclose(ds.pairwise_p.to_numpy(float), holm_all, atol=1e-9)


def test_holm_against_statsmodels_with_ties_and_caps():
    from statsmodels.stats.multitest import multipletests

    p = np.array([0.01, 0.04, 0.04, 0.2, 0.001, 0.5, 0.03])
    np.testing.assert_allclose(st.holm(p), multipletests(p, method="holm")[1], atol=1e-15)
    assert st.holm([]).size == 0


def ds_row(fixed, method: str, budget: str) -> np.ndarray:
    return fixed[3].scores["dice"].xs((method, budget), level=("method", "budget")).to_numpy(float)[0]


def test_rank_groups_follow_the_tests(fixed):
    _, _, out, _ = fixed
    groups = dict(zip(out["method"] + " " + out["budget"], out["rank_group"], strict=True))
    assert groups["unet direct-e1"] == 1 and groups["cdal posterior2-e1"] == 1  # 0.005 apart: not separable
    assert groups["medsegdiff ddim5-e1"] == 2  # worse than the leader, the leader of the next group
    # the two sdseg budgets are 0.03 apart on 40 cases: separable, so each leads its own group
    e2, e1 = (ds_row(fixed, "sdseg", b) for b in ("direct-e2", "direct-e1"))
    assert stats.wilcoxon(e2, e1).pvalue < 0.05
    assert groups["sdseg direct-e2"] == 3 and groups["sdseg direct-e1"] == 4
    p = out.set_index(out["method"] + " " + out["budget"])["p_vs_leader"]
    assert p["cdal posterior2-e1"] >= 0.05 and p["medsegdiff ddim5-e1"] < 0.05


def test_a_row_above_the_leader_by_signed_ranks_is_not_worse():
    """Mean and signed ranks can disagree: a row with a lower mean but better on most cases stays in group 1."""
    leader = np.array([1.0] * 3 + [0.5] * 27)
    other = np.array([0.0] * 3 + [0.55] * 27)  # lower mean (0.495 vs 0.55), higher on 27 of 30 cases
    groups, p = st.rank_groups(np.vstack([leader, other]), 0.05)
    assert p[1] < 0.05 and st.signed_rank_direction(leader, other) < 0
    assert list(groups) == [1, 1]


def test_identical_rows_get_p_one_and_share_the_group():
    x = np.linspace(0.2, 0.9, 12)
    groups, p = st.rank_groups(np.vstack([x, x]), 0.05)
    assert p[1] == 1.0 and list(groups) == [1, 1]


def test_rank_stability_and_kendall_tau(fixed):
    _, _, out, ds = fixed
    np.testing.assert_allclose(ds.rank_counts.sum(axis=1), 1.0)  # every row gets one rank per sample
    assert out["rank_first_pct"].sum() == pytest.approx(100.0)   # continuous scores: no ties for first
    assert out["rank_first_pct"].iloc[0] > 50 and out["rank_first_pct"].iloc[3:].max() == 0
    assert list(out["rank_median"].iloc[:2]) in ([1.0, 2.0], [2.0, 1.0], [1.0, 1.0], [2.0, 2.0])
    assert (out["rank_ci_low"] <= out["rank_median"]).all() and (out["rank_median"] <= out["rank_ci_high"]).all()
    assert 0 < out["kendall_tau"].iloc[0] <= 1 and out["kendall_tau"].nunique() == 1


def test_kendall_tau_b_equals_scipy_with_ties():
    rng = np.random.default_rng(5)
    ref = np.array([1, 2, 3, 4, 5, 6])
    rankings = rng.integers(1, 5, (6, 200))  # many ties
    ours = st.kendall_tau_b(ref, rankings)
    theirs = [stats.kendalltau(ref, rankings[:, b]).statistic for b in range(200)]
    np.testing.assert_allclose(ours, theirs, atol=1e-12, equal_nan=True)
    assert np.isnan(st.kendall_tau_b(ref, np.ones((6, 1), int))[0])


def test_bootstrap_ranks_share_ties_at_the_best_rank():
    boot = np.array([[0.9, 0.5], [0.9, 0.7], [0.1, 0.6]])
    assert st.bootstrap_ranks(boot).tolist() == [[1, 3], [1, 1], [3, 2]]


def test_deterministic_for_a_seed_and_the_seed_matters(fixed):
    cases, board, out, _ = fixed
    again = st.with_statistics(board, cases, st.StatsConfig(n_resamples=2000, seed=7))
    pd.testing.assert_frame_equal(out, again)
    other = st.with_statistics(board, cases, st.StatsConfig(n_resamples=2000, seed=8))
    assert not np.allclose(other["dice_ci_low"], out["dice_ci_low"])
    assert (other["p_vs_leader"].fillna(-1) == out["p_vs_leader"].fillna(-1)).all()  # tests use no resampling


def test_case_scores_average_classes_then_seeds():
    rows = []
    for seed, c1, c2 in (("0", 0.2, 0.4), ("1", 0.6, 1.0)):
        for cls, v in (("1", c1), ("2", c2)):
            rows.append({**ROW, "dataset": "d", "method": "m", "budget": "b", "seed": seed, "run_id": "r" + seed,
                         "case_id": "a", "class": cls, "dice": v, "iou": v, "hd95": 1.0})
    mat = st.score_matrix(pd.DataFrame(rows), "dice")
    assert mat.loc[("m", "v", "tiny", "b"), "a"] == pytest.approx(((0.2 + 0.4) / 2 + (0.6 + 1.0) / 2) / 2)


def test_seed_averaged_mean_matches_the_board_and_run_ids_are_listed():
    rng = np.random.default_rng(1)
    cases = make_cases({("a", "b1"): rng.uniform(0.5, 1, 15), ("b", "b1"): rng.uniform(0.4, 0.9, 15)},
                       seeds=3, seed_noise=0.05)
    board = board_of(cases)
    _, per = st.board_statistics(board, cases)
    ds = per[("s", "d")]
    np.testing.assert_allclose(ds.scores["dice"].mean(axis=1).to_numpy(), board["dice_mean"], atol=1e-12)
    out = st.with_statistics(board, cases)
    assert out["run_ids"].iloc[0].split(",") == sorted({f"{out['method'].iloc[0]}-b1-{s}" for s in range(3)})


def test_unpaired_cases_are_dropped_and_counted():
    rng = np.random.default_rng(2)
    cases = make_cases({("a", "b1"): rng.uniform(0.5, 1, 10), ("b", "b1"): rng.uniform(0.5, 1, 10)})
    cases = cases[~((cases["method"] == "b") & (cases["case_id"] == "case003"))]
    out, per = st.board_statistics(board_of(cases), cases)
    assert (out["n_cases_paired"] == 9).all() and "case003" not in per[("s", "d")].scores["dice"].columns


def test_rows_without_cases_get_no_statistics():
    rng = np.random.default_rng(3)
    cases = make_cases({("a", "b1"): rng.uniform(0.5, 1, 10), ("b", "b1"): rng.uniform(0.5, 1, 10)})
    board = pd.concat([board_of(cases), pd.DataFrame([{**ROW, "dataset": "d", "method": "c", "budget": "b1",
                                                        "rank": 3, "dice_mean": 0.1}])], ignore_index=True)
    out = st.with_statistics(board, cases)
    assert out["rank_group"].isna().tolist() == [False, False, True] and np.isnan(out["dice_ci_low"].iloc[2])
    assert out["run_ids"].iloc[2] == ""


def test_unknown_and_extra_metric_columns_are_handled():
    rng = np.random.default_rng(4)
    cases = make_cases({("a", "b1"): rng.uniform(0.5, 1, 10), ("b", "b1"): rng.uniform(0.5, 1, 10)})
    cases["nsd"] = cases["dice"] * 0.9
    cases["note"] = "free text"
    cases["member_dice_3"] = 0.5
    out = st.with_statistics(board_of(cases), cases)
    assert {"nsd_ci_low", "nsd_ci_high"} <= set(out.columns) and "member_dice_3_ci_low" not in out.columns
    assert (out["nsd_ci_low"] < out["nsd_ci_high"]).all()


def test_with_statistics_is_idempotent_and_keeps_board_columns(fixed):
    cases, board, out, _ = fixed
    twice = st.with_statistics(out, cases, st.StatsConfig(n_resamples=2000, seed=7))
    pd.testing.assert_frame_equal(out, twice)
    assert list(twice.columns[:len(board.columns)]) == list(board.columns)


def test_empty_board():
    out = st.with_statistics(pd.DataFrame(columns=[*st.KEYS, "rank"]), pd.DataFrame())
    assert out.empty and {"dice_ci_low", "rank_group", "run_ids"} <= set(out.columns)


def test_mean_rank_across_datasets():
    board = pd.DataFrame([{**ROW, "dataset": d, "method": m, "budget": "b", "rank": r}
                          for d, m, r in (("d1", "a", 1), ("d1", "b", 2), ("d2", "a", 2), ("d2", "b", 1),
                                          ("d3", "a", 1), ("d3", "b", 2))])
    mr = st.mean_ranks(board)
    assert list(mr["method"]) == ["a", "b"]
    assert list(mr["mean_rank"]) == pytest.approx([4 / 3, 5 / 3]) and list(mr["n_datasets"]) == [3, 3]


def test_case_rows_attach_keys_and_replace_the_tables_budget():
    tables = {"r1": pd.DataFrame({"budget": ["x"], "case_id": ["c0"], "class": ["1"], "dice": [0.5], "iou": [0.3],
                                  "hd95": [1.0], "hd95_unit": ["px"], "ged": [0.2]})}

    class FakeTracker:
        def load_table(self, run_id):
            return tables[run_id].copy()

    seeds = pd.DataFrame([{**ROW, "dataset": "d", "method": "m", "budget": "ddim5-e1", "seed": "0", "run_id": "r1",
                           "dice": 0.5}])
    rows = st.case_rows(FakeTracker(), seeds)
    assert rows.loc[0, "budget"] == "ddim5-e1" and rows.loc[0, "run_id"] == "r1" and rows.loc[0, "ged"] == 0.2
    assert list(rows.columns[:8]) == [*st.KEYS, "seed", "run_id"]
    assert st.case_rows(FakeTracker(), seeds.iloc[:0]).empty


def test_statistics_import_no_torch():
    code = "import sys, segarena.platform.board.statistics; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
