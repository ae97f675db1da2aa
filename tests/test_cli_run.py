"""`segarena run smoke` as a user runs it: a subprocess that starts its own private Ray. Its output
holds progress, the leaderboard and where to look next, and no warning from Ray or anyone else."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.ray
def test_smoke_run_prints_the_board_and_no_warning(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "segarena.platform.cli", "run", "smoke", "--workdir",
                           str(tmp_path / "runs")], capture_output=True, text=True, env=env, timeout=900,
                          start_new_session=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "== smoke · synthetic ==" in out and "2 cell(s) trained" in out and "report:" in out
    assert "segarena ui --workdir" in out
    noisy = [ln for ln in out.splitlines() if re.search(r"warn|deprecat|token auth", ln, re.IGNORECASE)]
    assert not noisy, noisy
    assert "\x1b[" not in out  # no colour codes when the output is not a terminal
