"""Cases/s reading preprocessed cases from the Parquet cache vs preprocessing from the source files.

Run: ``python benchmarks/perf/dataset_cache.py``. Datasets: mni152-gm (real,
offline) and an ISIC 2018 fixture in the official layout (generated here: 120 JPEG images of
600x450 with PNG masks). Writes results/dataset_cache.json and .md next to this file.
"""

from __future__ import annotations

import json
import platform as stdlib_platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from segarena.platform.plugins.registry import discover

RESULTS = Path(__file__).resolve().parent / "results"
REPEATS = 3


def make_isic2018(root: Path, n: int = 120, h: int = 450, w: int = 600) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    inputs, truth = root / "ISIC2018_Task1-2_Training_Input", root / "ISIC2018_Task1_Training_GroundTruth"
    inputs.mkdir(parents=True)
    truth.mkdir(parents=True)
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * (h, w)
        mask = ((yy - cy) / (0.2 * h)) ** 2 + ((xx - cx) / (0.2 * w)) ** 2 < 1
        img = (80 + 100 * mask[..., None] + rng.integers(0, 50, (h, w, 3))).astype(np.uint8)
        Image.fromarray(img).save(inputs / f"ISIC_{i:07d}.jpg", quality=90)
        Image.fromarray((mask * 255).astype(np.uint8)).save(truth / f"ISIC_{i:07d}_segmentation.png")
    return root


def time_loads(name: str, root: Path | None, size: int) -> dict:
    cls = discover(use_env=False).dataset(name)
    source_s, cache_s = [], []
    for _ in range(REPEATS):
        with tempfile.TemporaryDirectory() as cache:
            t = time.perf_counter()
            n = len(cls(root=root, cache_dir=cache, size=size).cases())  # miss: read + preprocess + write
            source_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert len(cls(root=root, cache_dir=cache, size=size).cases()) == n  # hit: hash (stat) + Parquet
            cache_s.append(time.perf_counter() - t)
    src, hit = statistics.median(source_s), statistics.median(cache_s)
    return {"dataset": name, "size": size, "cases": n, "source_s": round(src, 4), "cache_s": round(hit, 4),
            "source_cases_per_s": round(n / src, 1), "cache_cases_per_s": round(n / hit, 1),
            "speedup": round(src / hit, 1)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [time_loads("mni152-gm", None, 64), time_loads("isic2018", make_isic2018(Path(tmp) / "isic"), 64)]
    meta = {"repeats": REPEATS, "statistic": "median", "python": stdlib_platform.python_version(),
            "cpu": stdlib_platform.processor() or stdlib_platform.machine(),
            "note": "source = first load (read, validate, preprocess, write cache); cache = second load"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dataset_cache.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["# Dataset cache: cases/s from cache vs from source", "",
             f"Median of {REPEATS} runs; {meta['note']}.", "",
             "| dataset | size | cases | source s | cache s | source cases/s | cache cases/s | speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['size']} | {r['cases']} | {r['source_s']} | {r['cache_s']} | "
              f"{r['source_cases_per_s']} | {r['cache_cases_per_s']} | {r['speedup']}x |" for r in rows]
    (RESULTS / "dataset_cache.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
