"""The embedded motion set: each class moves as it says, looks alike across classes, UCF101 layout, written once."""

from __future__ import annotations

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from pmgflow.data.decode import read_video
from pmgflow.data.embedded import class_name, ensure_embedded_dataset
from pmgflow.data.layouts import check_dataset, index_dataset
from pmgflow.data.motions import MOTIONS, render_motion
from pmgflow.spec.data import MotionsDatasetSpec

SIZE, FRAMES, VIDEOS = 64, 32, 10  # kinematics: 10 videos per class at 64x64, 32 frames


def test_twelve_distinct_motions():
    assert len(MOTIONS) == len(set(MOTIONS)) == 12
    assert [class_name(m) for m in MOTIONS[:3]] == ["Linear", "Orbit", "Spin"]
    assert class_name("stop_and_go") == "StopAndGo"


def test_render_is_deterministic_by_seed():
    a = render_motion("orbit", np.random.default_rng(3), 16, 32)
    assert a.shape == (16, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_motion("orbit", np.random.default_rng(3), 16, 32))
    assert not np.array_equal(a, render_motion("orbit", np.random.default_rng(4), 16, 32))
    video, mask = render_motion("orbit", np.random.default_rng(3), 16, 32, with_mask=True)
    assert np.array_equal(video, a) and mask.shape == (16, 32, 32) and 0 <= mask.min() and mask.max() == 1
    with pytest.raises(ValueError, match="unknown motion"):
        render_motion("moonwalk", np.random.default_rng(0), 4, 32)


class Track:
    """The main object of one rendered video, measured from its coverage mask (pixels, x right, y down)."""

    def __init__(self, motion: str, i: int):
        rng = np.random.default_rng([5, MOTIONS.index(motion), i])
        self.video, mask = render_motion(motion, rng, FRAMES, SIZE, with_mask=True)
        self.video = self.video.astype(float)
        self.mask = mask
        self.area = mask.sum(axis=(1, 2))
        ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
        self.centre = np.stack([(mask * xs).sum((1, 2)), (mask * ys).sum((1, 2))], axis=-1) / self.area[:, None]
        self.clipped = max(mask[:, [0, -1]].max(), mask[:, :, [0, -1]].max()) > 0.01  # touches the frame edge
        self.step = np.diff(self.centre, axis=0)
        self.speed = np.linalg.norm(self.step, axis=1)

    def turns(self) -> np.ndarray:
        """Angle (rad, 0..pi) between consecutive steps."""
        heading = np.arctan2(self.step[:, 1], self.step[:, 0])
        return np.abs(np.angle(np.exp(1j * np.diff(heading))))


@pytest.fixture(scope="module")
def tracks() -> dict[str, list[Track]]:
    return {m: [Track(m, i) for i in range(VIDEOS)] for m in MOTIONS}


def whole(tracks: list[Track]) -> list[Track]:
    """The videos whose object never touches the frame edge (an exact centroid); at least 3 of them."""
    kept = [t for t in tracks if not t.clipped]
    assert len(kept) >= 3
    return kept


def fit(t: np.ndarray, values: np.ndarray, degree: int) -> tuple[np.ndarray, float]:
    """Polynomial coefficients (highest first) and the largest residual."""
    coef = np.polyfit(t, values, degree)
    return coef, float(np.abs(np.polyval(coef, t) - values).max())


T = np.arange(FRAMES, dtype=float)


def test_linear_drifts_at_constant_velocity(tracks):
    for tr in whole(tracks["linear"]):
        (vx, _), rx = fit(T, tr.centre[:, 0], 1)
        (vy, _), ry = fit(T, tr.centre[:, 1], 1)
        assert max(rx, ry) < 0.2 and 1.2 < np.hypot(vx, vy) < 2.3  # 0.02-0.035 of the frame per frame
        assert tr.turns().max() < 0.15


def test_orbit_keeps_its_distance_to_a_centre_at_constant_speed(tracks):
    for tr in whole(tracks["orbit"]):
        x, y = tr.centre.T
        # Least-squares circle: x^2 + y^2 + a x + b y + c = 0.
        a, b, c = np.linalg.lstsq(np.stack([x, y, np.ones_like(x)], 1), -(x**2 + y**2), rcond=None)[0]
        centre = np.array([-a / 2, -b / 2])
        distance = np.linalg.norm(tr.centre - centre, axis=1)
        assert np.ptp(distance) < 0.4 and 0.06 * SIZE - 0.5 < distance.mean() < 0.1 * SIZE + 0.5
        assert tr.speed.std() < 0.05 * tr.speed.mean()
        cross = np.cross(tr.step[:-1], tr.step[1:])
        assert (np.sign(cross) == np.sign(cross[0])).all()  # one way round


def test_spin_turns_in_place(tracks):
    for tr in whole(tracks["spin"]):
        assert np.abs(tr.centre - tr.centre.mean(0)).max() < 0.1  # every shape is centred on its centroid
        assert tr.area.std() < 0.01 * tr.area.mean()
    for tr in tracks["spin"]:
        # The object's pixels change as it turns (outline, texture, or both): frame k against frame 0.
        inside = np.maximum(tr.mask[0], tr.mask) > 0.5
        change = [np.abs(tr.video[k] - tr.video[0]).max(-1)[inside[k]].mean() for k in range(1, 6)]
        assert max(change) > 10, change


def test_approach_grows_or_shrinks_in_place(tracks):
    for tr in tracks["approach"]:
        steps = np.diff(tr.area)
        assert (steps > 0).all() or (steps < 0).all()
        assert tr.area.max() / tr.area.min() > 3  # area e^(+-2kt), k >= 0.02 per frame, over 31 frames
    for tr in whole(tracks["approach"]):
        assert np.abs(tr.centre - tr.centre.mean(0)).max() < 0.5


def test_oscillate_swings_back_and_forth_on_a_line(tracks):
    for tr in whole(tracks["oscillate"]):
        offsets = tr.centre - tr.centre.mean(0)
        across = np.linalg.svd(offsets, compute_uv=False)
        assert across[1] / np.sqrt(FRAMES) < 0.2 and across[0] / np.sqrt(FRAMES) > 3  # rms off / along the line
        _, _, axes = np.linalg.svd(offsets)
        along = offsets @ axes[0]
        reversals = np.sum(np.diff(np.sign(np.diff(along))) != 0)
        assert reversals >= 3  # a period of 10 to 16 frames: at least 3 turning points in 32 frames


def test_fall_accelerates_downwards_at_a_constant_rate(tracks):
    for tr in whole(tracks["fall"]):
        _, rx = fit(T, tr.centre[:, 0], 1)  # constant horizontal speed
        (a, _, _), ry = fit(T, tr.centre[:, 1], 2)  # y = a t^2 + ...: acceleration 2a, y grows downwards
        assert rx < 0.2 and ry < 0.2 and 0.1 < 2 * a < 0.35


def test_bounce_reflects_off_the_edges(tracks):
    for tr in tracks["bounce"]:
        flips = []
        for axis in (0, 1):
            signs = np.sign(tr.step[:, axis])
            flips += [k + 1 for k in np.flatnonzero(signs[1:] != signs[:-1])]
        assert flips, "no bounce in 32 frames"
        for k in flips:  # a velocity component turns over only next to a frame edge
            assert min(tr.centre[k].min(), SIZE - tr.centre[k].max()) < 0.2 * SIZE
        # Steps around a flip, and the first and last (a bounce there shows no flip), fold the path.
        straight = np.setdiff1d(np.arange(1, len(tr.speed) - 1), np.concatenate([np.array(flips) - 1, flips]))
        assert tr.speed[straight].std() < 0.05 * tr.speed[straight].mean()  # constant speed between bounces


def test_zigzag_turns_sharply_between_straight_legs(tracks):
    for tr in whole(tracks["zigzag"]):
        turns = tr.turns()
        sharp = turns > np.radians(50)  # a turn is twice 35 to 55 degrees
        assert sharp.sum() >= 3 and turns[~sharp].max() < 0.1
        assert tr.speed.std() < 0.05 * tr.speed.mean()


def test_stop_and_go_rests_and_moves_one_way(tracks):
    for tr in whole(tracks["stop_and_go"]):
        assert (tr.speed < 0.1).sum() >= 3 and (tr.speed > 1.0).sum() >= 3
        heading = tr.centre[-1] - tr.centre[0]
        assert (tr.step @ heading / np.linalg.norm(heading) > -0.05).all()  # never back


def test_pulse_swells_and_shrinks_in_place(tracks):
    for tr in whole(tracks["pulse"]):
        steps = np.sign(np.diff(tr.area))
        assert np.sum(steps[1:] != steps[:-1]) >= 3 and tr.area.max() / tr.area.min() > 1.5
        assert np.abs(tr.centre - tr.centre.mean(0)).max() < 0.5


def test_spiral_circles_one_way_with_a_growing_or_shrinking_radius(tracks):
    for tr in whole(tracks["spiral"]):
        cross = np.cross(tr.step[:-1], tr.step[1:])
        assert (np.sign(cross) == np.sign(cross[0])).all()
        ratio = tr.speed[-8:].mean() / tr.speed[:8].mean()  # the speed follows the radius: e^(k t)
        assert ratio > 1.8 or ratio < 1 / 1.8, ratio


def test_jitter_wanders(tracks):
    for tr in whole(tracks["jitter"]):
        assert np.median(tr.turns()) > 0.4 and tr.speed.mean() > 0.8
    # Unlike a drift, whose heading holds.
    assert max(np.median(tr.turns()) for tr in tracks["linear"]) < 0.05


def test_looks_do_not_depend_on_the_class():
    # The looks are drawn before the motion: one seed gives the same object (and distractor, background) in every
    # class, and the scale is normalised so that the mean area over a video is the drawn one.
    areas = {m: [render_motion(m, np.random.default_rng([9, i]), 16, 32, with_mask=True)[1].sum((1, 2)).mean()
                 for i in range(30)] for m in MOTIONS}  # fmt: skip
    overall = np.mean(list(areas.values()))
    for motion, values in areas.items():
        assert abs(np.mean(values) / overall - 1) < 0.05, (motion, np.mean(values), overall)
    ref, ref_mask = render_motion("linear", np.random.default_rng(11), 4, 32, with_mask=True)
    for motion in MOTIONS[1:]:  # the same background and distractor wherever neither main object is
        video, mask = render_motion(motion, np.random.default_rng(11), 4, 32, with_mask=True)
        free = (mask[0] == 0) & (ref_mask[0] == 0)
        assert free.mean() > 0.5 and np.array_equal(video[0][free], ref[0][free]), motion


def test_every_class_differs_with_one_seed():
    rendered = [render_motion(m, np.random.default_rng(11), 16, 32).astype(float) for m in MOTIONS]
    for i in range(len(MOTIONS)):
        for j in range(i + 1, len(MOTIONS)):
            assert np.abs(rendered[i] - rendered[j]).mean() > 0.3, (MOTIONS[i], MOTIONS[j])


@pytest.fixture(scope="module")
def motions_spec(tmp_path_factory) -> MotionsDatasetSpec:
    """A tiny motion set: 3 classes x (2 train + 2 test) videos of 16 frames at 32x32."""
    root = tmp_path_factory.mktemp("motions")
    return MotionsDatasetSpec(classes=3, train_per_class=2, test_per_class=2, frames=16, size=32, root=root)


def test_written_dataset_indexes_like_ucf101(motions_spec):
    train, test = index_dataset(motions_spec, "train"), index_dataset(motions_spec, "test")
    assert train.classes == ["Linear", "Orbit", "Spin"]
    assert [it.label for it in train.items] == [0, 0, 1, 1, 2, 2] and len(test.items) == 6
    assert all(re.fullmatch(r"v_[A-Za-z]+_g\d\d_c\d\d\.mp4", it.path.name) for it in train.items + test.items)
    assert train.items[0].path.parent.name == "Linear" and train.items[0].path.parent.parent.name == "videos"
    assert not {(it.label, it.group) for it in train.items} & {(it.label, it.group) for it in test.items}
    video = read_video(train.items[0].path)
    assert video.shape == (16, 32, 32, 3)
    # Train and test come from disjoint seed streams: no test video repeats a training video.
    assert all(np.abs(read_video(t.path).astype(float) - video).mean() > 1 for t in test.items if t.label == 0)
    report = check_dataset(motions_spec)
    assert report.ok and report.kind == "ucf101" and report.counts == {"train": [2, 2, 2], "test": [2, 2, 2]}


def test_ensure_writes_once_into_the_cache(monkeypatch, tmp_path, motions_spec):
    root = ensure_embedded_dataset(motions_spec)
    video = next((root / "videos" / "Orbit").glob("*.mp4"))
    stamp = video.stat().st_mtime_ns
    assert ensure_embedded_dataset(motions_spec) == root and video.stat().st_mtime_ns == stamp
    monkeypatch.setenv("PMGFLOW_CACHE", str(tmp_path))
    spec = MotionsDatasetSpec(classes=2, train_per_class=1, test_per_class=1, frames=4, size=16)
    root = ensure_embedded_dataset(spec)
    assert root.parent == tmp_path / "motions" and (root / ".pmgflow-complete").is_file()
    assert (root / "splits" / "classInd.txt").read_text() == "1 Linear\n2 Orbit\n"


def test_accepted_wherever_the_action_set_is(tmp_path):
    from pmgflow.cli import app
    from pmgflow.orchestrate.smoke import SmokeData
    from pmgflow.spec.train import FinetuneSpec, load_dataset_spec

    spec = FinetuneSpec.model_validate({"dataset": {"kind": "motions", "classes": 12}}).dataset
    assert isinstance(spec, MotionsDatasetSpec) and spec.train_per_class == 100 and spec.test_per_class == 30
    small = SmokeData(tmp_path).dataset(spec)
    assert small["kind"] == "motions" and small["classes"] == 2 and small["root"].startswith(str(tmp_path / "motions-"))
    (tmp_path / "set.yaml").write_text("kind: motions\nclasses: 3\n")
    assert load_dataset_spec(tmp_path / "set.yaml") == MotionsDatasetSpec(classes=3)

    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["data", "motions", "--out", str(out), "--classes", "2", "--train-per-class", "1",
                                 "--test-per-class", "1", "--frames", "4", "--size", "16"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["Linear", "Orbit"]
