"""Constant-schedule pre-trainings that differ only in epochs share their work: a longer run continues from a
shorter one, a shorter one is a kept checkpoint of a longer one, and both end as if trained on their own."""

from pathlib import Path

import pytest
import torch

from pmgflow.train.loop import build_scheduler
from pmgflow.train.pretrain import pretrain
from pmgflow.train.rundir import RunDir

from .test_train import tiny_pretrain, weights


def constant(epochs):
    return tiny_pretrain(epochs=epochs, schedule="constant", clips_per_epoch=8, warmup_epochs=1)


def lrs(spec, steps=4):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=spec.lr)
    sched = build_scheduler(opt, spec, steps)
    out = []
    for s in range(steps * spec.epochs):
        sched.step_update(s)
        out.append(opt.param_groups[0]["lr"])
    return out


def test_constant_schedule_is_the_same_at_every_step_whatever_the_length():
    short, long = lrs(constant(2)), lrs(constant(5))
    assert long[: len(short)] == pytest.approx(short)
    assert long[4:] == pytest.approx([constant(5).lr] * 16)  # flat at the peak after the one-epoch warm-up
    cosine = lrs(tiny_pretrain(epochs=5, clips_per_epoch=8, warmup_epochs=1))
    assert cosine[-1] < cosine[4]  # the default still decays


def test_runs_differing_in_epochs_share_one_chain(tmp_path):
    assert constant(2).prefix_key == constant(3).prefix_key is not None
    assert tiny_pretrain(epochs=3).prefix_key is None
    alone = {e: weights(pretrain(constant(e), root=tmp_path / f"alone{e}")) for e in (1, 3)}

    shared = tmp_path / "shared"
    first = pretrain(constant(2), root=shared)  # epochs 0-1
    longer = pretrain(constant(3), root=shared)  # continues with epoch 2 only
    shorter = pretrain(constant(1), root=shared)  # epoch 0 of a run already there: nothing trained
    assert len(list((shared / f"pretrain-{first['run_dir'].split('-')[-1]}").glob("epoch-*.pt"))) == 2
    for name, result in (("longer", longer), ("shorter", shorter)):
        epochs = 3 if name == "longer" else 1
        for k, v in alone[epochs].items():
            torch.testing.assert_close(weights(result)[k], v, rtol=0, atol=0, msg=f"{name}: {k}")
    # Each run's curve covers all its epochs, whoever computed them.
    assert [h["epoch"] for h in RunDir(Path(longer["run_dir"])).metrics()] == [0, 1, 2]
    assert [h["epoch"] for h in RunDir(Path(shorter["run_dir"])).metrics()] == [0]
