"""Progress of a running sweep: each running trial's stage, epoch, loss, speed and ETA, and the sweep's.

The trials report every epoch to Tune, and a Tune callback in the driver (sweep.py) hands those reports to
`SweepProgress`, which knows nothing of Ray. On a terminal it draws a rich Live view above which the trial
started / finished / failed lines scroll; elsewhere (CI logs, files) it writes one plain line per reported
epoch. ETAs come from the reported `epoch_seconds`, never from when reports arrive: a resumed run replays its
stored epochs at once, and a pre-training another trial computed is not reported at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from pmgflow.train.rundir import RunDir

Echo = Callable[[str], None]

PRETRAIN = "pretrain"  # the pre-training's stage name in the trials' reports; fine-tunings use their target's


@dataclass(eq=False)
class Stage:
    """One run a trial goes through; trials that share a pre-training share its Stage.

    Pre-trainings of one constant-schedule chain (runs that differ only in epochs) are computed once: each
    planned run is the segment of the chain's epochs [start, start + epochs) beyond the next shorter one, the
    segments share one sorted `chain` list, and a trial's stages hold every segment up to its own run. An epoch
    reported by any run of the chain is credited to the segment it falls in.
    """

    name: str  # PRETRAIN or the fine-tuning target's name
    epochs: int
    done: int = 0
    seconds: float = 0.0  # sum of the measured epoch times ...
    measured: set[int] = field(default_factory=set)  # ... of these epochs (a replayed epoch counts once)
    start: int = 0  # first epoch of the chain this stage computes (0 outside a chain)
    chain: list["Stage"] | None = field(default=None, repr=False)  # the chain's segments, by start
    seeds: list["Stage"] | None = field(default=None, repr=False)  # a fine-tuning's runs that differ only in seed

    @property
    def title(self) -> str:
        return "pre-training" if self.name == PRETRAIN else f"fine-tuning {self.name}"

    @property
    def left(self) -> int:
        return max(self.epochs - self.done, 0)

    @property
    def end(self) -> int:
        """The run's epochs counted from the chain's start."""
        return self.start + self.epochs

    @property
    def mean(self) -> float | None:
        """Mean measured seconds per epoch; None before the first epoch."""
        return self.seconds / len(self.measured) if self.measured else None

    def segment(self, epoch: int) -> "Stage":
        """The stage that computes epoch `epoch` of the chain (this one outside a chain)."""
        if not self.chain:
            return self
        return next((s for s in self.chain if epoch < s.end), self.chain[-1])

    def record(self, epoch: int, seconds: float | None) -> None:
        """Epoch `epoch` (0-based, of the chain for a chained pre-training) is done and took `seconds`."""
        target = self.segment(epoch)
        for earlier in self.chain or ():
            if earlier.end <= target.start:  # a run reaching this epoch has gone through the earlier ones
                earlier.done = earlier.epochs
        local = epoch - target.start
        target.done = min(max(target.done, local + 1), target.epochs)
        if seconds is not None and local not in target.measured:
            target.measured.add(local)
            target.seconds += seconds

    def finish(self) -> None:
        for stage in self.chain or (self,):
            if stage.start < self.end:  # a finished run has every epoch of the chain before its last
                stage.done = stage.epochs


@dataclass
class TrialPlan:
    """A trial as the progress display sees it: index, axis values and its stages in order."""

    index: int
    label: str
    stages: list[Stage]


def _stored(stage: Stage, run: RunDir) -> None:
    """Count the epochs a stage's run directory already holds as done (a finished or interrupted earlier run)."""
    for h in run.metrics():
        stage.record(int(h["epoch"]), h.get("epoch_seconds"))
    if run.state() == "done":
        stage.finish()


def _pretrain_stages(trials: list[Any], root: Path | None) -> dict[str, Stage]:
    """One Stage per pre-training key; the pre-trainings of one constant-schedule chain become its segments."""
    specs = {t.pretrain_key: t.spec.pretrain for t in trials if t.pretrain_key is not None}
    stages: dict[str, Stage] = {}
    chains: dict[str, list[str]] = {}
    for key, spec in specs.items():
        if spec.prefix_key is None:
            stages[key] = Stage(PRETRAIN, spec.epochs)
        else:
            chains.setdefault(spec.prefix_key, []).append(key)
    for keys in chains.values():
        keys.sort(key=lambda k: specs[k].epochs)
        chain: list[Stage] = []
        for key in keys:
            start = chain[-1].end if chain else 0
            chain.append(Stage(PRETRAIN, specs[key].epochs - start, start=start, chain=chain))
            stages[key] = chain[-1]
    if root is not None:
        for key in specs:
            _stored(stages[key], RunDir.at(root, "pretrain", key))
    return stages


def plan_trials(trials: Iterable[Any], root: Path | None = None) -> list[TrialPlan]:
    """TrialPlans of sweep trials (pmgflow.spec.sweep.Trial): a shared pre-training is one Stage, and the
    epochs that runs under the runs root already hold (finished or interrupted earlier) count as done."""
    from pmgflow.orchestrate.trial import finetune_runs, pretrain_checkpoint
    from pmgflow.spec.sweep import run_key

    trials = list(trials)
    shared = _pretrain_stages(trials, root)
    plans = []
    for t in trials:
        stages = []
        if (key := t.pretrain_key) is not None:
            stage = shared[key]
            stages.extend(s for s in (stage.chain or [stage]) if s.start < stage.end)
        init = None if key is None or root is None else pretrain_checkpoint(root, key)
        for runs in finetune_runs(t.spec, init, t.seeds).values():
            seeds: list[Stage] = []
            for name, spec in runs.items():
                stage = Stage(name, spec.epochs, seeds=seeds)
                seeds.append(stage)
                if root is not None:
                    _stored(stage, RunDir.at(root, "finetune", run_key(spec)))
                stages.append(stage)
        plans.append(TrialPlan(t.index, t.describe(), stages))
    return plans


@dataclass(frozen=True)
class Eta:
    """Seconds left; `partial`: some stage still to run was never measured, so this is a lower bound."""

    seconds: float
    partial: bool = False


def duration(seconds: float | Eta | None) -> str:
    """'45s', '1m20s', '16m', '2h05m'; '>1m20s' for a lower bound (stages not yet measured); '?' when unknown."""
    if isinstance(seconds, Eta):
        if seconds.partial:
            return ">" + duration(seconds.seconds) if seconds.seconds >= 1 else "?"
        seconds = seconds.seconds
    if seconds is None:
        return "?"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 10:
        return f"{m}m{s:02d}s"
    if m < 60:
        return f"{m}m"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


@dataclass(eq=False)
class _Trial:
    plan: TrialPlan
    status: str = "pending"  # running, finished, failed
    stage: int | None = None  # position of the current stage in plan.stages
    since: float = 0.0  # clock at the last start or epoch of the current stage
    started: float = 0.0
    loss: float | None = None
    clips_per_s: float | None = None
    order: int = 0  # start order: running trials are shown and scheduled in it

    @property
    def name(self) -> str:
        return f"trial {self.plan.index} ({escape(self.plan.label)})"


class SweepProgress:
    """Consumes trial events (start, result, complete, retry, error) and shows them: a rich Live view on a
    terminal, plain lines otherwise. Use it as a context manager around the trials: the Live view stops on
    the way out, whatever ends the sweep."""

    def __init__(self, plans: list[TrialPlan], echo: Echo, console: Console | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if console is None:
            from pmgflow.console import console
        self.console, self.echo, self.clock = console, echo, clock
        self.trials = {p.index: _Trial(p) for p in plans}
        self.stages = list({id(s): s for p in plans for s in p.stages}.values())  # each shared stage once
        self.slots = 1  # trials seen running at once: Ray decides, the sweep ETA follows what it did
        self._starts = 0
        self._live: Live | None = None
        # Updates come from Tune's loop, renders from Live's refresh thread; lines are echoed after the lock is
        # released (with a Live view, printing takes the view's lock, and the view's refresh takes this one).
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment: the counts go along, the terminal and locks do not.
        return {**self.__dict__, "console": None, "_live": None, "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        from pmgflow.console import console

        self.__dict__.update(state, console=console, _lock=threading.Lock())

    # --- the Live view's lifetime ---------------------------------------------------------------------------

    def __enter__(self) -> "SweepProgress":
        if self.console.is_terminal:
            self._live = Live(console=self.console, get_renderable=self.view, refresh_per_second=2, transient=True)
            self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the Live view (idempotent)."""
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()

    # --- events -----------------------------------------------------------------------------------------------

    def start(self, index: int) -> None:
        """A trial started (or restarted after a failure)."""
        with self._lock:
            t = self.trials[index]
            self._starts += 1
            t.status, t.stage, t.order, t.started = "running", None, self._starts, self.clock()
            t.since = t.started
            self.slots = max(self.slots, len(self._running()))
            line = f"[bold]trial {t.plan.index}[/] ({escape(t.plan.label)}) started"
        self.echo(line)

    def result(self, index: int, result: dict[str, Any]) -> None:
        """A trial's report: {'stage', 'event': 'start'} when a stage begins, {'stage', 'epoch', metrics...}
        after each epoch; others (the final summary) are ignored here."""
        if "stage" not in result:
            return
        with self._lock:
            t = self.trials[index]
            position = next((i for i, s in enumerate(t.plan.stages) if s.name == result["stage"]), None)
            if position is None:  # a stage this display does not know: nothing to show for it
                return
            if t.plan.stages[position].chain:  # a chained pre-training: the segment the epoch (or start) is in
                position = self._chain_position(t, position, result.get("epoch"))
            for earlier in t.plan.stages[:position]:  # a later stage began: the earlier ones are complete
                earlier.finish()
            stage = t.plan.stages[position]
            if position != t.stage:
                t.stage, t.loss, t.clips_per_s = position, None, None
            t.since = self.clock()
            if "epoch" in result:
                stage.record(int(result["epoch"]), result.get("epoch_seconds"))
                t.loss = next((v for k, v in result.items() if k.endswith("_loss") and v is not None), t.loss)
                t.clips_per_s = result.get("clips_per_s", t.clips_per_s)
                line = self._epoch_line(t, stage, int(result["epoch"]))
            elif stage.left:
                left, total = self._run_left(t, stage), self._run_epochs(t, stage)
                why = ("the others are done, by a shorter run or before an interruption" if stage.chain else
                       "resuming an interrupted run")
                line = (f"{t.name} {stage.title} starting ({total} epoch{'' if total == 1 else 's'}"
                        + (f", {left} to compute: {why}" if left < total else "") + ")")
            else:
                line = f"{t.name} {stage.title}: reusing the finished run"
        if self._live is None:
            self.echo(line)

    def complete(self, index: int, result: dict[str, Any] | None = None) -> None:
        """A trial finished; `result` is its last report (its top-1 values are shown)."""
        with self._lock:
            t = self.trials[index]
            for stage in t.plan.stages:
                stage.finish()
            t.status, t.stage = "finished", None
            top = ", ".join(f"{k} {v:.1f}" for k, v in (result or {}).items() if k.startswith("top1."))
            line = (f"[green]trial {t.plan.index} finished[/] in {self.clock() - t.started:.0f} s "
                    f"({self._ended()}/{len(self.trials)})" + (f": {top}" if top else ""))
        self.echo(line)

    def retry(self, index: int) -> None:
        """A trial failed and Tune runs it again (it resumes from its checkpoints)."""
        with self._lock:
            t = self.trials[index]
            t.status, t.stage = "pending", None
        self.echo(f"[yellow]trial {t.plan.index} failed[/]; retrying it")

    def error(self, index: int) -> None:
        """A trial failed for good."""
        with self._lock:
            t = self.trials[index]
            t.status, t.stage = "failed", None
            line = f"[red]trial {t.plan.index} failed[/] ({self._ended()}/{len(self.trials)}); see its status below"
        self.echo(line)

    # --- numbers ------------------------------------------------------------------------------------------------

    @staticmethod
    def _chain_position(t: _Trial, first: int, epoch: Any) -> int:
        """Position in the trial's stages of the chain segment that computes `epoch` (a start: the first
        segment with epochs left, else the last)."""
        segments = [i for i, s in enumerate(t.plan.stages) if s.chain is t.plan.stages[first].chain]
        if epoch is not None:
            target = t.plan.stages[first].segment(int(epoch))
            return next((i for i in segments if t.plan.stages[i] is target), segments[-1])
        return next((i for i in segments if t.plan.stages[i].left), segments[-1])

    @staticmethod
    def _run_epochs(t: _Trial, stage: Stage) -> int:
        """Epochs of the trial's run of this stage (for a chain: up to the trial's own run's last)."""
        if not stage.chain:
            return stage.epochs
        return max(s.end for s in t.plan.stages if s.chain is stage.chain)

    @staticmethod
    def _run_left(t: _Trial, stage: Stage) -> int:
        if not stage.chain:
            return stage.left
        return sum(s.left for s in t.plan.stages if s.chain is stage.chain)

    def _running(self) -> list[_Trial]:
        return sorted((t for t in self.trials.values() if t.status == "running"), key=lambda t: t.order)

    def _ended(self) -> int:
        return sum(t.status in ("finished", "failed") for t in self.trials.values())

    def _estimate(self, stage: Stage) -> float | None:
        """Seconds per epoch of a stage: its own measurement, else that of its other seeds (the same run but
        the seed), else that of the same-named stages of the sweep (other trials: maybe other data)."""
        if stage.mean is not None:
            return stage.mean
        for alike in ([s for s in stage.seeds or () if s.measured],
                      [s for s in self.stages if s.name == stage.name and s.measured]):
            if alike:
                return sum(s.seconds for s in alike) / sum(len(s.measured) for s in alike)
        return None

    def _remaining(self, t: _Trial, claimed: set[int] | None = None) -> Eta:
        """Seconds a trial still needs: a lower bound (partial) while a stage it needs was never measured.
        Stages in `claimed` count as another trial's work (a shared pre-training is computed once); those it
        needs are added."""
        total, partial = 0.0, False
        for position, stage in enumerate(t.plan.stages):
            if not stage.left or (claimed is not None and id(stage) in claimed):
                continue
            if claimed is not None:
                claimed.add(id(stage))
            per_epoch = self._estimate(stage)
            if per_epoch is None:
                partial = True
                continue
            seconds = stage.left * per_epoch
            if t.status == "running" and position == t.stage:  # the epoch under way is partly done
                seconds -= min(self.clock() - t.since, per_epoch)
            total += max(seconds, 0.0)
        return Eta(total, partial)

    def sweep_eta(self) -> Eta:
        """Seconds until every trial ends: running trials first, then the pending ones in grid order, each
        placed on the earliest free of the `slots` trials seen running at once (a lower bound while some stage
        was never measured)."""
        claimed: set[int] = set()
        waiting = sorted((t for t in self.trials.values() if t.status == "pending"), key=lambda t: t.plan.index)
        free = [0.0] * self.slots
        partial = False
        for t in self._running() + waiting:
            eta = self._remaining(t, claimed)
            partial |= eta.partial
            slot = free.index(min(free))
            free[slot] += eta.seconds
        return Eta(max(free), partial)

    def epochs(self) -> tuple[int, int]:
        """(epochs done, epochs in all) over every stage once; a failed trial's unfinished stages leave the
        total unless another trial still needs them."""
        live: set[int] = {id(s) for t in self.trials.values() if t.status != "failed" for s in t.plan.stages}
        done = sum(s.done for s in self.stages)
        return done, sum(s.epochs if id(s) in live else s.done for s in self.stages)

    def _sweep_text(self) -> str:
        done, total = self.epochs()
        return (f"sweep {done}/{total} epochs, {self._ended()}/{len(self.trials)} trials, "
                f"eta {duration(self.sweep_eta())}")

    def _epoch_line(self, t: _Trial, stage: Stage, epoch: int) -> str:
        loss = f" loss {t.loss:.4f}" if t.loss is not None else ""
        speed = f" {t.clips_per_s:.0f} clips/s" if t.clips_per_s is not None else ""
        return (f"{t.name} {stage.title} epoch {epoch + 1}/{self._run_epochs(t, stage)}{loss}{speed}, "
                f"trial eta {duration(self._remaining(t))}; {self._sweep_text()}")

    # --- the Live view ----------------------------------------------------------------------------------------

    def view(self) -> RenderableType:
        """The Live view: one row per running trial, then the sweep's bar."""
        with self._lock:
            table = Table(box=None, pad_edge=False, header_style="bold")
            for column in ("trial", "stage", "", "epoch", "loss", "clips/s", "eta"):
                table.add_column(column, justify="right" if column in ("epoch", "loss", "clips/s", "eta") else "left")
            for t in self._running():
                label = Text(f"{t.plan.index} ({t.plan.label})", overflow="ellipsis", no_wrap=True)
                if t.stage is None:
                    table.add_row(label, Text("started", style="dim"), "", "", "", "", duration(self._remaining(t)))
                    continue
                stage = t.plan.stages[t.stage]
                total, done = self._run_epochs(t, stage), stage.start + stage.done
                bar = ProgressBar(total=max(total, 1), completed=done, width=24)
                table.add_row(label, stage.title, bar,
                              f"{done}/{total}" if done or t.loss is not None else "starting",
                              f"{t.loss:.4f}" if t.loss is not None else "",
                              f"{t.clips_per_s:.0f}" if t.clips_per_s is not None else "",
                              duration(self._remaining(t)))
            done, total = self.epochs()
            sweep = Table.grid(padding=(0, 1))
            sweep.add_row(Text("sweep", style="bold"), ProgressBar(total=max(total, 1), completed=done, width=40),
                          f"{done}/{total} epochs, {self._ended()}/{len(self.trials)} trials, "
                          f"eta {duration(self.sweep_eta())}")
            return Group(table, sweep)
