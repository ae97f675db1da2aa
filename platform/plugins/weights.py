"""Stored weights: what a finished training leaves in the store (``model/``) and how it is loaded back.

``model/weights.pt`` holds the inference state only (every module's ``state_dict`` and the plugin's
``extra_state``, which carries EMA weights where a method samples from them), no optimizer.
``model/card.json`` says what built it: plugin, version, profile, hparams, task, training key.
Loading uses ``torch.load(weights_only=True)``: a work dir or store shared with others never
executes pickled code. Checkpoints of running cells use the same loader.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from segarena.platform.errors import PluginError, StoreError
from segarena.platform.plugin import MethodPlugin, unwrap
from segarena.platform.plugins.registry import Registry
from segarena.platform.records import Cell, Task

WEIGHTS_FILE, CARD_FILE = "weights.pt", "card.json"


def inference_state(method: MethodPlugin) -> dict[str, Any]:
    return {"modules": {k: unwrap(m).state_dict() for k, m in method.modules().items()},
            "extra": method.extra_state()}


def save_model(directory: Path, method: MethodPlugin, cell: Cell, task: Task) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(inference_state(method), directory / WEIGHTS_FILE)
    card = {"plugin": method.name, "version": method.version, "profile": cell.profile, "hparams": cell.hparams,
            "task": task.as_dict(), "train_key": cell.key, "parameters": method.num_parameters()}
    (directory / CARD_FILE).write_text(json.dumps(card, indent=1, default=str))
    return directory


def load_state(path: Path, device: torch.device | str = "cpu") -> Any:
    """A file written by ``torch.save`` of tensors and plain data, never arbitrary objects."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a truncated file, or one that holds pickled objects
        raise StoreError(f"{path}: cannot load as plain weights ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc


def save_atomic(obj: Any, path: Path) -> None:
    """Write then rename: a killed process leaves the previous file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_model(directory: Path, registry: Registry, device: torch.device) -> MethodPlugin:
    """Rebuild a method from ``model/`` and load its weights for evaluation."""
    card = json.loads((directory / CARD_FILE).read_text())
    cls = registry.method(card["plugin"])
    if cls.version != card["version"]:
        raise PluginError(f"{directory}: weights were trained by {card['plugin']} {card['version']}, "
                          f"the installed plugin is {cls.version}")
    method = cls(card["hparams"], Task.from_dict(card["task"]))
    state = load_state(directory / WEIGHTS_FILE, device)
    for k, m in method.modules().items():
        unwrap(m).load_state_dict(state["modules"][k])
        m.to(device)
    method.load_extra_state(state.get("extra", {}))
    return method
