"""Pre-flight: a sweep's missing or unusable inputs are all reported, with trial and field, before anything trains."""

from __future__ import annotations

import copy

import pytest
from typer.testing import CliRunner

from pmgflow.cli import app
from pmgflow.orchestrate.preflight import PreflightError, preflight
from pmgflow.spec.sweep import load_sweep

from .conftest import TINY_BASE, tiny_sweep


def _base_with(tmp_path, **finetune) -> dict:
    base = copy.deepcopy(TINY_BASE)
    base["pretrain"]["source"] = {"kind": "folder", "path": str(tmp_path / "no-images")}
    base["finetune"]["ucf"] = {**base["finetune"]["actions"], **finetune}
    return base


def test_every_problem_is_listed_with_its_trial_and_field(tmp_path, ucf_missing_splits):
    path = tiny_sweep(tmp_path / "s.yaml", base=_base_with(tmp_path, dataset={"kind": "ucf101",
                                                                                "root": str(ucf_missing_splits)}),
                      axes=[{"path": "pretrain.epochs", "values": [0, 1]}])
    with pytest.raises(PreflightError) as info:
        preflight(load_sweep(path))
    text = str(info.value)
    assert text.startswith(f"{path}: 3 problem(s) found before any trial started")
    assert "trial 0 (epochs=0), finetune.ucf.dataset: " in text and "trial 1 (epochs=1), finetune.ucf.dataset" in text
    assert f"trial 1 (epochs=1), pretrain.source.path: {tmp_path / 'no-images'}: image folder not found" in text
    assert "pretrain.source" not in text.split("trial 1")[0]  # scratch reads no images


@pytest.fixture
def ucf_missing_splits(tmp_path):
    root = tmp_path / "ucf"
    (root / "videos" / "A").mkdir(parents=True)
    return root


def test_a_sweep_with_a_missing_dataset_trains_nothing(tmp_path, ucf_missing_splits, monkeypatch):
    monkeypatch.setenv("PMGFLOW_CACHE", str(tmp_path / "cache"))
    path = tiny_sweep(tmp_path / "s.yaml", base=_base_with(tmp_path, dataset={"kind": "ucf101",
                                                                                "root": str(ucf_missing_splits)}))
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["sweep", str(path), "--runs", str(runs),
                                      "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert result.exit_code == 2, result.output
    assert "finetune.ucf.dataset" in result.output and "pretrain.source.path" in result.output
    assert not runs.exists() or not any(runs.iterdir())


def test_caps_and_unreadable_videos_are_preflight_problems(tmp_path, monkeypatch):
    from pmgflow.data.synth import write_synthetic

    monkeypatch.setenv("PMGFLOW_CACHE", str(tmp_path / "cache"))
    root = write_synthetic("ucf101", tmp_path / "ucf", classes=2, train_per_class=2, test_per_class=1, frames=8,
                           size=(32, 24))
    base = copy.deepcopy(TINY_BASE)
    base["finetune"]["actions"]["dataset"] = {"kind": "ucf101", "root": str(root)}
    base["finetune"]["actions"]["loader"] = {"cache": "memory", "memory_cap_gb": 1e-6}
    with pytest.raises(PreflightError, match=r"finetune\.actions\.dataset: loader\.memory_cap_gb"):
        preflight(load_sweep(tiny_sweep(tmp_path / "s.yaml", base=base)))
    base["finetune"]["actions"]["loader"] = {}
    preflight(load_sweep(tiny_sweep(tmp_path / "s.yaml", base=base)))  # within the caps: passes
    next((root / "videos").rglob("*.avi")).write_bytes(b"RIFF broken")
    with pytest.raises(PreflightError, match=r"1 of 4 videos cannot be read"):
        preflight(load_sweep(tiny_sweep(tmp_path / "s.yaml", base=base)))


def test_dry_run_shows_the_checks(tmp_path, ucf_missing_splits):
    path = tiny_sweep(tmp_path / "s.yaml", base=_base_with(tmp_path, dataset={"kind": "ucf101",
                                                                                "root": str(ucf_missing_splits)}))
    result = CliRunner().invoke(app, ["sweep", str(path), "--dry-run", "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "2 problem(s) (a run would stop here)" in result.output and "finetune.ucf.dataset" in result.output


# --- one run: `pmgflow finetune SPEC --init CKPT` -------------------------------------------------------------


@pytest.fixture
def finetune_spec(tmp_path, ucf_missing_splits):
    """A fine-tuning spec on a dataset that cannot be indexed: any checkpoint problem must come before it."""
    from .conftest import TINY_MODEL, write_yaml

    return write_yaml(tmp_path / "ft.yaml", {"epochs": 1, "model": TINY_MODEL,
                                             "dataset": {"kind": "ucf101", "root": str(ucf_missing_splits)}})


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_config):
    from pmgflow.model.checkpoints import checkpoint_state, save_checkpoint
    from pmgflow.model.videomae import VideoMAE

    return save_checkpoint(tmp_path / "model.pt", checkpoint_state(VideoMAE(tiny_config)))


def _finetune(spec, init, tmp_path):
    return CliRunner().invoke(app, ["finetune", str(spec), "--init", str(init), "--out", str(tmp_path / "runs")])


def test_init_checkpoint_missing_or_foreign_stops_before_any_data(tmp_path, finetune_spec):
    import torch

    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)  # e.g. official weights, not yet imported
    for path, problem in ((tmp_path / "missing.pt", "checkpoint not found"),
                          (text, "not a torch checkpoint"),
                          (foreign, "has no model_config/model entries")):
        result = _finetune(finetune_spec, path, tmp_path)
        assert result.exit_code == 2, result.output
        out = " ".join(result.output.split())  # the console wraps long lines
        assert f"{finetune_spec}: 1 problem(s) found before training started" in out
        assert f"--init: " in out and str(path) in out and problem in out, out
        assert "dataset" not in out and "Traceback" not in out
    assert not (tmp_path / "runs").exists()


def test_a_good_checkpoint_passes_and_sets_the_clip_size(tmp_path, tiny_checkpoint):
    from pmgflow.orchestrate.preflight import init_problems, preflight_run
    from pmgflow.spec.train import FinetuneSpec

    from .conftest import TINY_ACTIONS, TINY_MODEL

    spec = FinetuneSpec(dataset=TINY_ACTIONS, init=tiny_checkpoint)
    assert init_problems(spec) == ([], TINY_MODEL["img_size"])  # the checkpoint's architecture, not the default
    preflight_run(spec, "ft.yaml")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    problems, _ = init_problems(spec.model_copy(update={"init": cut}), "--init")
    assert problems == [f"--init: checkpoint {cut} is corrupt or not a weights-only torch checkpoint: "
                        + problems[0].split("checkpoint: ", 1)[1]]
