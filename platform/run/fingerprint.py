"""Environment fingerprint stored beside every result (nnU-Net style): versions, device, CPU/GPU."""

from __future__ import annotations

import os
import platform as std_platform
import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("segarena", "torch", "monai", "ray", "mlflow", "optuna", "numpy", "pandas", "pyarrow", "scipy")


def _version(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return std_platform.processor() or std_platform.machine()


@cache
def git_sha() -> str:
    """The commit of the segarena checkout that ran (``-dirty`` when it has local changes)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


def device_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu:{cpu_name()}"


def fingerprint(device: torch.device | None = None) -> dict[str, Any]:
    device = device or torch.device("cpu")
    info: dict[str, Any] = {
        "versions": {p: _version(p) for p in PACKAGES},
        "python": std_platform.python_version(),
        "os": std_platform.platform(),
        "hostname": std_platform.node(),
        "device": str(device),
        "device_name": device_kind(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "precision": "float32",
        "git_sha": git_sha(),
    }
    if device.type == "cuda":
        info.update({"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                     "tf32": torch.backends.cuda.matmul.allow_tf32,
                     "cudnn_benchmark": torch.backends.cudnn.benchmark})
    return info
