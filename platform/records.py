"""Typed records that cross the Ray boundary: driver → trial → worker → store (docs/contracts.md).

A ``Cell`` is one *training* (method × dataset × seed) with the budgets evaluated on its weights.
It has two keys: the **training key** (everything that defines the trained weights) and, per
budget, an **evaluation key** (the budget and the evaluation settings). Changing a budget or an
evaluation setting therefore re-evaluates stored weights and trains nothing.

A ``Job`` is what the driver hands a trial: train a cell (then evaluate its budgets), or evaluate
budgets of an already finished training from its stored weights. A ``CellResult`` is what comes
back. Records are typed (dataclasses, and the pydantic ``Evaluation`` block) all the way through
Ray: they pickle, so a trial receives the very objects the driver planned (``to_wire`` only adds the
flat fields the progress display reads). They become dicts only where they are written to JSON.
Nothing here imports torch, so the store can be read without it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from segarena.platform.api import API_VERSION


def stable_hash(obj: Any) -> str:
    """SHA-256 of a JSON rendering with sorted keys: equal data → equal hash, across processes."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Task:
    """What a method must solve, derived from the dataset: the constructor's second argument.

    ``num_classes`` counts foreground classes only; masks are (C, H, W) binary channels,
    one per foreground class (overlapping regions such as BraTS WT/TC/ET are allowed).
    """

    in_channels: int
    num_classes: int
    image_size: tuple[int, int]
    spacing: tuple[float, ...] | None = None
    class_names: tuple[str, ...] = ()
    exclusive: bool = True  # classes never overlap (softmax-style); False for nested regions

    def as_dict(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "num_classes": self.num_classes,
                "image_size": list(self.image_size), "spacing": list(self.spacing) if self.spacing else None,
                "class_names": list(self.class_names), "exclusive": self.exclusive}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Task:
        spacing = d.get("spacing")
        return cls(in_channels=int(d["in_channels"]), num_classes=int(d["num_classes"]),
                   image_size=tuple(d["image_size"]), spacing=tuple(spacing) if spacing else None,
                   class_names=tuple(d.get("class_names", ())), exclusive=bool(d.get("exclusive", True)))


@dataclass(frozen=True)
class Budget:
    """One inference budget: sampler × steps × ensemble size. ``nfe`` = steps × ensemble.

    Its name is the label on the leaderboard: ``ddim5-e3`` = DDIM, 5 steps, 3 members (nfe 15);
    ``direct-e1`` = one forward pass.
    """

    steps: int = 1
    ensemble: int = 1
    sampler: str = "direct"

    @property
    def name(self) -> str:
        if self.sampler == "direct" and self.steps == 1:
            return f"direct-e{self.ensemble}"
        return f"{self.sampler}{self.steps}-e{self.ensemble}"

    @property
    def nfe(self) -> int:
        return self.steps * self.ensemble

    def as_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler, "steps": self.steps, "ensemble": self.ensemble}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Budget:
        """The inverse of ``as_dict`` (a budget read back from JSON: results files, search points)."""
        return cls(steps=int(d["steps"]), ensemble=int(d["ensemble"]), sampler=str(d["sampler"]))


class Evaluation(BaseModel):
    """The suite's ``evaluation:`` block, validated by the suite spec and carried by every cell: the one
    home of its defaults (it lives here, not in spec/, because it crosses the Ray boundary in ``Cell``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(8, ge=1)
    timing_warmup: int = Field(2, ge=0)
    timing_repeats: int = Field(10, ge=1)
    throughput_batch: int = Field(8, ge=1)
    val_every: int = Field(1, ge=0)  # epochs between val/dice evaluations (0 = never)
    val_cases: int = Field(8, ge=1)
    nsd_tolerance_mm: float | None = Field(None, gt=0)  # None: 1 mm when spacing is known, else 1 px
    repeats: int = Field(1, ge=1)  # predictions with this many sampling seeds → per-case std of Dice
    save_predictions: Literal["all", "overlays", "none"] = "overlays"  # overlays: + npz under 500 test cases


# Evaluation settings that shape the *training* record (the per-epoch validation curve), so they
# belong to the training key; every other evaluation setting belongs to the evaluation key.
TRAINING_EVAL_FIELDS = ("val_every", "val_cases")


@dataclass(frozen=True)
class Cell:
    """One training: method × dataset × seed, with the budgets to evaluate on its weights."""

    suite: str
    method: str
    profile: str
    hparams: dict[str, Any]
    plugin_version: str
    dataset: str
    dataset_path: str | None
    dataset_params: dict[str, Any]
    seed: int
    budgets: tuple[Budget, ...]
    epochs: int
    steps_per_epoch: int | None
    evaluation: Evaluation = field(default_factory=Evaluation)
    augment: str = "none"
    dataset_hash: str = ""  # content hash of the data served (filled in on the driver)
    dataset_label: str = ""  # the leaderboard section when one dataset plugin appears with other params
    plugin_source_hash: str = ""  # the method plugin's own source files (platform/plugins/source.py)

    def training_fields(self) -> dict[str, Any]:
        return {"api": API_VERSION, "method": self.method, "profile": self.profile, "hparams": self.hparams,
                "plugin_version": self.plugin_version, "plugin_source_hash": self.plugin_source_hash,
                "dataset": self.dataset, "dataset_path": self.dataset_path,
                "dataset_params": self.dataset_params, "dataset_hash": self.dataset_hash, "seed": self.seed,
                "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch, "augment": self.augment,
                "validation": {k: getattr(self.evaluation, k) for k in TRAINING_EVAL_FIELDS}}

    @property
    def key(self) -> str:
        """The training key: a change here retrains; nothing else does."""
        return stable_hash(self.training_fields())[:20]

    @property
    def variant(self) -> str:
        """The training key without the seed and the data: seeds of one variant are averaged on the
        leaderboard, two variants of one method (other hparams, epochs, ...) stay separate rows."""
        d = self.training_fields()
        # the method side only: seeds are averaged, and one variant is ranked across datasets (mean rank);
        # changed data retrains (training key) but stays the same row
        for k in ("seed", "dataset", "dataset_path", "dataset_params", "dataset_hash"):
            d.pop(k)
        return stable_hash(d)[:12]

    def evaluation_settings(self) -> dict[str, Any]:
        """The evaluation block's fields that define an evaluation (the evaluation key), as plain data."""
        return dict(sorted(self.evaluation.model_dump(exclude=set(TRAINING_EVAL_FIELDS)).items()))

    def eval_key(self, budget: Budget) -> str:
        """The evaluation key of one budget on this training: budget + evaluation settings."""
        return stable_hash({"train": self.key, "budget": budget.as_dict(),
                            "evaluation": self.evaluation_settings()})[:20]

    @property
    def label(self) -> str:
        return f"{self.method} × {self.dataset_label or self.dataset} · seed {self.seed}"

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON (the training run's ``config.json``)."""
        d = asdict(self)
        d["budgets"] = [b.as_dict() for b in self.budgets]
        d["evaluation"] = self.evaluation.model_dump()
        return d


@dataclass(frozen=True)
class Settings:
    """What every trial of one driver shares: where the store and the work dir are, resources."""

    tracking_uri: str
    workdir: str
    experiment_id: str
    plugin_dirs: tuple[str, ...]
    workers_per_trial: int
    cpus_per_worker: float
    gpus_per_worker: float
    failure_retries: int
    device: str
    segarena_version: str
    git_sha: str
    driver: str  # this driver's id: a retried trial recognises its own earlier, crashed run
    cell_timeout_s: float | None = None

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus_per_worker))


JobKind = Literal["train", "evaluate"]


@dataclass(frozen=True)
class Job:
    """One trial's work: ``train`` a cell and evaluate ``budgets``, or ``evaluate`` ``budgets``
    from the stored weights of the finished training run ``train_run_id``."""

    kind: JobKind
    cell: Cell
    budgets: tuple[Budget, ...]
    settings: Settings
    train_run_id: str | None = None

    @property
    def in_trial(self) -> bool:
        """Runs inside the Tune trial's own process (no Ray Train worker group): one-worker
        trainings and every evaluation. Multi-worker trainings get a TorchTrainer with DDP."""
        return self.kind == "evaluate" or self.settings.workers_per_trial == 1

    def resources(self) -> dict[str, float]:
        """What the trial itself holds: the worker's share when it does the work in-process,
        a sliver of memory when it only waits on its TorchTrainer's workers."""
        s = self.settings
        if self.in_trial:
            return {"cpu": s.cpus_per_worker, "gpu": s.gpus_per_worker}
        return {"cpu": 0, "memory": 64 * 2**20}

    def to_wire(self) -> dict[str, Any]:
        """A trial's config entry: the job itself (it pickles) beside the flat fields the progress
        display and Tune's own trial records read."""
        return {"record": self, "kind": self.kind, "method": self.cell.method,
                "dataset": self.cell.dataset_label or self.cell.dataset, "seed": self.cell.seed,
                "epochs": self.cell.epochs, "steps_per_epoch": self.cell.steps_per_epoch}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Job:
        return d["record"]


@dataclass
class BudgetResult:
    """One budget's summary scores and cost on the test split (per-case rows live in the table)."""

    budget: Budget
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Timings:
    """Where a cell's wall time went (seconds; ``*_at`` are epoch timestamps)."""

    started_at: float = 0.0
    setup_s: float = 0.0
    train_compute_s: float = 0.0
    eval_s: float = 0.0
    evaluated_at: float = 0.0


@dataclass
class CellResult:
    """What a training or evaluation hands back to its trial for the store.

    ``per_case`` is a pandas DataFrame (one row per budget × case × class); ``weights`` the local
    folder holding the model files (``weights.pt``, ``card.json``) when this job trained them.
    """

    budgets: list[BudgetResult]
    per_case: Any
    history: list[dict[str, Any]]
    timings: Timings
    fingerprint: dict[str, Any]
    split: dict[str, Any]
    task: Task
    parameters: int
    dataset_hash: str
    weights: str | None = None
    card_tags: dict[str, str] = field(default_factory=dict)
    predictions: str | None = None  # folder with one sub-folder per budget (saved masks, overlays)

    RESULTS_FILE = "results.json"
    PER_CASE_FILE = "per_case.parquet"

    def save(self, directory: Any) -> None:
        """Write to a folder (the multi-worker path hands it back through a Ray checkpoint)."""
        from pathlib import Path

        d = Path(directory)
        self.per_case.to_parquet(d / self.PER_CASE_FILE, index=False)
        meta = {"budgets": [{"budget": b.budget.as_dict(), "metrics": b.metrics, "tags": b.tags}
                            for b in self.budgets],
                "history": self.history, "timings": asdict(self.timings), "fingerprint": self.fingerprint,
                "split": self.split, "task": self.task.as_dict(), "parameters": self.parameters,
                "dataset_hash": self.dataset_hash, "card_tags": self.card_tags}
        (d / self.RESULTS_FILE).write_text(json.dumps(meta, default=str))

    @classmethod
    def load(cls, directory: Any, weights: str | None = None) -> CellResult:
        from pathlib import Path

        import pandas as pd

        d = Path(directory)
        predictions = d / "predictions"
        meta = json.loads((d / cls.RESULTS_FILE).read_text())
        return cls(budgets=[BudgetResult(Budget.from_dict(b["budget"]), b["metrics"], b["tags"])
                            for b in meta["budgets"]],
                   per_case=pd.read_parquet(d / cls.PER_CASE_FILE), history=meta["history"],
                   timings=Timings(**meta["timings"]), fingerprint=meta["fingerprint"], split=meta["split"],
                   task=Task.from_dict(meta["task"]), parameters=int(meta["parameters"]),
                   dataset_hash=meta["dataset_hash"], weights=weights, card_tags=meta.get("card_tags", {}),
                   predictions=str(predictions) if predictions.exists() else None)
