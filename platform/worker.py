"""The per-worker training loop run by Ray Train's TorchTrainer for one cell.

Every rank trains (DDP when there are several); rank 0 saves a checkpoint every epoch and, at the
end, evaluates the test split and hands the results to the trial through the final checkpoint.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from segarena.platform.cell_data import CellData, load_cell_data
from segarena.platform.evaluation import evaluate, quick_dice
from segarena.platform.fingerprint import fingerprint
from segarena.platform.plugin import MethodPlugin, unwrap
from segarena.platform.registry import discover
from segarena.platform.suite import Cell

STATE_FILE, META_FILE, RESULTS_FILE, PER_CASE_FILE = "state.pt", "meta.json", "results.json", "per_case.parquet"
ERROR_MARK = "SEGARENA_CELL_ERROR:"


class CellError(RuntimeError):
    """A cell failed; the message carries ERROR_MARK so the trial can extract one clear line."""


def place(method: MethodPlugin, device: torch.device, world: int) -> None:
    from ray.train.torch import prepare_model

    for name, module in method.modules().items():
        module.to(device)
        if world > 1 and any(p.requires_grad for p in module.parameters()):
            setattr(method, name, prepare_model(module, move_to_device=False,
                                                parallel_strategy_kwargs={"find_unused_parameters": True}))


@contextmanager
def bare_modules(method: MethodPlugin) -> Iterator[MethodPlugin]:
    """The method with its DDP wrappers removed, for rank-0-only evaluation: a DDP forward
    synchronises buffers with the other ranks, which are not evaluating, and would wait forever."""
    wrapped = method.modules()
    for name, module in wrapped.items():
        setattr(method, name, unwrap(module))
    try:
        yield method
    finally:
        for name, module in wrapped.items():
            setattr(method, name, module)


def train_epoch(method: MethodPlugin, data: tuple[torch.Tensor, torch.Tensor], cell: Cell, epoch: int, rank: int,
                world: int, device: torch.device) -> dict[str, float]:
    images, masks = data
    gen = torch.Generator().manual_seed(cell.seed * 100_003 + epoch)
    perm = torch.randperm(len(images), generator=gen)
    order = perm[rank::world] if len(perm) >= world else perm
    bs = int(cell.hparams.get("batch_size", 4))
    # One pass over the data, or exactly `steps_per_epoch` steps cycling through it, so that training
    # length does not depend on the dataset's size when a suite fixes it. Every rank runs the same
    # number of steps (from the largest shard): DDP ranks that step differently wait on each other forever.
    steps = cell.steps_per_epoch or max(1, math.ceil(math.ceil(len(perm) / world) / bs))
    sums: dict[str, float] = {}
    method.train()
    for s in range(steps):
        idx = order[(s * bs + torch.arange(bs)) % len(order)]
        logs = method.training_step({"image": images[idx].to(device), "mask": masks[idx].to(device)})
        for k, v in logs.items():
            if not math.isfinite(v):
                raise CellError(f"{ERROR_MARK} {cell.method} produced {k}={v} at epoch {epoch}, step {s}")
            sums[k] = sums.get(k, 0.0) + v
    return {f"train/{k}": v / steps for k, v in sums.items()} | {"train/steps": float(steps)}


def save_checkpoint(directory: Path, method: MethodPlugin, epoch: int, history: list[dict[str, Any]]) -> None:
    torch.save(method.state_dict(), directory / STATE_FILE)
    (directory / META_FILE).write_text(json.dumps({"epoch": epoch, "history": history}))


def train_cell(config: dict[str, Any]) -> None:
    """Ray Train per-worker entry point (``train_loop_config`` = ``config``)."""
    try:
        _train_cell(config)
    except CellError:
        raise
    except Exception as exc:
        tb = traceback.format_exc(limit=-3)
        raise CellError(f"{ERROR_MARK} {type(exc).__name__}: {exc}\n{tb}") from exc


def _train_cell(config: dict[str, Any]) -> None:
    import ray.train
    from ray.train import Checkpoint

    t_start = time.time()
    cell = Cell.from_dict(config["cell"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config["threads"])))
    device = ray.train.torch.get_device() if config["device"] != "cpu" else torch.device("cpu")
    registry = discover(config["plugin_dirs"], use_env=False)
    data: CellData = load_cell_data(registry, cell.dataset, cell.dataset_path, cell.dataset_params,
                                    Path(config["cache_dir"]), cell.seed)
    torch.manual_seed(cell.seed)
    method = registry.method(cell.method)(cell.hparams, data.task)
    place(method, device, world)
    start, history = 0, []
    if (ckpt := ray.train.get_checkpoint()) is not None:
        with ckpt.as_directory() as d:
            method.load_state_dict(torch.load(Path(d) / STATE_FILE, map_location=device, weights_only=False))
            meta = json.loads((Path(d) / META_FILE).read_text())
            start, history = meta["epoch"] + 1, meta.get("history", [])
    tensors = data.train_tensors()
    budgets = cell.budget_objects()
    cheapest = min(budgets, key=lambda b: b.nfe)
    ev = cell.evaluation
    val_cases = data.cases("val")[: ev["val_cases"]]
    t_ready = time.time()
    compute_s = 0.0
    for epoch in range(start, cell.epochs):
        t0 = time.time()
        metrics: dict[str, Any] = {"epoch": epoch, **train_epoch(method, tensors, cell, epoch, rank, world, device)}
        if rank == 0 and val_cases and ev["val_every"] and (epoch + 1) % ev["val_every"] == 0:
            with bare_modules(method) as bare:
                metrics["val/dice"] = quick_dice(bare, val_cases, cheapest, data.task, device, cell.seed,
                                                 ev["batch_size"])
        compute_s += time.time() - t0
        metrics["phase"] = "train"
        history.append({k: v for k, v in metrics.items() if k != "phase"})
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                save_checkpoint(Path(tmp), method, epoch, history)
                checkpoint = Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)
    with tempfile.TemporaryDirectory() as tmp, bare_modules(method):
        checkpoint = None
        metrics = {"epoch": cell.epochs, "phase": "evaluated"}
        if rank == 0:
            t0 = time.time()
            per_case, results = evaluate(method, data.cases("test"), budgets, data.task, device, cell.seed, ev)
            eval_s = time.time() - t0
            save_checkpoint(Path(tmp), method, cell.epochs - 1, history)
            per_case.to_parquet(Path(tmp) / PER_CASE_FILE, index=False)
            timings = {"worker_started_at": t_start, "worker_setup_s": t_ready - t_start, "train_compute_s": compute_s,
                       "eval_s": eval_s, "evaluated_at": time.time()}
            (Path(tmp) / RESULTS_FILE).write_text(json.dumps({
                "results": results, "timings": timings, "history": history, "fingerprint": fingerprint(device),
                "dataset_hash": data.dataset.content_hash(), "split": data.split.as_dict(),
                "task": {"in_channels": data.task.in_channels, "num_classes": data.task.num_classes,
                         "image_size": list(data.task.image_size), "class_names": list(data.task.class_names)},
                "parameters": method.num_parameters()}, default=str))
            checkpoint = Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)
