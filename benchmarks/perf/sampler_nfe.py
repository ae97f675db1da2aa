"""Dice vs nfe for the ε-prediction methods' samplers on one trained checkpoint each (run on demand).

Trains one MedSegDiff and one SDSeg at the tiny profile on ``mni152-gm`` (64 px) in-process, with
the default suite's lengths (400 steps, batch 4; no Ray), then scores the test split for DDIM,
DPM-Solver++ 2M and UniPC (SDSeg also: single step, DDIM η = 1) at several step counts over 3
sampling seeds, with the harness's own ``predict_cases`` + ``score_cases`` (the leaderboard's Dice).
Latency: batch 1, median over repeats, all budgets of a method interleaved round by round (a shared
machine's load swings hit all alike). Writes results/sampler_nfe.{json,md}.

    python benchmarks/perf/sampler_nfe.py                 # ~10-15 min on 2 busy cores
    python benchmarks/perf/sampler_nfe.py --train-steps 40 --seeds 1 --repeats 1 --out /tmp/x  # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from segarena.methods.medsegdiff import MedSegDiffMethod
from segarena.methods.sdseg import SDSegMethod
from segarena.platform.paths import cache_root
from segarena.platform.plugin import Budget, MethodPlugin
from segarena.platform.plugins.registry import discover
from segarena.platform.run.cell_data import CellData, load_cell_data
from segarena.platform.scoring.evaluation import predict_cases, score_cases

RESULTS = Path(__file__).parent / "results"
DATASET, PARAMS = "mni152-gm", {"size": 64}
TOLERANCE = 0.01  # "within 1 Dice point"

# (method class, hparam overrides as in the default suite, budgets); DDIM 50 is each method's reference.
SETUPS: dict[str, tuple[type[MethodPlugin], dict[str, Any], list[Budget]]] = {
    "medsegdiff": (MedSegDiffMethod, {"batch_size": 4}, [
        *(Budget(k, 1, "ddim") for k in (5, 10, 20, 50)),
        *(Budget(k, 1, "dpmpp2m") for k in (2, 5, 10, 20)),
        *(Budget(k, 1, "unipc") for k in (2, 5, 10)),
        Budget(5, 3, "ddim"), Budget(5, 3, "dpmpp2m"),
    ]),
    "sdseg": (SDSegMethod, {}, [
        Budget(1, 1, "direct"),
        *(Budget(k, 1, "ddim") for k in (5, 10, 50)),
        *(Budget(k, 1, "ancestral") for k in (10, 50)),
        *(Budget(k, 1, "dpmpp2m") for k in (2, 5, 10, 20)),
        *(Budget(k, 1, "unipc") for k in (5, 10)),
    ]),
}
REFERENCE = Budget(50, 1, "ddim")


def train(name: str, data: CellData, steps: int, seed: int = 0) -> tuple[MethodPlugin, dict[str, Any]]:
    """The tiny profile, ``steps`` training steps on shuffled train batches (seeded), eval mode."""
    cls, overrides, _ = SETUPS[name]
    hp = {**cls.profiles()["tiny"], **overrides}
    torch.manual_seed(seed)
    method = cls(hp, data.task)
    images, masks = data.train_tensors()
    gen = torch.Generator().manual_seed(seed)
    method.train()
    losses, t0, order = [], time.perf_counter(), torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < hp["batch_size"]:
            order = torch.randperm(len(images), generator=gen)
        idx, order = order[:hp["batch_size"]], order[hp["batch_size"]:]
        logs = method.training_step({"image": images[idx], "mask": masks[idx]})
        losses.append(logs.get("loss", logs.get("ae/loss", float("nan"))))  # SDSeg's stage 1 logs ae/loss
    method.eval()
    tail = losses[-20:]
    return method, {"steps": steps, "batch_size": hp["batch_size"], "train_s": time.perf_counter() - t0,
                    "final_loss": sum(tail) / len(tail), "parameters": method.num_parameters(),
                    "card_tags": method.card_tags()}


def dice(method: MethodPlugin, data: CellData, budget: Budget, seed: int) -> float:
    """The harness's Dice on the test split (slices of one volume are scored as that volume)."""
    cases = data.cases("test")
    masks, _, _ = predict_cases(method, cases, budget, data.task, torch.device("cpu"), seed, batch_size=8)
    table = score_cases(cases, masks, list(data.task.class_names) or ["1"])
    return float(table.groupby("case_id")["dice"].mean().mean())


def latencies(method: MethodPlugin, image: torch.Tensor, budgets: list[Budget], repeats: int) -> list[float]:
    """Median batch-1 latency (ms) per budget, budgets interleaved in each round after one warm-up."""
    times: list[list[float]] = [[] for _ in budgets]
    with torch.inference_mode():
        for rnd in range(repeats + 1):
            for i, budget in enumerate(budgets):
                gen = torch.Generator().manual_seed(rnd)
                t0 = time.perf_counter()
                method.predict(image, budget, gen)
                if rnd:
                    times[i].append(1e3 * (time.perf_counter() - t0))
    return [statistics.median(t) for t in times]


def run_method(name: str, data: CellData, train_steps: int, seeds: int, repeats: int) -> dict[str, Any]:
    method, info = train(name, data, train_steps)
    print(f"{name}: trained {info}", flush=True)
    budgets = SETUPS[name][2]
    rows = []
    for budget in budgets:
        t0 = time.perf_counter()
        scores = [dice(method, data, budget, seed) for seed in range(seeds)]
        rows.append({"budget": budget.name, **budget.as_dict(), "nfe": budget.nfe, "dice_per_seed": scores,
                     "dice": statistics.mean(scores), "dice_std": statistics.stdev(scores) if seeds > 1 else 0.0,
                     "eval_s": time.perf_counter() - t0})
        print(f"{name} {budget.name}: dice {rows[-1]['dice']:.4f} ± {rows[-1]['dice_std']:.4f}", flush=True)
    image = data.cases("test")[0].image[None]
    for row, ms in zip(rows, latencies(method, image, budgets, repeats), strict=True):
        row["latency_ms"] = ms
    ref = next(r for r in rows if r["budget"] == REFERENCE.name)
    for row in rows:
        row["dice_minus_ddim50"] = row["dice"] - ref["dice"]
        row["latency_vs_ddim50"] = row["latency_ms"] / ref["latency_ms"]
    return {"training": info, "rows": rows, "verdicts": verdicts(rows, ref)}


def verdicts(rows: list[dict[str, Any]], ref: dict[str, Any]) -> dict[str, Any]:
    """The issue's two questions, answered from the rows."""
    dpm = [r for r in rows if r["sampler"] == "dpmpp2m" and r["steps"] <= 10 and r["ensemble"] == 1]
    best = max(dpm, key=lambda r: r["dice"])
    cheap = [r for r in rows if r["dice"] >= ref["dice"] - TOLERANCE and r["latency_vs_ddim50"] <= 0.5]
    match = min(cheap, key=lambda r: r["latency_ms"]) if cheap else None
    strict = [r for r in cheap if r["dice"] >= ref["dice"]]
    at_least = min(strict, key=lambda r: r["latency_ms"]) if strict else None
    return {
        "ddim50_dice": ref["dice"], "ddim50_latency_ms": ref["latency_ms"],
        "best_dpmpp2m_le10": best["budget"], "best_dpmpp2m_le10_dice": best["dice"],
        "dpmpp2m_le10_within_1_point": best["dice"] >= ref["dice"] - TOLERANCE,
        "cheapest_match_at_half_latency": match["budget"] if match else None,
        "cheapest_match_dice": match["dice"] if match else None,
        "cheapest_match_latency_ratio": match["latency_vs_ddim50"] if match else None,
        "cheapest_at_least_ddim50": at_least["budget"] if at_least else None,
        "cheapest_at_least_dice": at_least["dice"] if at_least else None,
        "cheapest_at_least_latency_ratio": at_least["latency_vs_ddim50"] if at_least else None,
    }


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# Dice vs nfe: DDIM, DPM-Solver++ 2M, UniPC on one checkpoint per method", "",
        f"`{DATASET}` (size 64), tiny profiles trained in-process; Dice = the harness's `score_cases` on the test "
        f"split, mean ± std over {result['seeds']} sampling seeds; latency = batch-1 median of {result['repeats']} "
        f"interleaved repeats. torch {env['torch']}, {env['threads']} thread(s), {env['cpu']}; load average "
        f"before/after {env['load_before']} / {env['load_after']} (shared 2-core machine). Wall {env['wall_s']:.0f} s.",
        "",
    ]
    for name, res in result["methods"].items():
        tr, v = res["training"], res["verdicts"]
        lines += [f"## {name}", "",
                  f"{tr['steps']} training steps at batch {tr['batch_size']} ({tr['train_s']:.0f} s, final loss "
                  f"{tr['final_loss']:.4f}, {tr['parameters']:,} parameters, card tags {tr['card_tags'] or '{}'}).",
                  "",
                  "| budget | sampler | steps | E | nfe | Dice | ± std | Δ vs DDIM-50 (points) | latency ms "
                  "| × DDIM-50 latency |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["rows"]:
            lines.append(f"| {r['budget']} | {r['sampler']} | {r['steps']} | {r['ensemble']} | {r['nfe']} "
                         f"| {r['dice']:.4f} | {r['dice_std']:.4f} | {100 * r['dice_minus_ddim50']:+.2f} "
                         f"| {r['latency_ms']:.1f} | {r['latency_vs_ddim50']:.2f} |")
        within = "**yes**" if v["dpmpp2m_le10_within_1_point"] else "**no**"
        match = (f"`{v['cheapest_match_at_half_latency']}` (Dice {v['cheapest_match_dice']:.4f}, "
                 f"{v['cheapest_match_latency_ratio']:.2f}× the latency)" if v["cheapest_match_at_half_latency"]
                 else "**none** of the budgets above")
        strict = (f"`{v['cheapest_at_least_ddim50']}` (Dice {v['cheapest_at_least_dice']:.4f}, "
                  f"{v['cheapest_at_least_latency_ratio']:.2f}× the latency)" if v["cheapest_at_least_ddim50"]
                  else "**none** of the budgets above")
        lines += ["", f"- DPM-Solver++ at ≤ 10 nfe within 1 Dice point of DDIM-50 ({v['ddim50_dice']:.4f}): {within}"
                  f" — best is `{v['best_dpmpp2m_le10']}` at {v['best_dpmpp2m_le10_dice']:.4f} "
                  f"({100 * (v['best_dpmpp2m_le10_dice'] - v['ddim50_dice']):+.2f} points).",
                  f"- Cheapest budget with Dice ≥ DDIM-50 − 1 point at ≤ 0.5× its latency "
                  f"({v['ddim50_latency_ms']:.0f} ms): {match}; with Dice ≥ DDIM-50 itself: {strict}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a suite cell holds one CPU)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render", action="store_true", help="only re-render the Markdown (and verdicts) from "
                        "the JSON in --out, without running anything")
    args = parser.parse_args()
    if args.render:
        result = json.loads((args.out / "sampler_nfe.json").read_text())
        for res in result["methods"].values():
            res["verdicts"] = verdicts(res["rows"], next(r for r in res["rows"] if r["budget"] == REFERENCE.name))
        (args.out / "sampler_nfe.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "sampler_nfe.md").write_text(markdown(result))
        return
    torch.set_num_threads(args.threads)
    t0, load_before = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    registry = discover(use_env=False)
    data = load_cell_data(registry, DATASET, None, PARAMS, cache_root(), seed=0)
    methods = {name: run_method(name, data, args.train_steps, args.seeds, args.repeats) for name in args.methods}
    result = {
        "dataset": DATASET, "params": PARAMS, "seeds": args.seeds, "repeats": args.repeats,
        "split": {part: len(getattr(data.split, part)) for part in ("train", "val", "test")},
        "environment": {"torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or
                        platform.machine(), "cores": os.cpu_count(), "load_before": load_before,
                        "load_after": [round(x, 2) for x in os.getloadavg()], "wall_s": time.perf_counter() - t0},
        "methods": methods,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sampler_nfe.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "sampler_nfe.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
