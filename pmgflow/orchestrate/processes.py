"""Processes pmgflow starts and must stop: a server's whole process group, and the daemons of a local Ray.

A process is named by its pid and its start time, so a pid the system has given to a new process is never
taken for an old one. Stopping is TERM, then KILL for what still runs after a grace period.

A local Ray (a sweep without --address) is recorded in a file while it runs: the driver and every process
`ray.init` started. `ray.shutdown()` stops them when the driver ends normally or on Ctrl-C (pmgflow then checks
and stops whatever is left); when the driver is killed (kill -9, out of memory), Ray's agents linger for a minute
or more. The next local sweep stops the processes of every recorded session whose driver is gone, and nothing
else: never a process pmgflow did not record, never another user's Ray.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil

from pmgflow.paths import cache_dir

GRACE_S = 5.0


def stop_processes(processes: list[psutil.Process], grace: float = GRACE_S) -> None:
    """TERM every process, then KILL those still running `grace` seconds later, and wait until they are gone."""
    for p in processes:
        with contextlib.suppress(psutil.Error):  # psutil refuses to signal a pid reused by another process
            p.terminate()
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace)


def _group(pgid: int) -> list[psutil.Process]:
    """The processes of a process group (those that outlived their parent included)."""
    members = []
    for p in psutil.process_iter():
        with contextlib.suppress(OSError):
            if os.getpgid(p.pid) == pgid:
                members.append(p)
    return members


def stop_group(proc: subprocess.Popen, grace: float = GRACE_S) -> None:
    """Stop `proc`, started with ``start_new_session=True``, with its whole group and everything below it.

    The group gets TERM (a server stops its workers), then KILL after `grace` seconds; children that left the
    group are signalled one by one.
    """
    members = _group(proc.pid)
    with contextlib.suppress(psutil.Error):
        members += [c for c in psutil.Process(proc.pid).children(recursive=True) if c not in members]
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGTERM)
    stop_processes(members, grace)
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything the group started meanwhile
    proc.wait()


@contextlib.contextmanager
def stop_signals_interrupt(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """While inside, these signals take Ctrl-C's path: each one goes to the SIGINT handler of the moment (Ray
    Tune's stops its trials and returns), or raises KeyboardInterrupt where there is none (SIGINT ignored, as in
    a job a script started with `&`), so a `kill`, a batch scheduler's stop or a closed terminal stops the
    command cleanly instead of ending it on the spot with its runs unrecorded. The previous handlers come back
    on exit. Off the main thread (where Python delivers no signals) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def as_interrupt(signum, frame):
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):  # SIG_IGN or SIG_DFL: a stop signal must still stop
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    previous = {sig: signal.signal(sig, as_interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- local Ray sessions --------------------------------------------------------------------------------------


def _identity(p: psutil.Process) -> list:
    return [p.pid, p.create_time()]


def _running(identity: list) -> psutil.Process | None:
    """The process with this [pid, start time], if it still runs."""
    pid, created = identity
    try:
        p = psutil.Process(pid)
        if abs(p.create_time() - created) < 0.05 and p.status() != psutil.STATUS_ZOMBIE:
            return p
    except psutil.Error:
        pass
    return None


class RaySessionRecord:
    """The file that names a local Ray session's driver and the processes `ray.init` started for it."""

    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data

    @staticmethod
    def folder() -> Path:
        """Where the records are: per user, under pmgflow's cache."""
        return cache_dir("ray-sessions")

    @classmethod
    def write(cls, since: float) -> RaySessionRecord:
        """Record this driver and its child processes started since `since` (call right after a local ray.init)."""
        me = psutil.Process()
        started = []
        for p in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if p.create_time() >= since - 1:
                    started.append(_identity(p))
        data = {"driver": _identity(me), "processes": started}
        path = cls.folder() / f"{me.pid}-{int(me.create_time())}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
        return cls(path, data)

    @classmethod
    def all(cls) -> list[RaySessionRecord]:
        """Every recorded session (an unreadable record is dropped)."""
        records = []
        for path in sorted(cls.folder().glob("*.json")):
            try:
                records.append(cls(path, json.loads(path.read_text())))
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
        return records

    @property
    def driver_alive(self) -> bool:
        return _running(self.data["driver"]) is not None

    def processes(self) -> list[psutil.Process]:
        """The recorded processes that still run, and every process below them (e.g. a raylet's workers)."""
        found: dict[int, psutil.Process] = {}
        for identity in self.data["processes"]:
            p = _running(identity)
            if p is None:
                continue
            found[p.pid] = p
            with contextlib.suppress(psutil.Error):
                found.update((c.pid, c) for c in p.children(recursive=True))
        return list(found.values())

    def stop(self, processes: list[psutil.Process] | None = None, grace: float = GRACE_S) -> int:
        """Stop the session's processes (those given, else those running now), drop the record; returns how many."""
        processes = self.processes() if processes is None else processes
        stop_processes(processes, grace)
        self.path.unlink(missing_ok=True)
        return len(processes)


def stop_stale_ray_sessions(grace: float = GRACE_S) -> int:
    """Stop what recorded local Ray sessions left running after their driver died; returns how many processes."""
    return sum(record.stop(grace=grace) for record in RaySessionRecord.all() if not record.driver_alive)

