"""Shared test set-up: one torch thread, an isolated cache and runs directory per test session."""

import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _isolated_dirs(tmp_path_factory):
    os.environ["PMGFLOW_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["PMGFLOW_RUNS"] = str(tmp_path_factory.mktemp("runs"))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    yield
