"""How true the run's ETA is: `segarena run SUITE` in a fresh work dir (the ETA then starts from
platform/eta_prior.json), its printed ETA at each cell start against the time that really remained.
Goal (issue: honest progress): within ±30 % from the third cell on.

    .venv/bin/python benchmarks/perf/eta_accuracy.py [SUITE] [--log FILE]   # --log: analyse a saved run

Writes benchmarks/perf/results/eta_accuracy.{json,md} and the run's log beside them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _eta_accuracy():
    spec = importlib.util.spec_from_file_location("readme_times", HERE / "readme_times.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.eta_accuracy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suite", nargs="?", default="default")
    ap.add_argument("--log", default=None, help="analyse this saved `segarena run` output instead of running")
    args = ap.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    log = RESULTS / f"eta_accuracy_{args.suite}.log"
    load = [os.getloadavg()]
    if args.log:
        text = Path(args.log).read_text()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run([sys.executable, "-m", "segarena.platform.cli", "run", args.suite, "--workdir",
                                   str(Path(tmp) / "runs")], capture_output=True, text=True)
            text = proc.stdout + proc.stderr
    load.append(os.getloadavg())
    log.write_text(text)
    rows = _eta_accuracy()(text)
    later = [abs(r["error"]) for r in rows[2:] if r["error"] is not None]
    out = {"suite": args.suite, "log": log.name, "load_average": None if args.log else load, "rows": rows,
           "max_abs_error_from_third_cell": max(later) if later else None}
    (RESULTS / "eta_accuracy.json").write_text(json.dumps(out, indent=1))
    lines = [f"# ETA accuracy — `segarena run {args.suite}` in a fresh work dir", "",
             "ETA printed at each cell start against the time that really remained (from the run's own progress "
             "lines). Goal: within ±30 % from the third cell on.", "",
             "| cell start | elapsed s | ETA s | remaining s | error |", "|---|---|---|---|---|"]
    lines += [f"| {r['cell_start']} | {r['elapsed_s']} | {r['eta_s']} | {r['remaining_s']} | {r['error']} |"
              for r in rows]
    where = (f"load average before/after {load[0][0]:.1f}/{load[-1][0]:.1f}" if not args.log
             else f"analysed from {args.log} (a run made by hand: its load is not recorded here)")
    lines += ["", f"Max |error| from the third cell: {out['max_abs_error_from_third_cell']} · {where}"]
    (RESULTS / "eta_accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
