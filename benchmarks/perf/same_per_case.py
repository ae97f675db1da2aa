"""Did a change move any number? Compare the per-case rows of the same suite run by two checkouts.

Run each checkout's ``segarena run SUITE --workdir DIR`` (same machine, same ``OMP_NUM_THREADS``), then
``python benchmarks/perf/same_per_case.py DIR_BEFORE DIR_AFTER [--name NAME]``. Reads every finished
evaluation run's ``per_case.parquet`` from both embedded stores (the store's own tags, no torch), pairs the
rows by dataset, method, budget, seed, case and class, and writes results/NAME.{json,md}: rows on each
side, rows paired, and per metric whether every pair is equal (and the largest difference). A refactor
must show every pair equal.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pandas as pd

from segarena.platform.store.schema import KIND_EVAL, PER_CASE, Tag
from segarena.platform.store.tracking import Tracker
from segarena.platform.store.workdir import WorkDir

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = ["dataset", "method", "budget", "seed", "case_id", "class"]
METRICS = ["dice", "iou", "hd95"]


def rows(workdir: Path) -> pd.DataFrame:
    """Every evaluation run's per-case rows, with the cell's identity as columns."""
    wd = WorkDir.at(workdir)
    tracker = Tracker(wd.tracking_uri, wd)
    frames = []
    for exp in tracker.client.search_experiments():
        for run in tracker.runs([exp.experiment_id], KIND_EVAL):
            if run.info.status != "FINISHED":
                continue
            table = pd.read_parquet(tracker.fetch(run.info.run_id, PER_CASE, Path(workdir) / "compare"
                                                  / run.info.run_id))
            for key in ("dataset", "method", "budget", "seed"):
                table[key] = run.data.tags.get(getattr(Tag, key.upper()))
            frames.append(table)
    return pd.concat(frames, ignore_index=True)


def compare(before: pd.DataFrame, after: pd.DataFrame) -> dict:
    keys = [k for k in KEYS if k in before.columns and k in after.columns]
    paired = before.merge(after, on=keys, suffixes=("_before", "_after"))
    out = {"rows_before": len(before), "rows_after": len(after), "paired": len(paired), "metrics": {}}
    for m in METRICS:
        if f"{m}_before" in paired:
            diff = (paired[f"{m}_before"] - paired[f"{m}_after"]).abs()
            out["metrics"][m] = {"all_equal": bool((paired[f"{m}_before"] == paired[f"{m}_after"]).all()),
                                 "max_abs_diff": float(diff.max())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--name", default="same_per_case")
    parser.add_argument("--note", default="", help="what the two checkouts are (goes into the result)")
    args = parser.parse_args()
    result = {"before": str(args.before), "after": str(args.after), "note": args.note,
              "load_avg": os.getloadavg(), **compare(rows(args.before), rows(args.after))}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Per-case rows, before vs after ({args.note or args.name})", "",
             f"{result['rows_before']} rows before, {result['rows_after']} after, {result['paired']} paired.", "",
             "| metric | every pair equal | largest difference |", "|---|---|---|"]
    lines += [f"| {m} | {v['all_equal']} | {v['max_abs_diff']:g} |" for m, v in result["metrics"].items()]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
