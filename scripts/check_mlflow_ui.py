"""Open the MLflow UI of a work dir in headless Chromium and take screenshots of what a person checks:
the training runs sorted by ``best/dice``, and an evaluation run's per-case table preview.

    .venv/bin/python scripts/check_mlflow_ui.py WORKDIR SUITE OUT_DIR

Prints the run order the UI's own search returns next to the best/dice values, and the screenshot paths.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_text(driver, text: str, timeout: float) -> None:
    t0 = time.time()
    while text not in driver.page_source:
        if time.time() - t0 > timeout:
            print(f"(did not see {text!r} within {timeout:.0f} s)")
            return
        time.sleep(1)


def main(workdir: str, suite: str, out: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "segarena.platform.cli", "ui", "--workdir", workdir, "--port",
                           str(port)], start_new_session=True, stdout=subprocess.DEVNULL,
                          stderr=open(out_dir / "ui.log", "w"))
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                if ui.poll() is not None:
                    raise SystemExit(f"segarena ui exited: {(out_dir / 'ui.log').read_text()[-2000:]}") from None
                time.sleep(1)

        def post(path: str, body: dict) -> dict:
            req = urllib.request.Request(f"{base}/ajax-api/2.0/mlflow/{path}", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
            return json.loads(urllib.request.urlopen(req, timeout=30).read())

        exp = post("experiments/search", {"max_results": 100, "filter": f"name = '{suite}'"})["experiments"][0]
        runs = post("runs/search", {"experiment_ids": [exp["experiment_id"]],
                                    "filter": "tags.`segarena.kind` = 'train'",
                                    "order_by": ["metrics.`best/dice` DESC"]})["runs"]
        for r in runs:
            m = {x["key"]: x["value"] for x in r["data"].get("metrics", [])}
            t = {x["key"]: x["value"] for x in r["data"].get("tags", [])}
            print(f"{t.get('mlflow.runName', '?'):40s} best/dice {m.get('best/dice')} "
                  f"best_budget {t.get('segarena.best_budget')}")
        evals = post("runs/search", {"experiment_ids": [exp["experiment_id"]],
                                     "filter": "tags.`segarena.kind` = 'eval'"})["runs"]
        opts = webdriver.ChromeOptions()
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1600,1000", f"--user-data-dir={tempfile.mkdtemp()}"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        try:
            first_name = next(x["value"] for x in runs[0]["data"]["tags"] if x["key"] == "mlflow.runName")
            driver.get(f"{base}/#/experiments/{exp['experiment_id']}/runs?searchFilter="
                       f"tags.%60segarena.kind%60%20%3D%20%27train%27&orderByKey=metrics.%60best%2Fdice%60"
                       f"&orderByAsc=false")
            wait_text(driver, first_name, 90)
            time.sleep(3)
            driver.save_screenshot(str(out_dir / "mlflow_runs_by_best_dice.png"))
            run_id = evals[0]["info"]["run_id"]
            driver.get(f"{base}/#/experiments/{exp['experiment_id']}/runs/{run_id}/artifacts/per_case.csv")
            wait_text(driver, "case_id", 90)
            time.sleep(3)
            driver.save_screenshot(str(out_dir / "mlflow_per_case_preview.png"))
            logs = driver.get_log("browser")
            print("console errors:", [x["message"][:200] for x in logs if x["level"] == "SEVERE"])
        finally:
            driver.quit()
        print("screenshots:", *sorted(p.name for p in out_dir.glob("mlflow_*.png")))
    finally:
        import os
        import signal

        os.killpg(ui.pid, signal.SIGINT)
        ui.wait(30)


if __name__ == "__main__":
    main(*sys.argv[1:4])
