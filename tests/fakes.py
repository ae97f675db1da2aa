"""What the test methods share: ``UntrainedMethod`` (the in-process fakes of the evaluation tests: nothing
to train, an identity ``net`` as the denoiser the harness counts, called nfe times per image), and the one
switchable one-conv test method of tests/plugins/probe.py, as an in-process class (``probe_class``) or as a
folder plugin (``write_probe``, what ``--plugins`` and the cluster tests load in other processes).

Loaded by tests/conftest.py as the module ``segarena_test_fakes`` (the tests run with
``--import-mode=importlib``, so this folder is not on ``sys.path``)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from segarena.platform.plugin import MethodPlugin, Task


class UntrainedMethod(MethodPlugin):
    paper = "test"
    denoiser = "net"

    def __init__(self, hparams: dict[str, Any], task: Task) -> None:
        super().__init__(hparams, task)
        self.net = torch.nn.Identity()

    @classmethod
    def profiles(cls) -> dict[str, dict[str, Any]]:
        return {"tiny": {}, "paper": {}}

    def modules(self) -> dict[str, torch.nn.Module]:
        return {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"loss": 0.0}


# The one test method (tests/plugins/probe.py), in-process and as a folder plugin ---------------------------

PROBE_FILE = Path(__file__).with_name("plugins") / "probe.py"


def _probe_base() -> type[MethodPlugin]:
    """tests/plugins/probe.py's ``Probe``, loaded once by path as ``segarena_test_probe``."""
    name = "segarena_test_probe"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, PROBE_FILE)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name].Probe


def _class_name(name: str) -> str:
    return "".join(p.capitalize() for p in name.replace("-", "_").split("_")) + "Method"


def _class_body(name: str, switches: dict[str, Any], fails: Sequence[str], stochastic: bool,
                returns_members: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "switches": dict(switches)}
    if fails:
        body["fails"] = tuple(fails)
    if stochastic:
        body["stochastic"] = True
    if returns_members:
        body["returns_members"] = True
    return body


def probe_class(name: str, *, fails: Sequence[str] = (), stochastic: bool = False, returns_members: bool = False,
                **switches: Any) -> type[MethodPlugin]:
    """A named probe for in-process tests; ``switches`` set its profiles' defaults (``fail="lie"``)."""
    body = _class_body(name, switches, fails, stochastic, returns_members)
    return type(_class_name(name), (_probe_base(),), {"__module__": __name__, **body})


def write_probe(folder: Path, name: str, *, filename: str | None = None, fails: Sequence[str] = (),
                stochastic: bool = False, returns_members: bool = False, **switches: Any) -> Path:
    """Write the folder plugin ``name`` into ``folder`` (created) and return the folder: probe.py's text
    plus ``class <Name>Method(Probe)`` with its switches, one self-contained file (``<name>.py``), so
    Ray workers, driver subprocesses and cluster nodes import it from ``--plugins`` like any lab's plugin."""
    folder.mkdir(parents=True, exist_ok=True)
    body = _class_body(name, switches, fails, stochastic, returns_members)
    lines = [f'    name = "{name}"'] + [f"    {key} = {value!r}" for key, value in body.items() if key != "name"]
    text = PROBE_FILE.read_text() + f"\n\nclass {_class_name(name)}(Probe):\n" + "\n".join(lines) + "\n"
    (folder / (filename or f"{name.replace('-', '_')}.py")).write_text(text)
    return folder
