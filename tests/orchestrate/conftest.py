"""Tiny sweeps for the orchestration tests: very small models and data, one shared Ray session per module."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
import yaml

from ..conftest import TINY_MODEL

TINY_SOURCE = {"kind": "fractal", "categories": 2, "images": 16, "size": 32}
TINY_ACTIONS = {"kind": "actions", "classes": 3, "train_per_class": 4, "test_per_class": 2, "frames": 12, "size": 32}
TINY_BASE = {
    "pretrain": {"model": TINY_MODEL, "source": TINY_SOURCE, "epochs": 1, "batch_size": 8, "warmup_epochs": 0,
                 "blr": 1e-3, "threads": 1},
    "finetune": {"actions": {"dataset": TINY_ACTIONS, "epochs": 1, "batch_size": 4, "warmup_epochs": 0,
                             "threads": 1, "test_segments": 1, "test_crops": 1}},
}


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def tiny_sweep(path: Path, **fields) -> Path:
    """A sweep file over the tiny base trial (fields override the top level)."""
    data = {"name": "tiny", "base": TINY_BASE, "axes": [], "resources": {"cpu": 1}, **fields}
    return write_yaml(path, data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray (2 CPUs) for a module's sweeps; run_sweep uses a session that is already up."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
