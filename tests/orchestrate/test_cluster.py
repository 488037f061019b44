"""A two-node Ray cluster on this machine (`ray start` twice, token auth, dashboard on 127.0.0.1) runs a tiny
sweep submitted with `pmgflow submit`; its two trials land on both nodes. Slow: run with -m slow."""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pmgflow.orchestrate import tracking

from .conftest import free_port, tiny_sweep

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")


def _ours(marker: str) -> list[int]:
    """PIDs of the processes this test started: their environment holds its one-off auth token."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if marker.encode() in (proc / "environ").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def _wait(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def _nodes(address: str, env: dict) -> int:
    out = subprocess.run([RAY, "status", "--address", address], env=env, capture_output=True, text=True, timeout=60)
    if out.returncode:
        return 0
    active = out.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
    return sum(1 for line in active.splitlines() if line.strip().startswith("1 node_"))


@pytest.mark.slow
def test_submitted_sweep_runs_across_two_nodes(tmp_path):
    token = secrets.token_hex(16)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    port, dashboard = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    common = ["--block", "--num-cpus", "1", "--num-gpus", "0", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    procs = []
    try:
        procs.append(subprocess.Popen(
            [RAY, "start", "--head", "--port", str(port), "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
             "--dashboard-port", str(dashboard), "--temp-dir", str(temp / "head"), *common],
            env=env, start_new_session=True, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT))
        _wait(lambda: _nodes(address, env) >= 1, 120, "the head node")
        procs.append(subprocess.Popen(
            [RAY, "start", "--address", address, "--temp-dir", str(temp / "worker"), *common],
            env=env, start_new_session=True, stdout=open(tmp_path / "worker.log", "w"), stderr=subprocess.STDOUT))
        _wait(lambda: _nodes(address, env) == 2, 120, "the worker node")

        project = tmp_path / "project"
        project.mkdir()
        tiny_sweep(project / "tiny.yaml", name="two-nodes",
                   axes=[{"path": "pretrain.epochs", "values": [1, 0], "labels": ["pmg", "scratch"]}])
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        done = subprocess.run([str(BIN / "pmgflow"), "submit", "tiny.yaml", "--address", f"http://127.0.0.1:{dashboard}",
                               "--tracking-uri", uri, "--runs", str(tmp_path / "runs"), "--wait", "--timeout", "400"],
                              cwd=project, env=env, capture_output=True, text=True, timeout=480)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        job_id = done.stdout.splitlines()[0]
        assert job_id.startswith("pmgflow-two-nodes-")
        assert "ray job logs --address" in done.stderr and f"job {job_id}: SUCCEEDED" in done.stderr

        client = tracking.client(uri)
        parent = tracking.find_sweep_run(client, "two-nodes", uri)
        children = tracking.child_runs(client, parent)
        assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
        assert len({c.data.tags[tracking.NODE] for c in children}) == 2  # one trial on each node
        assert "| pmg | " in done.stdout and "| scratch | " in done.stdout  # the job printed its table
    finally:
        for proc in procs:  # `ray start --block` stops its node's processes on SIGTERM
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for pid in _ours(f"RAY_AUTH_TOKEN={token}"):  # anything left (workers, agents), by PID
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)
