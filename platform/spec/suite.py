"""Suite spec (YAML): validation with errors naming file, field and value; expansion into cells.

A cell = method × dataset × seed; its budgets are evaluated inside it. The cell hash covers
everything that defines the result, so a rerun skips exactly the cells already finished.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from segarena.platform.errors import PluginError, SpecError
from segarena.platform.paths import shipped_suites
from segarena.platform.plugin import Budget
from segarena.platform.plugins.registry import Registry
from segarena.platform.plugins.source import plugin_source_hash
from segarena.platform.records import Cell, Evaluation
from segarena.platform.spec.validate import validate_dataset, validate_method


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BudgetSpec(_Strict):
    sampler: str = "direct"
    steps: int = Field(1, ge=1)
    ensemble: int = Field(1, ge=1)

    def budget(self) -> Budget:
        return Budget(steps=self.steps, ensemble=self.ensemble, sampler=self.sampler)


class BudgetGrid(_Strict):
    """``budgets: {sampler: ddim, steps: [1, 5, 10], ensemble: [1, 3, 5]}``: every steps × ensemble pair,
    all evaluated on one trained checkpoint (smaller ensembles are scored on prefixes of the largest)."""

    sampler: str
    steps: list[int] = Field(min_length=1)
    ensemble: list[int] = Field(min_length=1)

    @field_validator("steps", "ensemble")
    @classmethod
    def _positive_unique(cls, v: list[int]) -> list[int]:
        if any(x < 1 for x in v) or len(set(v)) != len(v):
            raise ValueError("values must be distinct integers >= 1")
        return v

    def budgets(self) -> list[Budget]:
        return [Budget(steps=s, ensemble=e, sampler=self.sampler) for s in self.steps for e in self.ensemble]


def budget_list(budgets: list[BudgetSpec | BudgetGrid] | BudgetGrid) -> list[Budget]:
    """A method entry's budgets in order: a grid expanded steps-major, a list of specs and/or grids in turn."""
    items = [budgets] if isinstance(budgets, BudgetGrid) else list(budgets)
    out: list[Budget] = []
    for item in items:
        out += item.budgets() if isinstance(item, BudgetGrid) else [item.budget()]
    names = [b.name for b in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"budgets repeat: {', '.join(repeated)}")
    return out


# a YAML list of budgets or one grid mapping; tagged so errors name the form that was given
_Budgets = Annotated[Annotated[list[BudgetSpec], Tag("list")] | Annotated[BudgetGrid, Tag("grid")],
                     Discriminator(lambda v: "grid" if isinstance(v, dict | BudgetGrid) else "list")]


class MethodSpec(_Strict):
    name: str
    profile: str = "tiny"
    hparams: dict[str, Any] = {}
    budgets: _Budgets | None = None  # None: the plugin's budgets for the profile
    epochs: int | None = Field(None, ge=1)  # None: the suite's
    search: dict[str, list[Any]] | None = None  # narrows the plugin's search_space() (needs a suite `search:`)

    @field_validator("budgets")
    @classmethod
    def _distinct_budgets(cls, v: list[BudgetSpec] | BudgetGrid | None) -> list[BudgetSpec] | BudgetGrid | None:
        if v is not None:
            budget_list(v)
        return v


class DatasetSpec(_Strict):
    name: str
    label: str | None = None  # the leaderboard section; default: the name (+ params when one plugin repeats)
    path: str | None = None  # relative paths are resolved against the suite file's folder
    params: dict[str, Any] = {}


class SearchSpec(_Strict):
    """``search:``: the same tuning budget for every method × dataset (platform/run/search/ runs it)."""

    trials: int = Field(8, ge=1)  # per method × dataset, identical for every method
    epochs: int = Field(4, ge=1)  # per trial at most (ASHA's max_t)
    scheduler: Literal["asha", "none"] = "asha"
    grace_epochs: int = Field(1, ge=1)
    sampler: Literal["tpe", "random", "nsga2"] = "tpe"
    objectives: list[Literal["val/dice", "latency_ms", "nfe"]] = Field(["val/dice"], min_length=1)
    budgets: bool = True  # score each finished trial at every candidate budget (no retraining)
    select: Literal["best", "pareto"] = "best"
    max_selected: int = Field(3, ge=1)
    seed: int = 0

    @field_validator("objectives")
    @classmethod
    def _dice_first(cls, v: list[str]) -> list[str]:
        if v[0] != "val/dice" or len(set(v)) != len(v):
            raise ValueError("objectives must start with val/dice and not repeat (logged: val/dice, latency_ms, nfe)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SearchSpec:
        if self.grace_epochs > self.epochs:
            raise ValueError(f"grace_epochs {self.grace_epochs} exceeds epochs {self.epochs}")
        if self.select == "pareto" and len(self.objectives) < 2:
            raise ValueError("select: pareto needs two objectives, e.g. [val/dice, latency_ms]")
        return self


class Resources(_Strict):
    """``resources:``: what each trial holds; the driver plans concurrency from it (typed, never a dict)."""

    workers_per_trial: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    max_concurrent_trials: int | None = Field(None, ge=1)
    cell_timeout_s: float | None = Field(None, gt=0)  # a cell still working after this is ended and recorded failed


class SuiteSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    methods: list[MethodSpec] = Field(min_length=1)
    datasets: list[DatasetSpec] = Field(min_length=1)
    seeds: list[int] = Field([0], min_length=1)
    epochs: int = Field(1, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)  # None: one pass over the training split
    resources: Resources = Resources()
    evaluation: Evaluation = Evaluation()  # defined in records: every cell carries it through Ray
    failure_retries: int = Field(0, ge=0)
    augment: Literal["none", "flips", "default"] = "none"  # training augmentation, the same for every method
    device: Literal["auto", "cpu", "cuda"] = "auto"
    search: SearchSpec | None = None  # None: every method runs its profile's hyperparameters (untuned)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds repeat: {v}")
        return v


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
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}): "
                        "save the suite as UTF-8") from exc
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the suite file ({exc.strerror or exc})") from exc
    try:
        raw = yaml.safe_load(text)
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
    if spec.search is not None or any(m.search is not None for m in spec.methods):
        from segarena.platform.spec.search import check_search

        check_search(spec, registry, path)
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
        budgets = budget_list(m.budgets) if m.budgets is not None else cls.budgets(m.profile)
        validate_method(cls, i, m.profile, hparams, budgets, m.budgets, path)
        source_hash = plugin_source_hash(cls)
        for j, d in enumerate(spec.datasets):
            try:
                registry.dataset(d.name)
            except PluginError as exc:
                raise SpecError(f"{path}: field datasets[{j}].name: {exc}") from exc
            for seed in spec.seeds:
                cells.append(Cell(suite=spec.name, method=m.name, profile=m.profile, hparams=hparams,
                                  plugin_version=cls.version, dataset=d.name,
                                  dataset_path=_resolve_data_path(d.path, path), dataset_params=dict(d.params),
                                  seed=seed, budgets=tuple(budgets),
                                  epochs=m.epochs or spec.epochs, steps_per_epoch=spec.steps_per_epoch,
                                  evaluation=spec.evaluation, augment=spec.augment,
                                  dataset_label=dataset_labels(spec.datasets)[j], plugin_source_hash=source_hash))
    for j, d in enumerate(spec.datasets):  # names were checked above; params and task here, on the driver
        validate_dataset(registry.dataset(d.name), j, dict(d.params), _resolve_data_path(d.path, path), path)
    labels = dataset_labels(spec.datasets)
    if len(set(labels)) != len(labels):
        raise SpecError(f"{path}: field datasets: two entries share the label {labels[0]!r}: give each a `label:`")
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise SpecError(f"{path}: two entries define the same cell (same method, profile, hparams, dataset, seed)")
    return cells


def _resolve_data_path(value: str | None, suite_path: Path | str) -> str | None:
    """A dataset root as given, made absolute against the suite file's folder (never the cwd of a worker)."""
    if value is None:
        return None
    p = Path(value).expanduser()
    if not p.is_absolute() and Path(suite_path).is_file():
        p = Path(suite_path).resolve().parent / p
    return str(p.resolve())


def dataset_labels(datasets: list[DatasetSpec]) -> list[str]:
    """The leaderboard section of each dataset entry: its ``label``, else its name, with its params
    appended when one plugin appears more than once (two roots of ``folder`` are not one dataset)."""
    counts: dict[str, int] = {}
    for d in datasets:
        counts[d.name] = counts.get(d.name, 0) + 1
    out = []
    for d in datasets:
        if d.label:
            out.append(d.label)
        elif counts[d.name] > 1:
            extra = {**d.params, **({"path": d.path} if d.path else {})}
            out.append(f"{d.name}[{','.join(f'{k}={v}' for k, v in sorted(extra.items()))}]")
        else:
            out.append(d.name)
    return out
