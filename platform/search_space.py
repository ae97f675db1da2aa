"""Plugin-side hyperparameter distributions: plain data, so methods never import Ray.

The runner turns them into Ray Tune / Optuna domains (``to_tune``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LogUniform:
    low: float
    high: float


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float


@dataclass(frozen=True)
class IntUniform:
    low: int
    high: int  # inclusive


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]

    def __init__(self, options: Any) -> None:
        object.__setattr__(self, "options", tuple(options))


Distribution = LogUniform | Uniform | IntUniform | Choice


def to_tune(dist: Distribution) -> Any:
    """The equivalent Ray Tune domain (imported lazily: only the runner calls this)."""
    from ray import tune

    if isinstance(dist, LogUniform):
        return tune.loguniform(dist.low, dist.high)
    if isinstance(dist, Uniform):
        return tune.uniform(dist.low, dist.high)
    if isinstance(dist, IntUniform):
        return tune.randint(dist.low, dist.high + 1)
    if isinstance(dist, Choice):
        return tune.choice(list(dist.options))
    raise TypeError(f"not a segarena distribution: {dist!r}")
