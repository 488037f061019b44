"""Where pmgflow keeps caches (decoded data, generated datasets) and run outputs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """A directory under the cache root ($PMGFLOW_CACHE, default ~/.cache/pmgflow), created on demand."""
    root = Path(os.environ.get("PMGFLOW_CACHE", Path.home() / ".cache" / "pmgflow"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Root of run outputs ($PMGFLOW_RUNS, default ./runs); one sub-directory per spec hash."""
    return Path(os.environ.get("PMGFLOW_RUNS", "runs"))
