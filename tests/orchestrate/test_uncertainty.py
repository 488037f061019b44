"""Results with their uncertainty: bootstrap intervals and seed statistics, the seeds of a sweep (spec, hash,
one run per seed inside a trial), the table's cells, CSV columns and note, and the dry run's state of each run."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pmgflow.errors import SpecError
from pmgflow.orchestrate import trial as trial_module
from pmgflow.orchestrate.report import SweepRecord, TrialRecord, ablation_table, as_rows
from pmgflow.orchestrate.stats import (Estimate, bootstrap_interval, estimate, is_seed_metric, mean_std,
                                       read_estimate, target_metrics)
from pmgflow.orchestrate.sweep import plan_tables
from pmgflow.orchestrate.trial import TrialContext, TrialPayload, pretrain_checkpoint, run_trial
from pmgflow.spec.sweep import SweepSpec, load_sweep, run_key

from .conftest import tiny_sweep


def result(correct: list[int], classes: int = 3) -> dict:
    """A fine-tuning result as result.json holds it (multi-view and centre view alike)."""
    top1 = 100 * sum(correct) / len(correct)
    return {"top1": top1, "top1_single": top1, "correct": correct, "correct_single": correct, "classes": classes,
            "test_videos": len(correct)}


# --- statistics --------------------------------------------------------------------------------------------


def test_bootstrap_of_all_right_or_all_wrong_is_a_point():
    assert bootstrap_interval([1] * 50) == (100.0, 100.0)
    assert bootstrap_interval([0] * 50) == (0.0, 0.0)


def test_bootstrap_interval_contains_the_proportion_with_the_binomial_width():
    correct = [1] * 30 + [0] * 70  # 30 % of 100 videos
    lo, hi = bootstrap_interval(correct)
    assert lo < 30 < hi
    # the normal approximation: 30 ± 1.96 * sqrt(0.3 * 0.7 / 100) * 100 = 30 ± 9.0
    assert hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.3 * 0.7 / 100) * 100, rel=0.15)
    assert 19 < lo < 23 and 37 < hi < 41


def test_bootstrap_is_deterministic_and_narrows_with_more_videos():
    correct = [1, 0, 0, 1, 1, 0, 1, 0, 0, 0] * 6
    assert bootstrap_interval(correct) == bootstrap_interval(list(correct))
    assert bootstrap_interval(correct, seed=1) != bootstrap_interval(correct)
    small, large = bootstrap_interval(correct), bootstrap_interval(correct * 10)
    assert large[1] - large[0] < small[1] - small[0]
    # many resamples are drawn in blocks: the same interval whatever the test set's size
    assert bootstrap_interval(np.ones(5000)) == (100.0, 100.0)
    with pytest.raises(ValueError):
        bootstrap_interval([])


def test_mean_and_sample_std_over_seeds():
    mean, std = mean_std([30.0, 35.0, 40.0])
    assert mean == 35.0 and std == pytest.approx(5.0)  # ddof 1: sqrt((25 + 0 + 25) / 2)
    assert mean_std([42.0]) == (42.0, None)


def test_estimate_of_one_run_has_its_interval_and_of_seeds_the_spread():
    one = estimate([result([1, 1, 0, 0])])
    assert one.value == 50.0 and one.std is None and one.n == 1 and one.lo < 50 < one.hi
    seeds = estimate([result([1, 1, 1, 0]), result([1, 0, 0, 0]), result([1, 1, 0, 0])], seeds=[0, 1, 2])
    assert seeds.value == pytest.approx(50.0) and seeds.std == pytest.approx(25.0)
    assert seeds.values == (75.0, 25.0, 50.0) and seeds.seeds == (0, 1, 2) and seeds.n == 3
    # the interval over the videos of the per-video mean over seeds: video 0 always right -> inside (0, 100)
    assert 0 < seeds.lo <= seeds.value <= seeds.hi < 100
    legacy = estimate([{"top1": 60.0, "top1_single": 55.0}])  # a result from before per-video lists
    assert legacy == Estimate(60.0)


def test_target_metrics_round_trip_through_mlflow_names():
    runs = [result([1, 1, 1, 0]), result([1, 0, 0, 0]), result([1, 1, 0, 0])]
    metrics = target_metrics("ucf", runs, [0, 1, 2])
    assert metrics["top1.ucf"] == pytest.approx(50.0) and metrics["top1_std.ucf"] == pytest.approx(25.0)
    assert [metrics[f"top1.ucf.seed{k}"] for k in (0, 1, 2)] == [75.0, 25.0, 50.0]
    assert {"top1_lo.ucf", "top1_hi.ucf", "top1_single.ucf", "top1_single_std.ucf",
            "top1_single.ucf.seed2"} <= set(metrics)
    assert metrics["classes.ucf"] == 3 and metrics["test_videos.ucf"] == 4
    assert [k for k in metrics if is_seed_metric(k)] == [f"{m}.ucf.seed{k}" for m in ("top1", "top1_single")
                                                         for k in (0, 1, 2)]
    back = read_estimate(metrics, "top1", "ucf")
    assert back == estimate(runs, "top1", [0, 1, 2])
    single = target_metrics("ucf", [result([1, 0])], None)
    assert "top1_std.ucf" not in single and not any(is_seed_metric(k) for k in single)
    lo, hi = single["top1_lo.ucf"], single["top1_hi.ucf"]
    assert read_estimate(single, "top1", "ucf").format() == f"50.0 [{lo:.1f}, {hi:.1f}]"
    assert read_estimate(single, "top1", "hmdb") is None


def test_estimate_cells_format():
    seeded = Estimate(35.21, 3.14, 30.0, 40.0, (33.0, 34.1, 38.5), (0, 1, 2))
    assert seeded.format() == "35.2 ± 3.1 (n=3: 33.0, 34.1, 38.5)"
    assert Estimate(35.21, None, 28.49, 41.94).format() == "35.2 [28.5, 41.9]"
    assert Estimate(35.21).format() == "35.2"
    assert Estimate(35.0, None, 30.0, 41.0).error() == (5.0, 6.0)
    assert Estimate(35.0, 2.0, 30.0, 41.0, (33.0, 37.0), (0, 1)).error() == (2.0, 2.0)


# --- seeds in the sweep spec and the trial ------------------------------------------------------------------


def test_seeds_change_the_trial_hash_and_are_validated(tmp_path):
    plain = load_sweep(tiny_sweep(tmp_path / "a.yaml"))
    seeded = load_sweep(tiny_sweep(tmp_path / "b.yaml", seeds=[0, 1, 2]))
    other = load_sweep(tiny_sweep(tmp_path / "c.yaml", seeds=[0, 1]))
    assert plain.trials[0].seeds is None and seeded.trials[0].seeds == (0, 1, 2)
    assert len({plain.trials[0].hash, seeded.trials[0].hash, other.trials[0].hash}) == 3
    assert "seeds" in SweepSpec.model_json_schema()["properties"]
    assert "once per seed" in SweepSpec.model_json_schema()["properties"]["seeds"]["description"]
    for bad, message in (([0, 0], "repeat a seed"), ([], "at least 1 item"), ([-1], "greater than or equal to 0")):
        with pytest.raises(SpecError, match=message):
            load_sweep(tiny_sweep(tmp_path / "bad.yaml", seeds=bad))


class FakeLogger:
    """A TrialLogger that keeps what a trial logs."""

    def __init__(self, uri, run_id):
        self.run_id, self.metrics, self.tags = run_id, {}, {}
        self.client = self

    def set_tag(self, run_id, key, value):
        self.tags[key] = value

    def start(self, node=None):
        pass

    def log(self, metrics, step):
        self.metrics.update({(k, step): v for k, v in metrics.items() if v is not None})

    def log_epoch(self, stage, epoch, metrics):
        pass

    def log_artifact(self, path, folder=None):
        pass

    def finish(self):
        self.finished = True

    def fail(self, exc):
        raise AssertionError(f"the trial failed: {exc}")


def test_a_trial_fine_tunes_each_target_once_per_seed(tmp_path, monkeypatch):
    from pmgflow.train import finetune as finetune_module

    calls, loggers = [], []
    outcomes = {0: [1, 1, 1, 0], 1: [1, 0, 0, 0], 2: [1, 1, 0, 0]}

    def fake_finetune(spec, *, root, on_epoch=None, progress=None):
        calls.append((spec.seed, spec.init))
        run_dir = root / f"finetune-{run_key(spec)}"
        run_dir.mkdir(parents=True, exist_ok=True)
        return {**result(outcomes[spec.seed]), "run_dir": str(run_dir)}

    def make_logger(uri, run_id):
        loggers.append(FakeLogger(uri, run_id))
        return loggers[-1]

    monkeypatch.setattr(finetune_module, "finetune", fake_finetune)
    monkeypatch.setattr(trial_module, "TrialLogger", make_logger)
    sweep = load_sweep(tiny_sweep(tmp_path / "s.yaml", seeds=[0, 1, 2],
                                  axes=[{"path": "pretrain.epochs", "values": [0]}]))
    trial = sweep.trials[0]
    ctx = TrialContext(str(tmp_path / "runs"), "unused", 1, 0, 1, trial.seeds)
    summary = run_trial(TrialPayload(0, trial.spec.model_dump(mode="json"), "run"), ctx)
    assert calls == [(0, None), (1, None), (2, None)]  # scratch: no init, one run per seed
    assert len(list((tmp_path / "runs").glob("finetune-*"))) == 3
    (log,) = loggers
    logged = {k: v for (k, step), v in log.metrics.items() if step == trial.spec.finetune["actions"].epochs}
    assert logged["top1.actions"] == pytest.approx(50.0) and logged["top1_std.actions"] == pytest.approx(25.0)
    assert [logged[f"top1.actions.seed{k}"] for k in (0, 1, 2)] == [75.0, 25.0, 50.0]
    assert logged["top1_lo.actions"] < 50 < logged["top1_hi.actions"] and logged["classes.actions"] == 3
    assert json.loads(log.tags["pmgflow.seeds"]) == [0, 1, 2] and log.finished
    assert summary["top1.actions"] == pytest.approx(50.0) and not any(is_seed_metric(k) for k in summary)


# --- the table ----------------------------------------------------------------------------------------------


def record(trials: list[tuple[str, dict]], paper: str | None = None) -> SweepRecord:
    return SweepRecord("abl", "parent", ["transforms"], "transforms", "top1", paper, {"actions": "actions"},
                       [TrialRecord(i, {"transforms": label}, "FINISHED" if metrics else "FAILED",
                                    None if metrics else "boom", metrics, f"r{i}")
                        for i, (label, metrics) in enumerate(trials)])


def test_table_of_one_run_per_trial_shows_the_bootstrap_interval():
    metrics = target_metrics("actions", [result([1] * 21 + [0] * 39)], None)  # 35 % of 60 videos
    table = ablation_table(record([("zoom", metrics), ("fade", {})], paper="single_transform"))
    lo, hi = metrics["top1_lo.actions"], metrics["top1_hi.actions"]
    assert f"| zoom | 35.0 [{lo:.1f}, {hi:.1f}] | 81.2 | 44.5 | ok |" in table.markdown()
    assert "| fade | – | 76.3 | 34.1 | FAILED: boom |" in table.markdown()
    assert "bootstrap 95 % interval over the 60 test videos" in table.note and "Paper:" in table.note
    assert as_rows(table)[0]["top1 actions"].value == metrics["top1.actions"]
    lines = table.csv().splitlines()
    assert lines[0] == ("transforms,top1 actions,top1 actions lo,top1 actions hi,top1 actions std,top1 actions n,"
                        "top1 actions per seed,paper UCF101,paper HMDB51,status")
    assert lines[1].split(",")[:6] == ["zoom", "35.0", str(lo), str(hi), "", "1"]
    assert lines[2].startswith("fade,,,,,,,76.3,")


def test_unfinished_trials_without_an_error_say_what_they_are_doing():
    metrics = target_metrics("actions", [result([1] * 30 + [0] * 30)], None)
    rec = record([("zoom", metrics), ("fade", {}), ("shear", {}), ("flip", {})])
    rec.trials[1].status, rec.trials[1].error = "SCHEDULED", None
    rec.trials[2].status, rec.trials[2].error = "RUNNING", None
    rec.trials[3].status, rec.trials[3].error = "KILLED", "left out by --only"
    markdown = ablation_table(rec).markdown()
    assert "| fade | – | SCHEDULED: not started yet |" in markdown
    assert "| shear | – | RUNNING: running, or its sweep was killed; the same command resumes it |" in markdown
    assert "| flip | – | KILLED: left out by --only |" in markdown
    assert "no error recorded" not in markdown


def test_the_sources_table_puts_each_published_number_beside_ours_with_its_paper():
    metrics = target_metrics("actions", [result([1] * 30 + [0] * 30)], None)
    table = ablation_table(record([("textured", metrics), ("mosi", metrics), ("moving_shapes", metrics)],
                                  paper="sources"))
    text = table.markdown()
    assert "| textured | 50.0 [" in text and "| 89.4 | – |" in text  # Yu et al.: UCF101 only
    assert "| mosi | 50.0 [" in text and "| 48.0 | 27.3 |" in text  # the PMG paper's ViT-B MoSI run
    row = next(line for line in text.splitlines() if line.startswith("| moving_shapes |"))
    assert row.endswith("| – | – |")  # no published number for it
    assert "arXiv 2410.24213" in table.note and "arXiv 2409.06665" in table.note


def test_table_over_seeds_shows_mean_std_and_each_seed():
    runs = [result([1, 1, 1, 0]), result([1, 0, 0, 0]), result([1, 1, 0, 0])]
    table = ablation_table(record([("zoom", target_metrics("actions", runs, [0, 1, 2]))]))
    assert "| zoom | 50.0 ± 25.0 (n=3: 75.0, 25.0, 50.0) |" in table.markdown()
    assert "mean over k = 3 fine-tuning seeds (0, 1, 2)" in table.note and "sample standard deviation" in table.note
    header, row = table.csv().splitlines()
    cells = dict(zip(header.split(","), row.split(",")))
    assert float(cells["top1 actions std"]) == pytest.approx(25.0) and cells["top1 actions n"] == "3"
    assert cells["top1 actions per seed"] == "75.0;25.0;50.0"
    assert float(cells["top1 actions lo"]) < 50 < float(cells["top1 actions hi"])


# --- the dry run ----------------------------------------------------------------------------------------------


def mark(root: Path, stage: str, key: str, file: str) -> None:
    (root / f"{stage}-{key}").mkdir(parents=True, exist_ok=True)
    (root / f"{stage}-{key}" / file).write_text("{}")


def runs_column(sweep, root: Path) -> list[str]:
    trials, _ = plan_tables(sweep, root)
    return [row[-1] for row in trials.rows]


def test_dry_run_shows_finetuning_of_a_pretrained_trial_after_a_killed_sweep(tmp_path):
    sweep = load_sweep(tiny_sweep(tmp_path / "s.yaml", axes=[{"path": "pretrain.epochs", "values": [0, 1]}]))
    root = (tmp_path / "runs").resolve()
    scratch, pre = sweep.trials
    assert runs_column(sweep, root) == ["ft new", "pre new / ft new"]
    mark(root, "pretrain", pre.pretrain_key, "result.json")  # killed after the pre-training
    mark(root, "finetune", run_key(scratch.spec.finetune["actions"]), "last.pt")
    assert runs_column(sweep, root) == ["ft partial", "pre done / ft new"]
    # the pre-trained trial's fine-tuning is keyed with the checkpoint the pre-training leaves
    init = root / f"pretrain-{pre.pretrain_key}" / "model.pt"
    assert pretrain_checkpoint(root, pre.pretrain_key) == init
    mark(root, "finetune", run_key(pre.spec.finetune["actions"].model_copy(update={"init": init})), "result.json")
    assert runs_column(sweep, root) == ["ft partial", "pre done / ft done"]


def test_dry_run_counts_each_seed(tmp_path):
    sweep = load_sweep(tiny_sweep(tmp_path / "s.yaml", seeds=[0, 1, 2],
                                  axes=[{"path": "pretrain.epochs", "values": [0, 1]}]))
    root = (tmp_path / "runs").resolve()
    scratch, pre = sweep.trials
    init = root / f"pretrain-{pre.pretrain_key}" / "model.pt"
    target = pre.spec.finetune["actions"].model_copy(update={"init": init})
    mark(root, "pretrain", pre.pretrain_key, "result.json")
    mark(root, "finetune", run_key(target.model_copy(update={"seed": 0})), "result.json")
    mark(root, "finetune", run_key(target.model_copy(update={"seed": 2})), "result.json")
    mark(root, "finetune", run_key(target.model_copy(update={"seed": 1})), "last.pt")
    mark(root, "finetune", run_key(scratch.spec.finetune["actions"].model_copy(update={"seed": 1})), "result.json")
    assert runs_column(sweep, root) == ["ft 1/3 done", "pre done / ft 2/3 done, 1 partial"]
    trials, _ = plan_tables(sweep, root)
    assert trials.title.endswith("each target fine-tuned with seeds 0, 1, 2")


def test_pretraining_leaves_its_checkpoint_where_the_dry_run_looks(tmp_path):
    from pmgflow.train.pretrain import pretrain

    sweep = load_sweep(tiny_sweep(tmp_path / "s.yaml"))
    spec = sweep.trials[0].spec.pretrain.model_copy(update={"source": sweep.trials[0].spec.pretrain.source.model_copy(
        update={"images": 8})})
    root = (tmp_path / "runs").resolve()
    out = pretrain(spec, root=root)
    assert Path(out["checkpoint"]) == pretrain_checkpoint(root, run_key(spec)) and Path(out["checkpoint"]).is_file()
