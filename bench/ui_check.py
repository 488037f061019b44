"""The MLflow UI, checked in a real browser: a sweep's experiment opens on its runs table, trials nested under
the sweep run, from the link `pmgflow ui` prints.

Records a small sweep in a new tracking database as a real sweep does (SweepTracker: experiment, parent run,
one child run per trial; a few metrics, no training), starts `pmgflow ui` on a free port of 127.0.0.1, reads the
experiment link it prints, renders that page and the experiment's plain address in headless Chromium (DOM text
and a screenshot), then stops `pmgflow ui` by its PID with SIGTERM and checks that no process it started is left.
Needs a Chromium (`apt-get install chromium`). Exits 1 when a check fails.

    .venv/bin/python bench/ui_check.py [--out DIR] [--trials 3]
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

MODEL = {"preset": "tiny", "frames": 4, "img_size": 16, "patch": 4, "embed_dim": 32, "depth": 2, "num_heads": 2,
         "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}


def record_sweep(folder: Path, trials: int) -> tuple[str, str, list[str]]:
    """A finished sweep of `trials` trials in a new database: (tracking URI, parent run name, child run names)."""
    from pmgflow.orchestrate.tracking import SweepTracker
    from pmgflow.spec.sweep import load_sweep

    spec = {"name": "ui-check", "base": {"pretrain": {"model": MODEL, "epochs": 1},
                                         "finetune": {"actions": {"epochs": 1}}},
            "axes": [{"path": "pretrain.seed", "values": list(range(trials))}], "resources": {"cpu": 1}}
    path = folder / "ui-check.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracker = SweepTracker(uri, load_sweep(path))
    children = tracker.start()
    for index, child in children.items():
        for epoch in range(3):
            tracker.client.log_metric(child.run_id, "pretrain_loss", 1.0 / (epoch + 1 + index), step=epoch)
        tracker.client.log_metric(child.run_id, "top1.actions", 30.0 + 10 * index)
        tracker.client.set_terminated(child.run_id, "FINISHED")
    tracker.finish({}, [])
    client = tracker.client
    names = [client.get_run(c.run_id).info.run_name for c in children.values()]
    return uri, client.get_run(tracker.parent_id).info.run_name, names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("no Chromium found: apt-get install chromium")


def render(url: str, screenshot: Path, budget_ms: int = 20000) -> str:
    """The page's visible text once its scripts ran for `budget_ms` of virtual time; writes a screenshot."""
    base = [chromium(), "--headless", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900",
            f"--virtual-time-budget={budget_ms}", f"--user-data-dir={screenshot.parent / 'chromium-profile'}"]
    if os.geteuid() == 0:
        base.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
    subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=180)
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text))).strip()


def start_ui(uri: str, port: int) -> tuple[subprocess.Popen, list[str]]:
    """`pmgflow ui` in the background; its output lines are collected as they come."""
    ui = subprocess.Popen([str(Path(sys.executable).parent / "pmgflow"), "ui", "--port", str(port), "--tracking-uri",
                           uri], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(ui.stdout), daemon=True).start()
    return ui, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="Folder for the screenshots (default: a temporary one).")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    folder = Path(tempfile.mkdtemp(prefix="pmgflow-ui-check-"))
    out = args.out or folder
    out.mkdir(parents=True, exist_ok=True)
    uri, parent, children = record_sweep(folder, args.trials)
    print(f"recorded: {uri}, parent run {parent!r} with {len(children)} nested trial runs")

    port = free_port()
    ui, lines = start_ui(uri, port)
    print(f"started: pmgflow ui, PID {ui.pid}, port {port}")
    checks: list[tuple[str, bool]] = []
    tree: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        while not any("/runs?" in line for line in lines) and ui.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        link = next((line.split(": ", 1)[1].strip() for line in lines if "/runs?" in line), None)
        checks.append(("pmgflow ui prints the experiment's runs-table link", link is not None))
        if link is None:
            print("".join(lines))
            return 1
        print(f"link: {link}")
        tree = [psutil.Process(ui.pid), *psutil.Process(ui.pid).children(recursive=True)]
        text = render(link, out / "runs.png")
        print(f"page text: {text[:300]}...")
        matching = re.search(r"(\d+) matching runs", text)
        checks += [("the page is the runs table", text.startswith("Runs - Experiment")),
                   ("the model-training view is on (its side bar: Runs, Models, Traces)", " Runs Models " in text),
                   ("the parent run is listed", parent in text),
                   (f"{1 + len(children)} runs match: the parent and its trials",
                    matching is not None and int(matching.group(1)) == 1 + len(children)),
                   ("the trials are nested (folded under the parent, not listed beside it)",
                    not any(name in text for name in children)),
                   ("no GenAI overview", "Overview" not in text and "Token Usage" not in text)]
        plain = link.split("/runs?")[0]
        plain_text = render(plain, out / "plain.png")
        print(f"for comparison, the plain experiment address {plain} opens on: {plain_text.split(' - ')[0]!r}")
    finally:
        ui.send_signal(signal.SIGTERM)
        try:
            code = ui.wait(60)
        except subprocess.TimeoutExpired:
            code = None
        time.sleep(0.5)
        left = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        for p in left:
            p.kill()
        with socket.socket() as s:
            closed = s.connect_ex(("127.0.0.1", port)) != 0
        checks += [("SIGTERM stops pmgflow ui (exit 0)", code == 0),
                   (f"no process of the {len(tree)} it ran is left", not left),
                   ("the port is closed", closed)]
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print(f"screenshots: {out / 'runs.png'}, {out / 'plain.png'}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
