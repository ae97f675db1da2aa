"""The default hyperparameter check: a value must look like what the plugin's own profiles give that key.

Runs on the driver before anything starts (``MethodPlugin.validate_hparams``), so ``lr: "fast"`` is refused
with one line instead of failing in a worker after training began. Deliberately loose: the types of every
profile's value for a key are allowed (ints pass where floats are expected, never the other way round;
``None`` only where some profile uses it), list and dict elements are checked the same way against the
union of the profiles' elements, and a number may not be negative where every profile's value is >= 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

HARNESS_POSITIVE_INTS = ("batch_size",)  # read by the harness's training loop: a count, at least 1
_KIND_WORDS = {"bool": "a boolean", "int": "an integer", "float": "a number", "str": "a string",
               "list": "a list", "dict": "a mapping", "none": "null"}


def _kind(value: Any) -> str | None:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, Mapping):
        return "dict"
    return None  # some other object: nothing to compare against


def _numbers(values: list[Any]) -> list[float]:
    return [float(v) for v in values if _kind(v) in ("int", "float")]


def mismatch(value: Any, examples: list[Any]) -> str | None:
    """Why ``value`` does not look like any of ``examples`` (the profiles' values of one key), or None."""
    kinds = {_kind(e) for e in examples}
    if not kinds or None in kinds or kinds == {"none"}:
        return None  # no profile says what this key holds
    kind = _kind(value)
    accepted = kind in kinds or (kind == "int" and "float" in kinds)
    if not accepted:
        wanted = " or ".join(_KIND_WORDS[k] for k in sorted(kinds - {"none"}, key=list(_KIND_WORDS).index))
        hint = ""
        if kind == "str" and kinds & {"int", "float"}:
            try:
                float(value)
                hint = " (YAML reads 1e-4 as text: write 1.0e-4)"
            except ValueError:
                pass
        example = next(e for e in examples if e is not None)
        return f"expected {wanted} like the profiles' {example!r}, got {value!r}{hint}"
    if kind in ("int", "float"):
        numbers = _numbers(examples)
        if value < 0 and numbers and min(numbers) >= 0:
            return f"{value!r} is negative; every profile's value is >= 0"
    if kind == "list":
        elements = [x for e in examples if _kind(e) == "list" for x in e]
        for i, item in enumerate(value):
            problem = mismatch(item, elements) if elements else None
            if problem:
                return f"element [{i}]: {problem}"
    if kind == "dict":
        for key, item in value.items():
            same = [e[key] for e in examples if _kind(e) == "dict" and key in e]
            problem = mismatch(item, same) if same else None
            if problem:
                return f"key {key!r}: {problem}"
    return None


def check_like_profiles(hparams: Mapping[str, Any], profiles: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise ``ValueError("<key>: <why>")`` for the first value that does not look like the profiles' values."""
    for key, value in hparams.items():
        if key in HARNESS_POSITIVE_INTS and (_kind(value) != "int" or value < 1):
            raise ValueError(f"{key}: expected an integer >= 1, got {value!r}")
        examples = [p[key] for p in profiles.values() if key in p]
        problem = mismatch(value, examples) if examples else None
        if problem:
            raise ValueError(f"{key}: {problem}")
