"""Training stages on tiny models: resume equals uninterrupted, NaN stops cleanly, finished runs are reused."""

import json

import numpy as np
import pytest
import torch

from pmgflow.errors import PmgflowError
from pmgflow.model.checkpoints import load_checkpoint
from pmgflow.spec.train import FinetuneSpec, PretrainSpec
from pmgflow.train import pretrain as pretrain_module
from pmgflow.train.finetune import finetune
from pmgflow.train.loop import TrainingError, build_scheduler
from pmgflow.train.pretrain import pretrain

from ..conftest import TINY_MODEL, waited_behind_lock

TINY_SOURCE = {"kind": "fractal", "categories": 2, "images": 16, "size": 32}
TINY_ACTIONS = {"kind": "actions", "classes": 3, "train_per_class": 4, "test_per_class": 2, "frames": 12, "size": 32}


def tiny_pretrain(**kw):
    return PretrainSpec.model_validate({"model": TINY_MODEL, "source": TINY_SOURCE, "epochs": 2, "batch_size": 8,
                                        "blr": 1e-3, "warmup_epochs": 0.5, "threads": 1,
                                        "pmg": {"transforms": ["zoom", "affine"], "augment": {"kind": "mixup"}}, **kw})


def tiny_finetune(**kw):
    return FinetuneSpec.model_validate({"model": TINY_MODEL, "dataset": TINY_ACTIONS, "epochs": 2, "batch_size": 4,
                                        "threads": 1, "test_segments": 2, "test_crops": 1, **kw})


class Interrupt(Exception):
    pass


def weights(result):
    return load_checkpoint(result["checkpoint"])["model"]


def test_pretrain_resume_equals_uninterrupted(tmp_path):
    spec = tiny_pretrain(epochs=3)
    full = pretrain(spec, root=tmp_path / "a")

    def stop_after_first(epoch, metrics):
        if epoch == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        pretrain(spec, root=tmp_path / "b", on_epoch=stop_after_first)
    assert load_checkpoint(next((tmp_path / "b").glob("pretrain-*/last.pt")))["epoch"] == 0
    seen = []
    resumed = pretrain(spec, root=tmp_path / "b", on_epoch=lambda e, m: seen.append(e))
    assert seen == [0, 1, 2]  # the resumed run replays the finished epoch's metrics, then trains the rest
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["pretrain_loss"] == pytest.approx(full["pretrain_loss"], abs=0)


def test_pretrain_loss_decreases_and_result_is_reused(tmp_path, monkeypatch):
    spec = tiny_pretrain(epochs=4, blr=3e-3)
    result = pretrain(spec, root=tmp_path)
    history = [json.loads(line) for line in open(f"{result['run_dir']}/metrics.jsonl")]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert history[-1]["pretrain_loss"] < history[0]["pretrain_loss"]

    def fail(*a, **k):
        raise AssertionError("a finished run must not be recomputed")

    monkeypatch.setattr(pretrain_module, "build_videomae", fail)
    assert pretrain(spec, root=tmp_path) == result


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    spec = tiny_pretrain(epochs=3)
    real_build = pretrain_module.build_videomae
    calls = {"n": 0}

    def poisoned(s):
        model = real_build(s)
        forward = model.forward

        def nan_after_first_epoch(*a, **k):
            calls["n"] += 1
            loss, pred, mask = forward(*a, **k)
            return (loss * float("nan") if calls["n"] > 2 else loss), pred, mask

        model.forward = nan_after_first_epoch
        return model

    monkeypatch.setattr(pretrain_module, "build_videomae", poisoned)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1, step 0 .*last good checkpoint is .*last\.pt"):
        pretrain(spec, root=tmp_path)
    assert load_checkpoint(next(tmp_path.glob("pretrain-*/last.pt")))["epoch"] == 0
    assert not list(tmp_path.glob("pretrain-*/result.json"))


def test_first_pretraining_losses_keep_their_golden_values(tmp_path):
    """Golden values, so that a change in numerics (initialisation, fractal images, crops, PMG, masks, loss,
    AdamW) shows: three one-step epochs of the tiny model, seed 0, one torch thread. Obtained once by running this
    spec with the code of commit 066766f on the CPU and copying the epochs' pretrain_loss."""
    spec = PretrainSpec(model=TINY_MODEL, source=TINY_SOURCE, epochs=3, clips_per_epoch=8, batch_size=8,
                        warmup_epochs=0, blr=0.1, threads=1)
    losses = []
    pretrain(spec, root=tmp_path, on_epoch=lambda epoch, metrics: losses.append(metrics["pretrain_loss"]))
    assert losses == pytest.approx([1.399405598640442, 1.2440617084503174, 1.1599217653274536], abs=1e-4)


@pytest.mark.parametrize("batch", [3, 4])
def test_mixup_batches_of_any_size_get_label_smoothed_targets(batch):
    from timm.data import Mixup

    from pmgflow.train.finetune import mix_batch

    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=5)
    videos = torch.rand(batch, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3][:batch])
    np.random.seed(0)  # timm draws lambda and mixup-or-cutmix from numpy
    mixed, targets = mix_batch(mixup, videos.clone(), labels)
    assert mixed.shape == videos.shape and targets.shape == (batch, 5)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(batch))
    assert targets.min() >= 0.1 / 5 - 1e-6  # every class keeps its smoothing share
    if batch % 2:  # timm mixes pairs: an odd batch is left as it is, with smoothed one-hot targets, not plain ones
        assert torch.equal(mixed, videos)
        torch.testing.assert_close(targets, torch.full((batch, 5), 0.02) + 0.9 * torch.eye(5)[labels])
    else:
        assert not torch.equal(mixed, videos)


def test_schedule_warms_up_then_decays():
    spec = tiny_pretrain(epochs=10, warmup_epochs=2, blr=2.56e-3, batch_size=100, min_lr=0.0)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=spec.lr)
    sched = build_scheduler(opt, spec, steps_per_epoch=10)
    lrs = []
    for step in range(100):
        sched.step_update(step)
        lrs.append(opt.param_groups[0]["lr"])
    peak = max(lrs)
    assert peak == pytest.approx(spec.lr, rel=0.02) and spec.lr == pytest.approx(1e-3)
    assert lrs.index(peak) in (19, 20) and lrs[0] < 0.1 * peak and lrs[-1] < 0.01 * peak


def test_finetune_from_pretrained_and_from_scratch(tmp_path):
    pre = pretrain(tiny_pretrain(epochs=1), root=tmp_path)
    tuned = finetune(tiny_finetune(init=pre["checkpoint"]), root=tmp_path)
    scratch = finetune(tiny_finetune(), root=tmp_path)
    for r in (tuned, scratch):
        assert 0 <= r["top1"] <= 100 and 0 <= r["top1_single"] <= 100
        assert (r["classes"], r["train_videos"], r["test_videos"]) == (3, 12, 6)
        # which test videos each view got right, for the bootstrap interval of the report
        assert len(r["correct"]) == len(r["correct_single"]) == 6 and set(r["correct"]) <= {0, 1}
        assert r["top1"] == pytest.approx(100 * sum(r["correct"]) / 6)
        assert r["top1_single"] == pytest.approx(100 * sum(r["correct_single"]) / 6)
    assert tuned["init"].endswith("model.pt") and scratch["init"] == "scratch"
    assert tuned["run_dir"] != scratch["run_dir"]
    # the pre-trained encoder was loaded: only its final norm is unused (mean pooling + fc_norm replace it,
    # as in VideoMAE) and only the classifier was new
    assert (tuned["unexpected_keys"], tuned["missing_keys"]) == (2, 4)


def test_linear_probe_freezes_the_encoder(tmp_path):
    pre = pretrain(tiny_pretrain(epochs=1), root=tmp_path)
    probe = finetune(tiny_finetune(init=pre["checkpoint"], mode="linear", mixup=0, cutmix=0), root=tmp_path)
    before = {k.removeprefix("encoder."): v for k, v in weights(pre).items() if k.startswith("encoder.")}
    after = weights(probe)
    shared = [k for k in before if k in after]
    assert len(shared) == len(before) - 2  # all but the final norm
    assert all(torch.equal(before[k], after[k]) for k in shared)


def test_limited_labels(tmp_path):
    r = finetune(tiny_finetune(per_class=2, epochs=1), root=tmp_path)
    assert r["train_videos"] == 6


def test_missing_init_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(PmgflowError, match="does not exist"):
        finetune(tiny_finetune(init=tmp_path / "nope.pt"), root=tmp_path)


def test_a_run_held_by_another_process_is_waited_for_not_trained_twice(tmp_path, capsys):
    from pmgflow.train.rundir import RunDir

    spec = tiny_pretrain()
    run_path = RunDir.for_spec("pretrain", spec, tmp_path).path
    finished = {"stage": "pretrain", "pretrain_loss": 0.5, "checkpoint": "elsewhere.pt"}
    # Another process holds the run's lock, then finishes the run (writes its result) and exits.
    out = waited_behind_lock(run_path, finished, lambda: pretrain(spec, root=tmp_path))
    assert out == finished  # the other process's result, reused
    assert not (run_path / "last.pt").exists()  # and nothing trained here
    assert "another process is running this spec" in capsys.readouterr().err
