"""Smoke runs: the transformation keeps every paper trial's model, clip and test views and shrinks the rest; the
generated and linked trees read like the real layouts; a smoke goes through Ray, MLflow, the resume check and
the report."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pmgflow.cli import app
from pmgflow.data.decode import read_video
from pmgflow.data.layouts import index_dataset
from pmgflow.data.synth import KINDS, write_subset, write_synthetic
from pmgflow.orchestrate import tracking
from pmgflow.orchestrate.smoke import SMOKE_IMAGES, smoke_batch, smoke_sweep
from pmgflow.orchestrate.sweep import load
from pmgflow.spec.data import VideoDatasetSpec

from .conftest import TINY_BASE, tiny_sweep

ROOT = Path(__file__).resolve().parents[2]
PAPER = sorted((ROOT / "experiments" / "paper").glob("*.yaml"))
runner = CliRunner()


def _groups(sweep) -> list[list[int]]:
    """Trial indices grouped by shared pre-training."""
    return sorted(sweep.pretrainings().values())


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.name)
def test_smoke_of_paper_file_keeps_model_clip_and_views(path, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    original = load(path.relative_to(ROOT))
    plan = smoke_sweep(original, tmp_path / "data", gpus=0)
    smoke = plan.sweep
    assert smoke.spec.name == f"{original.spec.name}-smoke" and smoke.spec.experiment.endswith("-smoke")
    assert smoke.spec.resources.cpu == 1 and smoke.spec.resources.gpu == 0 and smoke.spec.max_failures == 0
    assert len({t.hash for t in smoke.trials}) == len(original.trials) and smoke.hash != original.hash
    assert _groups(smoke) == _groups(original)  # trials that shared a pre-training still share one
    for old, new in zip(original.trials, smoke.trials):
        assert new.labels == old.labels
        pre, small = old.spec.pretrain, new.spec.pretrain
        assert small.model == pre.model and small.model.preset == "base"
        assert (small.pmg.frames, small.pmg.size, small.pmg.transforms) == (16, 224, pre.pmg.transforms)
        assert small.epochs == min(pre.epochs, 1) and small.warmup_epochs == 0
        assert small.batch_size == smoke_batch(pre.accum_steps) <= 2 * pre.accum_steps
        assert small.clips_per_epoch == 2 * small.batch_size
        assert (small.source.images or 0) <= SMOKE_IMAGES
        for name, target in old.spec.finetune.items():
            tuned = new.spec.finetune[name]
            assert tuned.model == target.model and tuned.model.img_size == 224
            assert (tuned.test_segments, tuned.test_crops) == (target.test_segments, target.test_crops) == (5, 3)
            assert tuned.epochs == 1 and tuned.batch_size <= 2 * target.accum_steps
            assert tuned.dataset.kind == target.dataset.kind and tuned.dataset.split == target.dataset.split
            assert Path(tuned.dataset.root).parent == tmp_path / "data"
    assert plan.data.describe() and not (tmp_path / "data").exists()  # planned, nothing written


def test_smoke_keeps_trials_apart_that_the_caps_make_alike(tmp_path):
    axes = [{"path": "pretrain.epochs", "values": [0, 2, 3]},
            {"path": "finetune.actions.epochs", "values": [2, 4], "name": "finetune_epochs"}]
    path = tiny_sweep(tmp_path / "s.yaml", axes=axes)
    plan = smoke_sweep(load(path), tmp_path / "data")
    assert len({t.hash for t in plan.sweep.trials}) == 6
    assert [t.spec.pretrain.epochs for t in plan.sweep.trials] == [0, 0, 1, 1, 1, 1]
    assert [t.spec.pretrain.seed for t in plan.sweep.trials] == [0, 0, 1, 1, 2, 2]
    assert [t.spec.finetune["actions"].seed for t in plan.sweep.trials] == [0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("kind", KINDS)
def test_synthetic_tree_reads_like_the_official_layout(kind, tmp_path):
    root = write_synthetic(kind, tmp_path / kind, classes=3, train_per_class=2, test_per_class=1, frames=12,
                           size=(48, 32))
    spec = VideoDatasetSpec(kind=kind, root=root)
    train, test = index_dataset(spec, "train"), index_dataset(spec, "test")
    assert len(train.classes) == 3 and train.classes == test.classes
    assert sorted(it.label for it in train.items) == [0, 0, 1, 1, 2, 2]
    assert sorted(it.label for it in test.items) == [0, 1, 2]
    assert not {it.path for it in train.items} & {it.path for it in test.items}
    video = read_video(test.items[0].path)
    assert video.shape == (12, 32, 48, 3)
    assert np.abs(video[0].astype(int) - video[6].astype(int)).mean() > 1  # the content moves


@pytest.mark.parametrize("kind", KINDS)
def test_subset_links_a_handful_of_a_dataset(kind, tmp_path):
    real = write_synthetic(kind, tmp_path / "real", classes=3, train_per_class=3, test_per_class=2, frames=4,
                           size=(32, 32), split=1)
    small = write_subset(VideoDatasetSpec(kind=kind, root=real), tmp_path / "small", classes=2, train_per_class=2,
                         test_per_class=1)
    spec = VideoDatasetSpec(kind=kind, root=small)
    train, test = index_dataset(spec, "train"), index_dataset(spec, "test")
    assert train.classes == index_dataset(VideoDatasetSpec(kind=kind, root=real), "train").classes[:2]
    assert sorted(it.label for it in train.items) == [0, 0, 1, 1] and sorted(it.label for it in test.items) == [0, 1]
    assert all(it.path.is_symlink() and it.path.resolve().is_relative_to(real) for it in train.items + test.items)


def test_data_synth_command(tmp_path):
    out = tmp_path / "hmdb"
    result = runner.invoke(app, ["data", "synth", "--kind", "hmdb51", "--out", str(out), "--classes", "2",
                                 "--size", "32x24", "--seconds", "0.4"])
    assert result.exit_code == 0, result.output
    assert len(index_dataset(VideoDatasetSpec(kind="hmdb51", root=out), "train").items) == 4
    result = runner.invoke(app, ["data", "synth", "--kind", "hmdb51", "--out", str(out), "--size", "32"])
    assert result.exit_code == 2 and "--size '32': expected WIDTHxHEIGHT" in result.output
    result = runner.invoke(app, ["data", "synth", "--kind", "kinetics", "--out", str(out)])
    assert result.exit_code == 2 and "unknown dataset kind 'kinetics'" in result.output


def test_smoke_dry_run_shows_the_plan_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["sweep", "experiments/paper/epochs.yaml", "--smoke", "--dry-run", "--runs", str(runs)])
    assert result.exit_code == 0, result.output
    cpus = min(10, len(os.sched_getaffinity(0)))  # the spec's 10, capped to this machine's
    assert f"paper-epochs-smoke: 4 trial(s), each {cpus} CPU and 0 GPU" in result.stdout
    assert "| 3 | 2000 |" in result.stdout and "ucf101 (ucf101, 1 ep)" in result.stdout
    assert "small data:" in result.output and str(runs / "smoke-data" / "ucf101-") in result.output
    assert "model base 16x224x224" in result.output and "(ucf101 5x3, hmdb51 5x3)" in result.output
    assert not runs.exists()


def _tiny_video_sweep(tmp_path: Path) -> Path:
    """The tiny sweep with a UCF101 target and an image folder that are not there, three epoch settings."""
    base = copy.deepcopy(TINY_BASE)
    base["pretrain"]["source"] = {"kind": "folder", "path": str(tmp_path / "no-images")}
    target = base["finetune"].pop("actions")
    base["finetune"]["ucf101"] = {**target, "dataset": {"kind": "ucf101", "root": str(tmp_path / "no-ucf101")},
                                  "test_segments": 2, "test_crops": 3}
    return tiny_sweep(tmp_path / "tiny.yaml", base=base, axes=[{"path": "pretrain.epochs", "values": [0, 2, 3]}],
                      resources={"cpu": 2})


def test_smoke_runs_every_trial_checks_resume_and_reports(ray_local, tmp_path):
    path = _tiny_video_sweep(tmp_path)
    runs, uri, out = tmp_path / "runs", f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "report"
    result = runner.invoke(app, ["sweep", str(path), "--smoke", "--runs", str(runs), "--tracking-uri", uri,
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "smoke of " in result.output and " passed in " in result.output
    assert "resume: a second run reused all 3 trial(s) and trained nothing" in result.output
    assert "3 of 3 trial(s) already finished in MLflow: skipped (0, 1, 2)" in result.output
    assert {p.name.split("-")[0] for p in (runs / "smoke-data").iterdir()} == {"images", "ucf101"}
    assert len(list(runs.glob("pretrain-*/model.pt"))) == 2 and len(list(runs.glob("finetune-*/last.pt"))) == 3
    assert {p.name for p in out.iterdir()} == {"tiny-smoke.md", "tiny-smoke.csv", "tiny-smoke.png"}
    client = tracking.client(uri)
    parent = tracking.find_sweep_run(client, "tiny-smoke", uri)
    children = tracking.child_runs(client, parent)
    assert [c.info.status for c in children] == ["FINISHED"] * 3
    assert all("top1.ucf101" in c.data.metrics for c in children)


@pytest.mark.slow  # ViT-B at 16x224x224 on 1 CPU thread: about 8 minutes on 2 cores
def test_smoke_of_a_paper_file_at_paper_scale(ray_local, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    for var in ("PMG_IMAGES", "UCF101_ROOT", "HMDB51_ROOT"):  # not here: the smoke generates them
        monkeypatch.setenv(var, str(tmp_path / f"no-{var.lower()}"))
    runs, uri = tmp_path / "runs", f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = runner.invoke(app, ["sweep", "experiments/paper/base.yaml", "--smoke", "--runs", str(runs),
                                 "--tracking-uri", uri, "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "model base 16x224x224" in result.output and "test views ucf101 5x3, hmdb51 5x3" in result.output
    assert "resume: a second run reused all 1 trial(s) and trained nothing" in result.output
    assert len(list(runs.glob("finetune-*/result.json"))) == 2 and len(list(runs.glob("pretrain-*/model.pt"))) == 1
