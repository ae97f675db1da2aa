"""The ``search:`` block's checks against the plugins: the suite's narrowing of a method's search space
(``narrow``, ``method_space``) and the search stage's spec errors (``check_search``, called by ``expand``).
The search itself runs in ``run/search/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segarena.platform.errors import SpecError
from segarena.platform.search_space import Choice, Distribution, IntUniform


def narrow(dist: Distribution, value: Any, where: str) -> Distribution:
    """The plugin's distribution restricted by a suite entry: ``[low, high]`` inside a range, or a
    non-empty subset of a choice's options."""
    if isinstance(dist, Choice):
        options = list(value) if isinstance(value, list | tuple) else [value]
        outside = [o for o in options if o not in dist.options]
        if not options or outside:
            raise SpecError(f"{where}: {value!r} must be a non-empty subset of {list(dist.options)!r}")
        return Choice(options)
    ok = isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value)
    if not ok or not dist.low <= value[0] < value[1] <= dist.high:
        raise SpecError(f"{where}: {value!r} must be [low, high] with {dist.low:g} <= low < high <= {dist.high:g}")
    if isinstance(dist, IntUniform):
        return IntUniform(int(value[0]), int(value[1]))
    return type(dist)(float(value[0]), float(value[1]))


def method_space(cls: Any, narrowing: dict[str, Any] | None, where: str) -> dict[str, Distribution]:
    space = dict(cls.search_space())
    for name, value in (narrowing or {}).items():
        if name not in space:
            raise SpecError(f"{where}.{name}: method {cls.name!r} has no {name!r} in its search_space() (known: "
                            f"{', '.join(sorted(space)) or 'none'})")
        space[name] = narrow(space[name], value, f"{where}.{name}")
    return space


def check_search(spec: Any, registry: Any, path: Path | str) -> None:
    """Spec errors of the search stage, one line naming file, field and value (``expand`` calls this)."""
    for i, m in enumerate(spec.methods):
        where = f"{path}: field methods[{i}].search"
        if m.search is not None and spec.search is None:
            raise SpecError(f"{where}: narrows method {m.name!r}'s search space but the suite has no `search:` block")
        if spec.search is None:
            continue
        try:
            cls = registry.method(m.name)
        except Exception:
            continue  # expand names the unknown plugin
        space = method_space(cls, m.search, where)
        if not space:
            raise SpecError(f"{path}: field methods[{i}].name: method {m.name!r} declares no search_space(), so "
                            "`search:` cannot tune it")
        unknown = sorted(set(space) - set(cls.profiles().get(m.profile, {})))
        if unknown:
            raise SpecError(f"{where}: method {m.name!r} searches {unknown[0]!r}, not a hyperparameter of profile "
                            f"{m.profile!r}")
    if spec.search is not None and spec.resources.workers_per_trial > 1:
        raise SpecError(f"{path}: field resources.workers_per_trial: {spec.resources.workers_per_trial} with "
                        "`search:`: multi-worker search trials are not supported yet (use 1)")
