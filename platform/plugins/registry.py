"""Plugin discovery: entry points (built-ins included) and local plugin folders.

One lister (``Registry.infos``), one factory (``Registry.method``/``dataset`` + constructors).
Two plugins with one name is an error naming both sources; an unknown name suggests the
closest ones.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType

from segarena.platform.dataset import DatasetPlugin
from segarena.platform.errors import PluginError
from segarena.platform.plugin import API_VERSION, MethodPlugin

GROUPS = {"method": "segarena.methods", "dataset": "segarena.datasets"}
# Plugin names become folder and file names (splits, caches, artifacts): nothing that could climb out.
SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
BASES: dict[str, type] = {"method": MethodPlugin, "dataset": DatasetPlugin}
PLUGIN_PATH_ENV = "SEGARENA_PLUGIN_PATH"


class PluginInfo:
    """A discovered plugin. Entry points are imported on first use of ``cls``, so a process that
    needs one plugin (a Ray worker) does not pay for importing every installed one."""

    def __init__(self, name: str, kind: str, source: str, cls: type | None = None,
                 loader: Callable[[], type] | None = None) -> None:
        self.name, self.kind, self.source = name, kind, source  # source: built-in | entry point X | folder P
        self._cls, self._loader = cls, loader

    @property
    def cls(self) -> type:
        if self._cls is None:
            assert self._loader is not None
            self._cls = self._loader()
        return self._cls

    def same_as(self, other: PluginInfo) -> bool:
        return self.source == other.source and (self._cls is None or other._cls is None or self.cls is other.cls)

    @property
    def version(self) -> str:
        return getattr(self.cls, "version", "")

    @property
    def paper(self) -> str:
        return getattr(self.cls, "paper", "") or getattr(self.cls, "citation", "")


class Registry:
    def __init__(self, infos: Iterable[PluginInfo] = ()) -> None:
        self._by_kind: dict[str, dict[str, PluginInfo]] = {k: {} for k in GROUPS}
        for info in infos:
            self.add(info)

    def add(self, info: PluginInfo) -> None:
        table = self._by_kind[info.kind]
        if info.name in table and not table[info.name].same_as(info):
            raise PluginError(
                f"two {info.kind} plugins are named {info.name!r}: one from {table[info.name].source}, "
                f"one from {info.source}; rename one of them")
        table[info.name] = info

    def infos(self, kind: str | None = None) -> list[PluginInfo]:
        kinds = [kind] if kind else list(GROUPS)
        return [i for k in kinds for _, i in sorted(self._by_kind[k].items())]

    def get(self, kind: str, name: str) -> PluginInfo:
        table = self._by_kind[kind]
        if name in table:
            return table[name]
        close = difflib.get_close_matches(name, table, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(sorted(table)) or "none"
        raise PluginError(f"unknown {kind} {name!r}{hint} (known: {known})")

    def method(self, name: str) -> type[MethodPlugin]:
        return self.get("method", name).cls

    def dataset(self, name: str) -> type[DatasetPlugin]:
        return self.get("dataset", name).cls

    def find(self, name: str) -> PluginInfo:
        """A plugin of either kind (methods first), for commands that take any plugin name."""
        for kind in GROUPS:
            if name in self._by_kind[kind]:
                return self._by_kind[kind][name]
        everything = [n for k in GROUPS for n in self._by_kind[k]]
        close = difflib.get_close_matches(name, everything, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise PluginError(f"unknown plugin {name!r}{hint}")


def discover(plugin_dirs: Sequence[str | os.PathLike] = (), use_env: bool = True) -> Registry:
    """Entry points of every installed distribution, then folders (CLI first, then the env var)."""
    registry = Registry()
    for kind, group in GROUPS.items():
        for ep in entry_points(group=group):
            dist = ep.dist.name if ep.dist else "?"
            source = "built-in" if dist == "segarena" else f"entry point {dist}"
            registry.add(PluginInfo(ep.name, kind, source, loader=partial(_load_entry_point, ep, kind, source)))
    for folder in plugin_folders(plugin_dirs, use_env):
        for info in folder_plugins(folder):
            registry.add(info)
    return registry


def plugin_folders(plugin_dirs: Sequence[str | os.PathLike] = (), use_env: bool = True) -> list[Path]:
    """The plugin folders in effect: the given ones, then ``SEGARENA_PLUGIN_PATH``'s, resolved, once each.
    The runner hands exactly this list to its workers, which do not read the environment themselves."""
    dirs = [Path(d) for d in plugin_dirs]
    if use_env and os.environ.get(PLUGIN_PATH_ENV):
        dirs += [Path(p) for p in os.environ[PLUGIN_PATH_ENV].split(os.pathsep) if p]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def _load_entry_point(ep: EntryPoint, kind: str, source: str) -> type:
    try:
        cls = ep.load()
    except Exception as exc:  # any import failure is the plugin's, reported with its source
        raise PluginError(f"{kind} plugin {ep.name!r} from {source} ({ep.value}) failed to import: "
                          f"{type(exc).__name__}: {exc}") from exc
    _checked_name(cls, kind, source, ep.name)
    return cls


def folder_plugins(folder: Path) -> list[PluginInfo]:
    """Plugins defined in a folder's modules (``*.py`` files and packages), each imported in
    isolation under a private module name: the folder is never put on ``sys.path``."""
    if not folder.is_dir():
        raise PluginError(f"plugin folder {folder} does not exist")
    infos = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists()):
            module = _import_isolated(path)
            for cls in _plugin_classes(module):
                kind = "method" if issubclass(cls, MethodPlugin) else "dataset"
                source = f"folder {path}"
                infos.append(PluginInfo(_checked_name(cls, kind, source), kind, source, cls=cls))
    return infos


def _import_isolated(path: Path) -> ModuleType:
    tag = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    mod_name = f"segarena_plugin_{tag}_{path.stem.replace('-', '_')}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(mod_name, path / "__init__.py",
                                                      submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(mod_name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[mod_name]
        raise PluginError(f"plugin {path} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def _plugin_classes(module: ModuleType) -> list[type]:
    found = []
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if (obj.__module__ == module.__name__ or obj.__module__.startswith(module.__name__ + ".")) \
                and issubclass(obj, (MethodPlugin, DatasetPlugin)) and not inspect.isabstract(obj) \
                and "name" in vars(obj):
            found.append(obj)
    return found


def _checked_name(cls: type, kind: str, source: str, expected: str | None = None) -> str:
    if not isinstance(cls, type) or not issubclass(cls, BASES[kind]):
        raise PluginError(f"{kind} plugin from {source} is not a subclass of {BASES[kind].__name__}: {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"{kind} plugin {cls.__name__} from {source} has no 'name'")
    if not SAFE_NAME.match(name):
        raise PluginError(f"{kind} plugin {cls.__name__} from {source}: name {name!r} must match "
                          f"{SAFE_NAME.pattern} (it becomes folder and file names)")
    if expected is not None and expected != name:
        raise PluginError(f"{kind} plugin registered as {expected!r} from {source} calls itself {name!r}")
    if getattr(cls, "api_version", None) != API_VERSION:
        raise PluginError(f"{kind} plugin {name!r} from {source} has api_version "
                          f"{getattr(cls, 'api_version', None)!r}; this segarena speaks {API_VERSION}")
    return name
