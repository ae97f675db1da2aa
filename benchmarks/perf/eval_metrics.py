"""What the diffusion-aware metrics add to evaluation wall time, and what prefix scoring saves.

Run: ``python benchmarks/perf/eval_metrics.py``. UNet (tiny profile, 40 training steps so masks are
realistic) on the mni152-gm test split at 64 px with the suite's default evaluation settings, timed
interleaved in one process:

- ``legacy``: the evaluation before the new metrics (predict, Dice/IoU/HD95 per case, timing);
- ``inline``: ``evaluate`` with every new metric, scored in the main thread (``score_workers=0``);
- ``threaded``: ``evaluate`` scoring in a background thread while the next batch predicts (the default).

Also the time inside ``distribution_metrics`` alone, and for MedSegDiff (tiny, untrained) a DDIM-5 grid of
ensembles {1, 3} with minimal timing settings (so sampling dominates): one draw at 3 members scored for
both sizes vs sampling each size. Writes
results/eval_metrics.{json,md} with the machine's load average.
"""

from __future__ import annotations

import json
import os
import platform as stdlib_platform
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

import segarena.platform.scoring.evaluation as evaluation
from segarena.platform.plugin import Budget
from segarena.platform.plugins.registry import discover
from segarena.platform.run.cell_data import load_cell_data
from segarena.platform.scoring.metrics import aggregate
from segarena.platform.scoring.timing import time_method

OUT = Path(__file__).resolve().parent / "results"
ROUNDS = 5
CFG = {"batch_size": 8, "timing_warmup": 2, "timing_repeats": 10, "throughput_batch": 8}
CPU = torch.device("cpu")
MSD_CFG = {**CFG, "timing_warmup": 0, "timing_repeats": 1, "throughput_batch": 1}  # sampling dominates


def legacy(method, cases, budget, task) -> pd.DataFrame:
    """The evaluation as it was before the new metrics: masks, Dice/IoU/HD95 rows, aggregate, timing."""
    masks, _, _ = evaluation.predict_cases(method, cases, budget, task, CPU, 0, CFG["batch_size"])
    table = evaluation.score_cases(cases, masks, list(task.class_names))
    aggregate(table)
    images = torch.stack([c.image for c in cases[:10]])
    time_method(method, images, budget, warmup=2, repeats=10, throughput_batch=8, seed=0)
    return table


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def metric_seconds(method, cases, budgets, task) -> float:
    """Seconds spent inside ``distribution_metrics`` during one inline evaluation."""
    spent = [0.0]
    original = evaluation.distribution_metrics

    def counting(*a, **k):
        t = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t

    evaluation.distribution_metrics = counting
    try:
        evaluation.evaluate(method, cases, budgets, task, CPU, 0, CFG, score_workers=0)
    finally:
        evaluation.distribution_metrics = original
    return spent[0]


def main() -> dict:
    torch.set_num_threads(1)
    registry = discover(use_env=False)
    with tempfile.TemporaryDirectory() as cache:
        data = load_cell_data(registry, "mni152-gm", None, {"size": 64}, Path(cache), 0)
    cases, task = data.cases("test"), data.task
    cls = registry.method("unet")
    torch.manual_seed(0)
    unet = cls(cls.profiles()["tiny"], task)
    train = data.cases("train")[:8]
    batch = {"image": torch.stack([c.image for c in train]), "mask": torch.stack([c.mask.float() for c in train])}
    for _ in range(40):
        unet.training_step(batch)
    budgets = [Budget()]
    threaded, _ = evaluation.evaluate(unet, cases, budgets, task, CPU, 0, CFG, score_workers=1)
    inline, _ = evaluation.evaluate(unet, cases, budgets, task, CPU, 0, CFG, score_workers=0)
    identical = threaded.equals(inline)
    times: dict[str, list[float]] = {"legacy": [], "inline": [], "threaded": [], "metrics_only": []}
    for _ in range(ROUNDS):  # interleaved: each round runs every variant once
        times["legacy"].append(timed(lambda: legacy(unet, cases, budgets[0], task)))
        times["inline"].append(timed(lambda: evaluation.evaluate(unet, cases, budgets, task, CPU, 0, CFG,
                                                                 score_workers=0)))
        times["threaded"].append(timed(lambda: evaluation.evaluate(unet, cases, budgets, task, CPU, 0, CFG,
                                                                   score_workers=1)))
        times["metrics_only"].append(metric_seconds(unet, cases, budgets, task))
    med = {k: statistics.median(v) for k, v in times.items()}

    msd_cls = registry.method("medsegdiff")
    torch.manual_seed(0)
    msd = msd_cls(msd_cls.profiles()["tiny"], task)
    grid = [Budget(5, 1, "ddim"), Budget(5, 3, "ddim")]
    msd_cases = cases
    msd_times: dict[str, list[float]] = {"prefix": [], "each_size": []}
    for _ in range(3):
        msd_times["prefix"].append(timed(lambda: evaluation.evaluate(msd, msd_cases, grid, task, CPU, 0, MSD_CFG)))
        msd_times["each_size"].append(timed(lambda: [evaluation.evaluate(msd, msd_cases, [b], task, CPU, 0, MSD_CFG)
                                                     for b in grid]))
    msd_med = {k: statistics.median(v) for k, v in msd_times.items()}
    result = {
        "machine": {"cpu_count": os.cpu_count(), "processor": stdlib_platform.processor(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "load_average_at_start": None, "rounds": ROUNDS, "unet_cases": len(cases), "image_size": 64,
        "unet_seconds": times, "unet_median_s": {k: round(v, 4) for k, v in med.items()},
        "new_metrics_added_s_inline": round(med["inline"] - med["legacy"], 4),
        "new_metrics_added_s_threaded": round(med["threaded"] - med["legacy"], 4),
        "new_metrics_share_of_eval_inline": round((med["inline"] - med["legacy"]) / med["inline"], 4),
        "new_metrics_share_of_eval_threaded": round((med["threaded"] - med["legacy"]) / med["threaded"], 4),
        "distribution_metrics_share_inline": round(med["metrics_only"] / med["inline"], 4),
        "threaded_equals_inline": bool(identical),
        "medsegdiff_cases": len(msd_cases), "medsegdiff_grid": [b.name for b in grid],
        "medsegdiff_seconds": msd_times, "medsegdiff_median_s": {k: round(v, 3) for k, v in msd_med.items()},
        "prefix_speedup": round(msd_med["each_size"] / msd_med["prefix"], 3),
        "load_average_at_end": os.getloadavg(),
    }
    return result


if __name__ == "__main__":
    load0 = os.getloadavg()
    res = main()
    res["load_average_at_start"] = load0
    OUT.mkdir(exist_ok=True)
    (OUT / "eval_metrics.json").write_text(json.dumps(res, indent=1))
    m = res["unet_median_s"]
    lines = [
        "# Evaluation cost of the diffusion-aware metrics",
        "",
        f"UNet tiny, mni152-gm test split ({res['unet_cases']} cases, 64 px), default evaluation settings "
        f"(batch 8, 10 timing repeats); medians of {res['rounds']} interleaved rounds, torch threads "
        f"{res['machine']['torch_threads']}, {res['machine']['cpu_count']} CPUs, load average "
        f"{res['load_average_at_start'][0]:.2f} at start, {res['load_average_at_end'][0]:.2f} at end.",
        "",
        "| variant | evaluation wall s |",
        "|---|---|",
        f"| legacy (Dice/IoU/HD95 + timing) | {m['legacy']:.3f} |",
        f"| all metrics, scored inline | {m['inline']:.3f} |",
        f"| all metrics, scored in a background thread | {m['threaded']:.3f} |",
        f"| time inside distribution_metrics (inline run) | {m['metrics_only']:.3f} |",
        "",
        f"New metrics add {res['new_metrics_added_s_inline']:.3f} s inline "
        f"({100 * res['new_metrics_share_of_eval_inline']:.1f} % of evaluation wall time) and "
        f"{res['new_metrics_added_s_threaded']:.3f} s threaded "
        f"({100 * res['new_metrics_share_of_eval_threaded']:.1f} %); threaded rows identical to inline: "
        f"{res['threaded_equals_inline']}.",
        "",
        f"MedSegDiff tiny (untrained), {res['medsegdiff_cases']} cases, grid {', '.join(res['medsegdiff_grid'])}, "
        "1 timing repeat: "
        f"one draw scored for both sizes {res['medsegdiff_median_s']['prefix']:.2f} s vs each size sampled "
        f"{res['medsegdiff_median_s']['each_size']:.2f} s (x{res['prefix_speedup']:.2f}).",
    ]
    (OUT / "eval_metrics.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
