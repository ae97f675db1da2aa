"""The CLI: bad input gives one clear line, a non-zero exit, and nothing written to the store."""

from __future__ import annotations

import pytest

from segarena.platform.cli import main

SUITE = """
name: cli
methods:
  - name: {method}
datasets:
  - name: synthetic
seeds: [0]
"""


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("text, message", [
    ("name: cli\nmethods: [unet\n", "malformed YAML"),
    (SUITE.format(method="unet") + "colour: red\n", "unknown field 'colour'"),
    (SUITE.format(method="unetz"), "unknown method 'unetz'; did you mean 'unet'"),
])
def test_run_with_bad_suite(tmp_path, capsys, text, message):
    suite = tmp_path / "s.yaml"
    suite.write_text(text)
    code, _, err = run_cli(capsys, "run", str(suite), "--workdir", str(tmp_path / "w"))
    assert code == 2
    assert err.count("\n") == 1 and message in err and str(suite) in err
    assert not (tmp_path / "w").exists()


def test_run_with_a_plugin_folder_that_fails_to_import(tmp_path, capsys):
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "bad.py").write_text("raise RuntimeError('lab code broke')\n")
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(method="unet"))
    code, _, err = run_cli(capsys, "run", str(suite), "--workdir", str(tmp_path / "w"), "--plugins",
                           str(tmp_path / "plug"))
    assert code == 2 and "bad.py failed to import: RuntimeError: lab code broke" in err
    assert not (tmp_path / "w").exists()


def test_run_with_a_missing_dataset_folder(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(method="unet").replace("- name: synthetic",
                                                         f"- name: folder\n    path: {tmp_path / 'nodata'}"))
    code, _, err = run_cli(capsys, "run", str(suite), "--workdir", str(tmp_path / "w"))
    assert code == 2 and "nodata" in err
    assert not (tmp_path / "w" / "mlflow.db").exists()


def test_plugins_list_shows_kind_version_source_paper(capsys, make_plugin_dir):
    folder = make_plugin_dir("lab-net")
    code, out, _ = run_cli(capsys, "plugins", "list", "--plugins", str(folder))
    assert code == 0
    unet = next(ln for ln in out.splitlines() if ln.startswith("unet "))
    assert "method" in unet and "built-in" in unet and "U-Net" in unet
    assert any(ln.startswith("lab-net") and "folder" in ln for ln in out.splitlines())


def test_plugins_check_on_a_folder_plugin(capsys, make_plugin_dir):
    folder = make_plugin_dir("lab-net")
    code, out, _ = run_cli(capsys, "plugins", "check", "lab-net", "--plugins", str(folder))
    assert code == 0, out
    assert "PASS  test_nfe_matches_budget" in out and "0 failed" in out


def test_plugins_check_reports_failures(capsys, make_plugin_dir):
    folder = make_plugin_dir("nan-net", fail="nan")
    code, out, _ = run_cli(capsys, "plugins", "check", "nan-net", "--plugins", str(folder))
    assert code == 1
    assert "FAIL  test_training_steps_change_weights" in out


def test_leaderboard_without_a_store(tmp_path, capsys):
    code, _, err = run_cli(capsys, "leaderboard", "--workdir", str(tmp_path))
    assert code == 2 and "no tracking store" in err


# --- listings that fit the terminal, datasets' download pages, suites, logging, next steps ------------------

def _words(text: str) -> set[str]:
    return set(text.split())


def test_plugins_list_shows_year_venue_and_wraps_instead_of_cutting(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_cli(capsys, "plugins", "list")
    assert code == 0
    assert all(len(ln) <= 80 for ln in out.splitlines()), max(out.splitlines(), key=len)
    unet = next(ln for ln in out.splitlines() if ln.startswith("unet "))
    assert "2015" in unet and "MICCAI" in unet
    title = "MedSegDiff: Medical Image Segmentation with Diffusion Probabilistic Model"
    assert _words(title) <= _words(out)  # every word is there, none cut mid-way
    med = next(ln for ln in out.splitlines() if ln.startswith("medsegdiff "))
    assert "2023" in med and "MIDL" in med


def test_datasets_list_groups_the_unavailable_ones_with_variable_and_page(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "90")
    monkeypatch.delenv("SEGARENA_ISIC2018_ROOT", raising=False)
    code, out, _ = run_cli(capsys, "datasets", "list")
    assert code == 0
    assert all(len(ln) <= 90 for ln in out.splitlines()), max(out.splitlines(), key=len)
    ready, _, rest = out.partition("not on this machine (")
    assert any(ln.lstrip().startswith("synthetic ") for ln in ready.splitlines())
    isic = next(ln for ln in rest.splitlines() if ln.lstrip().startswith("isic2018 "))
    assert "$SEGARENA_ISIC2018_ROOT" in isic and "https://challenge.isic-archive.com" in isic
    assert out.count("needs its folder") == 0  # the shared reason is said once, as the group's header


def test_datasets_show_says_where_to_get_data_that_is_missing(capsys, monkeypatch):
    monkeypatch.delenv("SEGARENA_KVASIR_ROOT", raising=False)
    code, out, _ = run_cli(capsys, "datasets", "show", "kvasir-seg")
    assert code == 2  # missing data: the same exit code as any bad input
    assert "https://datasets.simula.no/kvasir-seg/" in out and "$SEGARENA_KVASIR_ROOT (not set)" in out
    assert "Kvasir-SEG/" in out and "masks/<id>.jpg" in out and "unavailable" in out


def test_every_dataset_plugin_with_a_folder_says_how_to_lay_it_out():
    from segarena.platform.plugins.registry import discover

    for info in discover([]).infos("dataset"):
        if info.cls.root_env:
            assert info.cls.layout.startswith("<root>/"), info.name


def test_datasets_show_bad_param_is_one_line(capsys):
    code, _, err = run_cli(capsys, "datasets", "show", "synthetic", "--param", "size")
    assert code == 2 and err.count("\n") == 1 and "--param 'size' is not KEY=VALUE" in err


def test_suites_are_listed_relative_to_the_repository(capsys):
    code, out, _ = run_cli(capsys, "suites")
    assert code == 0
    assert "benchmarks/suites/default.yaml" in out and "/benchmarks/suites/default.yaml" not in out


def test_next_steps_name_the_ui_the_report_and_the_per_case_rows(tmp_path, monkeypatch):
    from segarena.platform.cli.run import next_steps

    monkeypatch.chdir(tmp_path)
    text = next_steps(tmp_path / "runs", "default", tmp_path / "runs" / "report.html")
    assert "segarena ui --workdir runs" in text and "report:          runs/report.html" in text
    assert "runs/artifacts/default/<run id>/artifacts/per_case.parquet" in text
    plain = next_steps(tmp_path / "segarena-runs", "default", None, per_case=tmp_path / "cases.parquet")
    assert "segarena ui\n" in plain and "--workdir" not in plain.split("\n")[1]
    assert "report:" not in plain and "per-case table:  cases.parquet" in plain
    served = next_steps(tmp_path / "runs", "default", None, tracking_uri="http://127.0.0.1:5123")
    assert "MLflow UI:       http://127.0.0.1:5123" in served and "--workdir" not in served
    assert "segarena leaderboard --tracking-uri http://127.0.0.1:5123 --suite default" in served
    assert "runs/artifacts" not in served


def test_log_lines_have_colour_only_on_a_terminal(monkeypatch):
    import io

    from segarena.platform.log import get_logger, setup

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for stream, coloured in ((io.StringIO(), False), (Tty(), True)):
        setup(0, False, stream)
        get_logger("test").warning("disk nearly full")
        assert ("\x1b[" in stream.getvalue()) is coloured
        assert "segarena: warning: disk nearly full" in stream.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    tty = Tty()
    setup(0, False, tty)
    get_logger().warning("x")
    assert "\x1b[" not in tty.getvalue()
    quiet = io.StringIO()
    setup(0, True, quiet)
    get_logger().info("chatter")
    get_logger().debug("more")
    assert quiet.getvalue() == ""
    loud = io.StringIO()
    setup(1, False, loud)
    get_logger().debug("detail")
    assert "segarena: debug: detail" in loud.getvalue()
    setup()  # leave the default handler for the other tests


# --- segarena ui ---------------------------------------------------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line or environment holds ``text`` (the server and its workers)."""
    import os
    from pathlib import Path

    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if (d / "stat").read_text().split(") ", 1)[1].startswith("Z"):
                continue
            blob = (d / "cmdline").read_bytes() + (d / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in blob:
            out.append(int(d.name))
    return out


@pytest.fixture
def small_store(tmp_path):
    """A real work-dir store: one experiment with served-artifact location, one run, a metric, a file."""
    from mlflow.tracking import MlflowClient

    from segarena.platform.store.workdir import WorkDir

    wd = WorkDir.at(tmp_path / "runs")
    wd.root.mkdir()
    client = MlflowClient(tracking_uri=wd.tracking_uri)
    exp = client.create_experiment("cli-ui", artifact_location="mlflow-artifacts:/cli-ui")
    run = client.create_run(exp, run_name="one")
    client.log_metric(run.info.run_id, "dice", 0.75)
    client.set_terminated(run.info.run_id)
    art = wd.artifacts / "cli-ui" / run.info.run_id / "artifacts"
    art.mkdir(parents=True)
    (art / "hello.txt").write_text("per-case rows live here")
    return wd, run.info.run_id


@pytest.mark.slow  # ~30 s: mlflow server (uvicorn) start-up on a 2-core machine
def test_ui_serves_the_store_on_loopback_and_stops_on_ctrl_c(small_store):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    wd, run_id = small_store
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "segarena.platform.cli", "ui", "--workdir", str(wd.root),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        url, lines, deadline = None, [], time.monotonic() + 150
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("MLflow UI: "):
                url = line.split()[2]
        assert url == f"http://127.0.0.1:{port}", (lines, proc.poll() and proc.stderr.read())
        with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
            assert r.status == 200
        req = urllib.request.Request(f"{url}/ajax-api/2.0/mlflow/experiments/search", method="POST",
                                     data=json.dumps({"max_results": 10}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert "cli-ui" in [e["name"] for e in json.load(r)["experiments"]]
        with urllib.request.urlopen(f"{url}/get-artifact?path=hello.txt&run_uuid={run_id}", timeout=10) as r:
            assert r.read().decode() == "per-case rows live here"  # served from <workdir>/artifacts
        assert _processes_mentioning(str(wd.root))  # the server runs ...
        os.kill(proc.pid, signal.SIGINT)  # ... until Ctrl-C
        assert proc.wait(60) == 0
        deadline = time.monotonic() + 20
        while _processes_mentioning(str(wd.root)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_mentioning(str(wd.root)) == []  # nothing left behind
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/health", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pid in _processes_mentioning(str(wd.root)):  # only the server this test started names this folder
            os.kill(pid, signal.SIGKILL)


def test_ui_without_a_store_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "ui", "--workdir", str(tmp_path / "nothing"))
    assert code == 2 and err.count("\n") == 1 and "no tracking store" in err


def test_readme_timing_script_measures_exactly_the_readmes_commands():
    import json
    import re
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    script = repo / "benchmarks" / "perf" / "readme_times.py"
    out = subprocess.run([sys.executable, str(script), "--dry-run"], capture_output=True, text=True, timeout=60,
                         check=True)
    todo = json.loads(out.stdout)
    section = (repo / "README.md").read_text().split("## Two commands", 1)[1].split("\n## ", 1)[0]
    shown = [ln.strip() for ln in re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    assert [c["command"] for c in todo["commands"]] == shown and len(shown) == 2
    assert all(c["parts"][0] == "bash scripts/bootstrap.sh" for c in todo["commands"])
    assert todo["env"]["PIP_NO_CACHE_DIR"] == "1" and re.fullmatch(r"[0-9a-f]{40}", todo["commit"])
    sys.path.insert(0, str(script.parent))
    try:
        from readme_times import _summary
    finally:
        sys.path.remove(str(script.parent))
    assert _summary("x\n==== 383 passed, 2 skipped in 156.12s (0:02:36) ====") == {
        "tests": {"passed": 383, "skipped": 2}, "pytest_s": 156.12}
    assert _summary("suite 'default': 10 cell(s) run, 0 failed · 258s wall")["suite_wall_s"] == 258
