"""A run directory, the one owner of a training run's files: named by stage and spec hash under the runs root, it
holds spec.yaml, last.pt (the last finished epoch), metrics.jsonl (one line per epoch), model.pt and result.json
(written last: its presence marks the run finished), and the lock that keeps two processes from training one run.

Everything else (trials, the sweep's plan and progress, smoke runs) reads runs through :class:`RunDir`. This
module imports no torch at load time, so the sweep driver and the CLI can read runs quickly.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from filelock import FileLock, Timeout

from pmgflow.console import console
from pmgflow.paths import runs_dir
from pmgflow.spec.base import Spec, run_key

STAGES = ("pretrain", "finetune")
RunState = Literal["new", "partial", "done"]


@dataclass
class RunDir:
    """One run's directory (`<stage>-<run key>`); `history` holds the epochs of the run being trained."""

    path: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    keep_epochs: bool = False  # keep every epoch's checkpoint (epoch-<e>.pt), e.g. for runs that share prefixes

    @classmethod
    def at(cls, root: str | Path, stage: str, key: str) -> "RunDir":
        """The directory of run key `key` of a stage under a runs root (it may not exist yet)."""
        return cls(Path(root) / f"{stage}-{key}")

    @classmethod
    def for_spec(cls, stage: str, spec: Spec, root: Path | None = None) -> "RunDir":
        """The directory of `spec` under the runs root ($PMGFLOW_RUNS or ./runs), created with spec.yaml."""
        run = cls.at(root or runs_dir(), stage, run_key(spec))
        run.path.mkdir(parents=True, exist_ok=True)
        (run.path / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        return run

    @classmethod
    def under(cls, root: str | Path) -> list["RunDir"]:
        """Every run directory under a runs root, sorted by name."""
        return [cls(p) for stage in STAGES for p in sorted(Path(root).glob(f"{stage}-*")) if p.is_dir()]

    @property
    def last_path(self) -> Path:
        return self.path / "last.pt"

    @property
    def model_path(self) -> Path:
        """The finished run's weights."""
        return self.path / "model.pt"

    @property
    def result_path(self) -> Path:
        return self.path / "result.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def epoch_path(self, epoch: int) -> Path:
        """The kept checkpoint of epoch `epoch` (0-based), as last.pt was after it."""
        return self.path / f"epoch-{epoch}.pt"

    def kept_epochs(self) -> list[int]:
        """The epochs whose checkpoints are kept, in order."""
        return sorted(int(p.stem.split("-")[1]) for p in self.path.glob("epoch-*.pt"))

    def continue_from(self, donor: "RunDir", epoch: int) -> None:
        """Start this run from epoch `epoch` of another run (its kept checkpoint becomes this run's last.pt, its
        metrics up to that epoch this run's), so that training resumes after it."""
        import shutil

        tmp = self.last_path.with_suffix(".tmp")
        shutil.copyfile(donor.epoch_path(epoch), tmp)
        os.replace(tmp, self.last_path)
        if self.keep_epochs:
            for e in donor.kept_epochs():
                if e <= epoch and not self.epoch_path(e).exists():
                    os.link(donor.epoch_path(e), self.epoch_path(e))
        history = [h for h in donor.metrics() if h["epoch"] <= epoch]
        with open(self.metrics_path, "w") as f:
            f.writelines(json.dumps(h) + "\n" for h in history)

    def state(self) -> RunState:
        """'done' (it has its result), 'partial' (an epoch checkpoint to resume from) or 'new'."""
        return "done" if self.result_path.is_file() else "partial" if self.last_path.is_file() else "new"

    def result(self) -> dict[str, Any] | None:
        """The finished run's result, or None if it has not finished."""
        return json.loads(self.result_path.read_text()) if self.result_path.is_file() else None

    def finished_at(self) -> int | None:
        """When the result was written (ns since the epoch; a run trained again rewrites it), None if unfinished."""
        return self.result_path.stat().st_mtime_ns if self.result_path.is_file() else None

    def metrics(self) -> list[dict[str, Any]]:
        """The per-epoch metrics the run wrote, whichever process computed it ([] for none)."""
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line]

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock (a file lock, so it works across processes on a shared filesystem); if another
        process holds it, say so and wait (a process that dies frees it)."""
        held = FileLock(self.path / ".lock")
        try:
            held.acquire(timeout=0)
        except Timeout:
            console.print(f"{self.path}: another process is running this spec; waiting for it to finish or stop",
                          highlight=False, soft_wrap=True)
            held.acquire()
        try:
            yield
        finally:
            held.release()

    def run_once(self, train: Callable[[], dict[str, Any]], *, lock: bool = True) -> dict[str, Any]:
        """The run's result: the finished one if there is one, else what `train()` returns.

        With `lock`, the run's lock is held while training, so that two processes given one spec do not both
        train it: the second waits, and reuses the first one's result if it finished (or resumes the run from its
        last epoch if the first one stopped).
        """
        if (done := self.result()) is not None:
            return done
        with self.lock() if lock else contextlib.nullcontext():
            done = self.result()
            return done if done is not None else train()

    def resume(self, model, optimizer) -> int:
        """Load last.pt if present; returns the first epoch still to run (0 for a fresh run)."""
        from pmgflow.model.checkpoints import load_checkpoint

        if not self.last_path.is_file():
            return 0
        ckpt = load_checkpoint(self.last_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        self.history = list(ckpt.get("history", []))
        return int(ckpt["epoch"]) + 1

    def save_epoch(self, epoch: int, model, optimizer, metrics: dict[str, Any], **extra) -> None:
        """Checkpoint after an epoch (atomic) and append its metrics."""
        from pmgflow.model.checkpoints import checkpoint_state, save_checkpoint

        self.history.append({"epoch": epoch, **metrics})
        state = checkpoint_state(model, optimizer=optimizer.state_dict(), epoch=epoch, history=self.history, **extra)
        save_checkpoint(self.last_path, state)
        if self.keep_epochs:  # a hard link: last.pt is replaced (not rewritten) next epoch, so this one stays
            self.epoch_path(epoch).unlink(missing_ok=True)
            os.link(self.last_path, self.epoch_path(epoch))
        with open(self.metrics_path, "w") as f:  # rewritten whole: a resumed run has no duplicates
            f.writelines(json.dumps(h) + "\n" for h in self.history)

    def finish(self, result: dict[str, Any]) -> dict[str, Any]:
        """Mark the run finished with its result (written last: a crash before it leaves a resumable run)."""
        tmp = self.result_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, self.result_path)
        return result
