"""The training loop of one cell, and the evaluation of stored weights.

The loop runs the same code in two places (docs/contracts.md, "Runs"): inside the Tune trial's own
process for one-worker cells (no Ray Train worker group to start: the cheap path), or on every rank
of a Ray Train ``TorchTrainer`` for multi-worker DDP cells. ``Session`` hides the difference: rank,
world size, the latest checkpoint and the per-epoch report. Rank 0 checkpoints every epoch,
evaluates the test split at the end and returns a ``CellResult`` with the final weights.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch

from segarena.platform.errors import PluginError
from segarena.platform.plugin import MethodPlugin, unwrap
from segarena.platform.plugins.registry import discover
from segarena.platform.plugins.weights import load_model, load_state, save_atomic, save_model
from segarena.platform.records import BudgetResult, Cell, CellResult, Job, Timings
from segarena.platform.run import reports
from segarena.platform.run.cell_data import CellData, load_cell_data
from segarena.platform.run.fingerprint import fingerprint
from segarena.platform.scoring.evaluation import BudgetEvaluation, evaluate, quick_dice

CHECKPOINT_FILE = "checkpoint.pt"
PREDICTIONS_DIR = "predictions"  # <budget>/predictions.npz, <budget>/overlays/*.png (scoring/predictions.py)
ERROR_MARK = "SEGARENA_CELL_ERROR:"


class CellError(PluginError, RuntimeError):
    """A cell failed (its plugin raised or produced NaN); the message carries ERROR_MARK so the trial can extract
    one clear line. A ``SegarenaError`` like every error segarena raises; still a RuntimeError for callers."""


class Session(Protocol):
    rank: int
    world: int

    def latest(self) -> Path | None: ...  # folder of the newest checkpoint, or None

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None: ...


class TrialSession:
    """One process, inside the Tune trial: checkpoints go to a stable per-cell file in the work dir,
    so a retried trial (Tune's FailureConfig) or the next driver resumes the same cell."""

    rank, world = 0, 1

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def latest(self) -> Path | None:
        return self.folder if (self.folder / CHECKPOINT_FILE).exists() else None

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        from ray import tune

        if checkpoint is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.move(checkpoint / CHECKPOINT_FILE, self.folder / (CHECKPOINT_FILE + ".tmp"))
            (self.folder / (CHECKPOINT_FILE + ".tmp")).replace(self.folder / CHECKPOINT_FILE)
        tune.report(metrics)


class TrainSession:
    """A rank of a Ray Train worker group (Train V2: every rank reports, rank 0 with the checkpoint)."""

    def __init__(self) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self._dir: tempfile.TemporaryDirectory | None = None

    def latest(self) -> Path | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        self._dir = tempfile.TemporaryDirectory()
        return Path(ckpt.to_directory(self._dir.name))

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint) if checkpoint else None)


def place(method: MethodPlugin, device: torch.device, world: int) -> None:
    for name, module in method.modules().items():
        module.to(device)
        if world > 1 and any(p.requires_grad for p in module.parameters()):
            from ray.train.torch import prepare_model

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
                world: int, device: torch.device, augment: Any = None) -> dict[str, float]:
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
        x, y = images[idx], masks[idx]
        if augment is not None:
            # keyed by (epoch, case id): each case gets the same draw for every method, whatever its batch size
            x, y = augment(x, y, epoch, ids=idx)
        logs = method.training_step({"image": x.to(device), "mask": y.to(device)})
        for k, v in logs.items():
            if not math.isfinite(v):
                raise CellError(f"{ERROR_MARK} {cell.method} produced {k}={v} at epoch {epoch}, step {s}")
            sums[k] = sums.get(k, 0.0) + v
    return {f"{reports.TRAIN}{k}": v / steps for k, v in sums.items()} | {reports.TRAIN_STEPS: float(steps)}


def _augment(cell: Cell) -> Any:
    if cell.augment == "none":
        return None
    from segarena.platform.run.augment import Augment

    return Augment(cell.augment, cell.seed)


def _device(name: str) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    import ray.train.torch

    return ray.train.torch.get_device()


def _budget_results(results: dict[str, BudgetEvaluation]) -> list[BudgetResult]:
    return [BudgetResult(r.budget, dict(r.metrics), r.tags()) for r in results.values()]


def _open(job: Job) -> tuple[Any, CellData]:
    cell = job.cell
    registry = discover(job.settings.plugin_dirs, use_env=False)
    from segarena.platform.store.workdir import WorkDir

    data = load_cell_data(registry, cell.dataset, cell.dataset_path, cell.dataset_params,
                          WorkDir(Path(job.settings.workdir)).cache, cell.seed)
    return registry, data


def _result(method: MethodPlugin, data: CellData, job: Job, device: torch.device, history: list[dict[str, Any]],
            timings: Timings, weights: str | None, out_dir: Path) -> CellResult:
    t0 = time.time()
    predictions = out_dir / PREDICTIONS_DIR
    per_case, results = evaluate(method, data.cases("test"), list(job.budgets), data.task, device, job.cell.seed,
                                 job.cell.evaluation, predictions_dir=predictions)
    timings.eval_s, timings.evaluated_at = time.time() - t0, time.time()
    card = getattr(method, "card_tags", None)
    return CellResult(budgets=_budget_results(results), per_case=per_case, history=history, timings=timings,
                      fingerprint=fingerprint(device), split=data.split.as_dict(), task=data.task,
                      parameters=method.num_parameters(), dataset_hash=data.dataset.content_hash(), weights=weights,
                      card_tags=dict(card()) if callable(card) else {},
                      predictions=str(predictions) if predictions.exists() else None)


def guarded(fn: Any, *args: Any) -> Any:
    """Run ``fn``; any error leaves as a CellError whose first marked line is the plugin's own."""
    try:
        return fn(*args)
    except CellError:
        raise
    except Exception as exc:
        tb = traceback.format_exc(limit=-3)
        raise CellError(f"{ERROR_MARK} {type(exc).__name__}: {exc}\n{tb}") from exc


def train_and_evaluate(job: Job, session: Session, out_dir: Path) -> CellResult | None:
    """Train the job's cell (resuming from the session's latest checkpoint), then on rank 0 evaluate
    its budgets and save the final weights to ``out_dir/model``; other ranks return None."""
    t_start = time.time()
    cell, s = job.cell, job.settings
    rank, world = session.rank, session.world
    torch.set_num_threads(s.threads)
    device = _device(s.device)
    registry, data = _open(job)
    torch.manual_seed(cell.seed)
    method = registry.method(cell.method)(cell.hparams, data.task)
    place(method, device, world)
    start, history = 0, []
    if (latest := session.latest()) is not None:
        saved = load_state(latest / CHECKPOINT_FILE, device)
        method.load_state_dict(saved["state"])
        start, history = saved["epoch"] + 1, list(saved["history"])
    tensors = data.train_tensors()
    augment = _augment(cell)
    cheapest = min(job.budgets or cell.budgets, key=lambda b: b.nfe)
    ev = cell.evaluation
    val_cases = data.cases("val")[: ev.val_cases]
    timings = Timings(started_at=t_start, setup_s=time.time() - t_start)
    headline = getattr(method, "headline_loss", None) or ""
    for epoch in range(start, cell.epochs):
        t0 = time.time()
        metrics: dict[str, Any] = {reports.EPOCH: epoch, **train_epoch(method, tensors, cell, epoch, rank, world,
                                                                       device, augment)}
        if rank == 0 and val_cases and ev.val_every and (epoch + 1) % ev.val_every == 0:
            with bare_modules(method) as bare:
                metrics[reports.VAL_DICE] = quick_dice(bare, val_cases, cheapest, data.task, device, cell.seed,
                                                       ev.batch_size)
        metrics[reports.EPOCH_S] = time.time() - t0
        timings.train_compute_s += metrics[reports.EPOCH_S]
        history.append(dict(metrics))
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                save_atomic({"state": method.state_dict(), "epoch": epoch, "history": history},
                            Path(tmp) / CHECKPOINT_FILE)
                ckpt = Path(tmp)
            session.report({**metrics, reports.PHASE: reports.PHASE_TRAIN, reports.HEADLINE: headline}, ckpt)
    if rank != 0:
        return None
    with bare_modules(method) as bare:
        weights = save_model(out_dir / "model", bare, cell, data.task)
        return _result(bare, data, job, device, history, timings, str(weights), out_dir)


def evaluate_stored(job: Job, weights: Path, out_dir: Path) -> CellResult:
    """Evaluate ``job.budgets`` on the weights of a finished training: nothing is trained."""
    t_start = time.time()
    torch.set_num_threads(job.settings.threads)
    device = _device(job.settings.device)
    registry, data = _open(job)
    method = load_model(weights, registry, device)
    return _result(method, data, job, device, [], Timings(started_at=t_start, setup_s=time.time() - t_start), None,
                   out_dir)


def train_cell(config: dict[str, Any]) -> None:
    """Ray Train per-worker entry point of a multi-worker cell: rank 0 hands the result (and the
    final weights) back to the trial through the last checkpoint."""
    job = Job.from_wire(config["job"])
    session = TrainSession()
    with tempfile.TemporaryDirectory() as tmp:
        result = guarded(train_and_evaluate, job, session, Path(tmp))
        if result is not None:
            result.save(tmp)
        session.report({reports.EPOCH: job.cell.epochs, reports.PHASE: reports.PHASE_EVALUATED},
                       Path(tmp) if result is not None else None)
