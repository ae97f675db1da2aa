"""Suite spec (YAML): validation with errors naming file, field and value; expansion into cells.

A cell = method × dataset × seed; its budgets are evaluated inside it. The cell hash covers
everything that defines the result, so a rerun skips exactly the cells already finished.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from segarena.benchmarks.shipped import shipped_suites
from segarena.platform.dataset import stable_hash
from segarena.platform.errors import PluginError, SpecError
from segarena.platform.plugin import API_VERSION, Budget
from segarena.platform.registry import Registry


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BudgetSpec(_Strict):
    sampler: str = "direct"
    steps: int = Field(1, ge=1)
    ensemble: int = Field(1, ge=1)

    def budget(self) -> Budget:
        return Budget(steps=self.steps, ensemble=self.ensemble, sampler=self.sampler)


class MethodSpec(_Strict):
    name: str
    profile: str = "tiny"
    hparams: dict[str, Any] = {}
    budgets: list[BudgetSpec] | None = None  # None: the plugin's budgets for the profile
    epochs: int | None = Field(None, ge=1)  # None: the suite's


class DatasetSpec(_Strict):
    name: str
    path: str | None = None
    params: dict[str, Any] = {}


class Resources(_Strict):
    workers_per_trial: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    max_concurrent_trials: int | None = Field(None, ge=1)


class Evaluation(_Strict):
    batch_size: int = Field(8, ge=1)
    timing_warmup: int = Field(2, ge=0)
    timing_repeats: int = Field(10, ge=1)
    throughput_batch: int = Field(8, ge=1)
    val_every: int = Field(1, ge=0)  # epochs between val/dice evaluations (0 = never)
    val_cases: int = Field(8, ge=1)


class SuiteSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    methods: list[MethodSpec] = Field(min_length=1)
    datasets: list[DatasetSpec] = Field(min_length=1)
    seeds: list[int] = Field([0], min_length=1)
    epochs: int = Field(1, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)  # None: one pass over the training split
    resources: Resources = Resources()
    evaluation: Evaluation = Evaluation()
    failure_retries: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds repeat: {v}")
        return v


@dataclass(frozen=True)
class Cell:
    """One training run: method × dataset × seed, with the budgets evaluated inside it."""

    suite: str
    method: str
    profile: str
    hparams: dict[str, Any]
    plugin_version: str
    dataset: str
    dataset_path: str | None
    dataset_params: dict[str, Any]
    seed: int
    budgets: tuple[dict[str, Any], ...]
    epochs: int
    steps_per_epoch: int | None
    evaluation: dict[str, Any]

    def _hash(self, leave_out: tuple[str, ...], length: int) -> str:
        d = {k: v for k, v in self.as_dict().items() if k not in leave_out}
        return stable_hash({"api": API_VERSION, **d})[:length]

    @property
    def key(self) -> str:
        """Hash of everything that defines the cell's result (not the suite name or resources)."""
        return self._hash(("suite",), 20)

    @property
    def variant(self) -> str:
        """Hash of the cell without its seed: the seeds of one variant are averaged on the leaderboard,
        two variants of one method (other hparams, epochs, ...) stay separate rows."""
        return self._hash(("suite", "seed"), 12)

    @property
    def label(self) -> str:
        return f"{self.method} × {self.dataset} · seed {self.seed}"

    def as_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "method": self.method, "profile": self.profile, "hparams": self.hparams,
                "plugin_version": self.plugin_version, "dataset": self.dataset, "dataset_path": self.dataset_path,
                "dataset_params": self.dataset_params, "seed": self.seed, "budgets": list(self.budgets),
                "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch,
                "evaluation": self.evaluation}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        return cls(**{**d, "budgets": tuple(d["budgets"])})

    def budget_objects(self) -> list[Budget]:
        return [Budget(**b) for b in self.budgets]


def resolve_suite_path(suite: str) -> Path:
    """A path to a YAML file, or the name of a shipped suite."""
    path = Path(suite)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SpecError(f"suite file {path} does not exist")
        return path
    shipped = shipped_suites()
    if suite in shipped:
        return shipped[suite]
    close = difflib.get_close_matches(suite, shipped, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise SpecError(f"no suite file or shipped suite named {suite!r}{hint} (shipped: {', '.join(shipped)})")


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def load_suite(suite: str | Path) -> tuple[SuiteSpec, Path]:
    path = resolve_suite_path(str(suite))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path}:{where} malformed YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a suite must be a YAML mapping, got {type(raw).__name__}")
    try:
        return SuiteSpec.model_validate(raw), path
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _loc(err["loc"])
        if err["type"] == "extra_forbidden":
            msg = f"{path}: unknown field {field!r}"
        else:
            msg = f"{path}: field {field}: {err['msg']} (got {err.get('input')!r})"
        more = len(exc.errors()) - 1
        raise SpecError(msg + (f" [+{more} more problem(s)]" if more else "")) from exc


def expand(spec: SuiteSpec, registry: Registry, path: Path | str = "<suite>") -> list[Cell]:
    """Cells of a validated suite; checks plugin names, profiles and hparam keys against the registry."""
    cells = []
    for i, m in enumerate(spec.methods):
        try:
            cls = registry.method(m.name)
        except PluginError as exc:
            raise SpecError(f"{path}: field methods[{i}].name: {exc}") from exc
        profiles = cls.profiles()
        if m.profile not in profiles:
            raise SpecError(f"{path}: field methods[{i}].profile: unknown profile {m.profile!r} for method "
                            f"{m.name!r} (known: {', '.join(sorted(profiles))})")
        hparams = dict(profiles[m.profile])
        unknown = sorted(set(m.hparams) - set(hparams))
        if unknown:
            raise SpecError(f"{path}: field methods[{i}].hparams: unknown hyperparameter {unknown[0]!r} for "
                            f"{m.name}/{m.profile} (known: {', '.join(sorted(hparams))})")
        hparams.update(m.hparams)
        budgets = [b.budget() for b in m.budgets] if m.budgets is not None else cls.budgets(m.profile)
        for j, d in enumerate(spec.datasets):
            try:
                registry.dataset(d.name)
            except PluginError as exc:
                raise SpecError(f"{path}: field datasets[{j}].name: {exc}") from exc
            for seed in spec.seeds:
                cells.append(Cell(suite=spec.name, method=m.name, profile=m.profile, hparams=hparams,
                                  plugin_version=cls.version, dataset=d.name, dataset_path=d.path,
                                  dataset_params=dict(d.params), seed=seed,
                                  budgets=tuple(b.as_dict() for b in budgets), epochs=m.epochs or spec.epochs,
                                  steps_per_epoch=spec.steps_per_epoch,
                                  evaluation=spec.evaluation.model_dump()))
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise SpecError(f"{path}: two entries define the same cell (same method, profile, hparams, dataset, seed)")
    return cells
