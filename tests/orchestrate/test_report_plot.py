"""The report's plot: error bars from the seeds' spread or the bootstrap interval, the chance level as a dashed
line, and the paper's numbers as markers of their own (checked on the figure's artists, not its pixels)."""

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.container import ErrorbarContainer

from pmgflow.orchestrate.report import SweepRecord, TrialRecord, metric_figure, plot_metric
from pmgflow.orchestrate.stats import target_metrics


def result(correct: list[int], classes: int) -> dict:
    top1 = 100 * sum(correct) / len(correct)
    return {"top1": top1, "top1_single": top1, "correct": correct, "correct_single": correct, "classes": classes,
            "test_videos": len(correct)}


def record(rows: dict[str, dict], row_axis: str, paper: str | None = None, targets=None) -> SweepRecord:
    trials = [TrialRecord(i, {row_axis: label}, "FINISHED", None, metrics, f"r{i}")
              for i, (label, metrics) in enumerate(rows.items())]
    return SweepRecord("abl", "parent", [row_axis], row_axis, "top1", paper, targets or {"actions": "actions"}, trials)


def errorbars(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def bar_lengths(container: ErrorbarContainer) -> list[tuple[float, float]]:
    """(low end, high end) of each vertical error bar."""
    (lines,) = container.lines[2]
    return [(float(seg[0][1]), float(seg[1][1])) for seg in lines.get_segments()]


def test_numeric_axis_has_error_bars_of_the_seeds_std_and_a_chance_line():
    seeds = [0, 1, 2]
    rows = {"1": target_metrics("actions", [result([1, 0, 0, 0], 4), result([1, 1, 0, 0], 4),
                                            result([1, 1, 1, 0], 4)], seeds),
            "4": target_metrics("actions", [result([1, 1, 0, 0], 4)] * 3, seeds)}
    ax = metric_figure(record(rows, "epochs")).axes[0]
    (bars,) = errorbars(ax)
    low, high = bar_lengths(bars)[0]
    assert (low, high) == pytest.approx((50 - 25, 50 + 25))  # mean 50 ± sample std 25
    assert bar_lengths(bars)[1] == pytest.approx((50, 50))  # equal seeds: no spread
    assert [float(x) for x in bars.lines[0].get_xdata()] == [1.0, 4.0]
    chance = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == [25.0, 25.0]  # 100 / 4 classes
    assert "chance" in chance[0].get_label()


def test_one_run_per_trial_shows_the_bootstrap_interval():
    metrics = target_metrics("actions", [result([1] * 30 + [0] * 70, 3)], None)
    ax = metric_figure(record({"0.5": metrics, "1.0": metrics}, "fraction")).axes[0]
    (bars,) = errorbars(ax)
    assert bar_lengths(bars)[0] == pytest.approx((metrics["top1_lo.actions"], metrics["top1_hi.actions"]))
    chance = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert list(chance[0].get_ydata()) == pytest.approx([100 / 3] * 2)


def test_categorical_axis_has_bars_with_error_bars_and_the_papers_markers():
    seeds = [0, 1]
    rows = {"zoom": target_metrics("actions", [result([1, 0], 12), result([1, 1], 12)], seeds),
            "fade": target_metrics("actions", [result([0, 0], 12), result([1, 0], 12)], seeds),
            "no-such-row": target_metrics("actions", [result([1, 0], 12), result([1, 0], 12)], seeds)}
    ax = metric_figure(record(rows, "transforms", paper="single_transform")).axes[0]
    assert len(ax.patches) == 3 and len(errorbars(ax)) == 1  # one bar per trial, error bars on them
    markers = {c.get_label(): c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)}
    assert set(markers) == {"paper UCF101", "paper HMDB51"}
    # the paper's Zoom-in/out (x 0) and Fade-in/out (x 1), its datasets side by side; no row for the third label
    np.testing.assert_allclose(markers["paper UCF101"], [[-0.075, 81.2], [0.925, 76.3]])
    np.testing.assert_allclose(markers["paper HMDB51"], [[0.075, 44.5], [1.075, 34.1]])
    assert [line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == "--"] == [pytest.approx(100 / 12)]


def test_no_markers_without_a_paper_table_and_no_bars_without_uncertainty(tmp_path):
    rows = {"1": {"top1.actions": 40.0}, "2": {"top1.actions": 45.0}}  # a record from before per-video results
    fig = metric_figure(record(rows, "epochs"))
    ax = fig.axes[0]
    assert not [c for c in ax.collections if isinstance(c, PathCollection)]
    assert not [line for line in ax.lines if line.get_linestyle() == "--"]  # no class count logged: no chance line
    (bars,) = errorbars(ax)
    assert bars.has_yerr is False
    path = plot_metric(record(rows, "epochs"), tmp_path / "out" / "abl.png")
    assert path.stat().st_size > 1000


def test_targets_with_different_class_counts_get_a_chance_line_each():
    metrics = {**target_metrics("ucf", [result([1, 0], 101)], None),
               **target_metrics("hmdb", [result([1, 0], 51)], None)}
    ax = metric_figure(record({"1": metrics}, "epochs", targets={"ucf": "ucf101", "hmdb": "hmdb51"})).axes[0]
    levels = sorted(line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == "--")
    assert levels == pytest.approx([100 / 101, 100 / 51])
    assert len(errorbars(ax)) == 2
