"""MedSegDiff sampling cost: the naive way vs ours, per image on CPU (run on demand, not a test).

(a) naive: ensemble members one by one, the condition branch recomputed at every denoiser call
    (what the official code does); (b) ours: condition once per image, members as one batch.
Reports median latency per image (batch 1), FLOPs per sampling step (torch.utils.flop_counter) and
the machine's conv throughput ceiling. Writes results/medsegdiff_sampling.{json,md}.

    python benchmarks/perf/medsegdiff_sampling.py --profiles tiny paper@64 --ensembles 1 5 --steps 10
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
from torch.utils.flop_counter import FlopCounterMode

from segarena.methods.medsegdiff import MedSegDiffMethod, diffusion
from segarena.platform.plugin import Budget, Task

RESULTS = Path(__file__).parent / "results"


def build(profile: str) -> MedSegDiffMethod:
    """``name`` or ``name@size`` (a profile at another image size, e.g. paper@64)."""
    name, _, size = profile.partition("@")
    hp = MedSegDiffMethod.profiles()[name]
    px = int(size or hp["image_size"])
    torch.manual_seed(0)
    return MedSegDiffMethod(hp, Task(in_channels=1, num_classes=1, image_size=(px, px))).eval()


def naive(method: MedSegDiffMethod, image: torch.Tensor, noise: torch.Tensor, budget: Budget) -> torch.Tensor:
    """Members one by one; the image branch runs inside every denoiser call."""
    b = image.shape[0]
    one = Budget(budget.steps, 1, budget.sampler)
    members = [diffusion.sample(lambda x, t: method.denoiser(x, t, method.condition(image)),
                                noise[e * b:(e + 1) * b], one, method.hparams["timesteps"])
               for e in range(budget.ensemble)]
    return torch.cat(members)


def ours(method: MedSegDiffMethod, image: torch.Tensor, noise: torch.Tensor, budget: Budget) -> torch.Tensor:
    return method.sample_members(method.condition(image), budget.ensemble, noise, budget)


def interleaved_seconds(fns: list, repeats: int) -> tuple[list[float], list[float], list[torch.Tensor]]:
    """Runs the paths alternately (shared machine: load swings hit both alike); median, min, last output."""
    times: list[list[float]] = [[] for _ in fns]
    outs: list[torch.Tensor] = [torch.empty(0)] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            outs[i] = fn()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times], [min(t) for t in times], outs


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def conv_ceiling(repeats: int = 5) -> float:
    """Best GFLOP/s of a dense 3x3 conv (64→64 ch, 64 px, batch 8): the CPU's practical ceiling."""
    conv, x = torch.nn.Conv2d(64, 64, 3, padding=1), torch.randn(8, 64, 64, 64)
    work = 2 * 64 * 64 * 9 * 8 * 64 * 64
    conv(x)
    return max(work / _time(lambda: conv(x)) for _ in range(repeats)) / 1e9


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(profile: str, ensembles: list[int], steps: int, repeats: int) -> list[dict[str, Any]]:
    method = build(profile)
    px = method.task.image_size[0]
    image = torch.randn(1, 1, px, px, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([method.hparams["timesteps"] - 1])
    cond = method.condition(image)
    cond_flops = flops(lambda: method.condition(image))
    den_flops = flops(lambda: method.denoiser(torch.zeros(1, 1, px, px), t, cond))
    rows = []
    repeats = repeats if den_flops < 1e9 else 1  # paper-width samplings take minutes each on 2 cores
    for e in ensembles:
        budget = Budget(steps, e, "ddim")
        noise = torch.randn(e, 1, px, px, generator=torch.Generator().manual_seed(1))
        warm = Budget(1, e, "ddim")  # one step of each path; full samplings are minutes at paper width
        naive(method, image, noise, warm), ours(method, image, noise, warm)
        (a, b), (a_min, b_min), (out_a, out_b) = interleaved_seconds(
            [lambda: naive(method, image, noise, budget), lambda: ours(method, image, noise, budget)],  # noqa: B023
            repeats)
        same = (out_a - out_b).abs().max().item()
        rows.append({
            "profile": profile, "image_size": px, "sampler": "ddim", "steps": steps, "ensemble": e, "nfe": budget.nfe,
            "repeats": repeats, "naive_ms": 1e3 * a, "ours_ms": 1e3 * b, "ratio": b / a,
            "naive_min_ms": 1e3 * a_min, "ours_min_ms": 1e3 * b_min, "ratio_min": b_min / a_min, "max_abs_diff": same,
            "denoiser_gflop": den_flops / 1e9, "condition_gflop": cond_flops / 1e9,
            "naive_gflop_per_step": e * (den_flops + cond_flops) / 1e9,
            "ours_gflop_per_step": (e * den_flops + cond_flops / steps) / 1e9,
            "ours_gflops_achieved": (budget.nfe * den_flops + cond_flops) / b / 1e9,
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# MedSegDiff sampling: naive vs ours (CPU, batch 1, per image)", "",
        f"torch {env['torch']}, {env['threads']} threads, {env['cpu']}; load average before/after "
        f"{env['load_before']} / {env['load_after']} (shared machine). Conv ceiling: "
        f"{result['conv_ceiling_gflops']:.1f} GFLOP/s.", "",
        "| profile | px | DDIM steps | E | nfe | runs | naive ms (median / min) | ours ms (median / min) "
        "| ours/naive (median / min) | denoiser GFLOP | condition GFLOP | naive GFLOP/step | ours GFLOP/step "
        "| ours GFLOP/s | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['profile']} | {r['image_size']} | {r['steps']} | {r['ensemble']} | {r['nfe']} | {r['repeats']} "
            f"| {r['naive_ms']:.0f} / {r['naive_min_ms']:.0f} | {r['ours_ms']:.0f} / {r['ours_min_ms']:.0f} "
            f"| {r['ratio']:.2f} / {r['ratio_min']:.2f} | {r['denoiser_gflop']:.3f} | {r['condition_gflop']:.3f} "
            f"| {r['naive_gflop_per_step']:.3f} | {r['ours_gflop_per_step']:.3f} | {r['ours_gflops_achieved']:.1f} "
            f"| {r['max_abs_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["tiny", "paper@64"])
    parser.add_argument("--ensembles", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="median over this many (1 above 1 GFLOP/row)")
    parser.add_argument("--out", type=Path, default=RESULTS / "medsegdiff_sampling")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with torch.inference_mode():
        ceiling = conv_ceiling()
        rows = [r for p in args.profiles for r in run(p, args.ensembles, args.steps, args.repeats)]
    result = {
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                        "cpu": platform.processor() or platform.machine(),
                        "load_before": [round(x, 2) for x in load_before],
                        "load_after": [round(x, 2) for x in os.getloadavg()]},
        "conv_ceiling_gflops": ceiling, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
