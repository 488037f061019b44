"""The sweep's progress display, fed fake trial events (no Ray): plain lines off a terminal, the live view on one."""

import io
import json

import pytest
from rich.console import Console
from rich.live import Live

from pmgflow.orchestrate.progress import Eta, Stage, SweepProgress, TrialPlan, duration, plan_trials
from pmgflow.spec.sweep import load_sweep

from .conftest import TINY_BASE, tiny_sweep


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def epoch(stage: str, n: int, loss: float, clips: float, seconds: float) -> dict:
    """A trial's per-epoch report, as _epoch_callback sends it (the loss key as run_steps names it)."""
    key = "pretrain_loss" if stage == "pretrain" else "finetune_loss"
    return {"stage": stage, "epoch": n, key: loss, "lr": 1e-3, "clips_per_s": clips, "epoch_seconds": seconds}


def plain(plans, clock=None):
    lines = []
    progress = SweepProgress(plans, lines.append, Console(file=io.StringIO()), clock=clock or Clock())
    return progress, lines


def test_duration_reads_like_a_clock():
    assert [duration(s) for s in (None, 4.6, 80, 360, 16 * 60 + 5, 2 * 3600 + 5 * 60)] == [
        "?", "5s", "1m20s", "6m00s", "16m", "2h05m"]
    # a lower bound (stages not measured yet) says so; with nothing measured it is unknown
    assert [duration(Eta(80, partial=True)), duration(Eta(0, partial=True)), duration(Eta(80))] == [
        ">1m20s", "?", "1m20s"]


def test_plain_lines_show_stage_epoch_loss_speed_and_etas():
    clock = Clock()
    progress, lines = plain([TrialPlan(0, "epochs=4", [Stage("pretrain", 4), Stage("actions", 2)]),
                             TrialPlan(1, "epochs=0", [Stage("actions", 3)])], clock)
    progress.start(0)
    progress.result(0, {"stage": "pretrain", "event": "start"})
    clock.now = 10
    progress.result(0, epoch("pretrain", 0, 0.9, 95.2, 10.0))
    progress.start(1)
    progress.result(1, {"stage": "actions", "event": "start"})
    clock.now = 15
    progress.result(1, epoch("actions", 0, 1.0986, 110.4, 5.0))
    clock.now = 20
    progress.result(0, epoch("pretrain", 1, 0.8123, 96.0, 10.0))
    progress.result(0, {"done": True, "index": 0, "top1.actions": 50.0})  # the final summary: not an epoch
    assert lines == [
        "[bold]trial 0[/] (epochs=4) started",
        "trial 0 (epochs=4) pre-training starting (4 epochs)",
        # nothing measured yet for the fine-tuning that follows: its time is not guessed
        # the fine-tuning was never measured: what is known (3 pre-training epochs) is a lower bound
        "trial 0 (epochs=4) pre-training epoch 1/4 loss 0.9000 95 clips/s, trial eta >30s; "
        "sweep 1/9 epochs, 0/2 trials, eta >30s",
        "[bold]trial 1[/] (epochs=0) started",
        "trial 1 (epochs=0) fine-tuning actions starting (3 epochs)",
        # trial 0: 3 x 10 s less the 5 s of its epoch under way, + 2 x 5 s (actions as trial 1 measured it);
        # two trials run at once, so the sweep ends with the longer one
        "trial 1 (epochs=0) fine-tuning actions epoch 1/3 loss 1.0986 110 clips/s, trial eta 10s; "
        "sweep 2/9 epochs, 0/2 trials, eta 35s",
        "trial 0 (epochs=4) pre-training epoch 2/4 loss 0.8123 96 clips/s, trial eta 30s; "
        "sweep 3/9 epochs, 0/2 trials, eta 30s",
    ]
    clock.now = 30
    progress.complete(1, {"top1.actions": 41.25, "done": True})
    assert lines[-1] == "[green]trial 1 finished[/] in 20 s (1/2): top1.actions 41.2"
    assert progress.epochs() == (5, 9)  # a finished trial's stages are done, whatever it reported


def test_a_burst_of_replayed_epochs_uses_their_epoch_seconds():
    # a resumed pre-training replays its 3 stored epochs at once; its fine-tuning ran 1 epoch before
    actions = Stage("actions", 2)
    actions.record(0, 6.0)
    progress, lines = plain([TrialPlan(5, "blr=0.001", [Stage("pretrain", 4), actions])])
    progress.start(5)
    progress.result(5, {"stage": "pretrain", "event": "start"})
    for n, loss in enumerate((0.9, 0.8, 0.7)):
        progress.result(5, epoch("pretrain", n, loss, 300.0, 60.0))
    progress.result(5, epoch("pretrain", 0, 0.9, 300.0, 60.0))  # replayed again (a retry): counted once
    assert [line.split(",")[0] for line in lines[2:]] == [
        "trial 5 (blr=0.001) pre-training epoch 1/4 loss 0.9000 300 clips/s",
        "trial 5 (blr=0.001) pre-training epoch 2/4 loss 0.8000 300 clips/s",
        "trial 5 (blr=0.001) pre-training epoch 3/4 loss 0.7000 300 clips/s",
        "trial 5 (blr=0.001) pre-training epoch 1/4 loss 0.9000 300 clips/s"]
    # 1 epoch x 60 s + 1 epoch x 6 s: from the epochs' own durations, not from how fast the reports came
    assert lines[4].endswith("trial eta 1m06s; sweep 4/6 epochs, 0/1 trials, eta 1m06s")
    assert progress.epochs() == (4, 6)


@pytest.fixture
def tiny(tmp_path):
    """A tiny sweep: trials 0 and 1 share a pre-training (only fine-tuning differs), trial 2 is scratch."""
    path = tiny_sweep(tmp_path / "tiny.yaml", axes=[{"zip": [
        {"path": "pretrain.epochs", "values": [3, 3, 0]},
        {"path": "finetune.actions.train_fraction", "values": [None, 0.5, None]},
    ], "name": "setting", "labels": ["pmg", "pmg-half", "scratch"]}])
    return load_sweep(path)


def test_plans_share_a_pretraining_skip_it_from_scratch_and_read_stored_runs(tiny, tmp_path):
    sweep = tiny
    run = tmp_path / "runs" / f"pretrain-{sweep.trials[0].pretrain_key}"  # interrupted after 2 of 3 epochs
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "pretrain_loss": 1.0, "epoch_seconds": s}) + "\n"
                                               for e, s in ((0, 4.0), (1, 6.0))))
    plans = plan_trials(sweep.trials, tmp_path / "runs")
    assert [(p.index, p.label, [(s.name, s.epochs) for s in p.stages]) for p in plans] == [
        (0, "setting=pmg", [("pretrain", 3), ("actions", 1)]),
        (1, "setting=pmg-half", [("pretrain", 3), ("actions", 1)]),
        (2, "setting=scratch", [("actions", 1)])]  # scratch: no pre-training stage
    assert plans[0].stages[0] is plans[1].stages[0]
    assert (plans[0].stages[0].done, plans[0].stages[0].mean) == (2, 5.0)
    progress, lines = plain(plans)
    progress.start(0)
    progress.result(0, {"stage": "pretrain", "event": "start"})
    assert lines[-1].endswith("pre-training starting (3 epochs, 1 to compute: resuming an interrupted run)")
    (run / "result.json").write_text("{}")
    assert plan_trials(sweep.trials, tmp_path / "runs")[0].stages[0].done == 3


def test_a_shared_pretraining_counts_once_and_a_scratch_trial_only_fine_tunes(tiny):
    progress, lines = plain(plan_trials(tiny.trials))
    assert progress.epochs() == (0, 6)  # 3 shared pre-training epochs + 3 x 1 fine-tuning epoch
    progress.start(2)
    progress.result(2, {"stage": "actions", "event": "start"})
    progress.result(2, epoch("actions", 0, 1.1, 40.0, 2.0))
    assert lines[-1] == ("trial 2 (setting=scratch) fine-tuning actions epoch 1/1 loss 1.1000 40 clips/s, "
                         "trial eta 0s; sweep 1/6 epochs, 0/3 trials, eta >4s")  # no pre-training measured yet
    progress.complete(2)
    progress.start(0)
    progress.result(0, {"stage": "pretrain", "event": "start"})
    for n in range(3):
        progress.result(0, epoch("pretrain", n, 0.5, 200.0, 3.0))
    # trial 0's fine-tuning and trial 1's (the pre-training is done) at 2 s each, one after the other
    assert lines[-1].endswith("trial eta 2s; sweep 4/6 epochs, 1/3 trials, eta 4s")
    progress.start(1)  # trial 1 finds the shared pre-training finished: reused, no epochs reported
    progress.result(1, {"stage": "pretrain", "event": "start"})
    assert lines[-1] == "trial 1 (setting=pmg-half) pre-training: reusing the finished run"
    progress.error(1)
    assert lines[-1] == "[red]trial 1 failed[/] (2/3); see its status below"
    assert progress.epochs() == (4, 5)  # the failed trial's fine-tuning left the total
    progress.retry(0)
    assert lines[-1] == "[yellow]trial 0 failed[/]; retrying it"


def test_a_later_stage_completes_the_earlier_ones():
    # a data-parallel or reused pre-training reports no epochs: the fine-tuning's start closes it
    progress, lines = plain([TrialPlan(0, "base", [Stage("pretrain", 5), Stage("ucf101", 2)])])
    progress.start(0)
    progress.result(0, {"stage": "ucf101", "event": "start"})
    assert lines[-1] == "trial 0 (base) fine-tuning ucf101 starting (2 epochs)"
    assert progress.epochs() == (5, 7)
    progress.result(0, {"stage": "no-such-stage", "epoch": 0})  # unknown to the plan: ignored
    assert len(lines) == 2


def test_the_live_view_shows_each_running_trial_and_the_sweep():
    clock = Clock()
    console = Console(file=io.StringIO(), force_terminal=True, width=150, record=True)
    progress = SweepProgress([TrialPlan(0, "setting=pmg", [Stage("pretrain", 4), Stage("actions", 2)]),
                              TrialPlan(1, "setting=scratch", [Stage("actions", 2)]),
                              TrialPlan(2, "setting=later", [Stage("actions", 2)])],
                             console.print, console, clock=clock)
    with progress:
        progress.start(0)
        progress.result(0, {"stage": "pretrain", "event": "start"})
        clock.now = 8
        progress.result(0, epoch("pretrain", 0, 0.8123, 95.0, 8.0))
        progress.start(1)
        progress.result(1, {"stage": "actions", "event": "start"})
    console.print(progress.view())
    text = console.export_text()
    assert "trial 0 (setting=pmg) started" in text and "trial 1 (setting=scratch) started" in text
    assert "epoch 1/4" not in text  # on a terminal the epochs go to the view, not to lines
    rows = {line.split()[0]: line for line in text.splitlines() if line.split() and line.split()[0] in "01"}
    assert "0 (setting=pmg)" in rows["0"] and "pre-training" in rows["0"] and "1/4" in rows["0"]
    assert "0.8123" in rows["0"] and "95" in rows["0"] and rows["0"].rstrip().endswith(">24s")  # 3 x 8 s, then
    # a fine-tuning never measured: a lower bound
    assert "fine-tuning actions" in rows["1"] and "starting" in rows["1"]
    assert "setting=later" not in text  # not started: only in the sweep's counts
    assert "sweep" in text and "1/10 epochs, 0/3 trials, eta >24s" in text


def test_the_live_view_stops_on_an_interrupt():
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    progress = SweepProgress([TrialPlan(0, "base", [Stage("actions", 2)])], console.print, console)
    with pytest.raises(KeyboardInterrupt):
        with progress:
            progress.start(0)
            raise KeyboardInterrupt
    with Live(console=console):  # rich allows one live view per console: the sweep's was stopped
        pass
    progress.close()  # closing again is harmless


def test_it_pickles_without_its_terminal():
    # Tune pickles its callbacks (and so this) with the experiment
    import pickle

    console = Console(file=io.StringIO(), force_terminal=True)
    progress = SweepProgress([TrialPlan(0, "base", [Stage("actions", 2)])], print, console)
    with progress:
        progress.start(0)
        progress.result(0, epoch("actions", 0, 1.0, 10.0, 3.0))
        copy = pickle.loads(pickle.dumps(progress))
    assert copy.epochs() == (1, 2) and copy.trials[0].status == "running"
    assert copy.console is not console  # pmgflow's console


def test_a_chain_of_constant_schedule_pretrainings_counts_each_epoch_once(tmp_path):
    # epochs 0 (scratch), 2, 4 and 6 on one constant-schedule chain: 6 pre-training epochs are computed, not 12
    path = tiny_sweep(tmp_path / "chain.yaml", base={**TINY_BASE, "pretrain": {
        **TINY_BASE["pretrain"], "schedule": "constant"}},
        axes=[{"path": "pretrain.epochs", "values": [0, 2, 4, 6]}])
    sweep = load_sweep(path)
    plans = plan_trials(sweep.trials)
    assert [[(s.name, s.start, s.epochs) for s in p.stages] for p in plans] == [
        [("actions", 0, 1)],
        [("pretrain", 0, 2), ("actions", 0, 1)],
        [("pretrain", 0, 2), ("pretrain", 2, 2), ("actions", 0, 1)],
        [("pretrain", 0, 2), ("pretrain", 2, 2), ("pretrain", 4, 2), ("actions", 0, 1)]]
    assert plans[1].stages[0] is plans[3].stages[0]  # segments are shared
    clock = Clock()
    progress, lines = plain(plans, clock)
    assert progress.epochs() == (0, 6 + 4)
    progress.start(1)
    progress.result(1, {"stage": "pretrain", "event": "start"})
    assert lines[-1].endswith("pre-training starting (2 epochs)")
    for n in range(2):
        progress.result(1, epoch("pretrain", n, 0.9, 100.0, 10.0))
    progress.result(1, {"stage": "actions", "event": "start"})
    progress.result(1, epoch("actions", 0, 1.0, 50.0, 3.0))
    progress.complete(1)
    progress.start(3)  # the longest run starts next: it continues from the 2-epoch run's checkpoint
    progress.result(3, {"stage": "pretrain", "event": "start"})
    assert lines[-1].endswith("pre-training starting (6 epochs, 4 to compute: the others are done, by a shorter run "
                              "or before an interruption)")
    progress.result(3, epoch("pretrain", 2, 0.8, 100.0, 10.0))
    assert "pre-training epoch 3/6" in lines[-1]
    # 3 pre-training epochs left at 10 s, then its fine-tuning (3 s): trial 2 then needs only its fine-tuning
    assert "trial eta 33s" in lines[-1] and lines[-1].endswith("sweep 4/10 epochs, 1/4 trials, eta 39s")
    for n in range(3, 6):
        progress.result(3, epoch("pretrain", n, 0.7, 100.0, 10.0))
    assert progress.epochs() == (7, 10)
    assert [s.done for s in plans[3].stages[:3]] == [2, 2, 2]  # the 4-epoch run is a checkpoint of this one


def test_an_unmeasured_seed_is_estimated_from_its_own_trials_seeds_first():
    """Seeds of one trial cost alike per epoch; the same seed of another trial may fine-tune on other data (all
    labels against 20 per class), so it comes second."""
    def seeds(n: int) -> list[Stage]:
        group: list[Stage] = []
        group.extend(Stage(f"actions.seed{s}", n, seeds=group) for s in range(2))
        return group

    clock = Clock()
    progress, lines = plain([TrialPlan(0, "labels=all", seeds(2)), TrialPlan(1, "labels=20", seeds(10))], clock)
    for s in range(2):  # trial 0, all labels: 40 s an epoch, both seeds
        for n in range(2):
            progress.result(0, epoch(f"actions.seed{s}", n, 1.0, 25.0, 40.0))
    progress.start(1)
    progress.result(1, epoch("actions.seed0", 0, 1.0, 25.0, 5.0))  # trial 1, 20 per class: 5 s an epoch
    # 9 epochs of seed 0 and 10 of seed 1 at 5 s (at trial 0's 40 s seed 1 alone would add 400 s)
    assert "trial eta 1m35s" in lines[-1]
