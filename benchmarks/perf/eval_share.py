"""Metrics share of a budget's evaluation wall time, UNet at 64 and 256 px, before vs after.

Run: ``python benchmarks/perf/eval_share.py [--rounds N]``. UNet (tiny profile, 40 training steps so the
masks are realistic) on the mni152-gm test split at 64 px and 256 px, the suite's default evaluation
settings (batch 8, 10 timing repeats, throughput batch 8), torch on 1 thread (a one-CPU cell). Each round
runs every variant once, interleaved:

- ``before``: the metrics code of commit ``BEFORE`` (MONAI's ``compute_hausdorff_distance`` per case, NSD
  from its own distance transform, every calibration measure converting the pixels again), loaded from
  git and scored inline;
- ``inline``: today's metrics (boundaries computed once for HD95 and NSD, pixels converted once), inline;
- ``threaded``: today's metrics scored in the background thread while the next batch predicts (default);
- ``no_metrics``: the same evaluation with scoring replaced by handing back rows computed beforehand: the
  floor the metrics add to.

The metrics share is the time spent inside the per-case scoring (every metric: Dice, IoU, HD95, NSD, GED,
diversity, entropy, calibration) over the evaluation's wall time, from the inline runs; the wall cost of
the threaded default is its wall time over ``no_metrics``. Also checked: today's rows equal the rows of
``before`` and threaded rows equal inline rows. Writes results/eval_share.{json,md} with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as stdlib_platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

import segarena.platform.scoring.evaluation as evaluation
from segarena.platform.plugin import Budget
from segarena.platform.plugins.registry import discover
from segarena.platform.run.cell_data import load_cell_data

OUT = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[2]
BEFORE = "1656429"  # the last commit scoring with MONAI's HD95 per case
SIZES = (64, 256)
CFG = {"batch_size": 8, "timing_warmup": 2, "timing_repeats": 10, "throughput_batch": 8}
CPU = torch.device("cpu")


def legacy_metrics() -> types.ModuleType:
    """platform/metrics.py as it was at ``BEFORE``, as a module of its own."""
    source = subprocess.run(["git", "show", f"{BEFORE}:platform/metrics.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("segarena_metrics_before")
    exec(compile(source, f"{BEFORE}:platform/metrics.py", "exec"), module.__dict__)
    return module


def legacy_score_unit(old: types.ModuleType) -> Callable:
    """``_score_unit`` as it was at ``BEFORE`` (it called the two public functions of its metrics)."""
    def score(case_id, mask, gt, probs, samples, sample_probs, spacing, class_names, tolerance):
        with torch.inference_mode():
            rows = old.per_case_metrics(mask, gt, spacing, case_id, class_names, channels_first=True)
            extra = old.distribution_metrics(mask, gt, probs, samples, sample_probs, spacing, tolerance)
        return [{**r, **x} for r, x in zip(rows, extra, strict=True)]
    return score


class Scoring:
    """Swaps ``evaluation._score_unit`` and sums the seconds spent inside it."""

    def __init__(self, score: Callable) -> None:
        self.score, self.seconds = score, 0.0

    def __call__(self, *args):
        t = time.perf_counter()
        try:
            return self.score(*args)
        finally:
            self.seconds += time.perf_counter() - t


def run(method, cases, task, score: Callable, workers: int) -> tuple[float, float, object]:
    """(evaluation wall s, seconds inside scoring, per-case table) of one evaluation with ``score``."""
    scoring = Scoring(score)
    original = evaluation._score_unit
    evaluation._score_unit = scoring
    try:
        t = time.perf_counter()
        table, _ = evaluation.evaluate(method, cases, [Budget()], task, CPU, 0, CFG, score_workers=workers)
        wall = time.perf_counter() - t
    finally:
        evaluation._score_unit = original
    return wall, scoring.seconds, table


def trained_unet(registry, size: int):
    with tempfile.TemporaryDirectory() as cache:
        data = load_cell_data(registry, "mni152-gm", None, {"size": size}, Path(cache), 0)
    cls = registry.method("unet")
    torch.manual_seed(0)
    unet = cls(cls.profiles()["tiny"], data.task)
    train = data.cases("train")[:8]
    batch = {"image": torch.stack([c.image for c in train]), "mask": torch.stack([c.mask.float() for c in train])}
    for _ in range(40):
        unet.training_step(batch)
    return unet, data.cases("test"), data.task


def measure(registry, size: int, rounds: int, old: types.ModuleType) -> dict:
    unet, cases, task = trained_unet(registry, size)
    today = evaluation._score_unit
    before = legacy_score_unit(old)
    rows: dict[str, list] = {}
    _, _, reference = run(unet, cases, task, today, 0)  # warm-up, and the rows no_metrics hands back

    def recorded(case_id, *args):
        return rows[case_id]

    rows.update({cid: part.drop(columns=["budget"]).to_dict("records")
                 for cid, part in reference.groupby("case_id", sort=False)})
    variants = {"before": (before, 0), "inline": (today, 0), "threaded": (today, 1), "no_metrics": (recorded, 0)}
    wall: dict[str, list[float]] = {k: [] for k in variants}
    inside: dict[str, list[float]] = {k: [] for k in variants}
    tables = {}
    for _ in range(rounds):
        for name, (score, workers) in variants.items():
            w, s, tables[name] = run(unet, cases, task, score, workers)
            wall[name].append(w)
            inside[name].append(s)
    med = {k: statistics.median(v) for k, v in wall.items()}
    share = {k: statistics.median(s / w for s, w in zip(inside[k], wall[k], strict=True)) for k in ("before", "inline")}
    return {
        "image_size": size, "cases": len(cases), "wall_s": wall, "scoring_s": inside,
        "median_wall_s": {k: round(v, 4) for k, v in med.items()},
        "median_scoring_s": {k: round(statistics.median(v), 4) for k, v in inside.items() if k != "no_metrics"},
        "metrics_share_of_eval": {k: round(v, 4) for k, v in share.items()},
        "threaded_wall_over_no_metrics": round(med["threaded"] / med["no_metrics"] - 1, 4),
        "inline_wall_over_no_metrics": round(med["inline"] / med["no_metrics"] - 1, 4),
        "scoring_speedup_before_over_today": round(statistics.median(inside["before"]) /
                                                   statistics.median(inside["inline"]), 2),
        "rows_equal_before": bool(tables["inline"].equals(tables["before"])),
        "threaded_rows_equal_inline": bool(tables["threaded"].equals(tables["inline"])),
    }


def main(rounds: int) -> dict:
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    registry = discover(use_env=False)
    old = legacy_metrics()
    sizes = [measure(registry, size, rounds, old) for size in SIZES]
    return {"machine": {"cpu_count": os.cpu_count(), "processor": stdlib_platform.processor(),
                        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                        "python": sys.version.split()[0]},
            "before_commit": BEFORE, "rounds": rounds, "evaluation": CFG,
            "load_average_at_start": load0, "load_average_at_end": os.getloadavg(), "sizes": sizes}


def table(res: dict) -> str:
    lines = [
        "# Metrics share of evaluation wall time (UNet tiny, mni152-gm test split)",
        "",
        f"{res['sizes'][0]['cases']} test cases, batch {CFG['batch_size']}, {CFG['timing_repeats']} timing "
        f"repeats; medians of {res['rounds']} interleaved rounds; torch threads "
        f"{res['machine']['torch_threads']}, {res['machine']['cpu_count']} CPUs; load average "
        f"{res['load_average_at_start'][0]:.2f} at start, {res['load_average_at_end'][0]:.2f} at end. "
        f"`before` = metrics of commit {res['before_commit']} (MONAI HD95 per case).",
        "",
        "| px | variant | eval wall s | inside scoring s | metrics share |",
        "|---|---|---|---|---|",
    ]
    for s in res["sizes"]:
        for name in ("before", "inline", "threaded", "no_metrics"):
            scoring = s["median_scoring_s"].get(name)
            share = s["metrics_share_of_eval"].get(name)
            lines.append(f"| {s['image_size']} | {name} | {s['median_wall_s'][name]:.3f} | "
                         f"{'' if scoring is None else f'{scoring:.3f}'} | "
                         f"{'' if share is None else f'{100 * share:.1f} %'} |")
    lines.append("")
    for s in res["sizes"]:
        lines.append(f"- {s['image_size']} px: scoring {s['scoring_speedup_before_over_today']}× faster than before; "
                     f"metrics {100 * s['metrics_share_of_eval']['inline']:.1f} % of evaluation wall time inline "
                     f"(before {100 * s['metrics_share_of_eval']['before']:.1f} %); the threaded default costs "
                     f"{100 * s['threaded_wall_over_no_metrics']:+.1f} % wall over no metrics; rows equal "
                     f"before: {s['rows_equal_before']}, threaded rows equal inline: "
                     f"{s['threaded_rows_equal_inline']}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    result = main(parser.parse_args().rounds)
    OUT.mkdir(exist_ok=True)
    (OUT / "eval_share.json").write_text(json.dumps(result, indent=1))
    (OUT / "eval_share.md").write_text(table(result))
    print(table(result))
