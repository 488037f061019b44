"""Processes pmgflow starts end with it: `pmgflow ui` and its server's workers, a local Ray's daemons."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from pmgflow.orchestrate import tracking
from pmgflow.orchestrate.processes import (RaySessionRecord, stop_group, stop_signals_interrupt,
                                           stop_stale_ray_sessions)

from .conftest import TINY_BASE, free_port, tiny_sweep


def _running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (is_running also checks the start time: a reused pid is not ours)."""
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _tree(pid: int) -> list[psutil.Process]:
    return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]


def _kill(processes: list[psutil.Process]) -> None:
    for p in processes:
        try:
            p.kill()
        except psutil.Error:
            pass


def test_stop_group_ends_a_tree_that_ignores_term(tmp_path):
    # a shell that ignores TERM (so KILL must follow), two children in its group and one in a session of its own
    proc = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 300 & sleep 300 & setsid sleep 300 & echo up; wait"],
                            start_new_session=True, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"
    deadline = time.monotonic() + 10
    while len(_tree(proc.pid)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = _tree(proc.pid)
    try:
        assert len(tree) == 4
        stop_group(proc, grace=1.0)
        assert proc.returncode is not None and not _running(tree)
    finally:
        _kill(tree)


def _sleeper() -> psutil.Process:
    return psutil.Process(subprocess.Popen(["sleep", "300"]).pid)


def _identity(p: psutil.Process) -> list:
    return [p.pid, p.create_time()]


def test_only_the_processes_of_dead_drivers_are_stopped(tmp_path, monkeypatch):
    monkeypatch.setenv("PMGFLOW_CACHE", str(tmp_path / "cache"))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead_driver = [gone.pid, time.time() - 5]  # its process ended: its Ray was left behind
    leftover, other, reused = _sleeper(), _sleeper(), _sleeper()
    folder = RaySessionRecord.folder()
    (folder / "dead.json").write_text(json.dumps({"driver": dead_driver, "processes": [
        _identity(leftover), [reused.pid, reused.create_time() - 100]]}))  # same pid, not the recorded process
    (folder / "live.json").write_text(json.dumps({"driver": _identity(psutil.Process()),
                                                  "processes": [_identity(other)]}))
    (folder / "broken.json").write_text("{")
    try:
        assert stop_stale_ray_sessions(grace=2.0) == 1
        assert not _running([leftover]) and _running([other, reused]) == [other, reused]
        assert sorted(p.name for p in folder.iterdir()) == ["live.json"]
    finally:
        _kill([leftover, other, reused])
        for p in (leftover, other, reused):
            p.wait(5)


# --- real servers and real Ray sessions -----------------------------------------------------------------------


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def tracking_db(tmp_path_factory) -> str:
    from pmgflow.orchestrate.tracking import client

    uri = f"sqlite:///{tmp_path_factory.mktemp('ui') / 'mlflow.db'}"
    client(uri).search_experiments()  # creates the database
    return uri


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ui_stops_its_server_and_workers(tracking_db, sig):
    from pmgflow.orchestrate.ui import wait_until_serving

    port = free_port()
    ui = subprocess.Popen([str(Path(sys.executable).parent / "pmgflow"), "ui", "--port", str(port),
                           "--tracking-uri", tracking_db], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tree = []
    try:
        assert wait_until_serving(f"http://127.0.0.1:{port}", ui, timeout=180)
        time.sleep(1)  # the server's workers are up once it answers; let the last ones register
        tree = _tree(ui.pid)
        assert len(tree) >= 3, tree  # pmgflow ui, mlflow server, its workers
        ui.send_signal(sig)
        assert ui.wait(60) == 0
        assert _running(tree) == [] and _port_closed(port)
    finally:
        _kill(_running(tree) + ([psutil.Process(ui.pid)] if ui.poll() is None else []))


DRIVER = textwrap.dedent("""
    import json, os, sys, time
    import ray
    from pmgflow.orchestrate.sweep import ray_session

    with ray_session(None, 1):
        ray.get(ray.remote(lambda: os.getpid()).remote())  # a worker, started after the session was recorded
        print("up", flush=True)
        if sys.argv[1] != "end":
            time.sleep(600)
""")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["end", "sigint", "kill"])
def test_no_ray_process_outlives_a_local_session(tmp_path, monkeypatch, how):
    monkeypatch.setenv("PMGFLOW_CACHE", str(tmp_path / "cache"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, how], stdout=subprocess.PIPE, text=True, env=env)
    session = []
    try:
        assert driver.stdout.readline().strip() == "up"
        session = psutil.Process(driver.pid).children(recursive=True)
        assert len(session) >= 4  # gcs, raylet, agents, the worker
        (record,) = RaySessionRecord.all()
        assert record.data["driver"][0] == driver.pid
        if how == "sigint":
            driver.send_signal(signal.SIGINT)
        elif how == "kill":
            driver.kill()
        driver.wait(120)
        if how == "kill":
            assert _running(session)  # Ray's agents outlive a killed driver ...
            assert stop_stale_ray_sessions() >= 1  # ... until the next local session stops them
        assert _running(session) == [] and RaySessionRecord.all() == []
    finally:
        _kill(_running(session) + ([psutil.Process(driver.pid)] if driver.poll() is None else []))


def test_stop_signals_take_the_ctrl_c_path_and_the_old_handlers_return():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    for sig in before:
        with pytest.raises(KeyboardInterrupt):
            with stop_signals_interrupt():
                os.kill(os.getpid(), sig)
                time.sleep(5)  # the handler runs at the next bytecode: never reached
        assert {s: signal.getsignal(s) for s in before} == before
    # SIGINT ignored (a job a script started with `&`): a stop signal must still stop
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt):
            with stop_signals_interrupt():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_a_terminated_sweep_records_its_trials_as_killed_and_stops_ray(tmp_path, monkeypatch):
    """`kill PID` (SIGTERM) on a running sweep: the trials stop as on Ctrl-C, MLflow says KILLED (not a stale
    RUNNING), exit code 130, and no process of its local Ray is left."""
    base = {**TINY_BASE, "pretrain": {**TINY_BASE["pretrain"], "epochs": 400}}
    path = tiny_sweep(tmp_path / "tiny.yaml", base=base)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("PMGFLOW_CACHE", str(tmp_path / "cache"))  # where both processes keep the Ray record
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen([str(Path(sys.executable).parent / "pmgflow"), "sweep", str(path), "--tracking-uri",
                              uri, "--runs", str(tmp_path / "runs"), "--cpus", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    session = []
    try:
        lines = []
        for line in sweep.stderr:  # wait until the trial trains
            lines.append(line)
            if "pre-training epoch 1/400" in line:
                break
        else:
            pytest.fail("".join(lines))
        (record,) = RaySessionRecord.all()
        session = record.processes()
        sweep.terminate()
        rest = sweep.stderr.read()
        assert sweep.wait(120) == 130, rest
        assert "interrupted" in rest
        client = tracking.client(uri)
        parent = tracking.find_sweep_run(client, "tiny", uri)
        (child,) = tracking.child_runs(client, parent)
        assert (parent.info.status, child.info.status) == ("KILLED", "KILLED")
        assert child.data.tags[tracking.ERROR] == tracking.INTERRUPTED
        assert _running(session) == [] and RaySessionRecord.all() == []
    finally:
        _kill(_running(session) + ([psutil.Process(sweep.pid)] if sweep.poll() is None else []))


def test_a_terminated_pretraining_says_interrupted_and_keeps_its_checkpoint(tmp_path):
    """`kill PID` on `pmgflow pretrain`: exit 130 with the resume hint (not a bare death by SIGTERM), the
    finished epochs' checkpoint kept (resuming from it: tests/train/test_train.py)."""
    spec = tmp_path / "pretrain.yaml"
    # epochs of about a second: with the tiny default's 16 clips an epoch, the run checkpoints 20 times a second
    # and a signal can land in a finalizer, where Python drops the KeyboardInterrupt its handler raises
    spec.write_text(yaml.safe_dump({**TINY_BASE["pretrain"], "epochs": 400, "clips_per_epoch": 512}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PMGFLOW_CACHE": str(tmp_path / "cache")}
    command = [str(Path(sys.executable).parent / "pmgflow"), "pretrain", str(spec), "--out", str(tmp_path / "runs")]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "runs").glob("pretrain-*/last.pt")):  # an epoch is checkpointed
            assert run.poll() is None and time.monotonic() < deadline, run.stdout.read()
            time.sleep(0.2)
        run.terminate()
        output = run.stdout.read()
        code = run.wait(60)
        assert code == 130, f"exit code {code}:\n{output}"
        assert "interrupted" in output and "resume" in output
    finally:
        if run.poll() is None:
            run.kill()
    (run_dir,) = (tmp_path / "runs").glob("pretrain-*")
    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)
    assert 0 <= state["epoch"] < 399  # 0-based: some epochs done, not all
