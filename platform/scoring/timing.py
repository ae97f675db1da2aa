"""Sampling cost under the timing contract (docs/contracts.md, "Timing").

Latency: batch 1, input already on device, until the fused mask is on device; inference mode,
warm-up first, synchronised on GPU, median over repeats (+ IQR, p90). Throughput at a fixed batch.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from segarena.platform.plugin import Budget, MethodPlugin


@dataclass(frozen=True)
class Timing:
    latency_ms: float
    latency_iqr_ms: float
    latency_p90_ms: float
    throughput_ips: float
    throughput_batch: int
    peak_mem_mb: float
    peak_mem_kind: str  # cuda_max_allocated | cpu_max_rss
    extra_calls: dict[str, int] = field(default_factory=dict)  # other networks' passes per image (batch 1)

    def metrics(self) -> dict[str, float]:
        return {"latency_ms": self.latency_ms, "latency_iqr_ms": self.latency_iqr_ms,
                "latency_p90_ms": self.latency_p90_ms, "throughput_ips": self.throughput_ips,
                "peak_mem_mb": self.peak_mem_mb, **{f"extra_calls/{k}": float(v) for k, v in self.extra_calls.items()}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def time_method(method: MethodPlugin, images: torch.Tensor, budget: Budget, *, warmup: int = 2, repeats: int = 10,
                throughput_batch: int = 8, seed: int = 0) -> Timing:
    """Time ``method.predict`` on ``images`` (N, C, H, W), already on the target device.

    Each repeat uses the next image (cycling), batch 1, with a fixed-seed generator.
    """
    device = images.device
    method.eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    extra: dict[str, int] = {}

    def run(batch: torch.Tensor) -> None:
        gen = torch.Generator(device=device).manual_seed(seed)
        out = method.predict(batch, budget, gen)
        if batch.shape[0] == 1:
            extra.update(getattr(out, "extra_calls", None) or {})

    with torch.inference_mode():
        for i in range(warmup):
            run(images[i % len(images)][None])
        lat = np.array([_timed(lambda i=i: run(images[i % len(images)][None]), device) for i in range(repeats)])
        reps = max(1, throughput_batch // len(images) + 1)
        batch = images.repeat(reps, 1, 1, 1)[:throughput_batch]
        run(batch)  # warm the batched shapes
        t_batch = _timed(lambda: run(batch), device)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_max_rss"
    q1, med, q3, p90 = np.percentile(lat * 1000, [25, 50, 75, 90])
    return Timing(latency_ms=float(med), latency_iqr_ms=float(q3 - q1), latency_p90_ms=float(p90),
                  throughput_ips=float(len(batch) / t_batch), throughput_batch=len(batch), peak_mem_mb=float(peak),
                  peak_mem_kind=kind, extra_calls=dict(extra))
