"""Wall time of the README's two commands from a fresh clone, so the README quotes measured numbers.

Run: ``python benchmarks/perf/readme_times.py`` (15+ minutes on a 2-core machine). Each command is
read from the README's "Two commands" block, run in its own fresh ``git clone`` of this repository's
HEAD (commit first: uncommitted work is not measured) with pip's cache disabled, and timed part by
part (``bootstrap && command``). Writes results/readme_times.json and .md next to this file.
``--dry-run`` prints the plan (commands, clone, environment) as JSON and runs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as stdlib_platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
# pip without its cache (a first install), and CI=true as CI sets it (tests that need a browser fail, not skip)
ENV = {"PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "CI": "true"}


def readme_commands(readme: Path = REPO / "README.md") -> list[str]:
    """The command lines of the README's "Two commands" bash block (comments dropped)."""
    text = readme.read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    if block is None:
        raise SystemExit("README.md: no ```bash block under '## Two commands'")
    return [ln.strip() for ln in block.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def plan(repo: Path = REPO) -> dict:
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    return {"repo": str(repo), "commit": head.stdout.strip(), "env": ENV,
            "commands": [{"index": i + 1, "command": c, "parts": [p.strip() for p in c.split("&&")]}
                         for i, c in enumerate(readme_commands())]}


def _summary(output: str) -> dict:
    """What the output says: pytest's final tally, or the suite's summary line."""
    out: dict = {}
    tally = [ln for ln in output.splitlines() if re.search(r"\d+ (passed|failed)", ln) and " in " in ln]
    if tally:
        counts = dict((k, int(n)) for n, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", tally[-1]))
        seconds = re.search(r" in ([\d.]+)s", tally[-1])
        out |= {"tests": counts, "pytest_s": float(seconds.group(1)) if seconds else None}
    if m := re.search(r"suite '([^']+)': (.*?) · (\d+)s wall", output):
        out |= {"suite": m.group(1), "suite_summary": m.group(2), "suite_wall_s": int(m.group(3))}
    return out


def _clock(text: str) -> int:
    parts = [int(x) for x in text.split(":")]
    return parts[0] * 60 + parts[1] if len(parts) == 2 else parts[0] * 3600 + parts[1] * 60 + parts[2]


def eta_accuracy(output: str) -> list[dict]:
    """The run's ETA at each cell start against the time that really remained (issue: ±30 % from the
    third cell on), read from the progress lines ``[k/N cells · M:SS elapsed · ETA M:SS] start ...``."""
    pat = re.compile(r"\[(\d+)/(\d+) cells · ([\d:]+) elapsed · ETA ([\d:?]+)\] (start|done)")
    events = [m.groups() for m in map(pat.search, output.splitlines()) if m]
    if not events:
        return []
    end = max(_clock(e[2]) for e in events)
    rows = []
    for i, (_, _, elapsed, eta, _kind) in enumerate(e for e in events if e[4] == "start"):
        left = end - _clock(elapsed)
        est = None if eta == "?" else _clock(eta)
        rows.append({"cell_start": i + 1, "elapsed_s": _clock(elapsed), "eta_s": est, "remaining_s": left,
                     "error": None if est is None or left == 0 else round((est - left) / left, 3)})
    return rows


def measure(command: dict, repo: Path, keep: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="segarena-readme-"))
    clone = tmp / "segarena"
    try:
        subprocess.run(["git", "clone", "--quiet", "--no-local", str(repo), str(clone)], check=True)
        env = {**os.environ, **ENV}
        env.pop("VIRTUAL_ENV", None)
        parts, outputs, load = [], [], [os.getloadavg()]
        for part in command["parts"]:
            t0 = time.perf_counter()
            proc = subprocess.run(["bash", "-c", part], cwd=clone, env=env, capture_output=True, text=True)
            took = time.perf_counter() - t0
            load.append(os.getloadavg())
            outputs.append(proc.stdout + proc.stderr)
            parts.append({"part": part, "seconds": round(took, 1), "exit_code": proc.returncode})
            if proc.returncode != 0:
                break
        text = "\n".join(outputs)
        RESULTS.mkdir(exist_ok=True)
        log = RESULTS / f"readme_times_command{command['index']}.log"
        log.write_text(text[-200_000:])
        return {"command": command["command"], "parts": parts, "total_s": round(sum(p["seconds"] for p in parts), 1),
                "ok": all(p["exit_code"] == 0 for p in parts), "loadavg": load, "log": log.name,
                "eta_accuracy": eta_accuracy(text), **_summary(text), "output_tail": text[-2000:]}
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def markdown(result: dict) -> str:
    lines = [f"# README commands from a fresh clone ({result['commit'][:10]})", "",
             f"{result['machine']}; pip cache disabled; load average before/after each part in the JSON.", "",
             "| command | part | seconds | exit |", "|---|---|---|---|"]
    for r in result["results"]:
        for p in r["parts"]:
            lines.append(f"| `{r['command']}` | `{p['part']}` | {p['seconds']} | {p['exit_code']} |")
        extra = {k: r[k] for k in ("tests", "pytest_s", "suite_summary", "suite_wall_s") if k in r}
        lines.append(f"| | **total** | **{r['total_s']}** | {json.dumps(extra)} |")
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    """The CPU's name and its widest vector extension: the same suite gives slightly other Dice on AVX2 and
    AVX-512 machines (README: measured times)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return stdlib_platform.processor() or "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name}, {vector}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="print what would run, as JSON, and run nothing")
    ap.add_argument("--keep", action="store_true", help="keep the temporary clones")
    args = ap.parse_args(argv)
    todo = plan()
    if args.dry_run:
        print(json.dumps(todo, indent=1))
        return 0
    machine = f"{os.cpu_count()} CPUs ({cpu_model()}), {stdlib_platform.machine()}, Python {sys.version.split()[0]}"
    results = [measure(c, REPO, args.keep) for c in todo["commands"]]
    result = {**todo, "machine": machine, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "results": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "readme_times.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "readme_times.md").write_text(markdown(result))
    print(json.dumps([{k: r[k] for k in r if k != "output_tail"} for r in results], indent=1))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
