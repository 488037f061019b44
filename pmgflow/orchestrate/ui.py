"""`pmgflow ui`: the MLflow UI of a tracking store, served on 127.0.0.1 and stopped with everything it started.

`mlflow server` runs its web workers (uvicorn or gunicorn) as child processes. It is started in a session of its
own, so the terminal's Ctrl-C reaches only `pmgflow ui`, which then stops the server's whole process group (TERM,
then KILL after a grace period); SIGTERM and SIGHUP do the same, and so does any other way out of `pmgflow ui`.
On Linux the server also gets SIGTERM when `pmgflow ui` itself is killed.

MLflow 3's UI shows an experiment either as GenAI pages (overview, traces) or as model training (the runs table,
trials nested under their sweep run). It chooses by a GenAI / model-training switch (GenAI unless the browser
kept another choice) that a link can set, or, in versions without the switch, by the experiment's kind tag,
which pmgflow sets on its experiments. So `pmgflow ui` prints, besides the UI's address, a link to each sweep
experiment's runs table.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from rich.markup import escape

from pmgflow.errors import SpecError
from pmgflow.orchestrate.processes import stop_group

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stop(Exception):
    """A stop signal arrived."""


def check_store(uri: str) -> None:
    """A SQLite store must exist already: the UI would otherwise create an empty database where none was meant."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise SpecError(f"{uri}: no MLflow database here yet; run `pmgflow sweep FILE` first (or pass --tracking-uri)")


def server_command(uri: str, host: str, port: int) -> list[str]:
    """The `mlflow server` command line for a tracking store."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port)]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to TERM this process when the process that started it dies."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def experiment_url(base: str, experiment_id: str) -> str:
    """The runs table of an experiment, in the UI's model-training view."""
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def sweep_experiments(uri: str, limit: int = 10) -> list[tuple[str, str]]:
    """(name, id) of the store's model-training experiments (those of pmgflow's sweeps), latest first."""
    from pmgflow.orchestrate.tracking import EXPERIMENT_KIND, MODEL_TRAINING, client

    try:
        found = client(uri).search_experiments(max_results=limit, order_by=["last_update_time DESC"],
                                               filter_string=f"tags.`{EXPERIMENT_KIND}` = '{MODEL_TRAINING}'")
    except Exception:  # the links are a convenience: an unreadable store shows in the UI itself
        return []
    return [(e.name, e.experiment_id) for e in found]


def wait_until_serving(url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> bool:
    """Poll the server's /health until it answers (True), it exits or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:  # not listening yet (URLError and timeouts are OSErrors)
            pass
        time.sleep(0.3)
    return False


def serve(uri: str, port: int, host: str = "127.0.0.1", echo: Callable[[str], None] = print) -> int:
    """Serve the MLflow UI of `uri` until the server ends or a stop signal arrives; returns the exit code.

    Whatever ends it, the server and all its workers are stopped before this returns.
    """
    check_store(uri)

    def on_signal(signum, frame):
        raise _Stop(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread only
        previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    proc = None
    try:
        # No job runner: it serves GenAI jobs (LLM judges), and would add eight processes to a browsing UI.
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
        proc = subprocess.Popen(server_command(uri, host, port), start_new_session=True, env=env,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        url = f"http://{host}:{port}"
        experiments = sweep_experiments(uri)  # read while the server starts
        if wait_until_serving(url, proc):
            echo(f"MLflow UI for {uri} at [bold]{url}[/] (Ctrl+C stops it)")
            for name, experiment_id in experiments:
                echo(f"  runs of {escape(name)}: {experiment_url(url, experiment_id)}")
        return proc.wait()
    except (_Stop, KeyboardInterrupt):
        return 0
    finally:
        for sig in previous:  # a second Ctrl+C must not cut the stopping short
            signal.signal(sig, signal.SIG_IGN)
        if proc is not None:
            stop_group(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
