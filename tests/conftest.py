"""Shared test set-up: one torch thread, an isolated cache and runs directory per test session, the tiny model."""

import os

import pytest
import torch

torch.set_num_threads(1)

# The tiny test architecture, as a spec's `model`: 4 frames of 16x16, tubelet 2, patch 4 (grid (2, 4, 4): 32 tokens
# of 2x4x4x3 = 96 values), encoder 32 wide and 2 deep, decoder 32 wide and 1 deep. Models are built from it
# through the `tiny_config` fixture.
TINY_MODEL = {"preset": "tiny", "frames": 4, "img_size": 16, "patch": 4, "embed_dim": 32, "depth": 2,
              "num_heads": 2, "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}


@pytest.fixture(autouse=True, scope="session")
def _isolated_dirs(tmp_path_factory):
    os.environ["PMGFLOW_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["PMGFLOW_RUNS"] = str(tmp_path_factory.mktemp("runs"))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    yield


@pytest.fixture(scope="session")
def tiny_config():
    """The tiny test architecture (TINY_MODEL) as the VideoViTConfig the models take."""
    from pmgflow.model.config import VideoViTConfig
    from pmgflow.spec.model import ModelSpec

    return VideoViTConfig.from_spec(ModelSpec(**TINY_MODEL))


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values in every parameter (weights, biases and norms alike; eval mode), so that no comparison
    passes because a bias is still zero from its initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.2 if p.ndim > 1 else 0.5))
    return model.eval()


def waited_behind_lock(run_path, finished: dict, call) -> dict:
    """Run `call()` while another process holds the run directory's lock; that process then writes `finished` as the
    run's result and lets go. Returns what `call()` returned, after checking it waited rather than trained."""
    import json
    import subprocess
    import sys
    import threading

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from filelock import FileLock\n"
         f"lock = FileLock({str(run_path / '.lock')!r}); lock.acquire(); print('held', flush=True)\n"
         f"sys.stdin.readline(); open({str(run_path / 'result.json')!r}, 'w').write({json.dumps(finished)!r})"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        out = {}
        waiter = threading.Thread(target=lambda: out.update(call()), daemon=True)
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive()  # blocked on the lock, not training
        holder.stdin.write("go\n")
        holder.stdin.flush()
        waiter.join(timeout=60)
        assert not waiter.is_alive()
    finally:
        holder.kill()
        holder.wait()
    return out
