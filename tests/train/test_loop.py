"""run_steps reads losses back every log_every steps: the metrics stay the mean step loss, a NaN still stops it."""

import pytest
import torch

from pmgflow.spec.train import OptimSpec
from pmgflow.train.loop import TrainingError, build_optimizer, build_scheduler, run_steps
from pmgflow.train.rundir import RunDir

LOSSES = [0.5, 0.25, 2.0, 1.0, 0.125, 4.0, 3.0, 0.75, 1.5, 0.5]  # micro-batch k of step s: LOSSES[2 * s + k]


def run(tmp_path, log_every, nan_at=None, progress=None, calls=None):
    spec = OptimSpec(epochs=1, batch_size=2, accum_steps=2, log_every=log_every)
    model = torch.nn.Linear(1, 1)
    optimizer = build_optimizer(model, spec)

    def micro_loss(step, k):
        if calls is not None:
            calls.append((step, k))
        value = float("nan") if step == nan_at else LOSSES[2 * step + k]
        return model.weight.sum() * 0 + value, 1

    return run_steps("t", 0, 5, spec, model, optimizer, build_scheduler(optimizer, spec, 5), micro_loss,
                     RunDir(tmp_path), progress)


@pytest.mark.parametrize("log_every", [1, 2, 50])
def test_epoch_loss_is_the_mean_step_loss(tmp_path, log_every):
    steps = [LOSSES[2 * s] / 2 + LOSSES[2 * s + 1] / 2 for s in range(5)]
    assert run(tmp_path, log_every)["t_loss"] == sum(steps) / 5


@pytest.mark.parametrize("log_every, steps_run", [(1, 2), (2, 2), (3, 3), (50, 5)])
def test_a_nan_stops_at_the_next_read_back_naming_its_step(tmp_path, log_every, steps_run):
    calls = []
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 0, step 1 .*no epoch had finished"):
        run(tmp_path, log_every, nan_at=1, calls=calls)
    assert len(calls) == 2 * steps_run  # read back every log_every steps and at the epoch's last step


def test_progress_shows_the_last_loss_read_back(tmp_path):
    shown = []

    def progress(n, info):
        shown.append(info.split(" loss ")[1].split()[0] if " loss " in info else None)

    run(tmp_path, 2, progress=progress)
    assert shown == [None, "1.5000", "1.5000", "1.8750", "1.0000"]
