"""A run's files: written and read in place under the work dir for the embedded store (laid out as a served
store would, ``mlflow-artifacts:/<suite>/<run>/artifacts``), through MLflow for any other store."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException

from segarena.platform.errors import StoreError
from segarena.platform.store.client import StoreClient
from segarena.platform.store.retry import retry
from segarena.platform.store.schema import PER_CASE
from segarena.platform.store.workdir import ARTIFACT_SCHEME, WorkDir


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


class Artifacts(StoreClient):
    """Artifact writes and reads of a store; tables are read once per instance."""

    def __init__(self, tracking_uri: str, workdir: WorkDir | None = None) -> None:
        super().__init__(tracking_uri, workdir)
        self._tables: dict[tuple[str, str], pd.DataFrame] = {}

    def _local_root(self, run_id: str) -> Path | None:
        """The run's artifact folder when it lives in this work dir (embedded store), else None."""
        if not self.embedded:
            return None
        uri = self.get_run(run_id).info.artifact_uri
        return self.workdir.artifact_path(uri) if uri.startswith(ARTIFACT_SCHEME) else None

    def put_files(self, run_id: str, files: dict[str, Any]) -> None:
        """Small files by name: a DataFrame as parquet (or CSV for ``.csv``), a dict or list as JSON, else text."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                path = Path(tmp) / name
                if isinstance(content, pd.DataFrame):
                    if name.endswith(".csv"):
                        content.to_csv(path, index=False)
                    else:
                        content.to_parquet(path, index=False)
                elif isinstance(content, (dict, list)):
                    path.write_text(json.dumps(content, indent=1, default=str))
                else:
                    path.write_text(str(content))
            self.put_dir(run_id, Path(tmp), "")

    def put_dir(self, run_id: str, folder: Path, under: str) -> None:
        """A folder's files under ``under`` ("" = the artifact root)."""
        root = self._local_root(run_id)
        if root is not None:
            dest = root / under if under else root
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copytree(folder, dest, dirs_exist_ok=True)
            return
        retry(lambda: self.client.log_artifacts(run_id, str(folder), under or None))

    def fetch(self, run_id: str, path: str, dest: Path) -> Path:
        """A local copy of one artifact file or folder (in place for the embedded store)."""
        try:
            root = self._local_root(run_id)
            if root is not None:
                local = root / path
                if not local.exists():
                    raise StoreError(f"run {run_id}: artifact {path!r} is missing ({local})")
                return local
            dest.mkdir(parents=True, exist_ok=True)
            return Path(self.client.download_artifacts(run_id, path, str(dest)))
        except StoreError:
            raise
        except (MlflowException, OSError) as exc:
            raise StoreError(f"run {run_id}: cannot read artifact {path!r}: {first_line(exc)}") from exc

    def load_table(self, run_id: str, name: str = PER_CASE) -> pd.DataFrame:
        """A run's table; read once per Tracker (the leaderboard and its statistics read the same ones)."""
        key = (run_id, name)
        if key not in self._tables:
            self._tables[key] = self._read_table(run_id, name)
        return self._tables[key].copy()

    def _read_table(self, run_id: str, name: str) -> pd.DataFrame:
        with tempfile.TemporaryDirectory() as tmp:
            local = self.fetch(run_id, name, Path(tmp))
            try:
                return pd.read_parquet(local)
            except (OSError, ValueError) as exc:
                raise StoreError(f"run {run_id}: artifact {name!r} is unreadable: {first_line(exc)}") from exc

    def load_json(self, run_id: str, name: str) -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(self.fetch(run_id, name, Path(tmp)).read_text())
