"""Driver-side validation of a suite against its plugins, before the first cell starts.

What pydantic cannot know from the YAML alone: whether hyperparameter values fit the method's profiles
(``MethodPlugin.validate_hparams``), whether each budget is one the method can run
(``MethodPlugin.validate_budget``: declared samplers and limits), whether dataset params are ones the
dataset declares (``DatasetPlugin.params_spec``) and whether their values make a valid task (the dataset
is built and its ``task()`` checked here, on the driver). Every failure is a ``SpecError`` naming the
suite file, the field and the value, so a bad suite exits 2 with nothing written instead of failing in a
worker after training.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segarena.platform.dataset import DatasetPlugin
from segarena.platform.errors import SegarenaError, SpecError
from segarena.platform.plugin import Budget, MethodPlugin
from segarena.platform.records import Task


def _field_of(message: str, keys: Sequence[str]) -> tuple[str, str]:
    """(``.key`` suffix, rest) when a hook's message starts with ``"<key>: "`` for a known key."""
    head, sep, rest = message.partition(": ")
    return (f".{head}", rest) if sep and head in keys else ("", message)


def validate_method(cls: type[MethodPlugin], index: int, profile: str, hparams: dict[str, Any],
                    budgets: Sequence[Budget], given: Any, path: Path | str) -> None:
    """The resolved hparams of ``methods[index]`` and each of its budgets, through the plugin's hooks.
    ``given``: the entry's ``budgets`` as written (None = the profile's defaults, a list, or one grid)."""
    where = f"{path}: field methods[{index}]"
    try:
        cls.validate_hparams(dict(hparams))
    except (ValueError, TypeError) as exc:
        suffix, rest = _field_of(str(exc), list(hparams))
        raise SpecError(f"{where}.hparams{suffix}: {rest} ({cls.name}/{profile})") from exc
    except Exception as exc:  # a broken hook is the plugin's fault, still one line
        raise SpecError(f"{where}.hparams: {cls.name}.validate_hparams failed: {type(exc).__name__}: {exc}") from exc
    for k, budget in enumerate(budgets):
        field = f"{where}.budgets" + (f"[{k}]" if isinstance(given, list) else "" if given is not None
                                      else f" (the default budgets of profile {profile!r})")
        try:
            cls.validate_budget(budget, dict(hparams))
        except (ValueError, TypeError) as exc:
            raise SpecError(f"{field}: budget {budget.name} ({budget.as_dict()}): {exc}") from exc
        except Exception as exc:
            raise SpecError(f"{field}: {cls.name}.validate_budget failed on {budget.name}: "
                            f"{type(exc).__name__}: {exc}") from exc


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def check_task(task: Any) -> str | None:
    """Why a dataset's task cannot be trained on, or None."""
    if not isinstance(task, Task):
        return f"task() returned {type(task).__name__}, not a Task"

    def positive_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    if not positive_int(task.in_channels):
        return f"in_channels {task.in_channels!r} must be an integer >= 1"
    if not positive_int(task.num_classes):
        return f"num_classes {task.num_classes!r} must be an integer >= 1"
    size = tuple(task.image_size)
    if len(size) != 2 or not all(positive_int(s) for s in size):
        return f"image_size {size} must be two integers >= 1"
    if task.spacing is not None and not all(isinstance(s, int | float) and s > 0 for s in task.spacing):
        return f"spacing {tuple(task.spacing)} must be positive numbers"
    if task.class_names and len(task.class_names) != task.num_classes:
        return f"{len(task.class_names)} class names for {task.num_classes} classes"
    return None


def validate_dataset(cls: type[DatasetPlugin], index: int, params: dict[str, Any], data_path: str | None,
                     path: Path | str, cache_dir: Path | None = None) -> Task:
    """``datasets[index]``'s params against the dataset's declared ones, then its task, built on the driver."""
    where = f"{path}: field datasets[{index}]"
    if "path" in params:
        raise SpecError(f"{where}.params.path: give the dataset root as the entry's `path:` field (resolved "
                        f"against the suite file's folder), not as a param (got {params['path']!r})")
    spec = cls.params_spec()
    known = sorted(k for k in spec if k != "path")
    for key in params:
        if key not in spec:
            raise SpecError(f"{where}.params: unknown parameter {key!r} for dataset {cls.name!r}"
                            f"{_suggest(key, known)} (known: {', '.join(known) or 'none'})")
    required = [k for k, v in spec.items() if v is inspect.Parameter.empty and k not in params]
    if required:
        raise SpecError(f"{where}.params: dataset {cls.name!r} needs {', '.join(map(repr, required))}")
    try:
        dataset = cls(root=data_path, cache_dir=cache_dir, **params)
        task = dataset.task()
    except SegarenaError as exc:
        raise SpecError(f"{where}.params: dataset {cls.name!r} with {params}: {exc}") from exc
    except Exception as exc:  # the constructor's own checks (int("big"), bad choices): one line
        raise SpecError(f"{where}.params: dataset {cls.name!r} rejects {params}: {type(exc).__name__}: {exc}") \
            from exc
    problem = check_task(task)
    if problem:
        raise SpecError(f"{where}.params: dataset {cls.name!r} with {params} poses an invalid task: {problem}")
    return task
