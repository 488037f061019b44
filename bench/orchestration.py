"""Orchestration overhead: N tiny trials through Ray Tune + MLflow (`run_sweep`) against the same trials run by
direct calls of pretrain() and finetune() in this process, side by side in one run.

Both sides run one trial at a time on 2 threads, from fresh runs roots (so both compute everything) with the
image and action-set caches warmed first and one warm-up trial run directly; the direct side runs before and
after the sweep and its mean is taken, so load from other processes on shared cores hits both sides alike. The sweep side's wall time includes starting the local Ray, creating
the MLflow database, the experiment and the runs, every trial's logging and artifacts, and the report.

    .venv/bin/python bench/orchestration.py --trials 6
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import yaml

MODEL = {"preset": "tiny", "frames": 4, "img_size": 16, "patch": 4, "embed_dim": 32, "depth": 2, "num_heads": 2,
         "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}
SOURCE = {"kind": "fractal", "categories": 4, "images": 128, "size": 32}
ACTIONS = {"kind": "actions", "classes": 3, "train_per_class": 8, "test_per_class": 4, "frames": 12, "size": 32}


def sweep_file(folder: Path, trials: int, epochs: int) -> Path:
    """A sweep of `trials` pre-trainings that differ by seed, each fine-tuned once."""
    data = {"name": "bench-orchestration",
            "base": {"pretrain": {"model": MODEL, "source": SOURCE, "epochs": epochs, "batch_size": 16,
                                  "blr": 1e-3, "warmup_epochs": 0},
                     "finetune": {"actions": {"dataset": ACTIONS, "epochs": epochs, "batch_size": 8,
                                              "warmup_epochs": 0, "test_segments": 1, "test_crops": 1}}},
            "axes": [{"path": "pretrain.seed", "values": list(range(trials))}],
            "resources": {"cpu": 2}}
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def direct(sweep, root: Path) -> tuple[float, float]:
    """(wall seconds, training seconds) of the trials run by plain calls, one after the other."""
    import torch

    from pmgflow.train.finetune import finetune
    from pmgflow.train.pretrain import pretrain

    torch.set_num_threads(2)
    start, train = time.perf_counter(), 0.0
    for trial in sweep.trials:
        pre = pretrain(trial.spec.pretrain, root=root)
        target = trial.spec.finetune["actions"].model_copy(update={"init": Path(pre["checkpoint"])})
        fine = finetune(target, root=root)
        train += pre["seconds"] + fine["seconds"]
    return time.perf_counter() - start, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.getLogger("mlflow").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="pmgflow-bench-") as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("PMGFLOW_CACHE", str(tmp / "cache"))
        from pmgflow.data.embedded import ensure_embedded_dataset
        from pmgflow.data.images import load_image_source
        from pmgflow.data.store import store_size
        from pmgflow.orchestrate.sweep import load, run_sweep
        from pmgflow.spec.data import ActionsDatasetSpec, FractalSource

        (tmp / "warm").mkdir()
        path = sweep_file(tmp, args.trials, args.epochs)
        sweep = load(path)
        load_image_source(FractalSource(**{k: v for k, v in SOURCE.items() if k != "kind"}),
                          store_size(MODEL["img_size"]))  # warm caches
        ensure_embedded_dataset(ActionsDatasetSpec(**ACTIONS))

        direct(load(sweep_file(tmp / "warm", 1, 1)), tmp / "runs-warm")  # first-call costs out of the way
        before = direct(sweep, tmp / "runs-direct-1")
        start = time.perf_counter()
        outcome = run_sweep(path, tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", runs=tmp / "runs-sweep", cpus=2,
                            echo=lambda _: None)
        sweep_s = time.perf_counter() - start
        after = direct(sweep, tmp / "runs-direct-2")  # before and after: other load on the machine averages out
        assert not outcome.failed, outcome.statuses
        direct_s, train_s = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2

    n, phases = len(sweep.trials), outcome.seconds
    overhead, per_trial = sweep_s - direct_s, (phases["trials"] - direct_s) / n
    print(f"{n} tiny trials ({args.epochs} pre-training + {args.epochs} fine-tuning epochs each), one at a time, 2 threads")
    print(f"{'':34}{'wall s':>8}{'s / trial':>11}")
    print(f"{'direct calls (mean of 2 runs)':34}{direct_s:8.1f}{direct_s / n:11.2f}   (runs: {before[0]:.1f}, {after[0]:.1f} s; "
          f"inside the training loops: {train_s:.1f} s)")
    print(f"{'Ray Tune + MLflow sweep':34}{sweep_s:8.1f}{sweep_s / n:11.2f}")
    print(f"{'  MLflow db, runs, report':34}{phases['tracking']:8.1f}")
    print(f"{'  Ray start and stop':34}{phases['ray']:8.1f}")
    print(f"{'  Tune grid (trials)':34}{phases['trials']:8.1f}{phases['trials'] / n:11.2f}")
    print(f"overhead: {overhead:.1f} s in all ({100 * overhead / sweep_s:.0f} % of the sweep's wall time); "
          f"{per_trial:.2f} s per trial in the Tune grid (actor start, imports, MLflow logging, artifacts), "
          f"{phases['tracking'] + phases['ray']:.1f} s fixed")


if __name__ == "__main__":
    main()
