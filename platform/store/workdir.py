"""The work dir: the one object that knows where a run's files live (docs/contracts.md, "Work dir").

Everything segarena writes on a machine goes under one root, by default ``./segarena-runs``::

    mlflow.db     embedded MLflow store (SQLite), used when no --tracking-uri is given
    mlflow.db.lock  held while a process opens the store (two must not create a new one at once)
    artifacts/    MLflow artifacts of the embedded store, laid out as a served store would
                  (``mlflow-artifacts:/<suite>/<run>/artifacts/...``), so a copied work dir keeps working
    cache/        preprocessed datasets (shared by every cell; safe to delete)
    ray/          Ray Tune / Train storage; ray/cells/<suite>--<key>/ the checkpoint of a running one-worker cell
                  ray/search/<key>/ the Tune experiment of one hyperparameter search
    models/       weights downloaded from the store for evaluation on this machine
    locks/        one lock file per suite: one driver per suite and work dir
    eta.json      per-method step costs measured by the last run (the next run's first ETA)
    reports/      one self-contained HTML report per suite

No other module builds these paths. Importing this module stays cheap (no torch, no mlflow).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from segarena.platform.errors import SegarenaError
from segarena.platform.paths import DEFAULT_WORKDIR, inside

if TYPE_CHECKING:
    from segarena.platform.records import Cell

ARTIFACT_SCHEME = "mlflow-artifacts:"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class WorkDir:
    root: Path

    @classmethod
    def at(cls, path: str | Path = DEFAULT_WORKDIR) -> WorkDir:
        return cls(Path(path).expanduser().resolve())

    @property
    def db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def tracking_uri(self) -> str:
        """The embedded store's URI (SQLite, absolute: MLflow resolves relative paths against the cwd)."""
        return f"sqlite:///{self.db}"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def ray_storage(self) -> Path:
        return self.root / "ray"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def report(self, suite: str) -> Path:
        """The suite's self-contained HTML report (``segarena report``)."""
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in suite) or "suite"
        return self.root / "reports" / f"{safe}.html"

    def lock(self, suite: str) -> Path:
        return self.inside(self.root / "locks", f"{suite}.lock")

    def artifact_path(self, uri: str) -> Path:
        """The local file behind an ``mlflow-artifacts:/…`` URI of the embedded store."""
        if not uri.startswith(ARTIFACT_SCHEME):
            raise SegarenaError(f"artifact URI {uri!r} is not a work-dir artifact ({ARTIFACT_SCHEME}/...)")
        rel = uri[len(ARTIFACT_SCHEME):].lstrip("/")
        return self.inside(self.artifacts, rel)

    @staticmethod
    def cell_name(cell: Cell) -> str:
        """A cell's folder name under ray/: suite and training key, so two suites of one work dir that hold
        the same training never share (or clear) each other's half-written checkpoint."""
        return f"{cell.suite}--{cell.key}"

    def cell_checkpoint(self, cell: Cell) -> Path:
        """The latest checkpoint of a one-worker cell while it trains (deleted once it is recorded)."""
        return self.inside(self.ray_storage / "cells", self.cell_name(cell))

    def timeout_marker(self, cell: Cell) -> Path:
        """Written when a cell's time ran out (holds the driver id), so a retried trial does not restart it."""
        return self.inside(self.ray_storage / "timeouts", self.cell_name(cell))

    def clear_cell_checkpoint(self, cell: Cell) -> None:
        import shutil

        shutil.rmtree(self.cell_checkpoint(cell), ignore_errors=True)

    def model_dir(self, run_id: str) -> Path:
        return self.inside(self.models, run_id)

    def search_dir(self, search_key: str) -> Path:
        """Ray Tune's storage for one search (method × dataset): ``ray/search/<search key>``."""
        return self.inside(self.ray_storage / "search", search_key)

    inside = staticmethod(inside)  # paths.inside: names from plugins and suites never leave the work dir

    @property
    def eta(self) -> Path:
        """Per-method step and evaluation costs measured by the last run: the next run's first ETA."""
        return self.root / "eta.json"

    def read_eta(self) -> dict:
        import json

        try:
            return json.loads(self.eta.read_text())
        except (OSError, ValueError):
            return {}

    def write_eta(self, costs: dict) -> None:
        import json

        self.eta.write_text(json.dumps(costs, indent=1))

    def exists(self) -> bool:
        return self.db.exists()


def experiment_location(suite: str) -> str:
    """Where a suite's artifacts go: relative to the artifact root of the store (portable)."""
    if not _SAFE_NAME.match(suite):
        raise SegarenaError(f"suite name {suite!r} is not a safe folder name")
    return f"{ARTIFACT_SCHEME}/{suite}"
