"""Cost of the harness augmentation per training step on CPU (run on demand, not a test).

Times ``Augment(kind)`` on one batch for each kind, interleaved with one training step of the cheapest
built-in method (``unet`` tiny) at the same batch, so the overhead ratio is measured under the same load.
Writes results/augment_speed.{json,md}.

    python benchmarks/perf/augment_speed.py --size 64 --batch 4 --repeats 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from segarena.methods.unet import UNetMethod
from segarena.platform.conformance import synthetic_batch
from segarena.platform.plugin import Task
from segarena.platform.run.augment import KINDS, Augment

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = Task(in_channels=1, num_classes=1, image_size=(args.size, args.size))
    data = synthetic_batch(task, args.batch, seed=0)
    augs = {kind: Augment(kind, 0) for kind in KINDS}
    torch.manual_seed(0)
    unet = UNetMethod({**UNetMethod.profiles()["tiny"], "batch_size": args.batch}, task).train()
    fns = {f"augment {k}": (lambda s, a=a: a(data["image"], data["mask"], s)) for k, a in augs.items()}
    fns["unet tiny training_step"] = lambda s: unet.training_step(data)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for step in range(args.repeats + 5):  # interleaved; the first 5 rounds are warm-up
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(step)
            if step >= 5:
                times[name].append(time.perf_counter() - t0)
    step_ms = statistics.median(times["unet tiny training_step"]) * 1e3
    rows = [{"what": k, "median_ms": statistics.median(v) * 1e3, "min_ms": min(v) * 1e3,
             "ratio_to_unet_step": statistics.median(v) * 1e3 / step_ms} for k, v in times.items()]
    result = {"size": args.size, "batch": args.batch, "repeats": args.repeats, "threads": args.threads,
              "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpu": platform.processor() or
              platform.machine(), "torch": torch.__version__, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "augment_speed.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Harness augmentation cost ({args.size} px, batch {args.batch}, {args.threads} thread, "
             f"{args.repeats} interleaved repeats)", "",
             f"Load average before/after: {load_before[0]:.2f} / {result['loadavg_after'][0]:.2f} (2-core machine).",
             "", "| what | median ms | min ms | × unet tiny step |", "|---|---|---|---|"]
    lines += [f"| {r['what']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | {r['ratio_to_unet_step']:.3f} |"
              for r in rows]
    (RESULTS / "augment_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
